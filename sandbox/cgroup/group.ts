// A run's cgroup, whichever version: planned without touching the host, then created, read and removed by the
// supervisor around the helper's lifetime. v1 and v2 (./v1.ts, ./v2.ts) differ only in the plan they make.
import { accessSync, constants, mkdirSync, readdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import { debuglog } from 'node:util';
import { readMountinfo, type MountinfoEntry } from '../host/mountinfo.js';

const debug = debuglog('cubicle');

/** The limits a group enforces: memory in bytes, and the pids.max the run's own processes need (v1 adds stage 0). */
export interface GroupLimits {
  memoryBytes?: number;
  pidsMax?: number;
}

/** One limit file: written, then read back and compared. */
export interface CgroupWrite {
  file: string;
  value: number;
  /** What the read-back value is reported as; absent for files that are only written. */
  readBack?: 'memory' | 'pids';
  /** How far the kernel may round the value (memory rounds to pages). */
  tolerance?: number;
  /** Written instead when `file` cannot be (e.g. no swap accounting); nothing is read back then. */
  orElse?: { file: string; value: number };
  /** A file the kernel may lack (e.g. memory.swap.max without swap accounting): a failure is not an error. */
  optional?: boolean;
}

/** Everything about a run's cgroup, decided before anything is created. */
export interface CgroupPlan {
  version: 'v1' | 'v2';
  /** Directories to create, in order (v1: one per controller; v2: one). */
  dirs: string[];
  /** v2: directories from the hierarchy's root (or the delegated parent) down to the run's parent, each of
   *  which must delegate these controllers in cgroup.subtree_control. */
  enable: { dirs: string[]; controllers: string[] };
  writes: CgroupWrite[];
  /** Parents whose stale run groups (left by a caller that died) are swept before this run's is made. */
  sweep: string[];
  /** Set when the group enforces the memory limit. */
  memoryDir?: string;
  /** Set when the group enforces the process limit. */
  pidsDir?: string;
  /** What the helper is told: the dirs stage 0 joins (v1), the dir init is cloned into (v2), the files it watches
   *  (memoryFile: v2 memory.current, sampled by init). */
  helper: { join: string[]; into?: string; cpuFile?: string; oomWatchDir?: string; eventsFile?: string; memoryFile?: string };
  /** v2 in a delegated group that holds only the caller: the leaf the caller moves into first (once per process). */
  moveSelfInto?: string;
  /** Reads the counters this version keeps, after the run. */
  collect(): CgroupCounters;
}

/** What the group counted, read once the helper has exited. */
export interface CgroupCounters {
  peakMemoryBytes?: number;
  /** Processes the kernel's OOM killer killed in the group. */
  oomKills?: number;
  /** Forks the pids controller refused. */
  pidsRefused?: number;
  cpuUs?: number;
  /** The most payload tasks alive at once (v2 pids.peak, Linux 6.1+, less init). */
  peakTasks?: number;
}

/** Values the kernel read back after setup. */
export interface CgroupReadBack {
  memory?: number;
  pids?: number;
}

/** A cgroup file operation the host refused: which syscall, on which path, with which errno. */
export class CgroupSetupError extends Error {
  constructor(
    readonly syscall: string,
    readonly path: string,
    readonly errno: string | undefined,
    message: string,
  ) {
    super(message);
    this.name = 'CgroupSetupError';
  }
}

/** This process's mount table; empty when it cannot be read (then no cgroup is found). */
export function mounts(): readonly MountinfoEntry[] {
  try {
    return readMountinfo();
  } catch {
    return [];
  }
}

const codeOf = (e: unknown): string | undefined => (e as NodeJS.ErrnoException).code;

/** Reads a cgroup file; undefined when it is missing or unreadable. */
export function readText(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
}

/** The whitespace-separated words of a cgroup file (controllers, pids); none when it is missing. */
export const words = (text: string | undefined): string[] => (text ?? '').trim().split(/\s+/).filter(Boolean);

/** Whether this user may access `path` in `mode` (W_OK by default). */
export function mayAccess(path: string, mode = constants.W_OK): boolean {
  try {
    accessSync(path, mode);
    return true;
  } catch {
    return false;
  }
}

/** A file holding one number (e.g. memory.peak); undefined when missing or not a number. */
export function readNumber(path: string): number | undefined {
  const t = readText(path)?.trim();
  const n = t === undefined || t === '' ? NaN : Number(t);
  return Number.isFinite(n) ? n : undefined;
}

/** The number after `key ` in a keyed file (memory.events, pids.events, cpu.stat, memory.oom_control). */
export function readKeyed(path: string, key: string): number | undefined {
  const m = new RegExp(`^${key} (\\d+)$`, 'm').exec(readText(path) ?? '');
  return m ? Number(m[1]) : undefined;
}

/** The leaf this process moved itself into (at most one per process). */
let movedInto: string | undefined;

/** Moves this whole process (every thread) into `leaf`, once: its group then holds no process of its own. */
function moveSelfOnce(leaf: string): void {
  if (movedInto === leaf) return;
  try {
    mkdirSync(leaf, { recursive: true });
  } catch (e) {
    throw new CgroupSetupError('mkdir', leaf, codeOf(e), `cannot create the leaf group ${leaf} for this process`);
  }
  try {
    writeFileSync(`${leaf}/cgroup.procs`, `${process.pid}\n`);
  } catch (e) {
    throw new CgroupSetupError('write', `${leaf}/cgroup.procs`, codeOf(e), `cannot move this process (pid ${process.pid}) into ${leaf}`);
  }
  movedInto = leaf;
}

/** Creates the planned group: sweeps stale groups, moves the caller into its leaf (once), enables controllers,
 *  makes the dirs, writes every limit and reads it back. Throws CgroupSetupError, after removing what it made. */
export function createCgroup(plan: CgroupPlan): CgroupReadBack {
  for (const parent of plan.sweep) removeStaleGroups(parent);
  if (plan.moveSelfInto) moveSelfOnce(plan.moveSelfInto);
  const made: string[] = [];
  try {
    for (const dir of plan.enable.dirs) enableControllers(dir, plan.enable.controllers);
    for (const dir of plan.dirs) {
      try {
        mkdirSync(dir, { recursive: true });
      } catch (e) {
        throw new CgroupSetupError('mkdir', dir, codeOf(e), `cannot create the run's cgroup ${dir}`);
      }
      made.push(dir);
    }
    const readBack: CgroupReadBack = {};
    for (const w of plan.writes) {
      try {
        writeFileSync(w.file, `${w.value}\n`);
      } catch (e) {
        if (w.optional) continue;
        if (w.orElse) {
          writeLimit(w.orElse.file, w.orElse.value);
          continue;
        }
        throw new CgroupSetupError('write', w.file, codeOf(e), `cannot write ${w.value} to ${w.file}`);
      }
      if (!w.readBack) continue;
      const got = readNumber(w.file);
      if (got === undefined || Math.abs(got - w.value) > (w.tolerance ?? 0))
        throw new CgroupSetupError('read', w.file, undefined, `${w.file} read back ${got ?? 'nothing'}, not ${w.value}`);
      readBack[w.readBack] = got;
    }
    return readBack;
  } catch (e) {
    for (const dir of made.reverse()) removeGroupDir(dir, 0);
    throw e;
  }
}

function writeLimit(file: string, value: number): void {
  try {
    writeFileSync(file, `${value}\n`);
  } catch (e) {
    throw new CgroupSetupError('write', file, codeOf(e), `cannot write ${value} to ${file}`);
  }
}

/** v2: makes `dir` delegate the controllers to its children (a controller it lacks is a setup error). */
function enableControllers(dir: string, controllers: readonly string[]): void {
  try {
    mkdirSync(dir, { recursive: true });
  } catch (e) {
    throw new CgroupSetupError('mkdir', dir, codeOf(e), `cannot create the cgroup ${dir}`);
  }
  const enabled = (readText(`${dir}/cgroup.subtree_control`) ?? '').trim().split(/\s+/);
  const missing = controllers.filter((c) => !enabled.includes(c));
  if (!missing.length) return;
  const file = `${dir}/cgroup.subtree_control`;
  try {
    writeFileSync(file, missing.map((c) => `+${c}`).join(' '));
  } catch (e) {
    throw new CgroupSetupError(
      'write',
      file,
      codeOf(e),
      `cannot enable the ${missing.join(', ')} controller${missing.length > 1 ? 's' : ''} in ${dir}`,
    );
  }
}

/** Removes the run's group: v2 first kills anything still inside (there should be nothing), then rmdir,
 *  children before parents. Never throws; a group still busy is retried in the background. */
export function removeCgroup(plan: CgroupPlan): void {
  if (plan.version === 'v2' && plan.dirs[0]) {
    try {
      writeFileSync(`${plan.dirs[0]}/cgroup.kill`, '1');
    } catch {
      /* no cgroup.kill before Linux 5.14, or the group is gone already */
    }
  }
  for (const dir of [...plan.dirs].reverse()) removeGroupDir(dir, 0);
}

const pause = (ms: number): void => {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
};

/** rmdir, retried: the kernel may still be releasing the last task's charge. A few short synchronous tries
 *  (so a CLI that exits right after still cleans up), then in the background. */
function removeGroupDir(dir: string, attempt: number): void {
  for (;;) {
    try {
      rmdirSync(dir);
      return;
    } catch (e) {
      const code = codeOf(e);
      if (code === 'ENOENT') return;
      if (code !== 'EBUSY' || attempt >= 60) {
        debug('cannot remove cgroup %s: %s', dir, code);
        return;
      }
      attempt++;
      if (attempt <= 10) pause(5);
      else {
        setTimeout(() => removeGroupDir(dir, attempt), 50); // keeps a CLI alive (at most ~2.5 s) until it is gone
        return;
      }
    }
  }
}

/** Names cubicle gives its groups, each holding its owner's pid so a stale group's owner can be checked: run groups
 *  (see newRunId) and the leaf a caller moved itself into (see delegation.ts). */
const OWN_GROUP = /^(?:(\d+)-\d+-[0-9a-z]+|caller-(\d+))$/;

/** Whether a group's owner still runs: a zombie (killed, not yet reaped by its parent) does not. */
function ownerAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (e) {
    return codeOf(e) !== 'ESRCH';
  }
  const stat = readText(`/proc/${pid}/stat`);
  return stat === undefined || stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
}

/** Groups whose owner died (e.g. SIGKILL of the caller); only names cubicle gives its groups. Cheap (one readdir),
 *  so it runs before every run: a caller killed mid-run leaves its group for the next run to remove. */
export function removeStaleGroups(parent: string): void {
  let names: string[];
  try {
    names = readdirSync(parent);
  } catch {
    return;
  }
  for (const name of names) {
    const m = OWN_GROUP.exec(name);
    const pid = Number(m?.[1] ?? m?.[2]);
    if (!pid || pid === process.pid) continue;
    if (ownerAlive(pid)) continue;
    // A run group's processes die with its helper; anything left is killed (v2). A caller's leaf may hold processes
    // its owner started outside any sandbox: never killed, only removed once empty.
    if (m?.[1] !== undefined) {
      try {
        writeFileSync(`${parent}/${name}/cgroup.kill`, '1');
      } catch {
        /* v1, before Linux 5.14, or gone already */
      }
    }
    removeChildGroups(`${parent}/${name}`);
    removeGroupDir(`${parent}/${name}`, 50);
  }
}

/** A run group's child groups (v1: the payload's memory group), removed before it. */
function removeChildGroups(dir: string): void {
  try {
    for (const e of readdirSync(dir, { withFileTypes: true })) if (e.isDirectory()) removeGroupDir(`${dir}/${e.name}`, 50);
  } catch {
    /* gone already */
  }
}
