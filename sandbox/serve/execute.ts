// Runs a checked go-judge request with the library and answers go-judge's Result array. Commands without
// pipeMapping go through the runner (runSandboxed, or a warm pool with its signature); commands joined by
// pipeMapping are spawned together and their stdio connected here, through Node streams whose backpressure bounds
// what is buffered between them (a writer whose reader stops reading blocks in its pipe until its time limit).
import { closeSync, fstatSync, readSync } from 'node:fs';
import { constants as osConstants } from 'node:os';
import type { Readable, Writable } from 'node:stream';
import { spawnSandboxed } from '../api/run.js';
import { SandboxOptionError } from '../errors.js';
import type { LimitOptions, SandboxOptions, SandboxResult, StreamedResult } from '../types.js';
import { FileStoreFullError, type FileStore } from './file-store.js';
import { openRegularForRead } from '../safe-open.js';
import { RequestError, type CopyInSource, type JudgeCmd, type JudgePipe, type JudgeRequest, type OutputSink } from './request.js';

/** Runs one command in a fresh sandbox: runSandboxed, or anything with its signature (a warm pool). */
export interface Runner {
  run(cmd: readonly string[], options: SandboxOptions): Promise<SandboxResult>;
  /** Sandboxes kept ready, reported by /version (0 or absent: none). */
  size?: number;
  /** A warm pool's counters, reported by /version as `poolStats`. */
  stats?(): {
    maxStarting: number;
    refillIdleMs: number;
    ready: number;
    starting: number;
    hits: number;
    misses: number;
    missReasons: Record<string, number>;
    failures: number;
  };
}

export const STATUSES = [
  'Accepted',
  'Memory Limit Exceeded',
  'Time Limit Exceeded',
  'Output Limit Exceeded',
  'File Error',
  'Nonzero Exit Status',
  'Signalled',
  'Dangerous Syscall',
  'Internal Error',
] as const;
export type JudgeStatus = (typeof STATUSES)[number];

export type FileErrorType =
  'CopyInOpenFile' | 'CopyOutOpen' | 'CopyOutNotRegularFile' | 'CopyOutSizeExceeded' | 'CopyOutCreateFile' | 'CollectSizeExceeded';

export interface JudgeFileError {
  name: string;
  type: FileErrorType;
  message?: string;
}

/** go-judge's Result: times in ns, memory in bytes. */
export interface JudgeResult {
  status: JudgeStatus;
  error?: string;
  exitStatus: number;
  time: number;
  memory: number;
  runTime: number;
  procPeak?: number;
  files?: Record<string, string>;
  fileIds?: Record<string, string>;
  fileError?: JudgeFileError[];
}

export interface ExecuteContext {
  runner: Runner;
  /** The cached files; undefined where there is none (a worker): fileId and copyOutCached then fail the command. */
  store: FileStore | undefined;
  /** Options every sandbox starts from (e.g. runAs, policy); a command's own limits and files win. */
  base: SandboxOptions;
  /** Wall limit (ms) for a command that gives no clockLimit, and the most any may ask. */
  defaultClockMs: number;
  maxClockMs: number;
  /** Memory limit (bytes) for a command that gives no memoryLimit. */
  defaultMemory: number;
}

const NS_PER_MS = 1e6;

/** What a command needs before it runs: its copy-in files resolved, or the file errors that stop it. */
type Prepared =
  { ok: true; files: Record<string, { content: Buffer; mode: number }>; stdin: Buffer | undefined } | { ok: false; result: JudgeResult };

const emptyResult = (status: JudgeStatus, extra: Partial<JudgeResult> = {}): JudgeResult => ({
  status,
  exitStatus: 0,
  time: 0,
  memory: 0,
  runTime: 0,
  ...extra,
});

/** The most bytes one `src` file may have (the work directory's default size). */
const maxSrcBytes = 64 << 20;

/** Reads a host file named by `src`: no symlink anywhere in its path, a regular file, at most `max` bytes. */
function readHostFile(path: string, max: number): Buffer {
  const fd = openRegularForRead(path);
  try {
    const size = fstatSync(fd).size;
    if (size > max) throw new Error(`${path} holds ${size} bytes, more than ${max}`);
    const data = Buffer.alloc(size);
    let got = 0;
    while (got < size) {
      const n = readSync(fd, data, got, size - got, got);
      if (n === 0) break;
      got += n;
    }
    return data.subarray(0, got);
  } finally {
    closeSync(fd);
  }
}

function prepare(c: JudgeCmd, store: FileStore | undefined): Prepared {
  const files: Record<string, { content: Buffer; mode: number }> = Object.create(null) as Record<string, { content: Buffer; mode: number }>;
  const errors: JudgeFileError[] = [];
  const lookup = (name: string, id: string): Buffer | undefined => {
    const f = store?.get(id);
    if (!f)
      errors.push({
        name,
        type: 'CopyInOpenFile',
        message: store ? `no cached file has id ${JSON.stringify(id)}` : 'this runner has no file store: send content instead of a fileId',
      });
    return f?.data;
  };
  const source = (name: string, src: CopyInSource): Buffer | undefined => {
    if (src.kind === 'content') return src.data;
    if (src.kind === 'fileId') return lookup(name, src.id);
    try {
      return readHostFile(src.path, maxSrcBytes);
    } catch (e) {
      errors.push({ name, type: 'CopyInOpenFile', message: (e as Error).message });
      return undefined;
    }
  };
  // Copied-in files are executable, as go-judge makes them: a compiled program runs without a chmod.
  for (const [name, src] of c.copyIn) {
    const data = source(name, src);
    if (data) files[name] = { content: data, mode: 0o755 };
  }
  let stdin: Buffer | undefined;
  if (c.stdin.kind === 'content' || c.stdin.kind === 'fileId' || c.stdin.kind === 'src') stdin = source('stdin', c.stdin);
  if (c.copyOutCached.length && !store)
    errors.push({ name: c.copyOutCached[0]!.name, type: 'CopyOutCreateFile', message: 'this runner has no file store: use copyOut' });
  if (errors.length) return { ok: false, result: emptyResult('File Error', { error: errors[0]!.message, fileError: errors }) };
  return { ok: true, files, stdin };
}

const collectorName = (s: OutputSink): string | undefined => (s.kind === 'collect' ? s.name : undefined);

/** The sandbox options for one command (limits converted from ns; collectors and copy-out by name). */
function optionsFor(c: JudgeCmd, p: Extract<Prepared, { ok: true }>, ctx: ExecuteContext): SandboxOptions {
  const limits: LimitOptions = { ...ctx.base.limits };
  if (c.cpuLimitNs !== undefined) limits.cpuTime = Math.max(1, Math.ceil(c.cpuLimitNs / NS_PER_MS));
  const clockMs = c.clockLimitNs !== undefined ? Math.ceil(c.clockLimitNs / NS_PER_MS) : ctx.defaultClockMs;
  limits.wallTime = Math.max(1, Math.min(clockMs, ctx.maxClockMs));
  limits.memory = c.memoryLimit ?? limits.memory ?? ctx.defaultMemory;
  if (c.stackLimit !== undefined) limits.stack = c.stackLimit;
  if (c.procLimit !== undefined) limits.processes = c.procLimit;
  const collectors = new Set([collectorName(c.stdout), collectorName(c.stderr)].filter((n): n is string => n !== undefined));
  const copyOut = [...new Set([...c.copyOut, ...c.copyOutCached].map((f) => f.name).filter((n) => !collectors.has(n)))];
  const maxes = [c.stdout, c.stderr].map((s) => (s.kind === 'collect' ? s.max : 0));
  return {
    ...ctx.base,
    env: { ...ctx.base.env, ...c.env },
    limits,
    files: p.files,
    copyOut,
    ...(c.copyOutMax !== undefined ? { copyOutMax: c.copyOutMax } : {}),
    cwd: '/box',
    ...(p.stdin !== undefined ? { input: p.stdin } : {}),
    stdout: c.stdout.kind === 'none' ? 'ignore' : 'pipe',
    stderr: c.stderr.kind === 'none' ? 'ignore' : 'pipe',
    maxBuffer: Math.max(1, ...maxes),
    encoding: 'buffer',
    reject: false,
  };
}

/** argv as go-judge runs it: a bare name that was copied in runs from the work directory. */
function argvFor(c: JudgeCmd): string[] {
  const [first, ...rest] = c.args as [string, ...string[]];
  return !first.includes('/') && c.copyIn.has(first) ? [`./${first}`, ...rest] : [first, ...rest];
}

const FILE_ERROR_TYPES: [RegExp, FileErrorType][] = [
  [/^too large/, 'CopyOutSizeExceeded'],
  [/^(symlink|not a regular|a directory|hard link)/, 'CopyOutNotRegularFile'],
];
const fileErrorType = (reason: string): FileErrorType => FILE_ERROR_TYPES.find(([re]) => re.test(reason))?.[1] ?? 'CopyOutOpen';

function signalNumber(signal: NodeJS.Signals | null): number {
  return signal ? ((osConstants.signals as Record<string, number>)[signal] ?? 0) : 0;
}

function statusOf(r: SandboxResult | StreamedResult): { status: JudgeStatus; error?: string } {
  switch (r.verdict) {
    case 'ok':
      return { status: 'Accepted' };
    case 'nonzero-exit':
      return { status: 'Nonzero Exit Status' };
    case 'signaled':
      return { status: 'Signalled' };
    case 'cpu-time-limit':
    case 'wall-time-limit':
      return { status: 'Time Limit Exceeded' };
    case 'memory-limit':
      return { status: 'Memory Limit Exceeded' };
    case 'output-limit':
    case 'file-size-limit':
      return { status: 'Output Limit Exceeded' };
    case 'seccomp-violation':
      return { status: 'Dangerous Syscall', error: `system call ${r.violation?.syscall ?? 'unknown'} refused by the policy` };
    case 'process-limit':
      // go-judge has no verdict of its own for this; the program saw fork fail and ended as it chose.
      return r.signal
        ? { status: 'Signalled', error: 'the process limit was reached' }
        : { status: r.exitCode === 0 ? 'Accepted' : 'Nonzero Exit Status', error: 'the process limit was reached' };
    case 'setup-error': {
      const f = r.setupFailure;
      return {
        status: 'Internal Error',
        error: f ? `${f.message}${f.hint ? ` (hint: ${f.hint})` : ''}` : 'the sandbox could not be set up',
      };
    }
    case 'canceled':
      return { status: 'Internal Error', error: 'the run was canceled (the service is stopping)' };
  }
}

interface Outputs {
  stdout: Buffer | undefined;
  stderr: Buffer | undefined;
  /** A collector got more than its max (the run was stopped, or the library's buffer cap hit the larger one). */
  overflow: boolean;
}

/** The go-judge result of a finished run: status, usage in ns, collectors, copy-out as content or cached ids. */
function answer(c: JudgeCmd, r: SandboxResult | StreamedResult, out: Outputs, store: FileStore | undefined): JudgeResult {
  let { status, error } = statusOf(r);
  const files: Record<string, string> = {};
  const raw = new Map<string, Buffer>();
  const fileError: JudgeFileError[] = [];
  let overflow = out.overflow;
  for (const [sink, data] of [
    [c.stdout, out.stdout],
    [c.stderr, out.stderr],
  ] as const) {
    if (sink.kind !== 'collect') continue;
    let got = data ?? Buffer.alloc(0);
    if (got.length > sink.max) {
      overflow = true;
      got = got.subarray(0, sink.max);
    }
    raw.set(sink.name, got);
    files[sink.name] = got.toString('utf8');
  }
  // The service stopped a piped run whose collector overflowed (out.overflow): that is why it ended, whatever the
  // kill looked like. A collector over its own max in a run that ended by itself is an output limit too.
  if (out.overflow || (overflow && (status === 'Accepted' || status === 'Nonzero Exit Status' || status === 'Signalled'))) {
    status = 'Output Limit Exceeded';
    error = undefined;
  }
  const take = (name: string, optional: boolean): Buffer | undefined => {
    const data = raw.get(name) ?? r.files?.[name];
    if (!data && !optional) {
      const reason = r.fileErrors?.[name] ?? 'not collected';
      fileError.push({ name, type: fileErrorType(reason), message: reason });
    }
    return data;
  };
  for (const f of c.copyOut) {
    const data = take(f.name, f.optional);
    if (data && !(f.name in files)) files[f.name] = data.toString('utf8');
  }
  const fileIds: Record<string, string> = {};
  for (const f of c.copyOutCached) {
    const data = take(f.name, f.optional);
    if (!data) continue;
    try {
      fileIds[f.name] = store!.add(f.name, data);
    } catch (e) {
      if (!(e instanceof FileStoreFullError)) throw e;
      fileError.push({ name: f.name, type: 'CopyOutCreateFile', message: e.message });
    }
  }
  if (fileError.length && status === 'Accepted') {
    status = 'File Error';
    error = fileError[0]!.message;
  }
  const u = r.usage;
  const result: JudgeResult = {
    status,
    ...(error !== undefined ? { error } : {}),
    exitStatus: r.signal ? signalNumber(r.signal) : (r.exitCode ?? 0),
    time: u ? Math.round(u.cpuMs * NS_PER_MS) : 0,
    memory: u ? (u.peakMemoryBytes ?? u.maxRssBytes) : 0,
    runTime: u ? Math.round(u.wallMs * NS_PER_MS) : 0,
    files,
  };
  if (u?.peakProcesses !== undefined) result.procPeak = u.peakProcesses;
  if (c.copyOutCached.length) result.fileIds = fileIds;
  if (fileError.length) result.fileError = fileError;
  return result;
}

const internal = (where: string, e: unknown): JudgeResult => emptyResult('Internal Error', { error: `${where}: ${(e as Error).message}` });

/** The request field each sandbox option a command sets comes from. */
const FIELD_OF_OPTION: [RegExp, string][] = [
  [/^limits\.memory\b/, 'memoryLimit'],
  [/^limits\.stack\b/, 'stackLimit'],
  [/^limits\.processes\b/, 'procLimit'],
  [/^limits\.cpuTime\b/, 'cpuLimit'],
  [/^limits\.wallTime\b/, 'clockLimit'],
  [/^command\b/, 'args'],
  [/^env\b/, 'env'],
  [/^files\b/, 'copyIn'],
  [/^copyOutMax\b/, 'copyOutMax'],
  [/^copyOut\b/, 'copyOut'],
  [/^input\b/, 'files[0]'],
];

/** A command's option refused by the library, as the request error naming its field (a 400); undefined for any other
 *  error, or an option the service itself sets (its configuration, not the request, is wrong: an Internal Error). */
function requestErrorOf(i: number, e: unknown): RequestError | undefined {
  if (!(e instanceof SandboxOptionError)) return undefined;
  const field = FIELD_OF_OPTION.find(([re]) => re.test(e.option))?.[1];
  if (field === undefined) return undefined;
  const message = e.message.startsWith(`${e.option} `) ? e.message.slice(e.option.length + 1) : e.message;
  return new RequestError(`cmd[${i}].${field}`, message);
}

/** One command on its own, through the runner. */
async function runOne(c: JudgeCmd, i: number, ctx: ExecuteContext): Promise<JudgeResult> {
  const p = prepare(c, ctx.store);
  if (!p.ok) return p.result;
  try {
    const r = await ctx.runner.run(argvFor(c), optionsFor(c, p, ctx));
    const out = r.stdout as unknown as Buffer | undefined;
    const err = r.stderr as unknown as Buffer | undefined;
    return answer(c, r, { stdout: out, stderr: err, overflow: false }, ctx.store);
  } catch (e) {
    const bad = requestErrorOf(i, e);
    if (bad) throw bad;
    return internal(`cmd[${i}]`, e);
  }
}

/** Reads a stream into at most `max` bytes; past it calls onOverflow once and keeps draining. */
function collect(stream: Readable, max: number, onOverflow: () => void): () => Buffer {
  const chunks: Buffer[] = [];
  let size = 0;
  let over = false;
  stream.on('data', (chunk: Buffer) => {
    if (size < max + 1) {
      chunks.push(chunk.subarray(0, max + 1 - size));
      size += Math.min(chunk.length, max + 1 - size);
    }
    if (size > max && !over) {
      over = true;
      onOverflow();
    }
  });
  stream.on('error', () => {});
  return () => Buffer.concat(chunks, size);
}

/** Commands joined by pipeMapping, all started together, each fd either collected here or connected. */
async function runPiped(req: JudgeRequest, ctx: ExecuteContext): Promise<JudgeResult[]> {
  const prepared = req.cmd.map((c) => prepare(c, ctx.store));
  if (prepared.some((p) => !p.ok))
    return prepared.map((p, i) =>
      p.ok
        ? emptyResult('Internal Error', { error: `not run: another command of the request could not be prepared (cmd[${i}])` })
        : p.result,
    );
  type Proc = ReturnType<typeof spawnSandboxed>;
  const procs: (Proc | undefined)[] = [];
  const outputs: Outputs[] = req.cmd.map(() => ({ stdout: undefined, stderr: undefined, overflow: false }));
  const readers: (() => void)[] = [];
  const piped = (i: number, fd: number): boolean =>
    req.pipes.some((p) => (fd === 0 ? p.to : p.from).index === i && (fd === 0 ? p.to : p.from).fd === fd);
  const errors: (JudgeResult | undefined)[] = [];
  let refused: RequestError | undefined;
  req.cmd.forEach((c, i) => {
    const p = prepared[i] as Extract<Prepared, { ok: true }>;
    const o = optionsFor(c, p, ctx);
    o.stdout = piped(i, 1) || c.stdout.kind === 'collect' ? 'pipe' : 'ignore';
    o.stderr = piped(i, 2) || c.stderr.kind === 'collect' ? 'pipe' : 'ignore';
    if (piped(i, 0)) {
      delete o.input;
      o.stdin = 'pipe';
    }
    try {
      procs[i] = spawnSandboxed(argvFor(c), o);
    } catch (e) {
      refused ??= requestErrorOf(i, e);
      errors[i] = internal(`cmd[${i}]`, e);
    }
  });
  if (refused) {
    // a request with a bad field runs nothing: what started is ended before the 400
    for (const proc of procs) proc?.kill('SIGKILL');
    await Promise.all(procs.flatMap((proc) => (proc ? [proc.result.catch(() => undefined)] : [])));
    throw refused;
  }
  // A command that could not start leaves its partners without a peer: they run on and see EOF.
  req.cmd.forEach((c, i) => {
    const proc = procs[i];
    if (!proc) return;
    for (const [fd, sink, stream] of [
      [1, c.stdout, proc.stdout],
      [2, c.stderr, proc.stderr],
    ] as const) {
      if (!stream || piped(i, fd) || sink.kind !== 'collect') continue;
      const read = collect(stream as Readable, sink.max, () => {
        outputs[i]!.overflow = true;
        proc.kill('SIGKILL');
      });
      readers.push(() => (outputs[i]![fd === 1 ? 'stdout' : 'stderr'] = read()));
    }
  });
  const proxies = new Map<string, () => Buffer>();
  for (const pipe of req.pipes) connect(pipe, procs, proxies);
  const results = await Promise.all(
    req.cmd.map(async (c, i) => {
      if (errors[i]) return errors[i];
      try {
        const r = await procs[i]!.result;
        return { c, r, i };
      } catch (e) {
        return internal(`cmd[${i}]`, e);
      }
    }),
  );
  for (const read of readers) read();
  return results.map((x, i) => {
    if (!('r' in x)) return x;
    const res = answer(x.c, x.r, outputs[i]!, ctx.store);
    // A named pipe's traffic (go-judge's proxy with a name) comes back with the reading command.
    for (const pipe of req.pipes)
      if (pipe.to.index === i && pipe.name !== undefined)
        res.files![pipe.name] = proxies.get(pipe.name)!().subarray(0, pipe.max).toString('utf8');
    return res;
  });
}

/** Connects one pipe: the writer's stream into the reader's stdin, with backpressure; a reader that has gone drains
 *  the writer (so it never blocks on a dead peer) and a writer that ends gives the reader EOF. */
function connect(pipe: JudgePipe, procs: (ReturnType<typeof spawnSandboxed> | undefined)[], proxies: Map<string, () => Buffer>): void {
  const from = procs[pipe.from.index];
  const to = procs[pipe.to.index];
  const src = (pipe.from.fd === 1 ? from?.stdout : from?.stderr) as Readable | null | undefined;
  const dst = to?.stdin as Writable | null | undefined;
  if (pipe.name !== undefined && src)
    proxies.set(
      pipe.name,
      collect(src, pipe.max, () => {}),
    );
  else if (pipe.name !== undefined) proxies.set(pipe.name, () => Buffer.alloc(0));
  if (!src) {
    dst?.on('error', () => {});
    dst?.end();
    return;
  }
  if (!dst) {
    src.resume();
    return;
  }
  const cut = (): void => {
    src.unpipe(dst);
    src.resume();
  };
  dst.on('error', cut);
  dst.on('close', cut);
  src.on('error', () => dst.end());
  src.pipe(dst);
}

/** Runs a checked request: independent commands side by side, a piped group together. Never rejects for a run's
 *  own failure: each command's result says what happened. Rejects with a RequestError naming the field when the
 *  library refuses a command's options (the request's other commands are then canceled). */
export async function executeRequest(req: JudgeRequest, ctx: ExecuteContext): Promise<JudgeResult[]> {
  if (req.pipes.length) return runPiped(req, ctx);
  const outer = ctx.base.cancelSignal;
  const own = new AbortController();
  const cancel = (): void => own.abort();
  if (outer?.aborted) own.abort();
  else outer?.addEventListener('abort', cancel, { once: true });
  const mine: ExecuteContext = { ...ctx, base: { ...ctx.base, cancelSignal: own.signal } };
  try {
    return await Promise.all(req.cmd.map((c, i) => runOne(c, i, mine)));
  } catch (e) {
    own.abort();
    throw e;
  } finally {
    outer?.removeEventListener('abort', cancel);
  }
}
