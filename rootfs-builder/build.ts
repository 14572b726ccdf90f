// `cubicle image build`: digest the input, and unless the cache has it, extract it into a private temp
// directory under the digest's lock and move it into place with one rename. A refused entry leaves nothing behind.
import { chmodSync, chownSync, lchownSync, lstatSync, mkdirSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { create as createTar } from 'tar';
import { ImageError } from '../sandbox/errors.js';
import {
  checkName,
  imageRoot,
  newTempDir,
  openCache,
  readMeta,
  ROOT_IMAGE_OWNER,
  updateIndex,
  withLock,
  type ImageMeta,
  type SourceKind,
} from './cache.js';
import { ExtractState, extractTar, type ExtractLimits } from './extract.js';
import { directoryDigest, dockerSaveLayers, fileDigest, ociLayers, tarKind } from './sources.js';

export interface BuildImageOptions {
  /** A name that will point to the image (`--rootfs NAME`). */
  name?: string;
  /** Cap on the bytes of regular files (all layers). Default 16 GiB. */
  maxBytes?: number;
  /** Cap on entries (all layers). Default 2,000,000. */
  maxEntries?: number;
  /** Called as entries are extracted (not on a cache hit). */
  onProgress?: (entries: number, bytes: number) => void;
}

export interface BuiltImage {
  digest: string;
  name?: string;
  /** The image's tree in the cache. */
  root: string;
  /** True when the cache already had it (nothing was extracted). */
  cached: boolean;
  meta: ImageMeta;
}

export const DEFAULT_MAX_BYTES = 16 * 1024 ** 3;
export const DEFAULT_MAX_ENTRIES = 2_000_000;

/** Builds (or finds) the image of `source`: a directory, a rootfs tarball, a docker save archive or an OCI layout. */
export async function buildImage(source: string, opts: BuildImageOptions = {}): Promise<BuiltImage> {
  if (opts.name !== undefined) checkName(opts.name);
  const src = resolve(source);
  let st;
  try {
    st = lstatSync(src);
  } catch (e) {
    throw new ImageError(`cannot use ${source}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  if (st.isSymbolicLink()) throw new ImageError(`${source} is a symlink; symlinks are not followed, give the path it points to`);
  if (!st.isDirectory() && !st.isFile()) throw new ImageError(`${source} is neither a directory nor a tar archive`);
  const digest = st.isDirectory() ? directoryDigest(src) : await fileDigest(src);
  const cache = openCache(true);
  const hex = digest.slice(7);
  let cached = true;
  const meta = await withLock(cache, hex, async () => {
    const have = readMeta(cache, digest);
    if (have) return have;
    cached = false;
    const tmp = newTempDir(cache, digest);
    try {
      const made = await extractInto(src, st.isDirectory(), tmp, digest, opts);
      writeFileSync(join(tmp, 'image.json'), JSON.stringify(made, null, 1) + '\n', { mode: 0o600 });
      rmSync(join(cache, 'images', hex), { recursive: true, force: true }); // an incomplete one (no image.json)
      renameSync(tmp, join(cache, 'images', hex));
      return made;
    } catch (e) {
      rmSync(tmp, { recursive: true, force: true });
      throw e;
    }
  });
  if (opts.name !== undefined) await updateIndex(cache, (names) => void (names[opts.name!] = digest));
  return { digest, ...(opts.name !== undefined ? { name: opts.name } : {}), root: imageRoot(cache, digest), cached, meta };
}

async function extractInto(src: string, isDir: boolean, tmp: string, digest: string, opts: BuildImageOptions): Promise<ImageMeta> {
  const rootfs = join(tmp, 'rootfs');
  const owner = process.geteuid!() === 0 ? { uid: ROOT_IMAGE_OWNER, gid: ROOT_IMAGE_OWNER } : undefined;
  const limits: ExtractLimits = {
    maxBytes: opts.maxBytes ?? DEFAULT_MAX_BYTES,
    maxEntries: opts.maxEntries ?? DEFAULT_MAX_ENTRIES,
    ...(owner ? { owner } : {}),
  };
  const state = new ExtractState(limits, opts.onProgress);
  mkdirPrivate(rootfs);
  let kind: SourceKind;
  if (isDir) {
    kind = 'directory';
    const tar = join(tmp, 'source.tar');
    await createTar({ cwd: src, file: tar, portable: true, follow: false, onwarn: (code, message) => warnCreate(state, code, message) }, [
      '.',
    ]);
    await extractTar(tar, rootfs, state, src);
  } else {
    kind = await tarKind(src);
    if (kind === 'tar') await extractTar(src, rootfs, state, src);
    else {
      const archive = join(tmp, 'archive');
      mkdirPrivate(archive);
      await extractTar(src, archive, new ExtractState(limits), src);
      const layers = kind === 'docker-save' ? dockerSaveLayers(archive) : ociLayers(archive);
      for (const [i, layer] of layers.entries())
        await extractTar(layer, rootfs, state, `${src} layer ${i + 1} of ${layers.length} (${layer.slice(archive.length + 1)})`, true);
      rmSync(archive, { recursive: true, force: true });
    }
  }
  rmSync(join(tmp, 'source.tar'), { force: true });
  chmodSync(rootfs, 0o755);
  if (owner) chownSync(rootfs, owner.uid, owner.gid);
  const { size, entries } = measure(rootfs, owner);
  return { format: 1, digest, source: { kind, path: src }, size, entries, altered: state.altered, built: new Date().toISOString() };
}

/** A directory only this user may enter (the build's parts, until the tree is moved into place). */
const mkdirPrivate = (path: string): void => void mkdirSync(path, { mode: 0o700 });

function warnCreate(state: ExtractState, code: string, message: string): void {
  state.altered.push({ entry: message.replace(/^.*?: /, ''), reason: `left out while reading the directory (${code}: ${message})` });
}

/** Bytes of regular files and the number of entries in a tree (symlinks not followed); gives what node-tar left
 *  to root (symlinks) to `owner`. */
function measure(root: string, owner: { uid: number; gid: number } | undefined): { size: number; entries: number } {
  let size = 0;
  let entries = 0;
  const walk = (dir: string): void => {
    for (const d of readdirSync(dir, { withFileTypes: true })) {
      entries++;
      const p = join(dir, d.name);
      const st = lstatSync(p);
      if (owner && (st.uid !== owner.uid || st.gid !== owner.gid)) lchownSync(p, owner.uid, owner.gid);
      if (d.isDirectory()) walk(p);
      else if (d.isFile()) size += st.size;
    }
  };
  walk(root);
  return { size, entries };
}
