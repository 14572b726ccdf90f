/*
 * The per-user registry of named, running sandboxes: one JSON entry per name in runtimeDir('sandboxes') (0700, the
 * user's own), written atomically (a temporary file renamed over it), removed when the sandbox ends. An entry is
 * only believed while the processes it names still run: each pid is stored with its start time (field 22 of
 * /proc/PID/stat), so a pid the kernel gave to another process never matches, and a supervisor that crashed leaves
 * an entry nobody lists (it is removed the next time it is read). Beside each entry: NAME.sock, the helper's join
 * socket, and NAME.result.json, the final result of a named run for `wait` (kept until the name is used again, at
 * most a day).
 */
import { closeSync, linkSync, openSync, readdirSync, readFileSync, renameSync, statSync, unlinkSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { ErrorCode, SandboxHostError, SandboxOptionError, type ErrorCodeValue } from '../errors.js';
import { runtimeDir, RuntimeDirError } from './runtime-dir.js';
import type { AppliedLimit, HostIds, NotifyMode } from '../types.js';

/** Names: what a file name and a socket path can hold, in any locale. */
const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;
const ENTRY_VERSION = 1;

/** A process, as the registry remembers it: its pid and when it started (clock ticks since boot). */
export interface ProcessRef {
  pid: number;
  start: number;
}

/** A plan op as the entry stores it (see plan/ops.ts). */
export interface StoredOp {
  readonly op: string;
  readonly args: readonly string[];
}

/** One registry entry. */
export interface SandboxEntry {
  version: number;
  name: string;
  /** starting: reserved, not ready yet; running: the payload was started. */
  state: 'starting' | 'running';
  /** The Node process that supervises the sandbox (the CLI, a detached supervisor, or a library caller). */
  supervisor: ProcessRef;
  helper?: ProcessRef;
  /** The sandbox's init (PID 1 inside) as the host sees it. */
  init?: ProcessRef;
  payloadPid?: number;
  startedAt: string;
  owner: number;
  command: string[];
  detached: boolean;
  /** Namespace inode numbers (as /proc/PID/ns/NAME links show them: NAME:[INODE]). */
  namespaces?: Record<string, number>;
  /** The limits in force: value, unit and the mechanism that enforces each (as a run's result has them). */
  limits: Partial<Record<string, AppliedLimit>>;
  cgroup?: { version: 'v1' | 'v2'; dirs: string[]; join: string[] };
  hostIds: HostIds;
  forceKillAfterDelay: number;
  /** The seccomp policy in force (its program is join.bpf). */
  seccomp?: { policy: string; mode: 'enforce' | 'log'; notify: NotifyMode };
  /** What exec needs to run a command as the payload runs: the payload's ops (ids, rlimits, cwd, env, PATH, seccomp
   *  mode) and the same seccomp program (base64). */
  join: { socket: string; ops: StoredOp[]; bpf: string };
}

/** A name that cannot be used (invalid, taken) or that names no running sandbox of this user. */
export class SandboxNameError extends SandboxOptionError {
  constructor(message: string, code: ErrorCodeValue = ErrorCode.invalidOption) {
    super('name', message, code);
  }
}

/** Throws unless `name` can name a sandbox. */
export function checkSandboxName(name: unknown): string {
  if (typeof name !== 'string' || !NAME_RE.test(name))
    throw new SandboxNameError(
      `sandbox name ${JSON.stringify(name)} must be 1-63 letters, digits, '_', '.' or '-', starting with a letter or digit`,
    );
  return name;
}

/** The registry directory (made if missing); a runtime directory that is not the user's own is a host error. */
export function registryDir(): string {
  try {
    return runtimeDir('sandboxes');
  } catch (e) {
    if (!(e instanceof RuntimeDirError)) throw e;
    throw new SandboxHostError(e.message.slice(0, e.message.length - e.hint.length - 2), e.hint);
  }
}
export const entryPath = (name: string): string => join(registryDir(), `${name}.json`);
export const socketPath = (name: string): string => join(registryDir(), `${name}.sock`);
export const resultPath = (name: string): string => join(registryDir(), `${name}.result.json`);

/** When the process started (clock ticks since boot), or undefined when there is no such process (or only its
 *  zombie, which an orphan stays where nothing reaps it). */
export function processStart(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    // The command name (field 2) may hold spaces and parentheses: the fields after it follow its last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (fields[0] === 'Z' || fields[0] === 'X') return undefined;
    return Number(fields[19]);
  } catch {
    return undefined;
  }
}

export const selfRef = (): ProcessRef => ({ pid: process.pid, start: processStart(process.pid)! });
export const isAlive = (p: ProcessRef | undefined): boolean => p !== undefined && processStart(p.pid) === p.start;

/** Whether the entry still describes a live sandbox (or a reservation whose supervisor still runs). */
export function entryIsLive(e: SandboxEntry): boolean {
  if (e.state === 'running') return isAlive(e.init) && isAlive(e.helper);
  return isAlive(e.supervisor);
}

function writeAtomically(path: string, data: string, exclusive: boolean): void {
  const tmp = `${path}.${process.pid}.${Math.random().toString(36).slice(2)}.tmp`;
  const fd = openSync(tmp, 'wx', 0o600);
  try {
    writeSync(fd, data);
  } finally {
    closeSync(fd);
  }
  try {
    if (exclusive)
      linkSync(tmp, path); // fails with EEXIST: the name is someone else's
    else renameSync(tmp, path);
  } finally {
    if (exclusive) unlinkSync(tmp);
  }
}

function readEntry(path: string): SandboxEntry | undefined {
  try {
    const e = JSON.parse(readFileSync(path, 'utf8')) as SandboxEntry;
    return e && e.version === ENTRY_VERSION && typeof e.name === 'string' ? e : undefined;
  } catch {
    return undefined;
  }
}

const removeQuietly = (path: string): void => {
  try {
    unlinkSync(path);
  } catch {
    /* already gone */
  }
};

/** Removes what a sandbox of this name left (entry and socket); its result file stays. */
export function removeEntry(name: string): void {
  removeQuietly(entryPath(name));
  removeQuietly(socketPath(name));
}

/** The live entry of this name, or undefined (a stale one is removed on the way). */
export function findSandbox(name: string): SandboxEntry | undefined {
  const path = entryPath(checkSandboxName(name));
  const e = readEntry(path);
  if (!e) return undefined;
  if (entryIsLive(e)) return e;
  // Stale: its supervisor died without removing it. Removed only if it is still the same entry.
  if (JSON.stringify(readEntry(path)) === JSON.stringify(e)) removeEntry(name);
  return undefined;
}

/** Reserves a name for a sandbox about to start; throws SandboxNameError when a live sandbox holds it. */
export function reserveName(entry: SandboxEntry): void {
  const path = entryPath(entry.name);
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      writeAtomically(path, JSON.stringify(entry), true);
      removeQuietly(socketPath(entry.name)); // a socket a crashed run left
      removeQuietly(resultPath(entry.name)); // the result of an earlier run of this name
      pruneResults();
      return;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      const held = findSandbox(entry.name);
      if (held)
        throw new SandboxNameError(
          `a sandbox named "${entry.name}" is already running (${held.init ? `init pid ${held.init.pid}` : 'starting'}); ` +
            `choose another name, or end it with: cubicle stop ${entry.name}`,
          ErrorCode.nameTaken,
        );
    }
  }
  throw new SandboxNameError(`the name "${entry.name}" is being taken and released by other runs; try again`, ErrorCode.nameTaken);
}

/** Replaces the entry (the sandbox is ready, or its state changed). */
export function updateEntry(entry: SandboxEntry): void {
  writeAtomically(entryPath(entry.name), JSON.stringify(entry), false);
}

/** Every live sandbox of this user, by name. */
export function listEntries(): SandboxEntry[] {
  const out: SandboxEntry[] = [];
  for (const f of readdirSync(registryDir()).sort()) {
    const m = /^(.+)\.json$/.exec(f);
    if (!m || f.endsWith('.result.json') || !NAME_RE.test(m[1]!)) continue;
    const e = findSandbox(m[1]!);
    if (e) out.push(e);
  }
  return out;
}

/** Results are kept for `wait` this long after their run ended. */
const RESULT_KEEP_MS = 24 * 3600 * 1000;

/** Removes results older than RESULT_KEEP_MS, so names used once do not pile up. */
function pruneResults(): void {
  const dir = registryDir();
  const now = Date.now();
  for (const f of readdirSync(dir)) {
    if (!f.endsWith('.result.json')) continue;
    try {
      if (now - statSync(join(dir, f)).mtimeMs > RESULT_KEEP_MS) unlinkSync(join(dir, f));
    } catch {
      /* removed meanwhile */
    }
  }
}

/** Records a detached run's final result (the JSON `run --json` prints). */
export function writeResult(name: string, json: string): void {
  writeAtomically(resultPath(name), json, false);
}

/** A detached run's recorded result, or undefined. */
export function readResult(name: string): string | undefined {
  try {
    return readFileSync(resultPath(checkSandboxName(name)), 'utf8');
  } catch {
    return undefined;
  }
}
