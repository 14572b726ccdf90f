// Host ids of a sandbox's own (root callers): each concurrent sandbox maps to a uid (and the same gid) of
// root's hostIdRange that no other sandbox holds, so per-user kernel counters (tasks, inotify, mqueue bytes,
// pending signals) are never shared between sandboxes. A uid is held by an flock on its file in a root-owned
// run directory: the kernel drops the lock when the holder closes it or dies, so nothing goes stale, and two
// processes can never hold the same uid.
import { closeSync, lstatSync, mkdirSync, openSync, constants as fsConstants } from 'node:fs';
import { createRequire } from 'node:module';
import { debuglog } from 'node:util';

const debug = debuglog('cubicle');

/** Where the per-uid lock files live (root-owned, mode 0700). */
export const HOST_ID_LOCK_DIR = '/run/cubicle/host-ids';

const LOCK_EX = 2;
const LOCK_NB = 4;

export interface HostIdLease {
  uid: number;
  gid: number;
  /** Gives the ids back (idempotent). */
  release: () => void;
}

type Flock = (fd: number, op: number) => number;
let flockFn: Flock | null | undefined;

function loadFlock(): Flock | null {
  if (flockFn !== undefined) return flockFn;
  try {
    const koffi = createRequire(import.meta.url)('koffi') as typeof import('koffi');
    flockFn = koffi.load('libc.so.6').func('int flock(int fd, int op)') as Flock;
  } catch (e) {
    debug('host id leases unavailable (no flock through koffi): %s', (e as Error).message);
    flockFn = null;
  }
  return flockFn;
}

/** A directory only root may change: exists (made 0700 if missing), is no symlink, owned by root, not group/other-writable. */
function rootOnlyDir(dir: string): boolean {
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    for (let d = dir; d !== '/'; d = d.slice(0, d.lastIndexOf('/')) || '/') {
      const st = lstatSync(d);
      if (!st.isDirectory() || st.uid !== 0 || (st.mode & 0o022) !== 0) return false;
    }
    return true;
  } catch {
    return false;
  }
}

/**
 * Leases the lowest free id of the range (so the lock files number at most the most sandboxes ever run at once).
 * Returns null when this process cannot lease (not root, no flock, an unsafe lock directory, every id held):
 * the caller then falls back to a shared id with capped counters.
 */
export function leaseHostIds(range: { start: number; count: number }, dir = HOST_ID_LOCK_DIR): HostIdLease | null {
  if (process.geteuid?.() !== 0) return null;
  const flock = loadFlock();
  if (!flock || !rootOnlyDir(dir)) return null;
  for (let id = range.start; id < range.start + range.count; id++) {
    let fd: number;
    try {
      fd = openSync(`${dir}/${id}`, fsConstants.O_RDWR | fsConstants.O_CREAT | fsConstants.O_NOFOLLOW, 0o600);
    } catch (e) {
      debug('host id %d: %s', id, (e as Error).message);
      continue;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) !== 0) {
      closeSync(fd);
      continue;
    }
    let held = true;
    return {
      uid: id,
      gid: id,
      release: () => {
        if (held) closeSync(fd); // closing the only descriptor drops the lock
        held = false;
      },
    };
  }
  return null;
}
