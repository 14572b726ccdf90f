// An image of the cache as the sandbox's root: the rootfs option resolved (the plan op is Op.image).
import { lstatSync } from 'node:fs';
import { ImageError, SandboxOptionError } from '../sandbox/errors.js';
import { findImage } from './cache.js';

/** The `rootfs` option resolved: which image, where its tree is, who owns it. */
export interface ResolvedRootfs {
  ref: string;
  digest: string;
  /** The tree's host path (the overlay's lower layer). */
  dir: string;
  writable: boolean;
  /** The owner of the tree: a root caller's sandbox maps to these ids, so the files are the sandbox user's. */
  owner: { uid: number; gid: number };
}

/** Resolves `rootfs`/`writable` (undefined when no image is asked for); throws SandboxOptionError naming the fix. */
export function resolveRootfs(rootfs: unknown, writable: unknown): ResolvedRootfs | undefined {
  if (writable !== undefined && typeof writable !== 'boolean') throw new SandboxOptionError('writable', 'writable must be a boolean');
  if (rootfs === undefined) {
    if (writable === true)
      throw new SandboxOptionError('writable', 'writable needs rootfs (an image to write over); the host view is always read-only');
    return undefined;
  }
  if (typeof rootfs !== 'string' || rootfs === '')
    throw new SandboxOptionError('rootfs', 'rootfs must be the name or sha256: digest of an image built with cubicle image build');
  try {
    const image = findImage(rootfs);
    const st = lstatSync(image.root);
    if (!st.isDirectory()) throw new ImageError(`the tree of image ${image.digest} is missing; build it again`);
    return { ref: rootfs, digest: image.digest, dir: image.root, writable: writable === true, owner: { uid: st.uid, gid: st.gid } };
  } catch (e) {
    if (e instanceof ImageError) throw new SandboxOptionError('rootfs', `rootfs: ${e.message}`);
    throw e;
  }
}
