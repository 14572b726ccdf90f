// Starts the helper with its stdio and protocol fds (3 plan, 4 bpf, 5 status, 6 control) and watches it end.
import { EventEmitter } from 'node:events';
import { closeSync, createReadStream, openSync, read, writeSync } from 'node:fs';
import { errnoName, signalName } from '../os-names.js';
import type { Socket } from 'node:net';
import type { Readable, Writable } from 'node:stream';
import { debuglog } from 'node:util';
import type { ResolvedOptions } from '../options/resolve.js';
import { HelperFd } from '../protocol/opcodes.js';
import { openRegularForRead } from '../safe-open.js';
import { helperPath } from '../native/helper-path.js';
import { childProcess, nodeNet, tmpPromise } from '../lazy-require.js';
import { inheritFd, pumpIn, pumpOut, sealedBuffer, sealedCopy, type InheritedFd } from './stdio.js';
import { F_DUPFD_CLOEXEC, loadLibc, O_CLOEXEC, POSIX_SPAWN_SETSIGDEF, POSIX_SPAWN_SETSIGMASK, WNOHANG, type Libc } from './libc.js';
import { mark } from '../timing.js';

const debug = debuglog('cubicle');

export interface HelperExitStatus {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** A running helper: its streams, and a promise that settles once it has exited and its output has closed. */
export interface LaunchedHelper {
  readonly pid: number | undefined;
  readonly stdin: Writable | null;
  readonly stdout: Readable | null;
  readonly stderr: Readable | null;
  readonly status: StatusSource;
  readonly control: ControlSink;
  /** With copyOut: init's framed files (see COPY_OUT_STATUSES in protocol/opcodes.ts), EOF once init is gone. */
  readonly copyOut: Readable | null;
  readonly done: Promise<HelperExitStatus>;
  /** SIGKILLs the helper itself (its init then dies by PDEATHSIG, and with it the sandbox). */
  kill(): void;
  readonly launcher: 'posix_spawn' | 'child_process';
}

/** What the supervisor and the pool use of the status fd's reader: a net.Socket, or a ThreadPoolReader. */
export interface StatusSource {
  on(event: 'data', listener: (chunk: Buffer) => void): unknown;
  off(event: 'data', listener: (chunk: Buffer) => void): unknown;
  once(event: 'close', listener: () => void): unknown;
  destroy(): void;
}

/** What is used of the control fd's writer: a net.Socket, or a SyncFdWriter. */
export interface ControlSink {
  readonly destroyed: boolean;
  readonly writable: boolean;
  write(data: string | Uint8Array): boolean;
  end(data?: string | Uint8Array): unknown;
  on(event: 'error', listener: (e: Error) => void): unknown;
  once(event: 'close', listener: () => void): unknown;
  destroy(): void;
}

let oneSandboxPerProcess = false;

/**
 * For a process that supervises one sandbox and exits (the CLI's run): the status fd is then read on libuv's
 * thread pool and the control fd written synchronously, so the call never loads node:net and node:stream (~6 ms
 * of a CLI call). A library process may supervise many sandboxes at once, and a blocking read would hold a pool
 * thread for each sandbox's whole life, so everywhere else these fds are sockets.
 */
export function superviseOneSandboxPerProcess(): void {
  oneSandboxPerProcess = true;
}

/** Reads a blocking pipe on libuv's thread pool, one read at a time: 'data' per chunk, then 'end' and 'close'.
 *  Reading starts once a 'data' listener is added; the fd is closed once no read is in flight. */
class ThreadPoolReader extends EventEmitter {
  destroyed = false;
  #reading = false;
  #started = false;
  #closed = false;
  constructor(readonly fd: number) {
    super();
    this.on('newListener', (event: string) => {
      if (event !== 'data' || this.#started) return;
      this.#started = true;
      queueMicrotask(() => this.#next());
    });
  }
  #next(): void {
    if (this.destroyed) return this.#close();
    const buf = Buffer.allocUnsafe(16 << 10);
    this.#reading = true;
    read(this.fd, buf, 0, buf.length, null, (err, n) => {
      this.#reading = false;
      if (this.destroyed) return this.#close();
      if (err || n === 0) {
        if (err) debug('status fd: %s', err.message);
        this.emit('end');
        return this.destroy();
      }
      this.emit('data', buf.subarray(0, n));
      this.#next();
    });
  }
  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    if (!this.#reading) this.#close();
  }
  #close(): void {
    if (this.#closed) return;
    this.#closed = true;
    // No read is in flight here: closed at once (a pool thread for a close would delay the run's result).
    try {
      closeSync(this.fd);
    } catch (e) {
      debug('status fd: %s', (e as Error).message);
    }
    process.nextTick(() => this.emit('close'));
  }
}

/** Writes a blocking pipe synchronously (the control fd: a byte now and then, never near a pipe's capacity). */
class SyncFdWriter extends EventEmitter {
  destroyed = false;
  get writable(): boolean {
    return !this.destroyed;
  }
  constructor(readonly fd: number) {
    super();
  }
  write(data: string | Uint8Array): boolean {
    if (this.destroyed) return false;
    try {
      writeSync(this.fd, typeof data === 'string' ? Buffer.from(data) : data);
    } catch (e) {
      debug('control fd: %s', (e as Error).message); // EPIPE: the helper is gone
      this.destroy();
    }
    return true;
  }
  end(data?: string | Uint8Array): this {
    if (data !== undefined) this.write(data);
    this.destroy();
    return this;
  }
  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    closeSync(this.fd);
    process.nextTick(() => this.emit('close'));
  }
}

/** The helper could not be started; `hint` names the fix when it is not a broken install. */
export class LaunchError extends Error {
  override name = 'LaunchError';
  hint: string | undefined;
}

function openInput(path: string): number {
  try {
    return openRegularForRead(path);
  } catch (e) {
    const err = new LaunchError(`inputFile: ${(e as Error).message}`, { cause: e });
    err.hint = 'inputFile must be a regular file reached without a symlink; it was checked when the options were given and changed since';
    throw err;
  }
}

/** The input file as the payload's stdin: a sealed read-only copy, or else a stream to copy through a pipe. */
function inputSource(libc: Libc | null, path: string): { fd: number } | { stream: Readable } {
  const file = openInput(path);
  let copy: number | undefined;
  try {
    copy = libc ? sealedCopy(libc, file) : undefined;
  } catch (e) {
    closeSync(file);
    throw new LaunchError(`inputFile: ${(e as Error).message}`, { cause: e });
  }
  if (copy === undefined) return { stream: createReadStream('', { fd: file, autoClose: true }) };
  closeSync(file);
  return { fd: copy };
}

/** Copies the input file into the payload's stdin pipe. */
function feedFile(stream: Readable, dest: Writable): void {
  stream.on('error', (e) => {
    debug('inputFile: %s', e.message);
    dest.destroy();
  });
  dest.on('error', (e) => {
    debug('stdin: %s', e.message);
    stream.destroy();
  });
  stream.pipe(dest);
}

/** How the caller's fd `n` reaches the helper. With a terminal, init relays fds 0 and 1 itself and makes them
 *  non-blocking: they are always pipes of the run's own, copied here, never a description the caller shares. */
function handOver(o: ResolvedOptions, n: 0 | 1 | 2, libc: Libc | null): InheritedFd {
  return o.tty ? { kind: 'pump' } : inheritFd(n, libc);
}

/** A pipe holds 64 KiB by default: a plan this small is written before the helper even starts. */
const PIPE_PREFILL_MAX = 60 << 10;

/**
 * Starts the helper with posix_spawn through koffi (vfork: ~0.6 ms less than Node's spawn), or with Node's
 * child_process when koffi cannot load, or when CUBICLE_LAUNCHER=child_process asks for it (a debugging aid).
 */
export function launchHelper(o: ResolvedOptions, plan: Uint8Array, bpf: Uint8Array, files?: Buffer): LaunchedHelper {
  const libc = loadLibc();
  return libc && process.env.CUBICLE_LAUNCHER !== 'child_process'
    ? launchWithPosixSpawn(libc, o, plan, bpf, files)
    : launchWithChildProcess(libc, o, plan, bpf, files);
}

/** The files blob as a read-only fd of a sealed memfd (or, without memfds, of an unlinked temporary file). */
function filesFd(libc: Libc | null, data: Buffer): number {
  const fd = libc ? sealedBuffer(libc, data) : undefined;
  if (fd !== undefined) return fd;
  const tmp = tmpPromise().fileSync({ mode: 0o600, discardDescriptor: false });
  try {
    writeSync(tmp.fd, data);
    return openSync(tmp.name, 'r');
  } finally {
    closeSync(tmp.fd);
    tmp.removeCallback();
  }
}

function launchWithChildProcess(libc: Libc | null, o: ResolvedOptions, plan: Uint8Array, bpf: Uint8Array, files?: Buffer): LaunchedHelper {
  const owned: number[] = [];
  const pumped = new Set<0 | 1 | 2>();
  const cfg = (n: 0 | 1 | 2, mode: 'pipe' | 'ignore' | 'inherit'): 'pipe' | 'ignore' | number => {
    if (mode !== 'inherit') return mode;
    const h = handOver(o, n, libc);
    if (h.kind === 'pump') {
      pumped.add(n);
      return 'pipe';
    }
    if (h.kind === 'fresh') owned.push(h.fd);
    return h.fd;
  };
  let child;
  let fileStream: Readable | undefined;
  try {
    let stdinCfg: 'pipe' | 'ignore' | number;
    const src = o.inputFile !== undefined ? inputSource(libc, o.inputFile) : undefined;
    if (src && 'fd' in src) owned.push((stdinCfg = src.fd));
    else if (src) {
      fileStream = src.stream;
      stdinCfg = 'pipe';
    } else stdinCfg = o.input !== undefined ? 'pipe' : cfg(0, o.stdin);
    const stdoutCfg = cfg(1, o.stdout);
    const stderrCfg = cfg(2, o.stderr);
    // fd 7: the files blob; fd 8: the copy-out pipe (each only when the plan uses it).
    const extra: ('pipe' | 'ignore' | number)[] = [];
    const wantsOut = Boolean(o.box?.copyOut.length);
    if (files) {
      const f = filesFd(libc, files);
      owned.push(f);
      extra.push(f);
    } else if (wantsOut) extra.push('ignore');
    if (wantsOut) extra.push('pipe');
    child = childProcess().spawn(helperPath(), [], {
      stdio: [stdinCfg, stdoutCfg, stderrCfg, 'pipe', 'pipe', 'pipe', 'pipe', ...extra],
      env: {},
      argv0: 'cubicle-helper',
    });
  } finally {
    for (const f of owned) closeSync(f);
  }
  const fd = (n: number) => (child.stdio as unknown as (Readable & Writable)[])[n]!;
  const pumps = [...pumped].filter((n): n is 1 | 2 => n !== 0).map((n) => pumpOut(fd(n), n));
  const stopIn = pumped.has(0) ? pumpIn(fd(0)) : undefined;
  if (fileStream) feedFile(fileStream, fd(0));
  for (const n of [HelperFd.plan, HelperFd.bpf, HelperFd.status, HelperFd.control])
    fd(n).on('error', (e: Error) => debug('helper fd %d: %s', n, e.message));
  fd(HelperFd.plan).end(plan);
  fd(HelperFd.bpf).end(bpf);
  const done = new Promise<HelperExitStatus>((resolve, reject) => {
    child.on('error', (e) =>
      child.pid === undefined
        ? reject(new LaunchError(`cannot start the helper ${helperPath()}: ${e.message}`, { cause: e }))
        : debug('helper: %s', e.message),
    );
    child.on('close', (code, signal) => {
      stopIn?.();
      void Promise.all(pumps).then(() => resolve({ code, signal }));
    });
  });
  return {
    pid: child.pid,
    stdin: pumped.has(0) || fileStream ? null : child.stdin,
    stdout: pumped.has(1) ? null : child.stdout,
    stderr: pumped.has(2) ? null : child.stderr,
    status: fd(HelperFd.status),
    control: fd(HelperFd.control),
    copyOut: o.box?.copyOut.length ? fd(HelperFd.copyOut) : null,
    done,
    kill: () => child.kill('SIGKILL'),
    launcher: 'child_process',
  };
}

/** Owns raw fds until they are handed to a stream or closed; closes everything left on failure. */
export class FdSet {
  readonly #open = new Set<number>();
  constructor(readonly libc: Libc) {}
  pipe(): [number, number] {
    const fds = new Int32Array(2);
    if (this.libc.pipe2(fds, O_CLOEXEC) !== 0) throw new LaunchError(`pipe2 failed: ${errnoName(this.libc.errno())}`);
    this.#open.add(fds[0]!).add(fds[1]!);
    return [fds[0]!, fds[1]!];
  }
  /** A close-on-exec copy numbered >= 16, so no source fd collides with targets 0-6 in the child. */
  high(fd: number): number {
    const h = this.libc.fcntl(fd, F_DUPFD_CLOEXEC, 16);
    if (h < 0) throw new LaunchError(`fcntl(F_DUPFD_CLOEXEC) failed: ${errnoName(this.libc.errno())}`);
    this.#open.add(h);
    return h;
  }
  adopt(fd: number): number {
    this.#open.add(fd);
    return fd;
  }
  release(fd: number): number {
    this.#open.delete(fd);
    return fd;
  }
  close(fd: number): void {
    if (this.#open.delete(fd)) this.libc.close(fd);
  }
  closeAll(): void {
    for (const fd of this.#open) this.libc.close(fd);
    this.#open.clear();
  }
}

/**
 * posix_spawns the helper with `targets` (fd in the helper -> fd here) as its only fds, every signal at its default
 * and none blocked; then closes every fd of `fds` but `keep` (the helper holds its copies). Throws LaunchError.
 */
export function spawnHelper(libc: Libc, fds: FdSet, targets: Map<number, number>, keep: Iterable<number | undefined>): number {
  const fa = Buffer.alloc(512);
  const attr = Buffer.alloc(1024);
  const sigs = Buffer.alloc(128);
  libc.fa_init(fa);
  libc.attr_init(attr);
  try {
    for (const [target, src] of targets)
      if (libc.fa_adddup2(fa, fds.high(src), target) !== 0) throw new LaunchError('posix_spawn_file_actions_adddup2 failed');
    libc.fa_addclosefrom(fa, Math.max(...targets.keys()) + 1);
    libc.sigfillset(sigs);
    libc.attr_setsigdefault(attr, sigs);
    libc.sigemptyset(sigs);
    libc.attr_setsigmask(attr, sigs);
    libc.attr_setflags(attr, POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);
    const pid = [0];
    const rc = libc.posix_spawn(pid, helperPath(), fa, attr, ['cubicle-helper', null], [null]);
    if (rc !== 0) throw new LaunchError(`cannot start the helper ${helperPath()}: posix_spawn: ${errnoName(rc)}`);
    for (const fd of keep) if (fd !== undefined) fds.release(fd);
    fds.closeAll();
    return pid[0]!;
  } finally {
    libc.fa_destroy(fa);
    libc.attr_destroy(attr);
  }
}

/** A stream reading the raw fd `fd` (which it then owns). */
export const readableFd = (fd: number): Socket => new (nodeNet().Socket)({ fd, readable: true, writable: false });
/** A stream writing the raw fd `fd` (which it then owns). */
export const writableFd = (fd: number): Socket => new (nodeNet().Socket)({ fd, readable: false, writable: true });
/** Writes `data` to the raw fd `fd` through a stream and closes it; a failure (the reader gone) is only logged. */
export const endFd = (fd: number, data: Uint8Array, what: string): void =>
  void writableFd(fd)
    .on('error', (e) => debug('%s fd: %s', what, e.message))
    .end(data);

/**
 * Watches a posix_spawned helper: `done` settles with its exit status once every promise of `ends` has (its
 * streams closed) and waitpid reaps it; `kill` SIGKILLs it unless it is already reaped.
 */
export function watchHelper(libc: Libc, pid: number, ends: Promise<unknown>[]): { done: Promise<HelperExitStatus>; kill: () => void } {
  let exited: HelperExitStatus | undefined;
  const reap = (): HelperExitStatus | undefined => {
    if (exited) return exited;
    const st = new Int32Array(1);
    if (libc.waitpid(pid, st, WNOHANG) !== pid) return undefined;
    const s = st[0]!;
    exited = (s & 0x7f) === 0 ? { code: (s >> 8) & 0xff, signal: null } : { code: null, signal: signalName(s & 0x7f) };
    return exited;
  };
  const waitExit = (): Promise<HelperExitStatus> =>
    new Promise((resolve) => {
      const poll = (delay: number): void => {
        const e = reap();
        if (e) resolve(e);
        else setTimeout(() => poll(Math.min(delay * 2, 50)), delay);
      };
      poll(0);
    });
  const kill = (): void => {
    if (!reap()) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* already gone */
      }
    }
  };
  return { done: Promise.all(ends).then(waitExit), kill };
}

/** Settles once `s` has closed (at once without a stream). */
export const closed = (s: { once(event: 'close', listener: () => void): unknown } | null): Promise<void> =>
  s ? new Promise<void>((r) => s.once('close', () => r())) : Promise.resolve();

function launchWithPosixSpawn(libc: Libc, o: ResolvedOptions, plan: Uint8Array, bpf: Uint8Array, files?: Buffer): LaunchedHelper {
  const fds = new FdSet(libc);
  try {
    // target fd in the helper -> source fd here; parentEnds are what this process keeps.
    const targets = new Map<number, number>();
    let stdinEnd: number | undefined;
    let stdoutEnd: number | undefined;
    let stderrEnd: number | undefined;
    // Our ends of the pipes that copy inherited stdio this process cannot hand over as is (see ./stdio.ts).
    const pumpEnds = new Map<0 | 1 | 2, number>();
    const inherit = (n: 0 | 1 | 2): void => {
      const h = handOver(o, n, libc);
      if (h.kind === 'share') targets.set(n, h.fd);
      else if (h.kind === 'fresh') targets.set(n, fds.adopt(h.fd));
      else {
        const [r, w] = fds.pipe();
        targets.set(n, n === 0 ? r : w);
        pumpEnds.set(n, n === 0 ? w : r);
      }
    };
    let fileStream: Readable | undefined;
    let fileEnd: number | undefined;
    const src = o.inputFile !== undefined ? inputSource(libc, o.inputFile) : undefined;
    if (src && 'fd' in src) targets.set(0, fds.adopt(src.fd));
    else if (src) {
      fileStream = src.stream;
      const [r, w] = fds.pipe();
      targets.set(0, r);
      fileEnd = w;
    } else if (o.input !== undefined || o.stdin === 'pipe') {
      const [r, w] = fds.pipe();
      targets.set(0, r);
      stdinEnd = w;
    } else if (o.stdin === 'ignore') targets.set(0, fds.adopt(openSync('/dev/null', 'r')));
    else inherit(0);
    for (const [n, mode] of [
      [1, o.stdout],
      [2, o.stderr],
    ] as const) {
      if (mode === 'pipe') {
        const [r, w] = fds.pipe();
        targets.set(n, w);
        if (n === 1) stdoutEnd = r;
        else stderrEnd = r;
      } else if (mode === 'ignore') targets.set(n, fds.adopt(openSync('/dev/null', 'w')));
      else inherit(n);
    }
    const [planR, planW] = fds.pipe();
    const [bpfR, bpfW] = fds.pipe();
    const [statusR, statusW] = fds.pipe();
    const [controlR, controlW] = fds.pipe();
    targets.set(HelperFd.plan, planR).set(HelperFd.bpf, bpfR).set(HelperFd.status, statusW).set(HelperFd.control, controlR);
    if (files) targets.set(HelperFd.files, fds.adopt(filesFd(libc, files)));
    let copyOutEnd: number | undefined;
    if (o.box?.copyOut.length) {
      const [r, w] = fds.pipe();
      targets.set(HelperFd.copyOut, w);
      copyOutEnd = r;
    }

    // Small inputs go into the pipes now, so the helper never waits for this event loop.
    const prefilled = plan.length <= PIPE_PREFILL_MAX && bpf.length <= PIPE_PREFILL_MAX;
    if (prefilled) {
      writeSync(planW, plan);
      fds.close(planW);
      writeSync(bpfW, bpf);
      fds.close(bpfW);
    }
    // Everything but our own ends closes once the helper runs; it holds its copies.
    const keep = [stdinEnd, stdoutEnd, stderrEnd, fileEnd, copyOutEnd, ...pumpEnds.values(), statusR, controlW];
    const helperPid = spawnHelper(libc, fds, targets, prefilled ? keep : [...keep, planW, bpfW]);
    mark('spawned');

    if (!prefilled) {
      endFd(planW, plan, 'plan');
      endFd(bpfW, bpf, 'bpf');
    }
    const status = oneSandboxPerProcess ? new ThreadPoolReader(statusR) : readableFd(statusR);
    const copyOut = copyOutEnd !== undefined ? readableFd(copyOutEnd) : null;
    const control: ControlSink = oneSandboxPerProcess ? new SyncFdWriter(controlW) : writableFd(controlW);
    control.on('error', (e: Error) => debug('control fd: %s', e.message));
    const stdin = stdinEnd !== undefined ? writableFd(stdinEnd) : null;
    const stdout = stdoutEnd !== undefined ? readableFd(stdoutEnd) : null;
    const stderr = stderrEnd !== undefined ? readableFd(stderrEnd) : null;
    const pumps: Promise<void>[] = [];
    for (const n of [1, 2] as const) {
      const end = pumpEnds.get(n);
      if (end !== undefined) pumps.push(pumpOut(readableFd(end), n));
    }
    const inEnd = pumpEnds.get(0);
    const stopIn = inEnd !== undefined ? pumpIn(writableFd(inEnd)) : undefined;
    if (fileStream && fileEnd !== undefined) feedFile(fileStream, writableFd(fileEnd));

    // The helper has exited once its status fd reaches EOF (init, which shares it, is gone first) and wait
    // reaps it; its output is complete once stdout/stderr close.
    const { done, kill } = watchHelper(libc, helperPid, [closed(status), closed(stdout), closed(stderr), closed(copyOut), ...pumps]);
    if (stopIn) void done.then(stopIn);
    return { pid: helperPid, stdin, stdout, stderr, status, control, copyOut, done, kill, launcher: 'posix_spawn' };
  } catch (e) {
    fds.closeAll();
    throw e;
  }
}
