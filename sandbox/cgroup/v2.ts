// cgroup v2: one group per run under a base the caller may write (root: <mount>/cubicle; otherwise a delegated
// `cgroupParent`). The helper clones init straight into it (CLONE_INTO_CGROUP): no migration, stage 0 stays out.
import { accessSync, constants } from 'node:fs';
import { release } from 'node:os';
import { cgroup2MountPoint } from '../host/mountinfo.js';
import { mounts, readKeyed, readNumber, readText, type CgroupPlan, type CgroupWrite, type GroupLimits } from './group.js';

/** Where the cgroup2 hierarchy is mounted (null when it is not). */
export const cgroup2Mount = (): string | null => cgroup2MountPoint(mounts());

/** The base for run groups, or why v2 cannot be used. `parent` is a delegated directory given by the caller. */
export function cgroupV2Base(parent: string | undefined): string | { reason: string } {
  const mnt = cgroup2Mount();
  if (!mnt) return { reason: 'no cgroup2 hierarchy is mounted' };
  const [major = 0, minor = 0] = release().split('.').map((x) => parseInt(x, 10));
  if (major < 5 || (major === 5 && minor < 7)) return { reason: `cgroup v2 groups need clone3 with CLONE_INTO_CGROUP (Linux 5.7+); this kernel is ${release()}` };
  if (parent !== undefined) {
    try {
      accessSync(`${parent}/cgroup.subtree_control`, constants.W_OK);
      accessSync(parent, constants.W_OK);
    } catch {
      return { reason: `cgroupParent ${parent} is not a cgroup v2 directory this user can write (delegate one, e.g. systemd-run --user -p Delegate=yes)` };
    }
    return parent;
  }
  if (process.geteuid?.() !== 0) return { reason: 'a rootless caller needs a delegated cgroup v2 directory: pass cgroupParent' };
  return `${mnt}/cubicle`;
}

/** Directories from the hierarchy's root down to `base`, each of which must delegate the run's controllers. */
function chainTo(mnt: string, base: string): string[] {
  const chain: string[] = [];
  for (let dir = base; dir.startsWith(mnt) && dir.length >= mnt.length; dir = dir.slice(0, dir.lastIndexOf('/'))) {
    chain.unshift(dir);
    if (dir === mnt) break;
  }
  return chain;
}

/** Controllers of `wanted` that every existing directory on the chain has (a missing dir inherits its parent's). */
function availableControllers(chain: readonly string[], wanted: readonly string[]): string[] {
  let available = [...wanted];
  for (const dir of chain) {
    const text = readText(`${dir}/cgroup.controllers`);
    if (text === undefined) break; // not created yet: it will have what its parent delegates
    const have = text.trim().split(/\s+/);
    available = available.filter((c) => have.includes(c));
  }
  return available;
}

/** The run's group under `base`: memory.max (no swap), pids.max, CPU from cpu.stat, memory.events watched. */
export function planV2(l: GroupLimits, base: string, runId: string): CgroupPlan {
  const dir = `${base}/${runId}`;
  const chain = chainTo(cgroup2Mount() ?? base, base);
  const wanted = [...(l.memoryBytes !== undefined ? ['memory'] : []), ...(l.pidsMax !== undefined ? ['pids'] : [])];
  const controllers = availableControllers(chain, wanted);
  const plan: CgroupPlan = {
    version: 'v2',
    dirs: [dir],
    enable: { dirs: chain, controllers },
    writes: [],
    sweep: [base],
    helper: { join: [], into: dir, cpuFile: `${dir}/cpu.stat` },
    collect: () => collectV2(plan),
  };
  const writes: CgroupWrite[] = [];
  if (l.memoryBytes !== undefined && controllers.includes('memory')) {
    writes.push({ file: `${dir}/memory.max`, value: l.memoryBytes, readBack: 'memory', tolerance: 4096 });
    writes.push({ file: `${dir}/memory.swap.max`, value: 0, optional: true }); // no swap accounting: nothing to cap
    plan.memoryDir = dir;
    plan.helper.eventsFile = `${dir}/memory.events`;
  }
  if (l.pidsMax !== undefined && controllers.includes('pids')) {
    writes.push({ file: `${dir}/pids.max`, value: l.pidsMax, readBack: 'pids' }); // init is in the group; stage 0 is not
    plan.pidsDir = dir;
  }
  plan.writes = writes;
  return plan;
}

function collectV2(plan: CgroupPlan): ReturnType<CgroupPlan['collect']> {
  const dir = plan.dirs[0]!;
  const c: ReturnType<CgroupPlan['collect']> = {};
  if (plan.memoryDir) {
    const peak = readNumber(`${dir}/memory.peak`);
    if (peak !== undefined && peak > 0) c.peakMemoryBytes = peak;
    c.oomKills = readKeyed(`${dir}/memory.events`, 'oom_kill');
  }
  if (plan.pidsDir) c.pidsRefused = readKeyed(`${dir}/pids.events`, 'max');
  c.cpuUs = readKeyed(`${dir}/cpu.stat`, 'usage_usec');
  return c;
}
