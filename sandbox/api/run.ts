// The public entry points: runSandboxed (buffered) and spawnSandboxed (streaming).
import type { Readable, Writable } from 'node:stream';
import { supervise } from '../supervisor/supervisor.js';
import type { SandboxOptions } from './options.js';
import { prepareRun } from './prepare.js';
import type { SandboxResult } from './result.js';

/**
 * Runs a command in a fresh sandbox and resolves with its output and usage. A string runs via /bin/sh -c
 * inside; an array is exec'd directly. Invalid options throw synchronously; a failed run rejects with a
 * SandboxError carrying the result, unless `reject: false`.
 */
export function runSandboxed(cmd: string | readonly string[], options?: SandboxOptions): Promise<SandboxResult> {
  const p = prepareRun(cmd, options);
  return supervise(p, true).result;
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
  const s = supervise(p, false);
  s.result.catch(() => {}); // the caller may only read streams; a rejection still reaches whoever awaits result
  return s;
}
