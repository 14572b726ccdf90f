// The public entry points: runSandboxed (buffered) and spawnSandboxed (streaming). Orchestration only:
// prepare (pure) -> supervise (side effects, a record) -> judge (pure) -> resolve or reject.
import type { Readable, Writable } from 'node:stream';
import { judge } from '../outcome/judge.js';
import type { RunRecord } from '../outcome/record.js';
import { toSandboxError } from '../outcome/render.js';
import { supervise } from '../supervisor/supervisor.js';
import { SandboxOptionError } from '../errors.js';
import { checkTerminalSize } from '../options/resolve.js';
import type { SandboxOptions, SandboxResult, StreamedResult, TerminalOf } from '../types.js';
import { execInSandbox, type ExecOptions } from './exec.js';
import { recordResult, untilRunning } from './stop-wait.js';
import { SandboxNameError } from '../host/registry.js';
import { prepareRun, type PreparedRun } from './prepare.js';

/** Judges a finished run; rejects with the result as a SandboxError when it failed (unless reject: false). A named
 *  run's result is recorded for `cubicle wait NAME`. */
function settle(p: PreparedRun, record: RunRecord): SandboxResult {
  const r = judge(record, p.judge);
  if (p.options.name !== undefined) recordResult(p.options.name, r);
  if (!r.failed || !p.options.reject) return r;
  throw toSandboxError(r, record.failure?.kind === 'launch' || record.failure?.kind === 'protocol' ? record.failure.error : undefined);
}

/**
 * Runs a command in a fresh sandbox and resolves with its output and usage. A string runs via /bin/sh -c
 * inside; an array is exec'd directly. Invalid options throw synchronously; a failed run rejects with a
 * SandboxError carrying the result, unless `reject: false`.
 */
export function runSandboxed<O extends SandboxOptions = Record<never, never>>(
  cmd: string | readonly string[],
  options?: O,
): Promise<SandboxResult<O>> {
  const p = prepareRun(cmd, options);
  // The result's shape follows the options (judge() decodes output by encoding and stream mode): only the
  // static type is narrowed here.
  return supervise(p.supervise, true).record.then((record) => settle(p, record) as unknown as SandboxResult<O>);
}

/** A stream of the sandbox: present when the option asks for a pipe (`Default` is the option's default mode). */
type PipedStream<O extends SandboxOptions, K extends 'stdin' | 'stdout' | 'stderr', S, Default> = (
  K extends keyof O ? (O[K] extends infer V ? (V extends undefined ? Default : V) : never) : Default
) extends infer Mode
  ? Mode extends 'pipe'
    ? S
    : null
  : never;

/** `S` without a terminal (`T` is the tty option), null with one; either where it may be both. */
type UnlessTerminal<T, S> = T extends false ? S : null;

export interface SandboxProcess<O extends SandboxOptions = SandboxOptions> {
  /** The helper's host pid. */
  readonly pid: number | undefined;
  /** Writable with `stdin: 'pipe'`, else null. */
  readonly stdin: PipedStream<O, 'stdin', Writable, 'ignore'>;
  /** Readable unless `stdout` is 'inherit' or 'ignore'. */
  readonly stdout: PipedStream<O, 'stdout', Readable, 'pipe'>;
  /** Readable unless `stderr` is 'inherit' or 'ignore', or a terminal (`tty`) shows it as part of stdout. */
  readonly stderr: UnlessTerminal<TerminalOf<O>, PipedStream<O, 'stderr', Readable, 'pipe'>>;
  /** Settles when the sandbox is gone; stdout/stderr are not buffered here (read the streams). */
  readonly result: Promise<StreamedResult<O>>;
  /** SIGTERM asks every process inside to stop (SIGKILL after forceKillAfterDelay); SIGKILL ends it at once. */
  kill(signal?: 'SIGTERM' | 'SIGKILL'): void;
  /** With `tty`: the terminal's new window size, in cells (1-65535 each); the foreground process group inside gets
   *  SIGWINCH. Throws a SandboxOptionError without a terminal; does nothing once the sandbox is gone. */
  resize(columns: number, rows: number): void;
  /** Runs another command inside this sandbox once its payload runs (a named sandbox only: spawnSandboxed(cmd,
   *  { name })); resolves with a result shaped like runSandboxed's. */
  exec(cmd: string | readonly string[], options?: ExecOptions): Promise<SandboxResult>;
}

/** Starts a command in a fresh sandbox and returns its streams; `stdin: 'pipe'` gives a writable stdin. */
export function spawnSandboxed<O extends SandboxOptions = Record<never, never>>(
  cmd: string | readonly string[],
  options?: O,
): SandboxProcess<O> {
  const p = prepareRun(cmd, options);
  const s = supervise(p.supervise, false);
  const result = s.record.then((record) => settle(p, record) as unknown as StreamedResult<O>);
  result.catch(() => {}); // the caller may only read streams; a rejection still reaches whoever awaits result
  // Which streams exist follows the options exactly as the types say (the supervisor pipes what they ask for).
  const resize = (columns: number, rows: number): void => {
    if (!p.options.tty) throw new SandboxOptionError('tty', 'resize() needs a terminal: start the sandbox with tty: true');
    const size = checkTerminalSize('resize(columns, rows)', { columns, rows });
    s.resize(size.columns, size.rows);
  };
  const name = p.options.name;
  const exec = async (c: string | readonly string[], o?: ExecOptions): Promise<SandboxResult> => {
    if (name === undefined)
      throw new SandboxNameError('exec needs a named sandbox: start it with spawnSandboxed(cmd, { name }) to enter it later');
    const ended = await untilRunning(name, result);
    if (ended) throw new SandboxNameError(`the sandbox "${name}" ended before the command could be run in it`);
    return execInSandbox(name, c, o);
  };
  const proc: SandboxProcess = {
    pid: s.pid,
    stdin: s.stdin,
    stdout: s.stdout,
    stderr: s.stderr,
    result,
    kill: (signal) => s.kill(signal),
    resize,
    exec,
  };
  return proc as unknown as SandboxProcess<O>;
}
