// `cubicle run -t`: the sandbox's own terminal relayed to the caller's. The caller's terminal is put in raw mode
// (restored on every way out: the end of the run, an error, a signal, the process exiting), every byte typed goes
// in (Ctrl-C included: the terminal inside turns it into SIGINT for its foreground process group), what the
// terminal inside shows comes out, and the window size is passed at the start and on every resize.
import type { ReadStream, WriteStream } from 'node:tty';
import { spawnSandboxed } from '../api/run.js';
import type { SandboxOptions, SandboxResult, TerminalSize } from '../types.js';

/** The caller's terminal as a window: stdout when it is one, else stderr; undefined when neither is. */
function window(): WriteStream | undefined {
  for (const s of [process.stdout, process.stderr]) if (s.isTTY) return s as WriteStream;
  return undefined;
}

const sizeOf = (w: WriteStream | undefined): TerminalSize | undefined => {
  const [columns, rows] = w?.getWindowSize() ?? [0, 0];
  return columns > 0 && rows > 0 ? { columns: Math.min(columns, 65535), rows: Math.min(rows, 65535) } : undefined;
};

/** Puts the caller's stdin terminal in raw mode; returns the function that restores it (idempotent). */
function enterRawMode(input: ReadStream): () => void {
  if (!input.isTTY) return () => {};
  input.setRawMode(true);
  let restored = false;
  const restore = (): void => {
    if (restored) return;
    restored = true;
    process.off('exit', restore);
    try {
      input.setRawMode(false);
    } catch {
      /* the terminal is gone (hung up): nothing to restore */
    }
  };
  process.on('exit', restore); // an exit from anywhere else (an uncaught error) still restores it
  return restore;
}

/** Runs `command` on a terminal inside the sandbox, relayed to this process's terminal. */
export async function runInTerminal(command: string[], options: SandboxOptions): Promise<SandboxResult> {
  const input = process.stdin as ReadStream;
  const output = process.stdout;
  const win = window();
  const proc = spawnSandboxed<SandboxOptions>(command, {
    ...options,
    reject: false,
    tty: sizeOf(win) ?? true,
    stdin: 'pipe',
    stdout: 'pipe',
  });
  const restore = enterRawMode(input);
  let interrupts = 0;
  const onSignal = (): void => proc.kill(++interrupts > 1 ? 'SIGKILL' : 'SIGTERM');
  const onResize = (): void => {
    const size = sizeOf(win);
    if (size) proc.resize(size.columns, size.rows);
  };
  const onOutputError = (): void => {
    proc.stdout?.unpipe(output); // the reader went away: what is shown is dropped
    proc.stdout?.resume();
  };
  try {
    for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(sig, onSignal);
    win?.on('resize', onResize);
    output.on('error', onOutputError);
    if (proc.stdin) input.pipe(proc.stdin);
    const shown = new Promise<void>((resolve) => {
      if (!proc.stdout) return resolve();
      proc.stdout.on('end', resolve).on('close', resolve);
      proc.stdout.pipe(output, { end: false });
    });
    const r = (await proc.result) as SandboxResult;
    await shown;
    return r;
  } finally {
    if (proc.stdin) input.unpipe(proc.stdin);
    input.pause(); // a paused stdin no longer keeps this process alive
    for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.off(sig, onSignal);
    win?.off('resize', onResize);
    output.off('error', onOutputError);
    restore();
  }
}
