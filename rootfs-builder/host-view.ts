// The default filesystem view built from the host: read-only binds of /usr and what programs need to run.
import { lstatSync, readdirSync, readlinkSync, type Stats } from 'node:fs';
import { SandboxHostError } from '../sandbox/errors.js';
import { Op, type PlanOp } from '../sandbox/plan/ops.js';

/** Top-level entries that merged-/usr systems keep as symlinks into usr/ and older ones as directories. */
const TOP_LEVEL = ['/bin', '/sbin', '/lib', '/lib32', '/lib64', '/libx32'];

/** Small /etc files programs read at start-up; copied into the sandbox's root (cheaper than a mount each). */
const ETC_FILES = [
  'ld.so.cache',
  'nsswitch.conf',
  'host.conf',
  'protocols',
  'services',
  'debian_version',
  'os-release',
  'localtime',
  'timezone',
];

/** /etc directories programs resolve at run time (alternatives for java/awk..., ssl certificates, the JDK's config). */
const ETC_DIRS = ['alternatives', 'ssl/certs'];

const ETC_DIR_PATTERNS = [/^java-\d+-openjdk$/, /^python3(\.\d+)?$/];

function lstatOrNull(path: string): Stats | null {
  try {
    return lstatSync(path);
  } catch {
    return null;
  }
}

let cached: readonly PlanOp[] | undefined;

/** Ops that reproduce the host's program view (no /home, /root, shadow files or other host state). */
export function hostViewOps(): readonly PlanOp[] {
  if (cached) return cached;
  const ops: PlanOp[] = [];
  if (!lstatOrNull('/usr')?.isDirectory())
    throw new SandboxHostError(
      'the host has no /usr directory to bind into the sandbox',
      "cubicle builds the sandbox's view from the host's /usr; run it on a system with one (or in a container that has one)",
    );
  ops.push(Op.bind('/usr', '/usr', 'ro'));
  for (const top of TOP_LEVEL) {
    const st = lstatOrNull(top);
    if (!st) continue;
    if (st.isSymbolicLink()) ops.push(Op.symlink(readlinkSync(top), top));
    else if (st.isDirectory()) ops.push(Op.bind(top, top, 'ro'));
  }
  ops.push(Op.dir('/etc', 0o755));
  for (const name of ETC_FILES) {
    const path = `/etc/${name}`;
    const st = lstatOrNull(path);
    if (st?.isFile() && st.size <= 4 << 20) ops.push(Op.copy(path, path, 0o644));
    else if (st?.isSymbolicLink()) ops.push(Op.symlink(readlinkSync(path), path));
  }
  const dirs = [...ETC_DIRS];
  try {
    for (const name of readdirSync('/etc')) if (ETC_DIR_PATTERNS.some((re) => re.test(name))) dirs.push(name);
  } catch {
    /* an unreadable /etc leaves only the generated files */
  }
  for (const name of dirs) {
    const path = `/etc/${name}`;
    if (lstatOrNull(path)?.isDirectory()) ops.push(Op.bind(path, path, 'ro'));
  }
  const openssl = lstatOrNull('/etc/ssl/openssl.cnf');
  if (openssl?.isFile() && openssl.size <= 1 << 20) ops.push(Op.copy('/etc/ssl/openssl.cnf', '/etc/ssl/openssl.cnf', 0o644));
  cached = ops;
  return ops;
}
