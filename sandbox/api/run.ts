// The public entry points: runSandboxed (buffered) and spawnSandboxed (streaming). Orchestration only:
// prepare (pure) -> supervise (side effects, a record) -> judge (pure) -> resolve or reject.
import type { Readable, Writable } from 'node:stream';
import { judge } from '../outcome/judge.js';
import type { RunRecord } from '../outcome/record.js';
import { toSandboxError } from '../outcome/render.js';
import { supervise } from '../supervisor/supervisor.js';
import type { SandboxOptions, SandboxResult } from '../types.js';
import { prepareRun, type PreparedRun } from './prepare.js';

/** Judges a finished run; rejects with the result as a SandboxError when it failed (unless reject: false). */
function settle(p: PreparedRun, record: RunRecord): SandboxResult {
  const r = judge(record, p.judge);
  if (!r.failed || !p.options.reject) return r;
  throw toSandboxError(r, record.failure?.kind === 'launch' || record.failure?.kind === 'protocol' ? record.failure.error : undefined);
}

/**
 * Runs a command in a fresh sandbox and resolves with its output and usage. A string runs via /bin/sh -c
 * inside; an array is exec'd directly. Invalid options throw synchronously; a failed run rejects with a
 * SandboxError carrying the result, unless `reject: false`.
 */
export function runSandboxed(cmd: string | readonly string[], options?: SandboxOptions): Promise<SandboxResult> {
  const p = prepareRun(cmd, options);
  return supervise(p.supervise, true).record.then((record) => settle(p, record));
}

export interface SandboxProcess {
  /** The helper's host pid. */
  readonly pid: number | undefined;
  readonly stdin: Writable | null;
  readonly stdout: Readable | null;
  readonly stderr: Readable | null;
  /** Settles when the sandbox is gone; stdout/stderr are not buffered here (read the streams). */
  readonly result: Promise<SandboxResult>;
  /** SIGTERM asks every process inside to stop (SIGKILL after forceKillAfterDelay); SIGKILL ends it at once. */
  kill(signal?: 'SIGTERM' | 'SIGKILL'): void;
}

/** Starts a command in a fresh sandbox and returns its streams; `stdin: 'pipe'` gives a writable stdin. */
export function spawnSandboxed(cmd: string | readonly string[], options?: SandboxOptions): SandboxProcess {
  const p = prepareRun(cmd, options);
  const s = supervise(p.supervise, false);
  const result = s.record.then((record) => settle(p, record));
  result.catch(() => {}); // the caller may only read streams; a rejection still reaches whoever awaits result
  return { pid: s.pid, stdin: s.stdin, stdout: s.stdout, stderr: s.stderr, result, kill: (signal) => s.kill(signal) };
}
