// cgroup v2: a group per run under a base the caller may write (root: <mount>/cubicle; otherwise a delegated
// `cgroupParent`). The helper clones init straight into it (CLONE_INTO_CGROUP): no migration, and stage 0 stays out.
import { accessSync, constants, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { release } from 'node:os';
import { debuglog } from 'node:util';
import { SandboxOptionError } from '../errors.js';
import { removeDir, removeStale, type CgroupReport, type CgroupRun } from './cgroup-v1.js';
import { processHeadroom, type ResolvedLimits } from './limits.js';

const debug = debuglog('cubicle');

let mountPoint: string | null | undefined;
const swept = new Set<string>();

/** Where the cgroup2 hierarchy is mounted, from /proc/self/mountinfo (null when it is not). */
export function cgroup2Mount(): string | null {
  if (mountPoint !== undefined) return mountPoint;
  mountPoint = null;
  try {
    for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
      const [left, right] = line.split(' - ');
      if (right?.startsWith('cgroup2 ')) {
        mountPoint = left!.split(' ')[4]!;
        break;
      }
    }
  } catch {
    /* no mountinfo */
  }
  return mountPoint;
}

const read = (path: string): string | undefined => {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
};
const keyed = (text: string | undefined, key: string): number | undefined => {
  const m = text === undefined ? null : new RegExp(`^${key} (\\d+)$`, 'm').exec(text);
  return m ? Number(m[1]) : undefined;
};

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

/** Controllers (of memory, pids) the run groups under `base` can have, enabling them on the way down. */
function enableControllers(base: string, wanted: string[]): string[] {
  const mnt = cgroup2Mount()!;
  mkdirSync(base, { recursive: true });
  const chain: string[] = [];
  // From the mount (or the delegated parent's parent) down to base, each level must delegate the controller.
  for (let dir = base; dir.startsWith(mnt) && dir.length >= mnt.length; dir = dir.slice(0, dir.lastIndexOf('/'))) {
    chain.unshift(dir);
    if (dir === mnt) break;
  }
  let available = wanted;
  for (const dir of chain) {
    const have = (read(`${dir}/cgroup.controllers`) ?? '').trim().split(/\s+/);
    available = available.filter((c) => have.includes(c));
    if (!available.length) break;
    const enabled = (read(`${dir}/cgroup.subtree_control`) ?? '').trim().split(/\s+/);
    const missing = available.filter((c) => !enabled.includes(c));
    if (missing.length) {
      try {
        writeFileSync(`${dir}/cgroup.subtree_control`, missing.map((c) => `+${c}`).join(' '));
      } catch (e) {
        debug('cannot enable %s in %s: %s', missing.join(','), dir, (e as Error).message);
        available = available.filter((c) => !missing.includes(c));
      }
    }
  }
  return available;
}

/** Creates this run's group: memory.max (no swap), pids.max, read back; CPU from cpu.stat. */
export function createV2(l: ResolvedLimits, base: string, runId: string, dryRun: boolean): CgroupRun {
  const dir = `${base}/${runId}`;
  const wanted = [...(l.memoryBytes !== undefined ? ['memory'] : []), ...(l.processes !== undefined ? ['pids'] : [])];
  const run: CgroupRun = { kind: 'v2', dirs: [dir], intoDir: dir, cpuFile: `${dir}/cpu.stat`, readBack: {}, finish: () => finishV2(run) };
  if (dryRun) {
    if (l.memoryBytes !== undefined) run.memoryDir = dir;
    if (l.processes !== undefined) run.pidsDir = dir;
    run.finish = () => ({});
    return run;
  }
  try {
    const controllers = enableControllers(base, wanted);
    if (!swept.has(base)) {
      swept.add(base);
      removeStale(base);
    }
    mkdirSync(dir);
    if (l.memoryBytes !== undefined && controllers.includes('memory')) {
      writeFileSync(`${dir}/memory.max`, String(l.memoryBytes));
      try {
        writeFileSync(`${dir}/memory.swap.max`, '0');
      } catch {
        /* no swap accounting: nothing to cap */
      }
      run.readBack.memory = Number(read(`${dir}/memory.max`)?.trim());
      if (!(Math.abs(run.readBack.memory - l.memoryBytes) <= 4096)) throw new Error(`memory.max read back ${run.readBack.memory}, not ${l.memoryBytes}`);
      run.memoryDir = dir;
      run.eventsFile = `${dir}/memory.events`;
    }
    if (l.processes !== undefined && controllers.includes('pids')) {
      const max = l.processes + 1 + processHeadroom(l.processes); // init is in the group; stage 0 is not
      writeFileSync(`${dir}/pids.max`, String(max));
      run.readBack.pids = Number(read(`${dir}/pids.max`)?.trim());
      if (run.readBack.pids !== max) throw new Error(`pids.max read back ${run.readBack.pids}, not ${max}`);
      run.pidsDir = dir;
    }
    return run;
  } catch (e) {
    finishV2(run);
    throw new SandboxOptionError('limits', `cannot set up the run's cgroup v2 group: ${(e as Error).message}`);
  }
}

function finishV2(run: CgroupRun): CgroupReport {
  const dir = run.dirs[0];
  if (!dir) return {};
  const r: CgroupReport = {};
  if (run.memoryDir) {
    const peak = Number(read(`${dir}/memory.peak`)?.trim());
    if (Number.isFinite(peak) && peak > 0) r.peakMemoryBytes = peak;
    const kills = keyed(read(`${dir}/memory.events`), 'oom_kill');
    if (kills !== undefined) r.oomKills = kills;
  }
  if (run.pidsDir) {
    const refused = keyed(read(`${dir}/pids.events`), 'max');
    if (refused !== undefined) r.pidsRefused = refused;
  }
  const usec = keyed(read(`${dir}/cpu.stat`), 'usage_usec');
  if (usec !== undefined) r.cpuNs = usec * 1000;
  run.dirs.length = 0;
  try {
    writeFileSync(`${dir}/cgroup.kill`, '1'); // anything still inside (there should be nothing) goes first
  } catch {
    /* no cgroup.kill before Linux 5.14, or the group is already gone */
  }
  removeDir(dir, 0);
  return r;
}
