#!/usr/bin/env node
// The cubicle executable (CommonJS: Node starts a CommonJS entry faster than an ES module). It runs the CLI
// bundle that `npm run build` writes (see bundle.ts), or the compiled modules when there is no bundle or one of
// the files it was made from has changed since.
//
// The bundle is compiled with V8's code cache: the first call stores the code V8 compiled (every function that
// call ran) in the per-user cache directory, and later calls start from it instead of parsing and compiling the
// bundle again. The cache is only ever read from a file this user owns that nobody else may write, in the
// directory of built helpers, which no sandbox may bind read-write (options/resolve.ts protectedPaths); V8 itself
// rejects a cache made from other source, by another Node version or with other flags, and it is then rewritten.
import {
  closeSync,
  constants,
  existsSync,
  fstatSync,
  lstatSync,
  mkdirSync,
  openSync,
  readFileSync,
  readSync,
  readdirSync,
  rmSync,
  renameSync,
  statSync,
  writeFileSync,
  writeSync,
  type Stats,
} from 'node:fs';
import { createRequire, wrap } from 'node:module';
import { homedir } from 'node:os';
import { isAbsolute, join } from 'node:path';
import { debuglog } from 'node:util';
import { Script } from 'node:vm';

type Main = (argv: string[]) => Promise<number>;

// CUBICLE_TIMING=1: where this call's time went, as one line on stderr at exit (see ../timing.ts; bench/cli.ts).
const marks: [string, number][] | undefined = process.env.CUBICLE_TIMING === '1' ? [['entered', performance.now()]] : undefined;
if (marks) {
  (globalThis as Record<symbol, unknown>)[Symbol.for('cubicle.timing')] = marks;
  process.on('exit', () => {
    marks.push(['exit', performance.now()]);
    const line = Object.fromEntries(marks.map(([k, v]) => [k, Math.round(v * 100) / 100]));
    writeSync(2, `cubicle-timing ${JSON.stringify({ ...line, origin: performance.timeOrigin })}\n`);
  });
}

const debug = debuglog('cubicle');
const BUNDLE = join(__dirname, 'cli.bundle.cjs');
/** The most a code cache may hold (the bundle's is ~300 KiB). */
const MAX_CACHE_BYTES = 16 << 20;

/** The per-user cache directory: the same as helperCacheRoot() in ../native/helper-path.ts. */
function cacheRoot(): string | undefined {
  const xdg = process.env.XDG_CACHE_HOME;
  if (xdg && isAbsolute(xdg)) return join(xdg, 'cubicle');
  try {
    const home = process.env.HOME && isAbsolute(process.env.HOME) ? process.env.HOME : homedir();
    return isAbsolute(home) ? join(home, '.cache', 'cubicle') : undefined;
  } catch {
    return undefined;
  }
}

/** 32-bit FNV-1a of a string, as hex. */
function fnv(text: string): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193);
  return (h >>> 0).toString(16);
}

/** Where this bundle's code cache lives: `cli-<this install>-<this build and Node>.bin`. V8 checks only the source's
 *  length, so the name carries the bundle's size and mtime: a rebuilt bundle never meets an older build's code. */
function cacheFile(bundle: { size: number; mtimeMs: number }): string | undefined {
  const root = cacheRoot();
  if (root === undefined) return undefined;
  return join(root, 'code-cache', `cli-${fnv(BUNDLE)}-${fnv(`${bundle.size}/${bundle.mtimeMs}/${process.version}/${process.arch}`)}.bin`);
}

/** The cache's bytes, when the file is this user's own regular file that nobody else may write, in a directory that is
 *  this user's own and private (as writeCache makes it). */
function readCache(path: string): Buffer | undefined {
  let fd: number;
  try {
    const dir = lstatSync(path.slice(0, path.lastIndexOf('/')));
    if (!dir.isDirectory() || dir.uid !== process.geteuid!() || dir.mode & 0o077) return undefined;
    fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch {
    return undefined;
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile() || st.uid !== process.geteuid!() || st.mode & 0o022 || st.size > MAX_CACHE_BYTES) return undefined;
    const buf = Buffer.allocUnsafe(st.size);
    for (let at = 0; at < buf.length;) {
      const n = readSync(fd, buf, at, buf.length - at, at);
      if (n === 0) return undefined;
      at += n;
    }
    return buf;
  } finally {
    closeSync(fd);
  }
}

/** Stores the code V8 compiled so far, in a directory private to this user (written aside, then renamed). Creates
 *  directories only under one of this user's own (root with another user's HOME leaves that home alone). */
function writeCache(path: string, data: Buffer): void {
  try {
    const dir = path.slice(0, path.lastIndexOf('/'));
    let existing = dir;
    while (!existsSync(existing)) existing = existing.slice(0, existing.lastIndexOf('/')) || '/';
    if (lstatSync(existing).uid !== process.geteuid!()) return debug("code cache: %s is not this user's", existing);
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const st = lstatSync(dir);
    if (!st.isDirectory() || st.uid !== process.geteuid!() || st.mode & 0o077) return debug('code cache: %s is not private', dir);
    const tmp = `${path}.${process.pid}`;
    writeFileSync(tmp, data, { mode: 0o600, flag: 'wx' });
    renameSync(tmp, path);
    // The caches of this install's earlier builds (or Node versions) go: one file per install.
    const name = path.slice(dir.length + 1);
    const install = name.slice(0, name.lastIndexOf('-') + 1);
    for (const f of readdirSync(dir)) if (f.startsWith(install) && f !== name && f.endsWith('.bin')) rmSync(join(dir, f), { force: true });
  } catch (e) {
    debug('code cache: %s', (e as Error).message);
  }
}

/** Whether tsc may have written anything since the bundle was made: in a clone, tsc rewrites dist/.tsbuildinfo
 *  whenever it emits; a package ships none (nothing there is rebuilt). One stat instead of one per input. */
function maybeStale(bundleMtimeMs: number): boolean {
  try {
    return statSync(join(__dirname, '..', '..', '.tsbuildinfo')).mtimeMs > bundleMtimeMs;
  } catch {
    return false;
  }
}

/** The bundle's main, when the bundle exists and no file it was made from is newer than it. */
function bundledMain(): { main: Main; after: () => void } | undefined {
  let bundle: Stats;
  try {
    bundle = statSync(BUNDLE);
    if (maybeStale(bundle.mtimeMs)) {
      const inputs = JSON.parse(readFileSync(join(__dirname, 'cli.bundle.json'), 'utf8')) as string[];
      if (inputs.some((f) => statSync(join(__dirname, f)).mtimeMs > bundle.mtimeMs)) return undefined;
    }
  } catch {
    return undefined;
  }
  const cache = process.env.CUBICLE_CODE_CACHE === '0' ? undefined : cacheFile(bundle);
  const cachedData = cache !== undefined ? readCache(cache) : undefined;
  const script = new Script(wrap(readFileSync(BUNDLE, 'utf8')), { filename: BUNDLE, cachedData });
  const mod = { exports: {} as { main: Main } };
  (script.runInThisContext() as (...args: unknown[]) => void).call(mod.exports, mod.exports, createRequire(BUNDLE), mod, BUNDLE, __dirname);
  const after = (): void => {
    if (cache !== undefined && (cachedData === undefined || script.cachedDataRejected)) writeCache(cache, script.createCachedData());
  };
  return { main: mod.exports.main, after };
}

async function start(): Promise<number> {
  const bundled = bundledMain();
  if (!bundled) return (await import('./cli.js')).main(process.argv.slice(2));
  marks?.push(['loaded', performance.now()]);
  const code = await bundled.main(process.argv.slice(2));
  marks?.push(['result', performance.now()]);
  bundled.after();
  return code;
}

/** Handles that may stay open at the end without holding anything back: stdio's own. A write still under way on one
 *  is a request of its own (WriteWrap), so it keeps the process for the usual end. process.stdout is not looked at:
 *  a run that never wrote to it has not made it, and making it would load Node's streams. */
const STDIO_HANDLES = new Set(['PipeWrap', 'TTYWrap']);

/**
 * Ends the process now when nothing is left in flight: no request (an unfinished write to stdout or stderr is one),
 * timer or stream of its own. Node's usual teardown (the heap freed, the thread pool joined) costs a few ms of every call
 * and does nothing for a run that is over. Anything else still pending ends the process the usual way, once done.
 */
function exitWhenIdle(code: number): void {
  process.exitCode = code;
  const active = process.getActiveResourcesInfo();
  if (!active.every((r) => STDIO_HANDLES.has(r))) return debug('exit: waiting for %s', active.join(', '));
  process.exit(code);
}

/** The commands that run one sandbox and are done with it: no other command (serve, worker, network create...) ends
 *  early, as a socket of its own would look like stdio's in the check above. */
const EXITS_WHEN_IDLE = new Set(['run', 'isolate', 'exec']);

start().then(
  // Checked once the callback that settled the run has returned (its own request counts as in flight until then).
  (code) => {
    if (EXITS_WHEN_IDLE.has(process.argv[2] ?? '')) setImmediate(exitWhenIdle, code);
    else process.exitCode = code;
  },
  (e: unknown) => {
    process.stderr.write(`cubicle: ${(e as Error).stack ?? String(e)}\n`);
    process.exitCode = 125;
  },
);
