// Host-side opens of caller-named files that a sandbox may have been able to tamper with: no symlink is followed
// anywhere in the path (a payload with a writable bind could have planted one in a parent directory), a fifo
// never blocks the open, and only a regular file is accepted. The path is resolved by openat2 with
// RESOLVE_NO_SYMLINKS (Linux 5.6+, through koffi); elsewhere it is walked one component at a time, each
// directory opened with O_NOFOLLOW|O_DIRECTORY relative to the one before it. (Every fd is close-on-exec.)
import { closeSync, constants, fstatSync, lstatSync, mkdirSync, openSync, type Stats } from 'node:fs';
import { koffi as loadKoffi } from './lazy-require.js';
import { errnoName } from './os-names.js';

const O_PATH = 0o10000000;
const O_CLOEXEC = 0o2000000;
const AT_FDCWD = -100;
const RESOLVE_NO_SYMLINKS = 0x04;
const SYS_openat2 = 437; // the same number on every architecture
const ENOSYS = 38;
const EPERM = 1;

/** Opens a regular file for reading; no symlink anywhere in the path; throws an Error naming the path. */
export function openRegularForRead(path: string): number {
  return openChecked(path, constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOCTTY);
}

/** Creates or truncates a regular file for writing; no symlink anywhere in the path. */
export function openRegularForWrite(path: string, mode = 0o644): number {
  return openChecked(path, constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC | constants.O_NONBLOCK | constants.O_NOCTTY, mode);
}

/** Opens a file that must be regular (following symlinks as the caller asked), without blocking on a fifo. */
export function openRegularFollowing(path: string): number {
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOCTTY);
  } catch (e) {
    throw new Error(`cannot open ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, { cause: e });
  }
  return regularOnly(fd, path);
}

function regularOnly(fd: number, path: string): number {
  if (!fstatSync(fd).isFile()) {
    closeSync(fd);
    throw new Error(`${path} is not a regular file`);
  }
  return fd;
}

class OpenError extends Error {
  constructor(
    readonly errno: string,
    cause?: unknown,
  ) {
    super(errno, { cause });
  }
}

function openChecked(path: string, flags: number, mode = 0): number {
  let fd: number;
  try {
    fd = openNoSymlinks(path, flags | constants.O_NOFOLLOW | O_CLOEXEC, mode);
  } catch (e) {
    const code = e instanceof OpenError ? e.errno : ((e as NodeJS.ErrnoException).code ?? (e as Error).message);
    if (code === 'ELOOP') throw new Error(`${path} is reached through a symlink; refusing to follow it (give the real path)`, { cause: e });
    if (code === 'ENOTDIR') throw new Error(`${path}: a parent is not a directory, or is a symlink (give the real path)`, { cause: e });
    if (code === 'ENXIO') throw new Error(`${path} is a fifo or socket without a peer, not a regular file`, { cause: e });
    throw new Error(`cannot open ${path}: ${code}`, { cause: e });
  }
  return regularOnly(fd, path);
}

let openat2: ((path: string, how: Buffer) => number) | null | undefined;
let errnoOf: () => number = () => 0;

/** openat2(AT_FDCWD, path, { flags, mode, RESOLVE_NO_SYMLINKS }), else the component walk. */
function openNoSymlinks(path: string, flags: number, mode: number): number {
  if (openat2 === undefined) openat2 = bindOpenat2();
  if (openat2) {
    const how = Buffer.alloc(24);
    how.writeBigUInt64LE(BigInt(flags), 0);
    how.writeBigUInt64LE(BigInt(flags & constants.O_CREAT ? mode : 0), 8);
    how.writeBigUInt64LE(BigInt(RESOLVE_NO_SYMLINKS), 16);
    const fd = openat2(path, how);
    if (fd >= 0) return fd;
    const errno = errnoOf();
    // EPERM: a seccomp profile (older container runtimes) may refuse openat2 itself; the walk says if it was real.
    if (errno === EPERM) return walk(path, flags, mode);
    if (errno !== ENOSYS) throw new OpenError(errnoName(errno));
    openat2 = null; // an older kernel (or a filter that refuses it): walk instead from now on
  }
  return walk(path, flags, mode);
}

/** openat2 through libc's syscall(2) (glibc has no wrapper), or null when koffi cannot load. */
function bindOpenat2(): ((path: string, how: Buffer) => number) | null {
  try {
    const koffi = loadKoffi();
    const syscall = koffi.load('libc.so.6').func('long syscall(long nr, ...)');
    errnoOf = () => koffi.errno();
    return (path, how) => Number(syscall(SYS_openat2, 'int', AT_FDCWD, 'const char *', path, 'void *', how, 'unsigned long', how.length));
  } catch {
    return null;
  }
}

/**
 * Resolves `path` one component at a time: each directory is opened O_PATH|O_NOFOLLOW|O_DIRECTORY through the
 * /proc/self/fd link of its parent (which names exactly that open directory), and the last component with
 * O_NOFOLLOW, so a symlink anywhere fails with ELOOP (or ENOTDIR).
 */
function walk(path: string, flags: number, mode: number): number {
  const parts = path.split('/').filter((p) => p !== '' && p !== '.');
  if (parts.length === 0) throw new OpenError('EISDIR');
  let dir = openSync(path.startsWith('/') ? '/' : '.', O_PATH | constants.O_DIRECTORY | O_CLOEXEC);
  try {
    for (const part of parts.slice(0, -1)) {
      const next = openSync(`/proc/self/fd/${dir}/${part}`, O_PATH | constants.O_DIRECTORY | constants.O_NOFOLLOW | O_CLOEXEC);
      closeSync(dir);
      dir = next;
    }
    return openSync(`/proc/self/fd/${dir}/${parts[parts.length - 1]!}`, flags, mode);
  } finally {
    closeSync(dir);
  }
}

/** The component walk alone, read-only (for tests on kernels that have openat2). */
export const walkForTest = (path: string): number => walk(path, constants.O_RDONLY | constants.O_NOFOLLOW | O_CLOEXEC, 0);

/** mkdir -p of an absolute path that never goes through a symlink: a missing component is made with `mode`, an
 *  existing one must be a real directory; `check` may refuse any component (it throws). */
export function mkdirNoSymlinks(path: string, mode: number, check?: (at: string, st: Stats) => void): void {
  let at = '';
  for (const part of path.split('/').filter(Boolean)) {
    at += `/${part}`;
    let st;
    try {
      st = lstatSync(at);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
      mkdirSync(at, { mode });
      st = lstatSync(at);
    }
    if (st.isSymbolicLink() || !st.isDirectory()) throw new Error(`${at} is not a directory (a symlink is never followed)`);
    check?.(at, st);
  }
}
