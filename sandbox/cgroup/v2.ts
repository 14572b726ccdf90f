// cgroup v2: one group per run under a base the caller may write (root: <mount>/cubicle; otherwise a delegated
// `cgroupParent`). The helper clones init straight into it (CLONE_INTO_CGROUP): no migration, stage 0 stays out.
import { accessSync, constants } from 'node:fs';
import { release } from 'node:os';
import { cgroup2MountPoint } from '../host/mountinfo.js';
import { delegation, predictDelegation, type Delegation } from './delegation.js';
import { mayAccess, mounts, readKeyed, readNumber, readText, words, type CgroupPlan, type CgroupWrite, type GroupLimits } from './group.js';

/** Where the cgroup2 hierarchy is mounted (null when it is not). */
export const cgroup2Mount = (): string | null => cgroup2MountPoint(mounts());

/** Where run groups go and how that place was had: root's own tree, the caller's cgroupParent, or a delegated
 *  subtree (see ./delegation.ts). */
export interface V2Placement {
  base: string;
  source: 'root' | 'cgroup-parent' | Delegation['source'];
  /** The caller first moves into this leaf of its delegated group (once per process). */
  moveSelfInto?: string;
}

/**
 * Where this caller's run groups go, or why v2 cannot be used: a given `parent` (a delegated directory), root's
 * `<mount>/cubicle`, else the delegated subtree the caller sits in or the systemd user manager gives it. With
 * `predict`, nothing is asked of the user manager (the doctor's view): a reachable one is reported as such.
 */
export function v2Placement(parent: string | undefined, predict = false): V2Placement | { reason: string } {
  const mnt = cgroup2Mount();
  if (!mnt) return { reason: 'no cgroup2 hierarchy is mounted' };
  const [major = 0, minor = 0] = release()
    .split('.')
    .map((x) => parseInt(x, 10));
  if (major < 5 || (major === 5 && minor < 7))
    return { reason: `cgroup v2 groups need clone3 with CLONE_INTO_CGROUP (Linux 5.7+); this kernel is ${release()}` };
  if (parent !== undefined) {
    try {
      accessSync(`${parent}/cgroup.subtree_control`, constants.W_OK);
      accessSync(parent, constants.W_OK);
    } catch {
      return {
        reason:
          `cgroupParent ${parent} is not a cgroup v2 directory this user can write ` +
          '(delegate one, e.g. systemd-run --user --scope -p Delegate=yes)',
      };
    }
    return { base: parent, source: 'cgroup-parent' };
  }
  if (process.geteuid?.() === 0) return { base: `${mnt}/cubicle`, source: 'root' };
  const d = predict ? predictDelegation(mnt) : delegation(mnt);
  if ('reason' in d) return { reason: `no delegated cgroup v2 subtree for this caller: ${d.reason}` };
  if ('systemd' in d) return { base: '(a delegated scope from the systemd user manager)', source: 'systemd-scope' };
  return { base: `${d.group}/cubicle`, source: d.source, ...(d.moveSelfInto ? { moveSelfInto: d.moveSelfInto } : {}) };
}

/** The base for run groups, or why v2 cannot be used. `parent` is a delegated directory given by the caller. */
export function cgroupV2Base(parent: string | undefined, predict = false): string | { reason: string } {
  const p = v2Placement(parent, predict);
  return 'reason' in p ? p : p.base;
}

/** Whether the cgroup2 hierarchy's root has these controllers (a pure v2 host; on a hybrid one they sit in v1). */
export function cgroupV2HasControllers(wanted: readonly string[]): boolean {
  const mnt = cgroup2Mount();
  const have = mnt ? words(readText(`${mnt}/cgroup.controllers`)) : [];
  return wanted.every((c) => have.includes(c));
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

/**
 * Controllers of `wanted` the run's group will get, read without changing anything: every directory on the
 * chain must have the controller and delegate it to its children (cgroup.subtree_control), or be able to:
 * this user may write its subtree_control, and it holds no process of its own (cgroup v2 refuses to
 * delegate from a non-root group with processes, EBUSY). A directory not created yet gets what its parent
 * delegates. A controller that cannot be had is enforced by sampling instead (or refused by strictLimits).
 */
function availableControllers(mnt: string, chain: readonly string[], wanted: readonly string[], emptied?: string): string[] {
  let available = [...wanted];
  for (const dir of chain) {
    const have = readText(`${dir}/cgroup.controllers`);
    if (have === undefined) break; // not created yet: it will be empty, and have what its parent delegates
    const delegated = words(readText(`${dir}/cgroup.subtree_control`));
    const empty = dir === mnt || dir === emptied || words(readText(`${dir}/cgroup.procs`)).length === 0;
    const canDelegate = mayAccess(`${dir}/cgroup.subtree_control`) && empty;
    available = available.filter((c) => words(have).includes(c) && (delegated.includes(c) || canDelegate));
  }
  return available;
}

/**
 * The run's group under `base`: memory.max with no swap and memory.oom.group (an OOM kill takes the whole sandbox
 * at once, never one process of it alone), pids.max, CPU from cpu.stat, memory.events watched, memory.current
 * sampled by init (the peak where the kernel has no memory.peak, before 5.19). `moveSelfInto`: the caller's leaf,
 * made and joined before the group (its group then holds no process and may hand controllers down).
 */
export function planV2(l: GroupLimits, base: string, runId: string, mnt = cgroup2Mount() ?? base, moveSelfInto?: string): CgroupPlan {
  const dir = `${base}/${runId}`;
  const chain = chainTo(mnt, base);
  const wanted = [...(l.memoryBytes !== undefined ? ['memory'] : []), ...(l.pidsMax !== undefined ? ['pids'] : [])];
  const emptied = moveSelfInto?.slice(0, moveSelfInto.lastIndexOf('/'));
  const controllers = availableControllers(mnt, chain, wanted, emptied);
  const plan: CgroupPlan = {
    version: 'v2',
    dirs: [dir],
    enable: { dirs: chain, controllers },
    writes: [],
    sweep: [base],
    helper: { join: [], into: dir, cpuFile: `${dir}/cpu.stat` },
    collect: () => collectV2(plan),
    ...(moveSelfInto ? { moveSelfInto } : {}),
  };
  const writes: CgroupWrite[] = [];
  if (l.memoryBytes !== undefined && controllers.includes('memory')) {
    writes.push({ file: `${dir}/memory.max`, value: l.memoryBytes, readBack: 'memory', tolerance: 4096 });
    writes.push({ file: `${dir}/memory.swap.max`, value: 0, optional: true }); // no swap accounting: nothing to cap
    writes.push({ file: `${dir}/memory.oom.group`, value: 1 });
    plan.memoryDir = dir;
    plan.helper.eventsFile = `${dir}/memory.events`;
    plan.helper.memoryFile = `${dir}/memory.current`;
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
  if (plan.pidsDir) {
    c.pidsRefused = readKeyed(`${dir}/pids.events`, 'max');
    const peak = readNumber(`${dir}/pids.peak`); // init is one of them
    if (peak !== undefined && peak > 0) c.peakTasks = peak - 1;
  }
  c.cpuUs = readKeyed(`${dir}/cpu.stat`, 'usage_usec');
  return c;
}
