// cgroup v1 (root on a v1 or hybrid host): a memory, pids and cpuacct group per run; read back, then removed.
import { mkdirSync, readdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import { debuglog } from 'node:util';
import { SandboxOptionError } from '../errors.js';
import { processHeadroom, type ResolvedLimits } from './limits.js';

const debug = debuglog('cubicle');

export interface CgroupReport {
  peakMemoryBytes?: number;
  /** memory.oom_control's oom_kill count, plus OOM events seen (the OOM killer is disabled; stage 0 kills). */
  oomKills?: number;
  failcnt?: number;
  /** Forks the pids controller refused. */
  pidsRefused?: number;
  cpuNs?: number;
}

/** A run's cgroup(s), v1 (one per controller, joined by stage 0) or v2 (one, init cloned into it). */
export interface CgroupRun {
  kind: 'v1' | 'v2';
  dirs: string[];
  /** Set when the memory limit is enforced by the group. */
  memoryDir?: string;
  /** Set when the process limit is enforced by the group. */
  pidsDir?: string;
  /** The group's CPU usage file (v1 cpuacct.usage in ns, v2 cpu.stat usage_usec). */
  cpuFile?: string;
  /** v2: the directory init is cloned into. */
  intoDir?: string;
  /** v2: memory.events, watched for OOM. */
  eventsFile?: string;
  readBack: { memory?: number; pids?: number };
  /** Reads the counters and removes the groups; call once, after the helper has exited. */
  finish(): CgroupReport;
}

let mounts: Map<string, string> | undefined;
const cleaned = new Set<string>(); // hierarchies already swept for stale groups in this process

/** v1 controller name -> mount point, from /proc/self/mountinfo. */
function v1Mounts(): Map<string, string> {
  if (mounts) return mounts;
  mounts = new Map();
  try {
    for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
      const [left, right] = line.split(' - ');
      if (!left || !right) continue;
      const [fstype, , superOpts] = right.split(' ');
      if (fstype !== 'cgroup' || !superOpts) continue;
      const point = left.split(' ')[4]!;
      for (const c of superOpts.split(',')) if (['memory', 'pids', 'cpuacct'].includes(c)) mounts.set(c, point);
    }
  } catch {
    /* no mountinfo: no cgroups */
  }
  return mounts;
}

/** true, or why cgroup v1 cannot be used by this process. */
export function cgroupV1Available(): true | string {
  if (process.geteuid?.() !== 0) return 'cgroup v1 groups can only be created by root (a rootless caller has no delegated v1 hierarchy)';
  const m = v1Mounts();
  if (!m.has('memory') && !m.has('pids') && !m.has('cpuacct')) return 'no cgroup v1 memory, pids or cpuacct controller is mounted (a cgroup v2 host needs a delegated v2 subtree, not supported yet)';
  return true;
}

const write = (path: string, value: string | number): void => writeFileSync(path, `${value}\n`);
const readNum = (path: string): number | undefined => {
  try {
    return Number(readFileSync(path, 'utf8').trim());
  } catch {
    return undefined;
  }
};
const readKeyed = (path: string, key: string): number | undefined => {
  try {
    const m = new RegExp(`^${key} (\\d+)$`, 'm').exec(readFileSync(path, 'utf8'));
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
};

/** Creates this run's groups with the limits written and read back; throws SandboxOptionError if refused. */
export function createV1(l: ResolvedLimits, runId: string, dryRun = false): CgroupRun {
  const m = v1Mounts();
  const dirs: string[] = [];
  const run: CgroupRun = { kind: 'v1', dirs, readBack: {}, finish: () => finish(run) };
  try {
    const make = (ctrl: string): string | undefined => {
      const mnt = m.get(ctrl);
      if (!mnt) return undefined;
      const dir = `${mnt}/cubicle/${runId}`;
      if (!dryRun && !cleaned.has(mnt)) {
        cleaned.add(mnt);
        removeStale(`${mnt}/cubicle`);
      }
      if (dryRun) {
        dirs.push(dir);
        return dir;
      }
      mkdirSync(dir, { recursive: true });
      dirs.push(dir);
      return dir;
    };
    if (dryRun) {
      for (const c of ['memory', 'pids', 'cpuacct'] as const) if ((c === 'memory' ? l.memoryBytes : c === 'pids' ? l.processes : 1) !== undefined) make(c);
      if (m.has('cpuacct')) run.cpuFile = `${m.get('cpuacct')}/cubicle/${runId}/cpuacct.usage`;
      run.memoryDir = l.memoryBytes !== undefined && m.has('memory') ? `${m.get('memory')}/cubicle/${runId}` : undefined;
      run.pidsDir = l.processes !== undefined && m.has('pids') ? `${m.get('pids')}/cubicle/${runId}` : undefined;
      run.readBack = { memory: l.memoryBytes, pids: l.processes === undefined ? undefined : l.processes + 2 + processHeadroom(l.processes) };
      run.finish = () => ({});
      return run;
    }
    if (l.memoryBytes !== undefined) {
      const dir = make('memory');
      if (dir) {
        run.memoryDir = dir;
        write(`${dir}/memory.limit_in_bytes`, l.memoryBytes);
        try {
          write(`${dir}/memory.memsw.limit_in_bytes`, l.memoryBytes); // no swap: memory+swap capped at the same value
        } catch {
          write(`${dir}/memory.swappiness`, 0); // no swap accounting on this kernel: keep pages out of swap
        }
        write(`${dir}/memory.oom_control`, 1); // stage 0 kills the whole sandbox on OOM instead of one process
        run.readBack.memory = readNum(`${dir}/memory.limit_in_bytes`)!;
        if (!(run.readBack.memory >= l.memoryBytes - 4096 && run.readBack.memory <= l.memoryBytes + 4096)) throw new Error(`memory.limit_in_bytes read back ${run.readBack.memory}, not ${l.memoryBytes}`);
      }
    }
    if (l.processes !== undefined) {
      const dir = make('pids');
      if (dir) {
        run.pidsDir = dir;
        const max = l.processes + 2 + processHeadroom(l.processes); // stage 0 and init live in the group too
        write(`${dir}/pids.max`, max);
        run.readBack.pids = readNum(`${dir}/pids.max`)!;
        if (run.readBack.pids !== max) throw new Error(`pids.max read back ${run.readBack.pids}, not ${max}`);
      }
    }
    const cpu = make('cpuacct');
    if (cpu) run.cpuFile = `${cpu}/cpuacct.usage`;
    return run;
  } catch (e) {
    finish(run);
    throw new SandboxOptionError('limits', `cannot set up the run's cgroups: ${(e as Error).message}`);
  }
}

function finish(run: CgroupRun): CgroupReport {
  const r: CgroupReport = {};
  if (run.memoryDir) {
    const peak = readNum(`${run.memoryDir}/memory.max_usage_in_bytes`);
    if (peak !== undefined) r.peakMemoryBytes = peak;
    const kills = readKeyed(`${run.memoryDir}/memory.oom_control`, 'oom_kill');
    if (kills !== undefined) r.oomKills = kills;
    const fc = readNum(`${run.memoryDir}/memory.failcnt`);
    if (fc !== undefined) r.failcnt = fc;
  }
  if (run.pidsDir) {
    const refused = readKeyed(`${run.pidsDir}/pids.events`, 'max');
    if (refused !== undefined) r.pidsRefused = refused;
  }
  if (run.cpuFile) {
    const ns = readNum(run.cpuFile);
    if (ns !== undefined) r.cpuNs = ns;
  }
  for (const dir of run.dirs.splice(0).reverse()) removeDir(dir, 0);
  return r;
}

const pause = (ms: number): void => {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
};

/** rmdir, retried: the kernel may still be releasing the last task's charge. A few short synchronous tries
 *  (so a CLI that exits right after still cleans up), then in the background. */
export function removeDir(dir: string, attempt: number): void {
  for (;;) {
    try {
      rmdirSync(dir);
      return;
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') return;
      if (code !== 'EBUSY' || attempt >= 60) {
        debug('cannot remove cgroup %s: %s', dir, code);
        return;
      }
      attempt++;
      if (attempt <= 10) pause(5);
      else {
        setTimeout(() => removeDir(dir, attempt), 50);
        return;
      }
    }
  }
}

/** Groups of runs whose process died (e.g. SIGKILL of the caller) are removed when a later run starts. */
export function removeStale(base: string): void {
  let names: string[];
  try {
    names = readdirSync(base);
  } catch {
    return;
  }
  for (const name of names) {
    const pid = Number(/^(\d+)-\d+-[0-9a-z]+$/.exec(name)?.[1]); // only names cubicle gives its run groups
    if (!pid || pid === process.pid) continue;
    try {
      process.kill(pid, 0);
      continue; // its owner is alive
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ESRCH') continue;
    }
    removeDir(`${base}/${name}`, 50);
  }
}
