// cgroup v1 (root on a v1 or hybrid host): a memory, pids and cpuacct group per run, each joined by stage 0.
import { cgroupV1Controllers } from '../host/mountinfo.js';
import { mounts, readKeyed, readNumber, type CgroupPlan, type CgroupWrite, type GroupLimits } from './group.js';

/** The v1 controllers a run's groups use. */
const V1_CONTROLLERS = ['memory', 'pids', 'cpuacct'];

/** true, or why cgroup v1 cannot be used by this process. */
export function cgroupV1Available(): true | string {
  if (process.geteuid?.() !== 0) return 'cgroup v1 groups can only be created by root (a rootless caller has no delegated v1 hierarchy)';
  const m = cgroupV1Controllers(mounts(), V1_CONTROLLERS);
  if (!m.has('memory') && !m.has('pids') && !m.has('cpuacct'))
    return (
      'no cgroup v1 memory, pids or cpuacct controller is mounted ' +
      '(on a cgroup v2 host, root and callers in a delegated subtree get v2 groups instead)'
    );
  return true;
}

/** The groups a run gets: memory, pids, cpuacct. The memory limit (and memsw) sits on `<run>/payload`, which only the
 *  payload joins (see sandbox/native/cgroup.c): its OOM event makes stage 0 stop the whole sandbox, and the kernel's
 *  OOM killer, left on, can only choose a process of the payload. With `memory.oom_control` 1, a kernel allocation
 *  the full group could not hold (a SysV message, a pipe buffer) failed with ENOMEM and raised no OOM event, so the
 *  run ended ok at the limit. */
export function planV1(l: GroupLimits, runId: string): CgroupPlan {
  const controllers = cgroupV1Controllers(mounts(), V1_CONTROLLERS);
  const plan: CgroupPlan = {
    version: 'v1',
    dirs: [],
    enable: { dirs: [], controllers: [] },
    writes: [],
    sweep: [],
    helper: { join: [] },
    collect: () => collectV1(plan),
  };
  const group = (controller: string): string | undefined => {
    const mnt = controllers.get(controller);
    if (!mnt) return undefined;
    const dir = `${mnt}/cubicle/${runId}`;
    if (!plan.dirs.includes(dir)) {
      plan.dirs.push(dir);
      plan.sweep.push(`${mnt}/cubicle`);
      plan.helper.join.push(dir);
    }
    return dir;
  };
  const writes: CgroupWrite[] = [];
  if (l.memoryBytes !== undefined) {
    const run = group('memory');
    if (run) {
      const dir = `${run}/payload`;
      plan.dirs.push(dir);
      plan.memoryDir = dir;
      plan.helper.oomWatchDir = dir;
      writes.push({ file: `${dir}/memory.limit_in_bytes`, value: l.memoryBytes, readBack: 'memory', tolerance: 4096 });
      // no swap: memory+swap capped at the same value; without swap accounting, keep pages out of swap
      writes.push({
        file: `${dir}/memory.memsw.limit_in_bytes`,
        value: l.memoryBytes,
        orElse: { file: `${dir}/memory.swappiness`, value: 0 },
      });
    }
  }
  if (l.pidsMax !== undefined) {
    const dir = group('pids');
    if (dir) {
      plan.pidsDir = dir;
      writes.push({ file: `${dir}/pids.max`, value: l.pidsMax + 1, readBack: 'pids' }); // stage 0 lives in the group too
    }
  }
  const cpu = group('cpuacct');
  if (cpu) plan.helper.cpuFile = `${cpu}/cpuacct.usage`;
  plan.writes = writes;
  return plan;
}

function collectV1(plan: CgroupPlan): ReturnType<CgroupPlan['collect']> {
  const c: ReturnType<CgroupPlan['collect']> = {};
  if (plan.memoryDir) {
    c.peakMemoryBytes = readNumber(`${plan.memoryDir}/memory.max_usage_in_bytes`);
    c.oomKills = readKeyed(`${plan.memoryDir}/memory.oom_control`, 'oom_kill');
  }
  if (plan.pidsDir) c.pidsRefused = readKeyed(`${plan.pidsDir}/pids.events`, 'max');
  if (plan.helper.cpuFile) {
    const ns = readNumber(plan.helper.cpuFile);
    if (ns !== undefined) c.cpuUs = ns / 1000;
  }
  return c;
}
