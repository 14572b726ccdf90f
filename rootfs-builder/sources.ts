// What an image is built from: its kind (a directory, a plain rootfs tarball, a `docker save` archive or an OCI
// image layout), its digest, and for image archives the layer files in order.
import { createHash } from 'node:crypto';
import { closeSync, createReadStream, fstatSync, lstatSync, readdirSync, readFileSync, readlinkSync, readSync } from 'node:fs';
import { join } from 'node:path';
import { arch } from 'node:os';
import { Parser, type ReadEntry } from 'tar';
import { ImageError } from '../sandbox/errors.js';
import { openRegularForRead } from '../sandbox/safe-open.js';
import { checkCompression } from './extract.js';
import type { SourceKind } from './cache.js';

/** sha256 of a file's bytes, as `sha256:HEX`; no symlink is followed. */
export async function fileDigest(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream('', { fd: openRegularForRead(path) })) hash.update(chunk as Buffer);
  return `sha256:${hash.digest('hex')}`;
}

/**
 * The digest of a directory: sha256 over a canonical walk (names sorted, symlinks not followed): for each entry
 * its type, permission bits and path, then a regular file's size and content hash or a symlink's target. Owners
 * and times are left out, so root and an ordinary user copying the same tree get the same digest.
 */
export function directoryDigest(root: string): string {
  const hash = createHash('sha256').update('cubicle-directory-v1\0');
  const walk = (rel: string): void => {
    for (const name of readdirSync(join(root, rel)).sort()) {
      const path = rel ? `${rel}/${name}` : name;
      const full = join(root, path);
      const st = lstatSync(full);
      const mode = (st.mode & 0o7777).toString(8);
      if (st.isDirectory()) {
        hash.update(`d ${mode} ${path}\0`);
        walk(path);
      } else if (st.isSymbolicLink()) hash.update(`l ${mode} ${path}\0${readlinkSync(full)}\0`);
      else if (st.isFile()) {
        const fd = openRegularForRead(full);
        try {
          const content = createHash('sha256');
          const buf = Buffer.alloc(1 << 20);
          for (let n: number; (n = readSync(fd, buf, 0, buf.length, null)) > 0;) content.update(buf.subarray(0, n));
          hash.update(`f ${mode} ${path}\0${fstatSync(fd).size} ${content.digest('hex')}\0`);
        } finally {
          closeSync(fd);
        }
      } else hash.update(`o ${mode} ${path}\0`);
    }
  };
  try {
    walk('');
  } catch (e) {
    throw new ImageError(`cannot read the directory ${root}: ${(e as Error).message}`);
  }
  return `sha256:${hash.digest('hex')}`;
}

/** Top-level directories of a root filesystem, which no image archive has: seeing one settles it early. */
const ROOTFS_TOP = /^(bin|boot|dev|etc|home|lib|lib32|lib64|libx32|media|mnt|opt|proc|root|run|sbin|srv|sys|tmp|usr|var)$/;

/** Whether a tarball is an image archive (docker save: manifest.json; OCI layout: oci-layout) or a plain rootfs;
 *  reads until it knows (a rootfs usually says so in its first entries). */
export async function tarKind(file: string): Promise<SourceKind> {
  checkCompression(file, file);
  let seen: SourceKind | undefined;
  let oci = false;
  const stream = createReadStream('', { fd: openRegularForRead(file) });
  const parser = new Parser({
    onReadEntry: (entry: ReadEntry) => {
      entry.resume();
      if (seen) return;
      const top = entry.path.replace(/^(\.\/)+/, '').split('/')[0] ?? '';
      if (top === '' || top === '.') return;
      if (top === 'manifest.json') seen = 'docker-save';
      else if (top === 'oci-layout') oci = true;
      else if (ROOTFS_TOP.test(top)) seen = 'tar';
      if (seen) stream.destroy();
    },
  });
  await new Promise<void>((resolve, reject) => {
    stream.on('close', resolve);
    stream.on('error', reject);
    parser.on('error', reject);
    stream.pipe(parser);
  }).catch((e: unknown) => {
    if (!seen) throw new ImageError(`${file} is not a readable tar archive: ${(e as Error).message}`);
  });
  return seen ?? (oci ? 'oci-layout' : 'tar');
}

const readJson = (path: string, what: string): unknown => {
  const fd = openRegularForRead(path);
  try {
    return JSON.parse(readFileSync(fd, 'utf8')) as unknown;
  } catch (e) {
    throw new ImageError(`${what} is not valid JSON: ${(e as Error).message}`);
  } finally {
    closeSync(fd);
  }
};

/** A file of an unpacked archive named by the archive itself: relative, no '..', no symlink on the way. */
function archiveFile(dir: string, rel: unknown, what: string): string {
  if (typeof rel !== 'string' || rel.startsWith('/') || rel.split('/').includes('..') || rel === '')
    throw new ImageError(`${what} names the file ${JSON.stringify(rel)}, which is not a relative path inside the archive`);
  const path = join(dir, rel);
  closeSync(openRegularForRead(path)); // exists, regular, reached without a symlink
  return path;
}

/** The layer files of an unpacked `docker save` archive, bottom first. */
export function dockerSaveLayers(dir: string): string[] {
  const manifest = readJson(join(dir, 'manifest.json'), 'manifest.json');
  if (!Array.isArray(manifest) || manifest.length !== 1)
    throw new ImageError(
      `manifest.json lists ${Array.isArray(manifest) ? manifest.length : 'no'} images; save exactly one (docker save IMAGE)`,
    );
  const layers = (manifest[0] as { Layers?: unknown }).Layers;
  if (!Array.isArray(layers)) throw new ImageError('manifest.json has no Layers list');
  return layers.map((l) => archiveFile(dir, l, 'manifest.json'));
}

const DIGEST = /^sha256:[0-9a-f]{64}$/;
const blob = (dir: string, digest: unknown, what: string): string => {
  if (typeof digest !== 'string' || !DIGEST.test(digest))
    throw new ImageError(`${what} names the blob ${JSON.stringify(digest)}, not a sha256 digest`);
  return archiveFile(dir, `blobs/sha256/${digest.slice(7)}`, what);
};

const GOARCH: Record<string, string> = {
  x64: 'amd64',
  arm64: 'arm64',
  arm: 'arm',
  ia32: '386',
  ppc64: 'ppc64le',
  s390x: 's390x',
  riscv64: 'riscv64',
};

type Descriptor = { mediaType?: string; digest?: string; platform?: { os?: string; architecture?: string } };

/** The layer files of an unpacked OCI image layout, bottom first (an index picks this host's linux platform). */
export function ociLayers(dir: string): string[] {
  let doc = readJson(join(dir, 'index.json'), 'index.json') as { manifests?: Descriptor[]; layers?: Descriptor[]; mediaType?: string };
  for (let depth = 0; doc.manifests && depth < 4; depth++) {
    const list = doc.manifests;
    const mine = list.filter((m) => !m.platform || (m.platform.os === 'linux' && m.platform.architecture === GOARCH[arch()]));
    if (mine.length !== 1)
      throw new ImageError(
        `the image index lists ${list.length} manifests and ${mine.length} match linux/${GOARCH[arch()] ?? arch()}; ` +
          'export a layout holding one image for this platform',
      );
    doc = readJson(blob(dir, mine[0]!.digest, 'index.json'), `manifest ${mine[0]!.digest}`) as typeof doc;
  }
  if (!Array.isArray(doc.layers)) throw new ImageError('the OCI manifest has no layers list');
  return doc.layers.map((l) => blob(dir, l.digest, 'the OCI manifest'));
}
