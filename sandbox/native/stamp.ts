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
    const buf = Buffer.alloc(st.size);
    for (let at = 0; at < buf.length;) {
      const n = readSync(fd, buf, at, buf.length - at, at);
      if (n === 0) break;
      at += n;
    }
    if (buf.length < 20 || buf.readUInt32BE(0) !== 0x7f454c46) return 'not an ELF executable';
    const machine = buf.readUInt16LE(18);
    const want = ELF_MACHINE[arch];
    if (machine !== want) return `built for ELF machine ${machine}, this host (${arch}) needs ${want ?? 'an unknown machine'}`;
    const at = buf.indexOf(STAMP_MARKER);
    if (at < 0) return 'carries no version stamp (built by an older cubicle)';
    const end = buf.indexOf(';', at);
    const found = buf.toString('latin1', at + STAMP_MARKER.length, end < 0 ? at + 200 : end);
    return found === expectedStamp() ? null : `stamped ${JSON.stringify(found)}, this package needs ${JSON.stringify(expectedStamp())}`;
  } finally {
    closeSync(fd);
  }
}
