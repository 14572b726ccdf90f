// Host ids of a sandbox's own: each concurrent sandbox maps to a uid that no other sandbox holds — of root's
// hostIdRange for a root caller, of its subordinate ids (/etc/subuid) for a rootless one — so per-user kernel
// counters (tasks, inotify, mqueue bytes, pending signals) are never shared between sandboxes. A uid is held by
// an flock on its file in a directory only its owner may change: the kernel drops the lock when the holder closes
// it or dies, so nothing goes stale, and two processes can never hold the same uid.
import { closeSync, openSync, statSync, constants as fsConstants } from 'node:fs';
import { debuglog } from 'node:util';
import { loadFlock, ownedDir } from '../host/flock.js';
import { passwdEntry, type Subids } from '../host/subids.js';

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

/** Where a rootless caller's subordinate id leases live: one place per user whatever its environment says, so two
 *  of its processes never lease the same id: under its home directory from /etc/passwd (a /tmp can be private
 *  to a service or a session), else, for an account without a home of its own, /tmp/cubicle-ids-UID. */
export function subidLockDir(uid: number): string {
  const home = passwdEntry(uid)?.home;
  try {
    if (home?.startsWith('/') && home !== '/' && statSync(home).isDirectory() && statSync(home).uid === uid)
      return `${home}/.cache/cubicle-ids`;
  } catch {
    /* no home of its own */
  }
  return `/tmp/cubicle-ids-${uid}`;
}

/** Holds the lowest free id of `range` in `dir` (lock files number at most the most sandboxes ever at once). */
function leaseFrom(range: { start: number; count: number }, dir: string, gidOf: (uid: number) => number): HostIdLease | null {
  const flock = loadFlock();
  if (!flock) return null;
  for (let id = range.start; id < range.start + range.count; id++) {
    let fd: number;
    try {
      fd = openSync(`${dir}/${id}`, fsConstants.O_RDONLY | fsConstants.O_CREAT | fsConstants.O_NOFOLLOW | fsConstants.O_NONBLOCK, 0o600);
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
      gid: gidOf(id),
      release: () => {
        if (held) closeSync(fd); // closing the only descriptor drops the lock
        held = false;
      },
    };
  }
  return null;
}

/**
 * Leases ids of root's range (uid and gid the same number). Returns null when this process cannot lease (not
 * root, no flock, an unsafe lock directory, every id held): the caller then falls back to a shared id with capped
 * counters.
 */
export function leaseHostIds(range: { start: number; count: number }, dir = HOST_ID_LOCK_DIR): HostIdLease | null {
  if (process.geteuid?.() !== 0 || !ownedDir(dir, 0)) return null;
  return leaseFrom(range, dir, (id) => id);
}

/**
 * Leases a rootless caller's subordinate ids: the k-th uid of its subuid range with the k-th gid of its subgid
 * range. Returns why not when it cannot.
 */
export function leaseSubids(ranges: Subids, dir = subidLockDir(process.geteuid!())): HostIdLease | { reason: string } {
  if (!ownedDir(dir, process.geteuid!())) return { reason: `${dir} is not a private directory of this user` };
  const count = Math.min(ranges.uid.count, ranges.gid.count);
  const lease = leaseFrom({ start: ranges.uid.start, count }, dir, (uid) => ranges.gid.start + (uid - ranges.uid.start));
  return lease ?? { reason: `every one of the ${count} subordinate ids is held by a running sandbox (or flock is unavailable)` };
}
