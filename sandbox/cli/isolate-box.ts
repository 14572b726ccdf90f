// The boxes of `cubicle isolate`: a directory per box id whose box/ is the payload's working directory, made by
// --init, removed by --cleanup. Box ids are hostile input (digits only, bounded); no path below the boxes' root
// is ever followed through a symlink, and removal never leaves the box.
import { chmodSync, chownSync, lstatSync, mkdirSync, readdirSync, rmdirSync, unlinkSync } from 'node:fs';
import { homedir } from 'node:os';
import { isAbsolute, join } from 'node:path';
import { mkdirNoSymlinks } from '../safe-open.js';
import { UsageError } from './usage.js';

/** isolate's box ids are small integers; judges use up to 2^31-1 (Judge0 takes the submission id modulo it). */
export const MAX_BOX_ID = 2147483646;
/** As root, box N runs as host uid/gid BOX_ID_BASE + N (as isolate gives each box a uid of its own): above
 *  root's default per-run range (1000000000 + 65536), so the two never meet. */
export const BOX_ID_BASE = 1_000_065_536;

/** A box id from the command line: decimal digits only, 0 to MAX_BOX_ID. */
export function parseBoxId(v: string | undefined): number {
  if (v === undefined) return 0;
  if (!/^(0|[1-9]\d{0,9})$/.test(v) || Number(v) > MAX_BOX_ID)
    throw new UsageError(`--box-id must be an integer from 0 to ${MAX_BOX_ID}, got ${JSON.stringify(v)}`);
  return Number(v);
}

const isRoot = (): boolean => process.geteuid!() === 0;

/** Where boxes live: $CUBICLE_ISOLATE_ROOT, else /var/local/lib/cubicle-isolate for root and
 *  $XDG_STATE_HOME/cubicle-isolate (~/.local/state/cubicle-isolate) for anyone else. */
export function boxesRoot(): string {
  const env = process.env.CUBICLE_ISOLATE_ROOT;
  if (env !== undefined) {
    if (!isAbsolute(env) || env.split('/').includes('..')) throw new UsageError('CUBICLE_ISOLATE_ROOT must be an absolute path without ..');
    return env;
  }
  if (isRoot()) return '/var/local/lib/cubicle-isolate';
  const state = process.env.XDG_STATE_HOME;
  return isAbsolute(state ?? '') ? join(state!, 'cubicle-isolate') : join(homedir(), '.local', 'state', 'cubicle-isolate');
}

export interface Box {
  id: number;
  /** What --init prints: the box's directory on the host. */
  dir: string;
  /** dir/box: bound at /box inside, the payload's working directory. */
  work: string;
  /** The host ids the payload maps to when the caller is root (a rootless caller's sandbox is the caller). */
  hostIds: { uid: number; gid: number } | undefined;
}

export function boxOf(id: number): Box {
  const dir = join(boxesRoot(), String(id));
  return { id, dir, work: join(dir, 'box'), hostIds: isRoot() ? { uid: BOX_ID_BASE + id, gid: BOX_ID_BASE + id } : undefined };
}

/** Fails unless `path` is a real directory (not a symlink) owned by `uid`. */
function checkDir(path: string, uid: number): void {
  const st = lstatSync(path);
  if (st.isSymbolicLink() || !st.isDirectory()) throw new Error(`${path} is not a directory (a symlink is never followed)`);
  if (st.uid !== uid) throw new Error(`${path} is owned by uid ${st.uid}, expected ${uid}`);
}

/** Removes `path` and everything below it without following a symlink; directories the payload made
 *  unreadable are opened up first (an unprivileged caller needs that; root does not). */
function removeTree(path: string): void {
  let st;
  try {
    st = lstatSync(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw e;
  }
  if (!st.isDirectory()) {
    unlinkSync(path);
    return;
  }
  if ((st.mode & 0o700) !== 0o700) chmodSync(path, 0o700);
  for (const name of readdirSync(path)) removeTree(join(path, name));
  rmdirSync(path);
}

/** --init: a fresh box (an old one with this id is removed first); returns it. */
export function initBox(box: Box): Box {
  const root = boxesRoot();
  mkdirNoSymlinks(root, isRoot() ? 0o755 : 0o700);
  checkDir(root, process.geteuid!());
  removeTree(box.dir);
  // Root's box dir is traversable (not listable) by the box's uid, which must reach box/ to bind it.
  mkdirSync(box.dir, { mode: isRoot() ? 0o711 : 0o700 });
  chmodSync(box.dir, isRoot() ? 0o711 : 0o700);
  mkdirSync(box.work, { mode: 0o755 });
  if (box.hostIds) chownSync(box.work, box.hostIds.uid, box.hostIds.gid); // the payload writes here; root still can
  return box;
}

/** The box of a --run: it must have been made by --init (real directories, owned as --init left them). */
export function openBox(box: Box): Box {
  try {
    checkDir(boxesRoot(), process.geteuid!());
    checkDir(box.dir, process.geteuid!());
    checkDir(box.work, box.hostIds?.uid ?? process.geteuid!());
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new UsageError(`box ${box.id} is not initialized; run --init first`);
    throw e;
  }
  return box;
}

/** --cleanup: removes the box (nothing to do when it is gone). */
export function cleanupBox(box: Box): void {
  checkDir(boxesRoot(), process.geteuid!());
  removeTree(box.dir);
}
