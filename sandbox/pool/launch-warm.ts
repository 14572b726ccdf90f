// Starts a helper whose plan awaits its run (a warm pool's sandbox): every stdio fd is a pipe, and the fds the run
// needs later (4 bpf, 7 files, 8 copy-out, 9 run) stay open on this side until the command arrives.
import { writeSync } from 'node:fs';
import { Socket } from 'node:net';
import type { Readable, Writable } from 'node:stream';
import { debuglog } from 'node:util';
import { helperPath } from '../native/helper-path.js';
import { errnoName, signalName } from '../os-names.js';
import { HelperFd } from '../protocol/opcodes.js';
import { FdSet, LaunchError, type HelperExitStatus, type LaunchedHelper } from '../supervisor/launch.js';
import { loadLibc, POSIX_SPAWN_SETSIGDEF, POSIX_SPAWN_SETSIGMASK, WNOHANG, type Libc } from '../supervisor/libc.js';

const debug = debuglog('cubicle');
/** A pipe holds 64 KiB: a write this small never waits for the reader. */
const PIPE_WRITE_SYNC_MAX = 60 << 10;

/** A waiting helper: its streams (unreferenced until the run takes it), and how to send it the run. */
export interface WarmLaunch {
  readonly helper: LaunchedHelper & { stdin: Writable; stdout: Readable; stderr: Readable; copyOut: Readable };
  /** Sends the run plan, the seccomp program and the files stream, each closed after (init reads them in order). */
  send(run: Buffer, bpf: Uint8Array, files: Buffer | undefined): void;
  /** Makes the streams keep the event loop alive again (while the run uses them). */
  ref(): void;
  /** Closes the run's fds without sending anything (after the helper is gone). */
  dispose(): void;
}

/** Whether this process can start warm sandboxes (posix_spawn through koffi). */
export const warmLaunchSupported = (): boolean => loadLibc() !== null;

/** Writes all of `data` to a pipe this side owns, then closes it: at once when it fits, else through a stream. */
function sendAndClose(libc: Libc, fd: number, data: Uint8Array, what: string): void {
  if (data.length <= PIPE_WRITE_SYNC_MAX) {
    try {
      if (data.length) writeSync(fd, data);
    } catch (e) {
      debug('%s fd: %s', what, (e as Error).message); // EPIPE: init is gone, and the run's record says why
    }
    libc.close(fd);
    return;
  }
  new Socket({ fd, readable: false, writable: true }).on('error', (e) => debug('%s fd: %s', what, e.message)).end(data);
}

/** Starts the helper with `plan` (a first plan ending in await); throws LaunchError when it cannot. */
export function launchWarm(plan: Uint8Array): WarmLaunch {
  const libc = loadLibc();
  if (!libc) throw new LaunchError('a warm pool needs posix_spawn through koffi, which cannot load here');
  const fds = new FdSet(libc);
  const fa = Buffer.alloc(512);
  const attr = Buffer.alloc(1024);
  const sigs = Buffer.alloc(128);
  libc.fa_init(fa);
  libc.attr_init(attr);
  try {
    const [stdinR, stdinW] = fds.pipe();
    const [stdoutR, stdoutW] = fds.pipe();
    const [stderrR, stderrW] = fds.pipe();
    const [planR, planW] = fds.pipe();
    const [bpfR, bpfW] = fds.pipe();
    const [statusR, statusW] = fds.pipe();
    const [controlR, controlW] = fds.pipe();
    const [filesR, filesW] = fds.pipe();
    const [copyOutR, copyOutW] = fds.pipe();
    const [runR, runW] = fds.pipe();
    const targets = new Map<number, number>([
      [0, stdinR],
      [1, stdoutW],
      [2, stderrW],
      [HelperFd.plan, planR],
      [HelperFd.bpf, bpfR],
      [HelperFd.status, statusW],
      [HelperFd.control, controlR],
      [HelperFd.files, filesR],
      [HelperFd.copyOut, copyOutW],
      [HelperFd.run, runR],
    ]);
    for (const [target, src] of targets)
      if (libc.fa_adddup2(fa, fds.high(src), target) !== 0) throw new LaunchError('posix_spawn_file_actions_adddup2 failed');
    libc.fa_addclosefrom(fa, Math.max(...targets.keys()) + 1);
    libc.sigfillset(sigs);
    libc.attr_setsigdefault(attr, sigs);
    libc.sigemptyset(sigs);
    libc.attr_setsigmask(attr, sigs);
    libc.attr_setflags(attr, POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);
    const prefilled = plan.length <= PIPE_WRITE_SYNC_MAX;
    if (prefilled) {
      writeSync(planW, plan);
      fds.close(planW);
    }
    const pid = [0];
    const rc = libc.posix_spawn(pid, helperPath(), fa, attr, ['cubicle-helper', null], [null]);
    if (rc !== 0) throw new LaunchError(`cannot start the helper ${helperPath()}: posix_spawn: ${errnoName(rc)}`);
    const helperPid = pid[0]!;
    const keep = [stdinW, stdoutR, stderrR, statusR, controlW, copyOutR, bpfW, filesW, runW, ...(prefilled ? [] : [planW])];
    for (const fd of keep) fds.release(fd);
    fds.closeAll();

    const readable = (fd: number) => new Socket({ fd, readable: true, writable: false });
    const writable = (fd: number) => new Socket({ fd, readable: false, writable: true });
    if (!prefilled)
      writable(planW)
        .on('error', (e) => debug('plan fd: %s', e.message))
        .end(plan);
    const status = readable(statusR);
    const stdout = readable(stdoutR);
    const stderr = readable(stderrR);
    const copyOut = readable(copyOutR);
    const control = writable(controlW);
    const stdin = writable(stdinW);
    control.on('error', (e) => debug('control fd: %s', e.message));
    const streams = [status, stdout, stderr, copyOut, control, stdin];
    for (const s of streams) s.unref(); // a waiting sandbox does not keep this process alive

    const closed = (s: Socket) => new Promise<void>((r) => s.once('close', () => r()));
    let exited: HelperExitStatus | undefined;
    const reap = (): HelperExitStatus | undefined => {
      if (exited) return exited;
      const st = new Int32Array(1);
      if (libc.waitpid(helperPid, st, WNOHANG) !== helperPid) return undefined;
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
    const done = Promise.all([closed(status), closed(stdout), closed(stderr), closed(copyOut)]).then(waitExit);
    const kill = (): void => {
      if (!reap())
        try {
          process.kill(helperPid, 'SIGKILL');
        } catch {
          /* already gone */
        }
    };
    const pending = new Set([bpfW, filesW, runW]);
    const take = (fd: number): boolean => pending.delete(fd);
    return {
      helper: { pid: helperPid, stdin, stdout, stderr, status, control, copyOut, done, kill, launcher: 'posix_spawn' },
      send(run, bpf, files) {
        if (take(runW)) sendAndClose(libc, runW, run, 'run');
        if (take(bpfW)) sendAndClose(libc, bpfW, bpf, 'bpf');
        if (take(filesW)) sendAndClose(libc, filesW, files ?? Buffer.alloc(0), 'files');
      },
      ref() {
        for (const s of streams) s.ref();
      },
      dispose() {
        for (const fd of [...pending]) if (take(fd)) libc.close(fd);
      },
    };
  } catch (e) {
    fds.closeAll();
    throw e;
  } finally {
    libc.fa_destroy(fa);
    libc.attr_destroy(attr);
  }
}
