// The work directory /box: files the caller puts in before the run, and the names it takes out after. Validated
// here, whole, before anything runs: a bad name, mode or host file fails the call and nothing is half-applied.
import { closeSync, fstatSync, readSync } from 'node:fs';
import { SandboxOptionError } from '../errors.js';
import { openRegularForRead } from '../safe-open.js';
import { bytes } from '../limits/resolve.js';

/** Where the work directory is inside. */
export const BOX_DIR = '/box';
export const DEFAULT_BOX_BYTES = 64 << 20;
export const DEFAULT_COPY_OUT_MAX = 64 << 20;
/** The most names files or copyOut may list (each is one plan op and, out, one framed file). */
export const MAX_BOX_NAMES = 4096;

export interface BoxFile {
  name: string;
  mode: number;
  data: Buffer;
}

export interface ResolvedBox {
  size: number;
  files: BoxFile[];
  copyOut: string[];
  copyOutMax: number;
}

const fail = (option: string, message: string): never => {
  throw new SandboxOptionError(option, message);
};

/** A flat name in /box: 1-255 bytes, no '/', no NUL, not '.' or '..'. */
export function checkBoxName(option: string, name: unknown): string {
  if (typeof name !== 'string' || name === '' || Buffer.byteLength(name) > 255)
    return fail(option, `${option} names a file by a flat name of 1-255 bytes, got ${JSON.stringify(name)}`);
  if (name.includes('/') || name.includes('\0') || name === '.' || name === '..')
    return fail(option, `${option} name ${JSON.stringify(name)} must be a flat name in ${BOX_DIR}: no '/', NUL, '.' or '..'`);
  return name;
}

function checkMode(option: string, mode: unknown, dflt: number): number {
  if (mode === undefined) return dflt;
  if (typeof mode !== 'number' || !Number.isInteger(mode) || mode < 0 || mode > 0o777)
    fail(option, `${option} mode must be an integer from 0 to 0o777 (no setuid, setgid or sticky bit), got ${String(mode)}`);
  return mode as number;
}

/** Reads a host file for the box: never through a symlink, a regular file, at most `room` bytes. */
function readHostFile(option: string, path: unknown, room: number): { data: Buffer; mode: number } {
  if (typeof path !== 'string' || !path) return fail(option, `${option}.path must be a host path`);
  let fd: number;
  try {
    fd = openRegularForRead(path);
  } catch (e) {
    return fail(option, `${option}.path: ${(e as Error).message}`);
  }
  try {
    const st = fstatSync(fd);
    if (st.size > room) fail(option, `${option}.path ${path} holds ${st.size} bytes, more than the ${room} left in boxSize; raise boxSize`);
    const data = Buffer.alloc(st.size);
    let got = 0;
    while (got < data.length) {
      const n = readSync(fd, data, got, data.length - got, got);
      if (n === 0) break;
      got += n;
    }
    return { data: data.subarray(0, got), mode: st.mode & 0o777 };
  } finally {
    closeSync(fd);
  }
}

function resolveFile(option: string, spec: unknown, room: number): { data: Buffer; mode: number } {
  if (typeof spec === 'string') return { data: Buffer.from(spec, 'utf8'), mode: 0o644 };
  if (spec instanceof Uint8Array) return { data: Buffer.from(spec.buffer, spec.byteOffset, spec.byteLength), mode: 0o644 };
  if (typeof spec !== 'object' || spec === null) return fail(option, `${option} must be a string, a Buffer, { path } or { content, mode }`);
  const s = spec as Record<string, unknown>;
  if ('path' in s && 'content' in s) fail(option, `${option} gives both path and content; give one`);
  if ('path' in s) {
    const read = readHostFile(option, s.path, room);
    return { data: read.data, mode: checkMode(option, s.mode, read.mode) };
  }
  if (typeof s.content === 'string') return { data: Buffer.from(s.content, 'utf8'), mode: checkMode(option, s.mode, 0o644) };
  if (s.content instanceof Uint8Array)
    return { data: Buffer.from(s.content.buffer, s.content.byteOffset, s.content.byteLength), mode: checkMode(option, s.mode, 0o644) };
  return fail(option, `${option} must be a string, a Buffer, { path } or { content, mode }`);
}

/** The box of a call, or undefined when it gives neither files nor copyOut. */
export function resolveBox(o: { files?: unknown; copyOut?: unknown; copyOutMax?: unknown; boxSize?: unknown }): ResolvedBox | undefined {
  if (o.files === undefined && o.copyOut === undefined) {
    if (o.copyOutMax !== undefined) fail('copyOutMax', 'copyOutMax needs copyOut');
    if (o.boxSize !== undefined) fail('boxSize', 'boxSize sizes the work directory of files/copyOut; give one of them');
    return undefined;
  }
  const size = bytes('boxSize', o.boxSize, 4096, 2 ** 40) ?? DEFAULT_BOX_BYTES;
  const copyOutMax = bytes('copyOutMax', o.copyOutMax, 0, 2 ** 40) ?? DEFAULT_COPY_OUT_MAX;
  const files: BoxFile[] = [];
  if (o.files !== undefined) {
    if (typeof o.files !== 'object' || o.files === null || Array.isArray(o.files) || o.files instanceof Uint8Array)
      fail('files', 'files must be an object mapping flat names to contents, e.g. { "a.c": "int main(){}" }');
    const entries = Object.entries(o.files as Record<string, unknown>);
    if (entries.length > MAX_BOX_NAMES) fail('files', `files lists ${entries.length} names; at most ${MAX_BOX_NAMES}`);
    let used = 0;
    for (const [name, spec] of entries) {
      const option = `files[${JSON.stringify(name)}]`;
      checkBoxName('files', name);
      const f = resolveFile(option, spec, size - used);
      used += f.data.length;
      if (used > size) fail(option, `files hold more than boxSize (${size} bytes); raise boxSize`);
      files.push({ name, ...f });
    }
  }
  const copyOut: string[] = [];
  if (o.copyOut !== undefined) {
    if (!Array.isArray(o.copyOut)) fail('copyOut', 'copyOut must be an array of flat names in /box, e.g. ["a.out"]');
    const names = o.copyOut as unknown[];
    if (names.length > MAX_BOX_NAMES) fail('copyOut', `copyOut lists ${names.length} names; at most ${MAX_BOX_NAMES}`);
    for (const n of names) {
      const name = checkBoxName('copyOut', n);
      if (copyOut.includes(name)) fail('copyOut', `copyOut lists ${JSON.stringify(name)} twice`);
      copyOut.push(name);
    }
  }
  return { size, files, copyOut, copyOutMax };
}
