// How the caller's own stdin/stdout/stderr reach the payload when they are inherited.
//
// A pipe, FIFO, socket or terminal that Node has wrapped in a stream is in non-blocking mode (libuv sets
// O_NONBLOCK on the open file description), and a child that inherits the fd shares that description: a payload
// writing into a full pipe would get EAGAIN and lose data. Flipping the flag back would change Node's own view of
// the same description (its next read could block the event loop), so the payload never gets Node's description
// of such a file:
//   - a regular file (or block device) as stdout/stderr is shared as is: its offset must be shared
//     (`(echo a; cubicle run ...) > f`) and O_NONBLOCK means nothing for it (the payload could reopen it through
//     /proc/self/fd and read what the file already holds: do not hand it a file whose content is secret);
//   - a regular file as stdin (`cubicle run ... < tests/1.in`) reaches the payload as a sealed read-only copy from
//     the current offset, as inputFile does: the sandbox's host uid may own the file, and a shared description
//     would let the payload chmod and rewrite it through /proc/self/fd/0;
//   - a pipe, FIFO or terminal is opened again through /proc/self/fd/N, which gives a new description of the same
//     object that only the sandbox holds, and that description is made blocking;
//   - anything else (a socket, which cannot be reopened; a pipe of another user; no /proc) goes through a pipe
//     of our own: the payload writes into a blocking pipe and this process copies to its stdio with backpressure.
import { closeSync, constants, fstatSync, openSync, writeSync } from 'node:fs';
import type { Readable, Writable } from 'node:stream';
import { debuglog } from 'node:util';
import { F_ADD_SEALS, F_GETFL, F_SETFL, MFD_ALLOW_SEALING, MFD_CLOEXEC, O_CLOEXEC, SEAL_ALL, type Libc } from './libc.js';

const debug = debuglog('cubicle');

export type InheritedFd =
  /** The caller's own fd, passed through (a regular file). */
  | { kind: 'share'; fd: number }
  /** A fresh blocking description of the same object, owned here until the helper holds its copy. */
  | { kind: 'fresh'; fd: number }
  /** Through a pipe of our own, copied by this process. */
  | { kind: 'pump' };

const O_ACCMODE = 3;
const PTMX_RDEV = (5 << 8) | 2; // a pty master: reopening it would allocate a new pty

/** Decides how the caller's fd `n` (0, 1 or 2) is handed to the payload; see the module comment. */
export function inheritFd(n: 0 | 1 | 2, libc: Libc | null): InheritedFd {
  let st;
  try {
    st = fstatSync(n);
  } catch {
    // Closed (Node normally reopens a closed 0-2 on /dev/null itself): the payload gets /dev/null.
    return { kind: 'fresh', fd: openSync('/dev/null', n === 0 ? 'r' : 'w') };
  }
  if (n === 0 && st.isFile()) {
    const copy = libc ? sealedCopy(libc, 0) : undefined;
    return copy === undefined ? { kind: 'pump' } : { kind: 'fresh', fd: copy };
  }
  if (st.isFile() || st.isBlockDevice()) return { kind: 'share', fd: n };
  const reopenable = st.isFIFO() || (st.isCharacterDevice() && st.rdev !== PTMX_RDEV);
  if (!reopenable || !libc) return { kind: 'pump' };
  const flags = libc.fcntl(n, F_GETFL, 0);
  if (flags < 0) return { kind: 'pump' };
  let fd: number;
  try {
    // O_NONBLOCK for the open itself: a FIFO's open must not wait for a peer (no reader left: ENXIO, then pump).
    fd = openSync(`/proc/self/fd/${n}`, (flags & (O_ACCMODE | constants.O_APPEND)) | constants.O_NONBLOCK | constants.O_NOCTTY | O_CLOEXEC);
  } catch (e) {
    debug('fd %d: cannot reopen (%s); copying through a pipe', n, (e as NodeJS.ErrnoException).code);
    return { kind: 'pump' };
  }
  const mine = libc.fcntl(fd, F_GETFL, 0);
  if (mine < 0 || libc.fcntl(fd, F_SETFL, mine & ~constants.O_NONBLOCK) < 0) {
    closeSync(fd);
    return { kind: 'pump' };
  }
  return { kind: 'fresh', fd };
}

/** Copies the payload's output (`src`, our end of its pipe) to this process's stdout or stderr, with
 *  backpressure. Resolves once everything read has been written (or the destination failed: then our end
 *  is closed, so the payload gets EPIPE as it would writing there itself). */
export function pumpOut(src: Readable, n: 1 | 2): Promise<void> {
  const dest = n === 1 ? process.stdout : process.stderr;
  return new Promise((resolve) => {
    let last: Promise<void> = Promise.resolve();
    let failed = false;
    const onError = (e: Error): void => {
      debug('fd %d: %s', n, e.message);
      failed = true;
      src.destroy();
    };
    dest.on('error', onError);
    src.on('data', (chunk: Buffer) => {
      if (failed) return;
      last = new Promise((r) => {
        if (!dest.write(chunk, () => r())) {
          src.pause();
          dest.once('drain', () => src.resume());
        }
      });
    });
    src.on('error', (e) => debug('fd %d pipe: %s', n, e.message));
    src.on('close', () => {
      const done = (): void => {
        dest.off('error', onError);
        resolve();
      };
      if (failed) done();
      else void last.then(done);
    });
  });
}

/** Copies this process's stdin into the payload's stdin pipe (`dest`) until the returned stop is called. */
export function pumpIn(dest: Writable): () => void {
  const src = process.stdin;
  dest.on('error', (e) => debug('stdin pipe: %s', e.message));
  src.pipe(dest);
  return () => {
    src.unpipe(dest);
    src.pause(); // a paused stdin no longer keeps this process alive
    if (!dest.destroyed) dest.destroy();
  };
}

/**
 * The payload's view of an input file: a sealed in-memory copy, opened read-only. Passing the file's own fd
 * would let a payload whose host uid owns the file chmod it through /proc/self/fd/0 and reopen it for writing;
 * a sealed memfd cannot be written, grown or shrunk by anyone, and stays seekable. The copy is made in the
 * kernel (sendfile). Returns the fd, or undefined when memfds are unavailable (the caller copies through a pipe).
 */
/** A read-only fd of a sealed memfd holding `data`; undefined when this kernel has no memfds. */
export function sealedBuffer(libc: Libc, data: Buffer): number | undefined {
  const mfd = libc.memfd_create('cubicle-files', MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (mfd < 0) return undefined;
  try {
    for (let done = 0; done < data.length;) done += writeSync(mfd, data, done);
    if (libc.fcntl(mfd, F_ADD_SEALS, SEAL_ALL) < 0) throw new Error(`sealing the files failed (errno ${libc.errno()})`);
    return openSync(`/proc/self/fd/${mfd}`, constants.O_RDONLY | O_CLOEXEC);
  } finally {
    closeSync(mfd);
  }
}

export function sealedCopy(libc: Libc, src: number): number | undefined {
  const mfd = libc.memfd_create('cubicle-input', MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (mfd < 0) {
    debug('memfd_create: errno %d; input goes through a pipe', libc.errno());
    return undefined;
  }
  let ro: number;
  try {
    let left = fstatSync(src).size;
    while (left > 0) {
      const n = libc.sendfile(mfd, src, null, Math.min(left, 1 << 30));
      if (n < 0) throw new Error(`copying the input file: sendfile failed (errno ${libc.errno()})`);
      if (n === 0) break; // the file shrank meanwhile
      left -= n;
    }
    if (libc.fcntl(mfd, F_ADD_SEALS, SEAL_ALL) < 0) throw new Error(`sealing the input copy failed (errno ${libc.errno()})`);
    ro = openSync(`/proc/self/fd/${mfd}`, constants.O_RDONLY | O_CLOEXEC); // a read-only description of the copy
  } catch (e) {
    closeSync(mfd);
    throw e;
  }
  closeSync(mfd);
  return ro;
}
