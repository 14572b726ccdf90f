// The stamp that ties a helper binary to this package: its version and a hash of the protocol's declarations
// (protocol/opcodes.ts and events.ts, which the C side is generated from), embedded at build time. A helper is
// only ever run after its stamp and ELF machine were checked (a stale build, another version's cache, another
// architecture).
import { closeSync, fstatSync, openSync, readFileSync, readSync, constants } from 'node:fs';
import * as events from '../protocol/events.js';
import * as opcodes from '../protocol/opcodes.js';

export const STAMP_MARKER = 'CUBICLE-HELPER-STAMP:';

/** ELF e_machine of each architecture a helper is built for (Node's process.arch names). */
export const ELF_MACHINE: Readonly<Record<string, number>> = { x64: 62, arm64: 183, ia32: 3, arm: 40, riscv64: 243, ppc64: 21, s390x: 22 };

/** The stamp as computed when the CLI was bundled (../cli/bundle.ts defines it there; unbundled it is undeclared).
 *  The bundle is only run while the files it was made from, package.json included, are unchanged. */
declare const CUBICLE_BUNDLED_STAMP: string | undefined;

let expected: string | undefined = typeof CUBICLE_BUNDLED_STAMP === 'string' ? CUBICLE_BUNDLED_STAMP : undefined;

/** Two FNV-1a 32-bit hashes (different offset bases) of a string's UTF-16 units, as 16 hex digits: a
 *  consistency check, not a security boundary (node:crypto would cost every CLI call its load time). */
export function fnv1a(text: string): string {
  let a = 0x811c9dc5;
  let b = 0x050c5d1f;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    a = Math.imul(a ^ c, 0x01000193);
    b = Math.imul(b ^ c, 0x01000193);
  }
  return (a >>> 0).toString(16).padStart(8, '0') + (b >>> 0).toString(16).padStart(8, '0');
}

/** The package version from package.json (two levels above dist/sandbox/native). */
export function packageVersion(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version?: unknown };
  return typeof pkg.version === 'string' ? pkg.version : '0.0.0';
}

/** The stamp a helper must carry to be run by this copy of cubicle: "<version>/<protocol hash>". */
export function expectedStamp(): string {
  if (expected === undefined) {
    // The protocol's declarations (the C header and emitters are generated from exactly these).
    const protocol = fnv1a(JSON.stringify({ opcodes, events }));
    expected = `${packageVersion()}/${protocol}`;
  }
  return expected;
}

/** Largest helper file read to find its stamp (a static build is ~1 MiB). */
const MAX_HELPER_BYTES = 16 << 20;

/** The ELF section the stamp is compiled into (compile.ts): found through the section headers, it is read in a
 *  few small reads instead of the whole binary (a file without it is searched whole, as older builds need). */
export const STAMP_SECTION = '.cubicle_stamp';

/** `length` bytes of the file at `at`, or undefined when the file is shorter. */
function readAt(fd: number, at: number, length: number): Buffer | undefined {
  const buf = Buffer.allocUnsafe(length);
  for (let done = 0; done < length;) {
    const n = readSync(fd, buf, done, length - done, at + done);
    if (n === 0) return undefined;
    done += n;
  }
  return buf;
}

/** The stamp section's bytes of a 64-bit little-endian ELF file (`head`: its first 64 bytes), when it has one
 *  whose every offset and size lies within the file and within small bounds. */
function stampSectionOf(fd: number, head: Buffer, size: number): Buffer | undefined {
  if (head.length < 64 || head[4] !== 2 || head[5] !== 1) return undefined; // ELFCLASS64, ELFDATA2LSB
  const shoff = Number(head.readBigUInt64LE(0x28));
  const shentsize = head.readUInt16LE(0x3a);
  const shnum = head.readUInt16LE(0x3c);
  const shstrndx = head.readUInt16LE(0x3e);
  if (shentsize < 64 || shnum === 0 || shnum > 4096 || shstrndx >= shnum || shoff + shnum * shentsize > size) return undefined;
  const table = readAt(fd, shoff, shnum * shentsize);
  if (!table) return undefined;
  const field = (i: number, at: number): number => Number(table.readBigUInt64LE(i * shentsize + at));
  const strOff = field(shstrndx, 24);
  const strSize = field(shstrndx, 32);
  if (strSize > 1 << 16 || strOff + strSize > size) return undefined;
  const names = readAt(fd, strOff, strSize);
  if (!names) return undefined;
  for (let i = 0; i < shnum; i++) {
    const name = table.readUInt32LE(i * shentsize);
    if (name >= names.length || names.toString('latin1', name, name + STAMP_SECTION.length + 1) !== `${STAMP_SECTION}\0`) continue;
    const off = field(i, 24);
    const len = field(i, 32);
    return len <= 4096 && off + len <= size ? readAt(fd, off, len) : undefined;
  }
  return undefined;
}

/** The stamp in `buf` after the marker (up to ';'), or undefined without a marker. */
function stampIn(buf: Buffer): string | undefined {
  const at = buf.indexOf(STAMP_MARKER);
  if (at < 0) return undefined;
  const end = buf.indexOf(';', at);
  return buf.toString('latin1', at + STAMP_MARKER.length, end < 0 ? Math.min(buf.length, at + 200) : end);
}

/** Why the file at `path` may not be run as this package's helper on this host, or null when it may. Never
 *  follows a symlink in the last component. */
export function helperMismatch(path: string, arch: string = process.arch): string | null {
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (e) {
    return `cannot open it (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`;
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) return 'not a regular file';
    if (st.size > MAX_HELPER_BYTES) return `larger than ${MAX_HELPER_BYTES} bytes`;
    const head = readAt(fd, 0, Math.min(64, st.size)) ?? Buffer.alloc(0);
    if (head.length < 20 || head.readUInt32BE(0) !== 0x7f454c46) return 'not an ELF executable';
    const machine = head.readUInt16LE(18);
    const want = ELF_MACHINE[arch];
    if (machine !== want) return `built for ELF machine ${machine}, this host (${arch}) needs ${want ?? 'an unknown machine'}`;
    const section = stampSectionOf(fd, head, st.size);
    const found = (section && stampIn(section)) ?? stampIn(readAt(fd, 0, st.size) ?? Buffer.alloc(0));
    if (found === undefined) return 'carries no version stamp (built by an older cubicle)';
    return found === expectedStamp() ? null : `stamped ${JSON.stringify(found)}, this package needs ${JSON.stringify(expectedStamp())}`;
  } finally {
    closeSync(fd);
  }
}
