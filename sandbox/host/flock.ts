// File locks (flock through koffi) and the private directories their lock files live in: the host-side
// primitives of id leases and of the image cache.
import { lstatSync, mkdirSync } from 'node:fs';
import { debuglog } from 'node:util';
import { koffi as loadKoffi } from '../lazy-require.js';

const debug = debuglog('cubicle');

type Flock = (fd: number, op: number) => number;
let flockFn: Flock | null | undefined;

/** libc's flock(2), or null where koffi cannot load it. */
export function loadFlock(): Flock | null {
  if (flockFn !== undefined) return flockFn;
  try {
    const koffi = loadKoffi();
    flockFn = koffi.load('libc.so.6').func('int flock(int fd, int op)') as Flock;
  } catch (e) {
    debug('file locks unavailable (no flock through koffi): %s', (e as Error).message);
    flockFn = null;
  }
  return flockFn;
}

/**
 * A lock directory only `owner` (and root) may change: it exists (made 0700 if missing), is no symlink, is owned
 * by `owner` with no access for anyone else, and every directory above it is a real directory owned by root or
 * `owner` that nobody else may write to, unless sticky (/tmp): nobody else can swap a part of the path.
 */
export function ownedDir(dir: string, owner: number): boolean {
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const st = lstatSync(dir);
    if (!st.isDirectory() || st.uid !== owner || (st.mode & 0o077) !== 0) return false;
    for (let d = dir.slice(0, dir.lastIndexOf('/')) || '/'; ; d = d.slice(0, d.lastIndexOf('/')) || '/') {
      const up = lstatSync(d);
      const othersWrite = (up.mode & 0o022) !== 0 && (up.mode & 0o1000) === 0;
      if (!up.isDirectory() || (up.uid !== 0 && up.uid !== owner) || othersWrite) return false;
      if (d === '/') return true;
    }
  } catch {
    return false;
  }
}
