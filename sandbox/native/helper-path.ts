// Finds the C helper this package may run on this host: a clone's own build, else the prebuilt binary shipped
// for this architecture, else one built from the shipped sources into a per-user cache (once), else an error
// that names the fix. Every candidate's stamp and ELF machine are checked first (stamp.ts): a helper of another
// version or architecture is never run.
import { mkdtempSync, renameSync, rmSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, isAbsolute, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { childProcess } from '../lazy-require.js';
import { mkdirNoSymlinks } from '../safe-open.js';
import { expectedStamp, helperMismatch } from './stamp.js';

/** The package's root directory (holds package.json, dist/, prebuilds/, sandbox/native/). */
const PACKAGE_DIR = fileURLToPath(new URL('../../..', import.meta.url));
/** The C sources shipped with the package (sandbox/native). */
export const NATIVE_SOURCE_DIR = join(PACKAGE_DIR, 'sandbox', 'native');
/** A clone's build (`npm run build`); never shipped. */
export const BUILT_HELPER = join(PACKAGE_DIR, 'dist', 'native', 'cubicle-helper');
/** The binary shipped for this host's architecture. */
export const PREBUILT_HELPER = join(PACKAGE_DIR, 'prebuilds', `linux-${process.arch}`, 'cubicle-helper');

/** A helper cannot be found or built; `hint` names the fix. */
export class HelperUnavailableError extends Error {
  override name = 'HelperUnavailableError';
  constructor(
    message: string,
    readonly hint: string,
  ) {
    super(message);
  }
}

/** The per-user cache directory ($XDG_CACHE_HOME/cubicle, else ~/.cache/cubicle), or why there is none. */
export function helperCacheRoot(): string | { reason: string } {
  const xdg = process.env.XDG_CACHE_HOME;
  if (xdg && isAbsolute(xdg)) return join(xdg, 'cubicle');
  let home: string;
  try {
    home = process.env.HOME && isAbsolute(process.env.HOME) ? process.env.HOME : homedir();
  } catch {
    return { reason: 'this user has no home directory' };
  }
  return isAbsolute(home) ? join(home, '.cache', 'cubicle') : { reason: 'this user has no home directory' };
}

/** mkdir -p where no component is a symlink and the directories the cache owns are private to this user (0700,
 *  owned by the effective uid). */
function privateDir(path: string, ownedFrom: string): void {
  mkdirNoSymlinks(path, 0o700, (at, st) => {
    if (at.length < ownedFrom.length || !at.startsWith(ownedFrom)) return;
    if (st.uid !== process.geteuid!()) throw new Error(`${at} is owned by uid ${st.uid}, not by this user`);
    if (st.mode & 0o077) throw new Error(`${at} is open to other users (mode ${(st.mode & 0o777).toString(8)}; it must be 0700)`);
  });
}

const compilerHint =
  'install a C compiler and the C library headers (Debian/Ubuntu: apt-get install gcc libc6-dev; Fedora: dnf install gcc glibc-devel) ' +
  'and run again: cubicle then builds its helper once from the shipped source into the per-user cache';

/** Builds the helper from the shipped sources into the per-user cache; returns its path. */
function buildIntoCache(why: string[]): string {
  const root = helperCacheRoot();
  if (typeof root !== 'string')
    throw new HelperUnavailableError(
      `no prebuilt helper fits linux-${process.arch} (${why.join('; ')}) and there is nowhere to build one: ${root.reason}`,
      'set XDG_CACHE_HOME (or HOME) to a directory this user owns; cubicle builds its helper there once',
    );
  const dir = join(root, `helper-${expectedStamp().replace(/[^\w.-]/g, '_')}-${process.arch}`);
  const path = join(dir, 'cubicle-helper');
  try {
    privateDir(dir, root);
  } catch (e) {
    throw new HelperUnavailableError(
      `the helper cache ${dir} cannot be used: ${(e as Error).message}`,
      `remove ${root} (or point XDG_CACHE_HOME at a directory of this user's without symlinks) and run again`,
    );
  }
  if (helperMismatch(path) === null) return path;
  const work = mkdtempSync(join(dir, 'build-'));
  try {
    // In a child process: the compiler glue (and the C generator) is never loaded by a run that has its helper.
    const script = fileURLToPath(new URL('./build-cache.js', import.meta.url));
    const r = childProcess().spawnSync(process.execPath, [script, work], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    if (r.status !== 0) {
      const failure = /^\{.*\}$/m.exec(r.stdout ?? '')?.[0];
      const f = failure
        ? (JSON.parse(failure) as { message: string; compilerMissing: boolean })
        : { message: r.stderr, compilerMissing: false };
      throw new HelperUnavailableError(
        `no prebuilt helper fits linux-${process.arch} (${why.join('; ')}), and building it from source failed: ${f.message}`,
        f.compilerMissing ? compilerHint : `the build failed on this host; report it with the compiler output (${dirname(path)})`,
      );
    }
    renameSync(join(work, 'cubicle-helper'), path);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
  const wrong = helperMismatch(path);
  if (wrong) throw new HelperUnavailableError(`the helper built into ${path} is unusable: ${wrong}`, compilerHint);
  return path;
}

let located: string | undefined;

/** The helper's path, checked against this package and host; builds it into the cache when no binary fits.
 *  Throws HelperUnavailableError (with a hint) when none can be had. */
export function helperPath(): string {
  if (located !== undefined) return located;
  const why: string[] = [];
  for (const [label, candidate] of [
    ['build', BUILT_HELPER],
    ['prebuilt', PREBUILT_HELPER],
  ] as const) {
    const wrong = helperMismatch(candidate);
    if (wrong === null) return (located = candidate);
    if (!/ENOENT/.test(wrong)) why.push(`${label} ${candidate}: ${wrong}`);
  }
  if (why.length === 0) why.push(`this package ships no prebuilt helper for linux-${process.arch}`);
  return (located = buildIntoCache(why));
}

/** The helper's path for messages (the doctor): the located one, else where a build would put it. Never builds. */
export function helperPathForMessages(): string {
  if (located !== undefined) return located;
  for (const candidate of [BUILT_HELPER, PREBUILT_HELPER]) if (helperMismatch(candidate) === null) return candidate;
  return BUILT_HELPER;
}

/** Throws HelperUnavailableError naming the fix when no helper can be run (kept for the supervisor's check). */
export function assertHelperBuilt(): void {
  helperPath();
}
