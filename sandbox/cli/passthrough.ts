// A sandbox run with the CLI's stdio passed through (or sent to files the CLI opened), Ctrl-C forwarded, and
// the files a run writes beside its output (meta, result) written once; shared by `run` and `isolate`.
import { closeSync, createWriteStream, ftruncateSync, writeSync } from 'node:fs';
import { spawnSandboxed } from '../api/run.js';
import { superviseOneSandboxPerProcess } from '../supervisor/launch.js';
import { isolateMeta } from '../outcome/render.js';
import { openRegularForWrite } from '../safe-open.js';
import type { SandboxOptions, SandboxResult } from '../types.js';
import { UsageError } from './usage.js';
import { nodeStream } from '../lazy-require.js';

/** Where one output stream goes: straight through (the CLI's own fd), a file the CLI opened, or nowhere. */
export type OutputTarget = { kind: 'inherit' } | { kind: 'file'; fd: number } | { kind: 'null' };

export interface PassthroughRun {
  command: string[];
  options: SandboxOptions;
  stdout: OutputTarget;
  stderr: OutputTarget | { kind: 'stdout' };
}

/** Where counted output sent to /dev/null goes: read and dropped. */
const devNull = (): NodeJS.WritableStream => new (nodeStream().Writable)({ write: (_c, _e, done) => done() });

/** Runs with stdio passed through; output that must be counted or sent elsewhere goes through this process. */
export async function runPassthrough(run: PassthroughRun): Promise<SandboxResult> {
  superviseOneSandboxPerProcess(); // this process runs this one sandbox, then exits
  // With an output limit, a file or a merge, output goes through this process (counted); otherwise straight through.
  const limited = run.options.limits?.outputLimit !== undefined;
  const mode = (t: PassthroughRun['stderr']): 'pipe' | 'inherit' | 'ignore' =>
    t.kind === 'null' && !limited ? 'ignore' : t.kind === 'inherit' && !limited ? 'inherit' : 'pipe';
  const proc = spawnSandboxed<SandboxOptions>(run.command, {
    ...run.options,
    reject: false,
    stdout: mode(run.stdout),
    stderr: mode(run.stderr),
  });
  const drained: Promise<void>[] = [];
  // Only a stream that goes through this process is made (process.stdout itself is a stream Node builds on first use).
  const sink = (t: OutputTarget, fallback: () => NodeJS.WritableStream): NodeJS.WritableStream =>
    t.kind === 'file' ? createWriteStream('', { fd: t.fd, autoClose: true }) : t.kind === 'null' ? devNull() : fallback();
  const route = (src: NodeJS.ReadableStream | null, dest: NodeJS.WritableStream, owned: boolean): void => {
    if (!src) return;
    src.pipe(dest, { end: owned });
    drained.push(new Promise((r) => (owned ? (dest as NodeJS.EventEmitter).on('close', () => r()) : src.on('end', () => r()))));
  };
  let out: NodeJS.WritableStream | undefined;
  const stdoutSink = (): NodeJS.WritableStream => (out ??= sink(run.stdout, () => process.stdout));
  if (run.stderr.kind === 'stdout') {
    // Both streams into stdout's destination; it is closed once both have ended.
    if (proc.stdout) route(proc.stdout, stdoutSink(), false);
    if (proc.stderr) route(proc.stderr, stdoutSink(), false);
  } else {
    if (proc.stdout) route(proc.stdout, stdoutSink(), run.stdout.kind === 'file');
    if (proc.stderr)
      route(
        proc.stderr,
        sink(run.stderr, () => process.stderr),
        run.stderr.kind === 'file',
      );
  }
  let interrupts = 0;
  const onSignal = (): void => proc.kill(++interrupts > 1 ? 'SIGKILL' : 'SIGTERM');
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  process.on('SIGHUP', onSignal);
  const r = await proc.result;
  await Promise.all(drained);
  process.off('SIGINT', onSignal);
  process.off('SIGTERM', onSignal);
  process.off('SIGHUP', onSignal);
  if (run.stderr.kind === 'stdout' && run.stdout.kind === 'file') {
    const file = stdoutSink(); // opened even when nothing was routed, so the fd is closed here as before
    await new Promise<void>((done) => file.end(done));
  }
  return r as SandboxResult;
}

/** Opens a file the CLI writes (no symlink anywhere in its path, a regular file); a bad path is a usage error. */
export function openOutputFile(flag: string, path: string): number {
  try {
    return openRegularForWrite(path);
  } catch (e) {
    throw new UsageError(`${flag}: ${(e as Error).message}`);
  }
}

/** Replaces the file's whole content: whatever a sandbox wrote into it meanwhile is gone. */
export function writeAndClose(fd: number, text: string | Iterable<string>): void {
  ftruncateSync(fd, 0);
  let at = 0;
  for (const piece of typeof text === 'string' ? [text] : text) {
    const b = Buffer.from(piece);
    for (let done = 0; done < b.length;) done += writeSync(fd, b, done, b.length - done, at + done);
    at += b.length;
  }
  closeSync(fd);
}

/** Writes the meta file once; afterwards the fd is gone from `meta` (an error later must not touch it). */
export function writeMeta(meta: { fd: number | undefined }, r: SandboxResult): void {
  if (meta.fd === undefined) return;
  const fd = meta.fd;
  meta.fd = undefined;
  writeAndClose(fd, isolateMeta(r));
}
