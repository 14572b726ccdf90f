// The few libc calls the fast launcher makes through koffi (posix_spawn uses vfork: no copy of Node's page tables).
import { debuglog } from 'node:util';
import { koffi as loadKoffi } from '../lazy-require.js';

const debug = debuglog('cubicle');

export interface Libc {
  pipe2(fds: Int32Array, flags: number): number;
  fcntl(fd: number, cmd: number, arg: number): number;
  close(fd: number): number;
  posix_spawn(pid: number[], path: string, fa: Buffer, attr: Buffer, argv: (string | null)[], envp: (string | null)[]): number;
  fa_init(fa: Buffer): number;
  fa_destroy(fa: Buffer): number;
  fa_adddup2(fa: Buffer, fd: number, newfd: number): number;
  fa_addclosefrom(fa: Buffer, from: number): number;
  attr_init(attr: Buffer): number;
  attr_destroy(attr: Buffer): number;
  attr_setflags(attr: Buffer, flags: number): number;
  attr_setsigmask(attr: Buffer, set: Buffer): number;
  attr_setsigdefault(attr: Buffer, set: Buffer): number;
  sigemptyset(set: Buffer): number;
  sigfillset(set: Buffer): number;
  waitpid(pid: number, status: Int32Array, options: number): number;
  memfd_create(name: string, flags: number): number;
  sendfile(out: number, inFd: number, offset: null, count: number): number;
  errno(): number;
}

export const O_CLOEXEC = 0o2000000;
export const F_DUPFD_CLOEXEC = 1030;
export const F_GETFL = 3;
export const F_ADD_SEALS = 1033;
/** F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE */
export const SEAL_ALL = 1 | 2 | 4 | 8;
export const MFD_CLOEXEC = 1;
export const MFD_ALLOW_SEALING = 2;
export const F_SETFL = 4;
export const WNOHANG = 1;
export const POSIX_SPAWN_SETSIGDEF = 0x04;
export const POSIX_SPAWN_SETSIGMASK = 0x08;

let cached: Libc | null | undefined;
let loadError: string | undefined;

/** Loads the bindings once; null (with the reason in libcUnavailableReason) when koffi or a symbol is missing. */
export function loadLibc(): Libc | null {
  if (cached !== undefined) return cached;
  try {
    const koffi = loadKoffi();
    const lib = koffi.load('libc.so.6');
    const f = (proto: string) => lib.func(proto);
    let closefrom: Libc['fa_addclosefrom'];
    try {
      closefrom = f('int posix_spawn_file_actions_addclosefrom_np(void *fa, int from)');
    } catch {
      closefrom = () => -1; // glibc < 2.34: the helper closes/marks stray fds itself
    }
    cached = {
      pipe2: f('int pipe2(int *fds, int flags)'),
      fcntl: f('int fcntl(int fd, int cmd, int arg)'),
      close: f('int close(int fd)'),
      posix_spawn: f('int posix_spawn(_Out_ int *pid, const char *path, void *fa, void *attr, const char **argv, const char **envp)'),
      fa_init: f('int posix_spawn_file_actions_init(void *fa)'),
      fa_destroy: f('int posix_spawn_file_actions_destroy(void *fa)'),
      fa_adddup2: f('int posix_spawn_file_actions_adddup2(void *fa, int fd, int newfd)'),
      fa_addclosefrom: closefrom,
      attr_init: f('int posix_spawnattr_init(void *attr)'),
      attr_destroy: f('int posix_spawnattr_destroy(void *attr)'),
      attr_setflags: f('int posix_spawnattr_setflags(void *attr, short flags)'),
      attr_setsigmask: f('int posix_spawnattr_setsigmask(void *attr, void *set)'),
      attr_setsigdefault: f('int posix_spawnattr_setsigdefault(void *attr, void *set)'),
      sigemptyset: f('int sigemptyset(void *set)'),
      sigfillset: f('int sigfillset(void *set)'),
      waitpid: f('int waitpid(int pid, int *status, int options)'),
      memfd_create: f('int memfd_create(const char *name, unsigned int flags)'),
      sendfile: f('long sendfile(int out, int in, void *offset, unsigned long count)'),
      errno: () => koffi.errno(),
    } as Libc;
  } catch (e) {
    loadError = (e as Error).message;
    debug('fast launcher unavailable: %s', loadError);
    cached = null;
  }
  return cached;
}

/** Why loadLibc() returned null, if it did. */
export const libcUnavailableReason = (): string | undefined => loadError;
