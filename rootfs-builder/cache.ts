// The image cache: a private directory of content-addressed root filesystems, one per digest, plus a small
// index of names. Built trees appear by one rename; builders of one digest take turns on an flock.
//
//   CACHE/                  0700, owned by the caller ($CUBICLE_CACHE, else $XDG_CACHE_HOME/cubicle/images)
//     index.json            { "names": { NAME: "sha256:HEX" } }, replaced atomically (write + rename)
//     images/HEX/rootfs/    the image's tree (the sandbox's root)
//     images/HEX/image.json what was built from what: digest, source, size, entries, altered entries
//     tmp/                  builds in progress and trees on their way out; `image gc` empties what no one holds
//     locks/HEX, locks/index  flock files: one builder per digest, one writer of the index
import {
  closeSync,
  lstatSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  writeFileSync,
  constants,
} from 'node:fs';
import { homedir } from 'node:os';
import { isAbsolute, join, normalize } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { ImageError } from '../sandbox/errors.js';
import { loadFlock, ownedDir } from '../sandbox/host/flock.js';
import { nodeCrypto } from '../sandbox/lazy-require.js';

const LOCK_EX = 2;
const LOCK_NB = 4;

export const DIGEST_RE = /^sha256:[0-9a-f]{64}$/;
const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$/;

/** The uid and gid that own the trees of root's cache: unprivileged, just below root's default range of
 *  per-sandbox host ids, so no account's files and no other sandbox's ids are involved. */
export const ROOT_IMAGE_OWNER = 999_999_999;

/** What image.json records about a built image. */
export interface ImageMeta {
  format: 1;
  digest: string;
  source: { kind: SourceKind; path: string };
  /** Bytes of the regular files in the tree. */
  size: number;
  entries: number;
  altered: AlteredEntry[];
  built: string;
}

export type SourceKind = 'tar' | 'docker-save' | 'oci-layout' | 'directory';

/** An entry that was written differently from the input (or left out), and why. */
export interface AlteredEntry {
  entry: string;
  reason: string;
}

/** The cache directory this process uses (not checked or created). */
export function cacheDir(): string {
  const pick = (v: string | undefined, what: string): string | undefined => {
    if (v === undefined || v === '') return undefined;
    if (!isAbsolute(v) || v.split('/').includes('..'))
      throw new ImageError(`${what} must be an absolute path without '..', got ${JSON.stringify(v)}`);
    return normalize(v).replace(/(.)\/$/, '$1');
  };
  const own = pick(process.env.CUBICLE_CACHE, '$CUBICLE_CACHE');
  if (own) return own;
  const xdg = pick(process.env.XDG_CACHE_HOME, '$XDG_CACHE_HOME');
  return join(xdg ?? join(homedir(), '.cache'), 'cubicle', 'images');
}

const hexOf = (digest: string): string => digest.slice('sha256:'.length);

/** A private subdirectory of the cache: made 0700 if missing, never a symlink, owned by this user. */
function privateDir(path: string): string {
  try {
    mkdirSync(path, { mode: 0o700 });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw new ImageError(`cannot create ${path}: ${(e as Error).message}`);
  }
  const st = lstatSync(path);
  if (!st.isDirectory() || st.uid !== process.geteuid!())
    throw new ImageError(`${path} is not a directory of this user (a symlink or someone else's); remove it and retry`);
  return path;
}

/** The cache, checked: it and every directory above it can be changed by no one but this user (and root). */
export function openCache(create: boolean): string {
  const dir = cacheDir();
  if (!create) {
    try {
      lstatSync(dir);
    } catch {
      throw new ImageError(`the image cache ${dir} does not exist yet; build an image first: cubicle image build SRC --name NAME`);
    }
  }
  if (!ownedDir(dir, process.geteuid!()))
    throw new ImageError(
      `the image cache ${dir} is not a private directory of this user (it must be a real directory, mode 0700, owned by uid ` +
        `${process.geteuid!()}, with no directory above it writable by others); fix it or set $CUBICLE_CACHE to another place`,
    );
  for (const sub of ['images', 'tmp', 'locks']) privateDir(join(dir, sub));
  return dir;
}

/** Where the tree of an image lives. */
export const imageRoot = (cache: string, digest: string): string => join(cache, 'images', hexOf(digest), 'rootfs');

/** A fresh build directory inside the cache's tmp/ (so the final rename stays on one filesystem). */
export function newTempDir(cache: string, digest: string): string {
  const dir = join(cache, 'tmp', `${hexOf(digest)}.${process.pid}.${nodeCrypto().randomBytes(4).toString('hex')}`);
  mkdirSync(dir, { mode: 0o700 });
  return dir;
}

/** Runs `fn` holding the flock named `key` (a digest's hex or "index"); waits for another holder, politely. */
export async function withLock<T>(cache: string, key: string, fn: () => Promise<T> | T): Promise<T> {
  const flock = loadFlock();
  if (!flock) throw new ImageError('file locks are unavailable (flock through koffi failed to load); the image cache needs them');
  const fd = openSync(join(cache, 'locks', key), constants.O_RDONLY | constants.O_CREAT | constants.O_NOFOLLOW, 0o600);
  try {
    for (let wait = 5; flock(fd, LOCK_EX | LOCK_NB) !== 0; wait = Math.min(wait * 2, 200)) await sleep(wait);
    return await fn();
  } finally {
    closeSync(fd); // drops the lock
  }
}

/** Whether nobody holds the flock `key` right now (true means this call held it for an instant). */
function lockIsFree(cache: string, key: string): boolean {
  const flock = loadFlock();
  if (!flock) return false;
  let fd: number;
  try {
    fd = openSync(join(cache, 'locks', key), constants.O_RDONLY | constants.O_NOFOLLOW);
  } catch {
    return true;
  }
  try {
    return flock(fd, LOCK_EX | LOCK_NB) === 0;
  } finally {
    closeSync(fd);
  }
}

/** A file of the cache as text; a symlink in its place is refused (ELOOP). */
function readNoFollow(path: string): string {
  const fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW);
  try {
    return readFileSync(fd, 'utf8');
  } finally {
    closeSync(fd);
  }
}

type Index = { names: Record<string, string> };

function readIndex(cache: string): Index {
  let text: string;
  try {
    text = readNoFollow(join(cache, 'index.json'));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { names: {} };
    throw new ImageError(`cannot read the image index ${join(cache, 'index.json')}: ${(e as Error).message}`);
  }
  try {
    const v = JSON.parse(text) as Index;
    const names: Record<string, string> = {};
    for (const [k, d] of Object.entries(v.names ?? {})) if (NAME_RE.test(k) && typeof d === 'string' && DIGEST_RE.test(d)) names[k] = d;
    return { names };
  } catch {
    throw new ImageError(`the image index ${join(cache, 'index.json')} is not valid JSON; remove it (images stay, names are lost)`);
  }
}

/** Changes the index under its lock; the new index replaces the old by one rename. */
export async function updateIndex(cache: string, change: (names: Record<string, string>) => void): Promise<void> {
  await withLock(cache, 'index', () => {
    const index = readIndex(cache);
    change(index.names);
    const tmp = join(cache, 'tmp', `index.${process.pid}.${nodeCrypto().randomBytes(4).toString('hex')}`);
    writeFileSync(tmp, JSON.stringify(index, null, 1) + '\n', { mode: 0o600, flag: 'wx' });
    renameSync(tmp, join(cache, 'index.json'));
  });
}

/** Refuses an image name that could be mistaken for a digest or a path. */
export function checkName(name: string): string {
  if (!NAME_RE.test(name) || name.startsWith('sha256:') || name.split('/').some((p) => p === '.' || p === '..'))
    throw new ImageError(
      `image name ${JSON.stringify(name)} is not valid: use 1-128 letters, digits and . _ : / - ` +
        '(starting with a letter or digit), not a digest',
    );
  return name;
}

/** Reads an image's metadata, or null when it is not (completely) in the cache. */
export function readMeta(cache: string, digest: string): ImageMeta | null {
  try {
    const text = readNoFollow(join(cache, 'images', hexOf(digest), 'image.json'));
    const meta = JSON.parse(text) as ImageMeta;
    return meta.format === 1 && meta.digest === digest ? meta : null;
  } catch {
    return null;
  }
}

/** An image found by name or digest. */
export interface FoundImage {
  digest: string;
  names: string[];
  root: string;
  meta: ImageMeta;
}

/** Finds an image by NAME or sha256:HEX; throws an ImageError naming what is missing and how to build it. */
export function findImage(ref: string, cache = openCache(false)): FoundImage {
  const index = readIndex(cache);
  let digest: string | undefined;
  if (DIGEST_RE.test(ref)) digest = ref;
  else {
    checkName(ref);
    digest = index.names[ref];
    if (!digest) throw new ImageError(`no image named ${JSON.stringify(ref)} in ${cache}; build it: cubicle image build SRC --name ${ref}`);
  }
  const meta = readMeta(cache, digest);
  if (!meta)
    throw new ImageError(`image ${digest}${digest === ref ? '' : ` (${ref})`} is not in ${cache}; build it again with cubicle image build`);
  const names = Object.keys(index.names).filter((n) => index.names[n] === digest);
  return { digest, names, root: imageRoot(cache, digest), meta };
}

/** Every complete image of the cache, with the names that point to it. */
export function listImages(cache = openCache(false)): FoundImage[] {
  const index = readIndex(cache);
  const out: FoundImage[] = [];
  for (const hex of readdirSync(join(cache, 'images')).sort()) {
    const digest = `sha256:${hex}`;
    const meta = DIGEST_RE.test(digest) ? readMeta(cache, digest) : null;
    if (!meta) continue;
    out.push({ digest, names: Object.keys(index.names).filter((n) => index.names[n] === digest), root: imageRoot(cache, digest), meta });
  }
  return out;
}

/** Takes a tree out of sight by one rename, then deletes it. */
function discard(cache: string, dir: string): void {
  const gone = join(cache, 'tmp', `gone.${process.pid}.${nodeCrypto().randomBytes(4).toString('hex')}`);
  try {
    renameSync(dir, gone);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw e;
  }
  rmSync(gone, { recursive: true, force: true });
}

/** Removes a name (and its image when no other name points to it), or an image by digest with all its names. */
export async function removeImage(ref: string): Promise<{ digest: string; removed: boolean }> {
  const cache = openCache(false);
  const found = findImage(ref, cache);
  let removeTree = DIGEST_RE.test(ref);
  await updateIndex(cache, (names) => {
    if (DIGEST_RE.test(ref)) {
      for (const n of Object.keys(names)) if (names[n] === found.digest) delete names[n];
    } else {
      delete names[ref];
      removeTree = !Object.values(names).includes(found.digest);
    }
  });
  if (removeTree) await withLock(cache, hexOf(found.digest), () => discard(cache, join(cache, 'images', hexOf(found.digest))));
  return { digest: found.digest, removed: removeTree };
}

/** Deletes what no one uses: builds that died half-way, trees on their way out, images no name points to,
 *  names whose image is gone. Returns what it removed. */
export async function collectGarbage(): Promise<string[]> {
  const cache = openCache(false);
  const removed: string[] = [];
  const present = new Set(listImages(cache).map((i) => i.digest));
  await updateIndex(cache, (names) => {
    for (const n of Object.keys(names))
      if (!present.has(names[n]!)) {
        removed.push(`name ${n}`);
        delete names[n];
      }
  });
  const named = new Set(Object.values(readIndex(cache).names));
  for (const hex of readdirSync(join(cache, 'images'))) {
    const digest = `sha256:${hex}`;
    if (named.has(digest) || !lockIsFree(cache, hex)) continue;
    await withLock(cache, hex, () => discard(cache, join(cache, 'images', hex)));
    removed.push(DIGEST_RE.test(digest) && present.has(digest) ? `image ${digest}` : `incomplete image ${hex}`);
  }
  for (const entry of readdirSync(join(cache, 'tmp'))) {
    const hex = entry.split('.')[0]!;
    // a build in progress holds its digest's lock; trees on their way out (gone.*) and dead builds do not
    if (/^[0-9a-f]{64}$/.test(hex) && !lockIsFree(cache, hex)) continue;
    if (entry.startsWith('index.') && !lockIsFree(cache, 'index')) continue;
    rmSync(join(cache, 'tmp', entry), { recursive: true, force: true });
    removed.push(`leftover ${entry}`);
  }
  return removed;
}
