// Starts a helper whose plan awaits its run (a warm pool's sandbox): every stdio fd is a pipe, and the fds the run
// needs later (4 bpf, 7 files, 8 copy-out, 9 run) stay open on this side until the command arrives.
import { writeSync } from 'node:fs';
import type { Readable, Writable } from 'node:stream';
import { debuglog } from 'node:util';
import { HelperFd } from '../protocol/opcodes.js';
import {
  closed,
  endFd,
  FdSet,
  LaunchError,
  readableFd,
  spawnHelper,
  watchHelper,
  writableFd,
  type LaunchedHelper,
} from '../supervisor/launch.js';
import { loadLibc, type Libc } from '../supervisor/libc.js';

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
  endFd(fd, data, what);
}

/** Starts the helper with `plan` (a first plan ending in await); throws LaunchError when it cannot. */
export function launchWarm(plan: Uint8Array): WarmLaunch {
  const libc = loadLibc();
  if (!libc) throw new LaunchError('a warm pool needs posix_spawn through koffi, which cannot load here');
  const fds = new FdSet(libc);
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
    const prefilled = plan.length <= PIPE_WRITE_SYNC_MAX;
    if (prefilled) {
      writeSync(planW, plan);
      fds.close(planW);
    }
    const keep = [stdinW, stdoutR, stderrR, statusR, controlW, copyOutR, bpfW, filesW, runW, ...(prefilled ? [] : [planW])];
    const helperPid = spawnHelper(libc, fds, targets, keep);

    if (!prefilled) endFd(planW, plan, 'plan');
    const status = readableFd(statusR);
    const stdout = readableFd(stdoutR);
    const stderr = readableFd(stderrR);
    const copyOut = readableFd(copyOutR);
    const control = writableFd(controlW);
    const stdin = writableFd(stdinW);
    control.on('error', (e) => debug('control fd: %s', e.message));
    const streams = [status, stdout, stderr, copyOut, control, stdin];
    for (const s of streams) s.unref(); // a waiting sandbox does not keep this process alive

    const { done, kill } = watchHelper(libc, helperPid, [closed(status), closed(stdout), closed(stderr), closed(copyOut)]);
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
  }
}
