// Safe extraction of one tar stream into a directory with node-tar, under rules checked before node-tar sees an
// entry: a path with '..' or an absolute path, a write through a symlink, a hard link out of the tree, or a
// size or entry count past the caps refuses the whole build (naming the entry); device nodes and fifos are left
// out and setuid/setgid bits dropped, each reported by name. node-tar's own defenses stay on underneath, and any
// warning of its own refuses the build too. Layers of an image also carry whiteouts, applied before the layer.
import { closeSync, createReadStream, lstatSync, mkdirSync, readdirSync, readSync, rmSync, symlinkSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import * as zlib from 'node:zlib';
import { Parser, Unpack, type ReadEntry } from 'tar';
import { ImageError } from '../sandbox/errors.js';
import { openRegularForRead } from '../sandbox/safe-open.js';
import type { AlteredEntry } from './cache.js';

/** Caps and ownership of one build. */
export interface ExtractLimits {
  /** Bytes of regular-file content, all layers together. */
  maxBytes: number;
  /** Entries, all layers together. */
  maxEntries: number;
  /** Root only: who owns the extracted files (a rootless build's files are the caller's). */
  owner?: { uid: number; gid: number };
}

/** Counters and findings of one build, shared by all the tar streams it extracts. */
export class ExtractState {
  entries = 0;
  bytes = 0;
  readonly altered: AlteredEntry[] = [];
  constructor(
    readonly limits: ExtractLimits,
    readonly onProgress?: (entries: number, bytes: number) => void,
  ) {}
}

const FILE_TYPES = new Set(['File', 'OldFile', 'ContiguousFile']);
const META_TYPES = new Set([
  'ExtendedHeader',
  'GlobalExtendedHeader',
  'NextFileHasLongPath',
  'NextFileHasLongLinkpath',
  'OldExtendedHeader',
]);
const WHITEOUT = '.wh.';
const OPAQUE = '.wh..wh..opq';

/** An entry path made relative to the tree ('' for the tree itself), or why it is refused. */
function cleanPath(p: string): { path: string } | { refuse: string } {
  if (p.startsWith('/')) return { refuse: 'absolute path (entries must be relative to the image root)' };
  const parts = p.split('/').filter((s) => s !== '' && s !== '.');
  if (parts.includes('..')) return { refuse: "path contains '..' (it would reach outside the image root)" };
  return { path: parts.join('/') };
}

/** The compression of a file from its first bytes; zstd, xz and bzip2 are refused with the way out. */
export function checkCompression(file: string, what: string): void {
  const fd = openRegularForRead(file);
  const head = Buffer.alloc(6);
  try {
    readSync(fd, head, 0, 6, 0);
  } finally {
    closeSync(fd);
  }
  const is = (...b: number[]): boolean => b.every((x, i) => head[i] === x);
  const refuse = (name: string, tool: string): never => {
    throw new ImageError(
      `${what} is ${name}-compressed, which this Node ${process.version} cannot decompress; decompress it first ` +
        `(${tool}) and build from the .tar, or from a gzip-compressed copy`,
    );
  };
  // node-tar reads zstd only where Node's zlib has it (Node 22.15 and later)
  if (is(0x28, 0xb5, 0x2f, 0xfd) && !('createZstdDecompress' in zlib)) refuse('zstd', `zstd -d ${file}`);
  if (is(0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00)) refuse('xz', `xz -d -k ${file}`);
  if (is(0x42, 0x5a, 0x68)) refuse('bzip2', `bzip2 -d -k ${file}`);
}

/** Tracks which paths of the tree are symlinks, from this stream's entries and from what lies on disk. */
class PathKinds {
  readonly #links = new Set<string>();
  readonly #dirs = new Set<string>();
  constructor(readonly dest: string) {}
  saw(path: string, type: string): void {
    if (type === 'SymbolicLink') {
      this.#links.add(path);
      this.#dirs.delete(path);
    } else {
      this.#links.delete(path);
      if (type === 'Directory') this.#dirs.add(path);
      else this.#dirs.delete(path);
    }
  }
  /** The first parent of `path` that is a symlink (or not a directory), or undefined. */
  blockedParent(path: string): string | undefined {
    const parts = path.split('/');
    for (let i = 1; i < parts.length; i++) {
      const prefix = parts.slice(0, i).join('/');
      if (this.#links.has(prefix)) return prefix;
      if (this.#dirs.has(prefix)) continue;
      try {
        const st = lstatSync(join(this.dest, prefix));
        if (st.isSymbolicLink()) return prefix;
        if (st.isDirectory()) this.#dirs.add(prefix);
      } catch {
        return undefined; // missing: it will be made as a directory
      }
    }
    return undefined;
  }
}

/** Extracts the tar (optionally gzip-compressed) `file` into `dest` under the rules; `layer` applies whiteouts. */
export async function extractTar(file: string, dest: string, state: ExtractState, what: string, layer = false): Promise<void> {
  checkCompression(file, what);
  if (layer) await applyWhiteouts(file, dest, what);
  const kinds = new PathKinds(dest);
  // Symlinks are made after the stream, exactly as given: node-tar would strip a leading / from their targets (and
  // refuse ones climbing with ..), but inside an image they resolve in the sandbox's root, never on the host.
  const symlinks = new Map<string, string>();
  let refusal: ImageError | undefined;
  const { limits } = state;
  const unpack = new Unpack({
    cwd: dest,
    strict: false,
    preservePaths: false,
    unlink: true,
    chmod: true,
    processUmask: 0,
    noMtime: false,
    maxDepth: 256,
    ...(limits.owner ? { preserveOwner: false, uid: limits.owner.uid, gid: limits.owner.gid } : { preserveOwner: false }),
    filter: (_p: string, e: unknown) => {
      if (refusal) return false;
      const entry = e as ReadEntry;
      const refuse = (name: string, reason: string): false => {
        refusal = new ImageError(`${what}: refused entry ${JSON.stringify(name)}: ${reason}; nothing was added to the cache`, name);
        unpack.abort(refusal);
        return false;
      };
      if (META_TYPES.has(entry.type)) return true;
      const raw = entry.path;
      const c = cleanPath(raw);
      if ('refuse' in c) return refuse(raw, c.refuse);
      const path = c.path;
      if (path === '') return false; // the tree itself ("./"): its mode is cubicle's
      const base = path.slice(path.lastIndexOf('/') + 1);
      if (layer && base.startsWith(WHITEOUT)) return false; // applied before the layer
      if (++state.entries > limits.maxEntries)
        return refuse(raw, `the image has more than ${limits.maxEntries} entries (the entry cap; raise it with --max-entries)`);
      const blocked = kinds.blockedParent(path);
      if (blocked !== undefined) return refuse(raw, `it would be written through the symlink ${JSON.stringify(blocked)}`);
      switch (entry.type) {
        case 'Directory':
          entry.mode = ((entry.mode ?? 0o755) & 0o7777) | 0o700; // later entries (and layers) must fit inside
          break;
        case 'SymbolicLink':
          if (!entry.linkpath || entry.linkpath.includes('\0')) return refuse(raw, 'symlink with an empty or invalid target');
          kinds.saw(path, entry.type);
          symlinks.delete(path);
          symlinks.set(path, entry.linkpath);
          state.onProgress?.(state.entries, state.bytes);
          return false;
        case 'Link': {
          const t = cleanPath(entry.linkpath ?? '');
          if ('refuse' in t || t.path === '') return refuse(raw, `hard link to ${JSON.stringify(entry.linkpath)} outside the image root`);
          const through = kinds.blockedParent(t.path);
          if (through !== undefined) return refuse(raw, `hard link through the symlink ${JSON.stringify(through)}`);
          entry.linkpath = t.path;
          break;
        }
        case 'CharacterDevice':
        case 'BlockDevice':
        case 'FIFO':
          state.altered.push({ entry: path, reason: `${entry.type} left out (no device nodes or fifos; the sandbox has its own /dev)` });
          return false;
        default:
          if (!FILE_TYPES.has(entry.type)) {
            state.altered.push({ entry: path, reason: `${entry.type} entry left out (not a file, directory or link)` });
            return false;
          }
          state.bytes += entry.size ?? 0;
          if (state.bytes > limits.maxBytes)
            return refuse(raw, `the image holds more than ${limits.maxBytes} bytes (the size cap; raise it with --max-size)`);
      }
      if (entry.type !== 'Directory' && entry.mode !== undefined && (entry.mode & 0o6000) !== 0) {
        state.altered.push({ entry: path, reason: `${entry.mode & 0o4000 ? 'setuid' : 'setgid'} bit dropped` });
        entry.mode &= ~0o6000;
      }
      entry.path = path;
      kinds.saw(path, entry.type);
      symlinks.delete(path);
      state.onProgress?.(state.entries, state.bytes);
      return true;
    },
    onwarn: (code: string, message: string, data: { entry?: { path?: string }; path?: string; file?: string }) => {
      if (refusal || code === 'TAR_ABORT') return;
      const name = data.entry?.path ?? data.path ?? data.file ?? '(archive)';
      refusal = new ImageError(
        `${what}: refused entry ${JSON.stringify(name)}: ${message} (${code}); nothing was added to the cache`,
        name,
      );
      unpack.abort(refusal);
    },
  });
  try {
    await pipeline(createReadStream('', { fd: openRegularForRead(file) }), unpack);
  } catch (e) {
    if (refusal) throw refusal;
    throw new ImageError(`${what} is not a readable tar archive: ${(e as Error).message}`);
  }
  if (refusal) throw refusal;
  for (const [path, target] of symlinks) placeSymlink(dest, path, target, what);
}

/** Makes a symlink of the tree in place of whatever is there (tar's replace semantics), its parents checked again. */
function placeSymlink(dest: string, path: string, target: string, what: string): void {
  const blocked = new PathKinds(dest).blockedParent(path);
  if (blocked !== undefined)
    throw new ImageError(
      `${what}: refused entry ${JSON.stringify(path)}: it would be written through the symlink ${JSON.stringify(blocked)}`,
      path,
    );
  const full = join(dest, path);
  mkdirSync(dirname(full), { recursive: true, mode: 0o755 });
  rmSync(full, { recursive: true, force: true });
  symlinkSync(target, full);
}

/** Applies a layer's whiteouts to the layers below it: `.wh.NAME` deletes NAME, `.wh..wh..opq` empties its directory. */
async function applyWhiteouts(file: string, dest: string, what: string): Promise<void> {
  const outs: { dir: string; name: string | null; raw: string }[] = [];
  const parser = new Parser({
    onReadEntry: (entry: ReadEntry) => {
      const c = cleanPath(entry.path);
      const base = 'path' in c ? c.path.slice(c.path.lastIndexOf('/') + 1) : '';
      if ('path' in c && base.startsWith(WHITEOUT)) {
        const dir = c.path.slice(0, Math.max(0, c.path.lastIndexOf('/')));
        outs.push({ dir, name: base === OPAQUE ? null : base.slice(WHITEOUT.length), raw: entry.path });
      }
      entry.resume();
    },
  });
  try {
    await pipeline(createReadStream('', { fd: openRegularForRead(file) }), parser);
  } catch (e) {
    throw new ImageError(`${what} is not a readable tar archive: ${(e as Error).message}`);
  }
  const kinds = new PathKinds(dest);
  for (const w of outs) {
    if (w.name === '' || w.name === '.' || w.name === '..')
      throw new ImageError(`${what}: refused whiteout ${JSON.stringify(w.raw)}: no name`, w.raw);
    const target = w.name === null ? w.dir : w.dir ? `${w.dir}/${w.name}` : w.name;
    const blocked = kinds.blockedParent(w.name === null ? `${w.dir}/x` : target);
    if (blocked !== undefined)
      throw new ImageError(
        `${what}: refused whiteout ${JSON.stringify(w.raw)}: it would delete through the symlink ${JSON.stringify(blocked)}`,
        w.raw,
      );
    const full = join(dest, target);
    if (w.name !== null) rmSync(full, { recursive: true, force: true });
    else {
      let st;
      try {
        st = lstatSync(full);
      } catch {
        continue; // nothing below to hide
      }
      if (st.isDirectory()) for (const child of readdirSync(full)) rmSync(join(full, child), { recursive: true, force: true });
    }
  }
}
