// The options of runSandboxed/spawnSandboxed: merged under a policy's defaults, then validated synchronously
// (nothing runs before this), giving ResolvedOptions where every field is final.
import { idsTakenIn } from '../host/subids.js';
import { BOX_DIR, resolveBox, type ResolvedBox } from './box.js';
import { constants as bufferConstants } from 'node:buffer';
import { closeSync, existsSync, realpathSync, statSync } from 'node:fs';
import { basename, dirname, isAbsolute, join, normalize } from 'node:path';
import type { Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { resolveRootfs, type ResolvedRootfs } from '../../rootfs-builder/image-root.js';
import { ErrorCode, SandboxOptionError } from '../errors.js';
import { MAX_TIME_MS, resolveLimits, type ResolvedLimits } from '../limits/resolve.js';
import { helperCacheRoot, NATIVE_SOURCE_DIR, PREBUILT_HELPER } from '../native/helper-path.js';
import { POLICY_DIR } from '../policy/load.js';
import { openRegularForRead } from '../safe-open.js';
import { libseccompLibrary } from '../seccomp/libseccomp.js';
import { callerStackLimit, checkExecSize } from './exec-size.js';
import { OPTION_NAMES, type CgroupChoice, type PolicyOptions, type SandboxOptions, type TerminalSize } from '../types.js';
import { parseSize } from '../units.js';
import { nodeStream, resolvePackage } from '../lazy-require.js';
import { NETWORK_EGRESS, NETWORK_NONE, resolveNetwork, type ResolvedNetwork } from '../egress/egress.js';

export interface ResolvedMount {
  type: 'bind' | 'tmpfs';
  source?: string;
  target: string;
  readOnly: boolean;
  /** A bind nothing may be executed from. */
  noexec?: boolean;
  /** An idmapped bind: files of this on-disk owner appear owned by the sandbox's user. */
  idmap?: { uid: number; gid: number };
  size?: number;
}

/** Options after validation and defaults; every field is final. */
export interface ResolvedOptions {
  argv: string[];
  env: Record<string, string>;
  cwd: string;
  hostname: string;
  /** A private network by name (undefined: 'none', only lo). */
  network?: string;
  name?: string;
  uid: number;
  gid: number;
  username: string;
  outerUid: number;
  outerGid: number;
  /** Root without a hostUid: outerUid/outerGid are leased per run from this range (they hold its start until then). */
  hostIdRange?: { start: number; count: number };
  runAs?: { uid: number; gid: number };
  mounts: ResolvedMount[];
  rootSize: number;
  tmpSize: number;
  shmSize: number;
  timeout?: number;
  cancelSignal?: AbortSignal;
  forceKillAfterDelay: number;
  reject: boolean;
  input?: string | Uint8Array | Readable;
  inputFile?: string;
  stdin: 'ignore' | 'inherit' | 'pipe';
  stdout: 'pipe' | 'inherit' | 'ignore';
  stderr: 'pipe' | 'inherit' | 'ignore';
  /** A terminal inside, of this initial size (stderr is then 'ignore': the payload's stderr is the terminal). */
  tty?: TerminalSize;
  encoding: 'utf8' | 'buffer';
  /** Bytes of captured output kept per stream. */
  maxBuffer: number;
  seccompLog: boolean;
  limits: ResolvedLimits;
  strictLimits: boolean;
  cgroups: CgroupChoice;
  cgroupParent?: string;
  /** The work directory /box, with files or copyOut. */
  box?: ResolvedBox;
  /** An image as the root (instead of the host view). */
  rootfs?: ResolvedRootfs;
  /** Egress and published ports: the allowlist, the ports, the host programs that run them (mode 'private' on a
   *  private network, 'none' on none). */
  egress: ResolvedNetwork;
  /** homeSize: a tmpfs of this size at HOME, owned by the sandbox's user. */
  home?: { path: string; size: number };
}

/** Names of sandboxes and networks. */
export const SANDBOX_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;

export const DEFAULT_PATH = '/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin';
const KNOWN: ReadonlySet<string> = new Set(OPTION_NAMES);

const fail = (option: string, message: string): never => {
  throw new SandboxOptionError(option, message);
};

function checkId(option: string, v: unknown, dflt: number): number {
  if (v === undefined) return dflt;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > 0xfffffffe)
    fail(option, `${option} must be an integer from 0 to 4294967294, got ${String(v)}`);
  return v as number;
}

function checkHostDir(option: string, p: unknown): string {
  if (typeof p !== 'string' || !isAbsolute(p) || p.split('/').includes('..'))
    return fail(option, `${option} must be an absolute host path without '..'`);
  let real: string;
  try {
    real = realpathSync(p);
  } catch (e) {
    return fail(option, `${option} ${p} cannot be used: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  if (!statSync(real).isDirectory()) fail(option, `${option} ${p} is not a directory`);
  return real;
}

/** Root's default range of per-sandbox host ids: far above the ids of users, system accounts and the usual
 *  /etc/subuid allocations (which start at 100000, 65536 each). */
export const DEFAULT_HOST_ID_RANGE = { start: 1_000_000_000, count: 65536 };

let defaultRange: { start: number; count: number } | undefined;
/** Root's default range: the first block of 65536 ids from 1000000000 up that no host account or subordinate
 *  range holds (LXD, for one, gives root subordinate ids up to 1001000000). */
export function defaultHostIdRange(): { start: number; count: number } {
  if (defaultRange) return defaultRange;
  const { count } = DEFAULT_HOST_ID_RANGE;
  for (let start = DEFAULT_HOST_ID_RANGE.start; start + count - 1 <= 0xfffffffe; start += count)
    if (!idsTakenIn(start, start + count - 1)) return (defaultRange = { start, count });
  return (defaultRange = DEFAULT_HOST_ID_RANGE);
}

function checkIdRange(option: string, v: unknown): { start: number; count: number } {
  if (typeof v === 'string') {
    const m = /^(\d+):(\d+)$/.exec(v.trim());
    if (!m) return fail(option, `${option} must be "START:COUNT", got ${JSON.stringify(v)}`);
    v = { start: Number(m[1]), count: Number(m[2]) };
  }
  const r = v as Record<string, unknown>;
  if (typeof r !== 'object' || r === null) return fail(option, `${option} must be { start, count }`);
  const { start, count } = r;
  if (typeof start !== 'number' || !Number.isInteger(start) || typeof count !== 'number' || !Number.isInteger(count) || count < 1)
    return fail(option, `${option} must be { start, count } with integers, count at least 1`);
  if (start < 1 || start + count - 1 > 0xfffffffe || (start <= 65535 && start + count - 1 >= 65534))
    fail(option, `${option} must lie within 1-4294967294, never 0 and not over 65534/65535 (nobody, the overflow id)`);
  const taken = idsTakenIn(start, start + count - 1);
  if (taken)
    fail(
      option,
      `${option} ${start}:${count} holds ${taken}: a sandbox would own that account's files. ` +
        'Choose ids no account or subordinate range uses',
    );
  return { start, count };
}

const stripSlash = (p: string): string => (p.length > 1 && p.endsWith('/') ? p.slice(0, -1) : p);

let protectedCache: string[] | undefined;

const realOrNull = (p: string): string | null => {
  try {
    return realpathSync(p);
  } catch {
    return null;
  }
};

/** Where `p` is or would be: the real path of its deepest existing ancestor, with the rest as written. */
const realOrLexical = (p: string): string => {
  const rest: string[] = [];
  for (let at = p; ; at = dirname(at)) {
    const real = realOrNull(at);
    if (real !== null) return join(real, ...rest.reverse());
    if (dirname(at) === at) return p;
    rest.push(basename(at));
  }
};

/** Host paths that hold what cubicle runs or reads outside the sandbox, so no read-write bind may contain or
 * sit inside one: its build (dist/: the compiled library and the helper), the shipped helpers and their sources,
 * the per-user cache (whether it exists yet or not), its shipped policies (and schema),
 * koffi with its native binding, and libseccomp when CUBICLE_LIBSECCOMP names a file. The system libseccomp
 * (found by soname) lives in root-owned system directories, which no sandbox can write: none maps to host root. */
function protectedPaths(): string[] {
  if (!protectedCache) {
    const paths = [
      realpathSync(fileURLToPath(new URL('../..', import.meta.url))), // dist/
      realOrNull(POLICY_DIR),
      realOrNull(dirname(dirname(PREBUILT_HELPER))), // the shipped helpers
      realOrNull(NATIVE_SOURCE_DIR), // the sources a cache build compiles
    ];
    try {
      // koffi's exports hide its package.json: find the package from its entry point. Its native binding is a
      // package of its own beside it (where koffi loads it from), or under koffi's build/.
      let koffi = dirname(resolvePackage('koffi'));
      while (!existsSync(`${koffi}/package.json`) && dirname(koffi) !== koffi) koffi = dirname(koffi);
      paths.push(realOrNull(koffi), realOrNull(`${koffi}/../@koromix/koffi-${process.platform}-${process.arch}`));
    } catch {
      /* koffi not installed: nothing of it to protect */
    }
    protectedCache = paths.filter((p): p is string => p !== null);
  }
  // The per-user cache (helpers built at first use, the CLI's code cache), also before it exists: a payload given a
  // read-write bind of the home directory could otherwise create it and plant what later calls run outside.
  const cache = helperCacheRoot();
  const lib = libseccompLibrary();
  const libPath = lib.includes('/') ? realOrNull(lib) : null;
  return [...protectedCache, ...(typeof cache === 'string' ? [realOrLexical(cache)] : []), ...(libPath ? [libPath] : [])];
}

/** An absolute, normalized inside path without '..'; `what` names the option in errors. */
export function checkInsidePath(option: string, p: unknown): string {
  if (typeof p !== 'string' || p.length === 0) return fail(option, `${option} must be a non-empty string`);
  if (!isAbsolute(p)) fail(option, `${option} "${p}" must be an absolute path inside the sandbox (start it with /)`);
  if (p.includes('\0')) fail(option, `${option} contains a NUL byte`);
  if (p.split('/').includes('..')) fail(option, `${option} "${p}" must not contain '..'`);
  const n = normalize(p);
  return n.length > 1 && n.endsWith('/') ? n.slice(0, -1) : n;
}

/** The largest tmpfs the helper mounts (1 TiB). */
const MAX_TMPFS_BYTES = 2 ** 40;

/** Captured output is bounded by default, and never beyond what the result can hold: decoding more than
 *  MAX_STRING_LENGTH bytes as utf8, or concatenating more than MAX_LENGTH, would throw. */
export const DEFAULT_MAX_BUFFER = 100 << 20;
function checkMaxBuffer(v: unknown, encoding: 'utf8' | 'buffer'): number {
  if (v === undefined) return DEFAULT_MAX_BUFFER;
  let n: number;
  try {
    n = parseSize(v, 'maxBuffer');
  } catch (e) {
    return fail('maxBuffer', (e as Error).message);
  }
  const max = encoding === 'utf8' ? bufferConstants.MAX_STRING_LENGTH : bufferConstants.MAX_LENGTH;
  if (!(n >= 1) || n > max)
    fail(
      'maxBuffer',
      `maxBuffer must be between 1 byte and ${max} bytes (the most one ${encoding === 'utf8' ? 'string' : 'Buffer'} holds)`,
    );
  return n;
}

function checkSize(option: string, v: unknown, dflt: number): number {
  if (v === undefined) return dflt;
  try {
    const n = parseSize(v, option);
    if (n < 4096) fail(option, `${option} must be at least 4K`);
    if (n > MAX_TMPFS_BYTES) fail(option, `${option} must be at most 1T`);
    return n;
  } catch (e) {
    if (e instanceof SandboxOptionError) throw e;
    return fail(option, (e as Error).message);
  }
}

function checkMount(m: unknown, i: number): ResolvedMount {
  const where = `mounts[${i}]`;
  if (typeof m !== 'object' || m === null) return fail(where, `${where} must be an object like { type: 'bind', source, target }`);
  const spec = m as Record<string, unknown>;
  if (spec.type === 'tmpfs') {
    return {
      type: 'tmpfs',
      target: checkInsidePath(`${where}.target`, spec.target),
      readOnly: false,
      size: checkSize(`${where}.size`, spec.size, 64 << 20),
    };
  }
  if (spec.type !== 'bind') return fail(`${where}.type`, `${where}.type must be 'bind' or 'tmpfs', got ${JSON.stringify(spec.type)}`);
  const source = spec.source;
  if (typeof source !== 'string' || source.length === 0) return fail(`${where}.source`, `${where}.source must be a host path`);
  if (!isAbsolute(source)) fail(`${where}.source`, `bind source "${source}" is a relative path; give an absolute host path`);
  if (source.split('/').includes('..')) fail(`${where}.source`, `bind source "${source}" must not contain '..'`);
  try {
    statSync(source);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new SandboxOptionError(
      `${where}.source`,
      code === 'ENOENT'
        ? `bind source "${source}" does not exist on the host`
        : `bind source "${source}" cannot be used: ${code ?? (e as Error).message}`,
      ErrorCode.bindSource,
    );
  }
  const clean = stripSlash(normalize(source));
  const real = realpathSync(clean);
  if (real !== clean)
    throw new SandboxOptionError(
      `${where}.source`,
      `bind source "${source}" goes through a symlink (it resolves to "${real}"); ` +
        'symlinks in bind sources are not followed, so give the resolved path if that is what you mean',
      ErrorCode.bindSource,
    );
  const target = checkInsidePath(`${where}.target`, spec.target ?? source);
  if (target === '/') fail(`${where}.target`, `${where}.target cannot be / (the root is always a fresh tmpfs)`);
  if (spec.readOnly !== undefined && typeof spec.readOnly !== 'boolean') fail(`${where}.readOnly`, `${where}.readOnly must be a boolean`);
  const readOnly = spec.readOnly === true;
  if (!readOnly) {
    const within = (inner: string, outer: string): boolean => inner === outer || inner.startsWith(outer === '/' ? '/' : `${outer}/`);
    const own = protectedPaths().find((p) => within(p, real) || within(real, p));
    if (own)
      throw new SandboxOptionError(
        `${where}.source`,
        `a read-write bind of "${source}" would let the sandbox rewrite cubicle's own code or what it reads at run time (${own}), ` +
          'which later runs would trust outside the sandbox; ' +
          'bind it read-only (readOnly: true / --ro-bind) and give the writable subdirectories their own binds',
        ErrorCode.bindSource,
      );
  }
  if (spec.noexec !== undefined && typeof spec.noexec !== 'boolean') fail(`${where}.noexec`, `${where}.noexec must be a boolean`);
  const noexec = spec.noexec === true ? { noexec: true } : {};
  if (spec.idmap !== undefined && typeof spec.idmap !== 'boolean') fail(`${where}.idmap`, `${where}.idmap must be a boolean`);
  if (spec.idmap !== true) return { type: 'bind', source: real, target, readOnly, ...noexec };
  // Files of the source's owner appear as the sandbox's own (a root CI runner building a user's checkout).
  if (process.geteuid?.() !== 0)
    fail(`${where}.idmap`, 'an idmapped bind needs a root caller (only root may idmap a host filesystem); bind it without idmap');
  const st = statSync(real);
  if (!st.isDirectory()) fail(`${where}.idmap`, `an idmapped bind needs a directory; "${source}" is not one`);
  if (st.uid === 0 || st.gid === 0)
    fail(
      `${where}.idmap`,
      `"${source}" belongs to host root (uid ${st.uid}, gid ${st.gid}); an idmapped bind never gives root's files to the sandbox`,
    );
  return { type: 'bind', source: real, target, readOnly, ...noexec, idmap: { uid: st.uid, gid: st.gid } };
}

function checkCommand(cmd: unknown): string[] {
  if (typeof cmd === 'string') {
    if (cmd.length === 0) fail('command', 'the command is an empty string');
    return ['/bin/sh', '-c', cmd];
  }
  if (!Array.isArray(cmd) || cmd.length === 0)
    return fail('command', 'the command must be a non-empty string (run by /bin/sh -c) or a non-empty array (argv)');
  (cmd as unknown[]).forEach((a, i) => {
    if (typeof a !== 'string') return fail('command', `argv[${i}] must be a string, got ${typeof a}`);
    if (a.includes('\0')) fail('command', `argv[${i}] contains a NUL byte`);
  });
  if ((cmd[0] as string).length === 0) fail('command', 'argv[0] is empty');
  return [...(cmd as string[])];
}

/** The size a terminal gets without one given (a VT100's). */
export const DEFAULT_TERMINAL_SIZE: TerminalSize = { columns: 80, rows: 24 };

/** A window size: { columns, rows }, each a whole number of cells from 1 to 65535. */
export function checkTerminalSize(option: string, v: unknown): TerminalSize {
  const shape = `${option} must be { columns, rows } with whole numbers from 1 to 65535`;
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return fail(option, shape);
  const { columns, rows, ...rest } = v as Record<string, unknown>;
  const extra = Object.keys(rest)[0];
  if (extra !== undefined) fail(option, `${shape}; "${extra}" is not one of them`);
  for (const [name, n] of [
    ['columns', columns],
    ['rows', rows],
  ] as const)
    if (typeof n !== 'number' || !Number.isInteger(n) || n < 1 || n > 65535) fail(option, `${shape}; ${name} is ${String(n)}`);
  return { columns: columns as number, rows: rows as number };
}

/** The tty option: no terminal, the default size, or the size given. Under a terminal stderr is no stream of its own. */
function checkTty(o: Record<string, unknown>): TerminalSize | undefined {
  const v = o.tty;
  if (v === undefined || v === false) return undefined;
  const size = v === true ? DEFAULT_TERMINAL_SIZE : checkTerminalSize('tty', v);
  if (o.stderr !== undefined && o.stderr !== 'ignore')
    fail(
      'stderr',
      `stderr: '${String(o.stderr)}' conflicts with tty: the payload's stderr is the terminal, and what it writes there arrives ` +
        "in stdout; leave stderr unset (or 'ignore'), or run without tty to get it apart",
    );
  return size;
}

const oneOf = <T extends string>(option: string, v: unknown, allowed: readonly T[], dflt: T): T => {
  if (v === undefined) return dflt;
  if (!allowed.includes(v as T))
    fail(option, `${option} must be one of ${allowed.map((a) => `'${a}'`).join(', ')}, got ${JSON.stringify(v)}`);
  return v as T;
};

/** A sandbox's name: what /etc/hosts on its network resolves. */
function checkSandboxName(v: unknown): string {
  if (typeof v !== 'string' || !SANDBOX_NAME.test(v))
    fail('name', `name ${JSON.stringify(v)} must be 1-63 of letters, digits, '_', '.' or '-', starting with a letter or digit`);
  return v as string;
}

/** A private network's name (whether it exists is checked when the run starts). */
function checkNetworkOption(v: unknown, runAs: boolean): string {
  if (typeof v !== 'string' || !SANDBOX_NAME.test(v))
    fail('network', `network ${JSON.stringify(v)} must be 'none', 'egress' or a network's name (1-63 of letters, digits, '_', '.' or '-')`);
  if (runAs) fail('network', 'network cannot be combined with runAs: a network belongs to the user who made it, so run as that user');
  return v as string;
}

/** Validates and resolves options; throws SandboxOptionError (a TypeError) naming the option. */
export function resolveOptions(cmd: unknown, options: SandboxOptions = {}): ResolvedOptions {
  if (typeof options !== 'object' || options === null) fail('options', 'options must be an object');
  for (const k of Object.keys(options)) if (!KNOWN.has(k)) fail(k, `unknown option "${k}"`);
  const o = options as Record<string, unknown>;
  const argv = checkCommand(cmd);

  const env: Record<string, string> = {};
  if (o.env !== undefined) {
    if (typeof o.env !== 'object' || o.env === null || Array.isArray(o.env)) fail('env', 'env must be an object of strings');
    for (const [k, v] of Object.entries(o.env as object)) {
      if (!/^[^=\0]+$/.test(k)) fail('env', `env key ${JSON.stringify(k)} must be non-empty without '=' or NUL`);
      if (typeof v !== 'string') fail('env', `env.${k} must be a string, got ${typeof v}`);
      if ((v as string).includes('\0')) fail('env', `env.${k} contains a NUL byte`);
      env[k] = v as string;
    }
  }
  env.PATH ??= DEFAULT_PATH;

  const uid = checkId('uid', o.uid, 1000);
  const gid = checkId('gid', o.gid, 1000);
  let runAs: { uid: number; gid: number } | undefined;
  if (o.runAs !== undefined) {
    const r = o.runAs as Record<string, unknown>;
    if (typeof r !== 'object' || r === null) fail('runAs', 'runAs must be { uid, gid }');
    runAs = { uid: checkId('runAs.uid', r.uid, -1), gid: checkId('runAs.gid', r.gid, -1) };
    if (runAs.uid < 0 || runAs.gid < 0) fail('runAs', 'runAs needs both uid and gid');
    if (process.geteuid?.() !== 0) fail('runAs', 'runAs needs the caller to be root (it chooses which host user creates the sandbox)');
  }
  const rootfs = resolveRootfs(o.rootfs, o.writable);
  const callerUid = runAs?.uid ?? process.geteuid!();
  const callerGid = runAs?.gid ?? process.getegid!();
  let outerUid = callerUid;
  let outerGid = callerGid;
  let hostIdRange: { start: number; count: number } | undefined;
  if (o.hostIdRange !== undefined && (callerUid !== 0 || o.hostUid !== undefined || o.hostGid !== undefined))
    fail('hostIdRange', 'hostIdRange is for a root caller that gives no hostUid/hostGid (each sandbox then gets ids of its own)');
  if (callerUid === 0 && o.hostUid === undefined && o.hostGid === undefined && rootfs && o.hostIdRange === undefined) {
    // root's image trees belong to one unprivileged owner: mapping the sandbox to it makes the files the sandbox user's
    outerUid = rootfs.owner.uid;
    outerGid = rootfs.owner.gid;
    if (outerUid === 0 || outerGid === 0)
      fail('rootfs', `the tree of image ${rootfs.digest} is owned by root; rebuild it with this version of cubicle (image rm, then build)`);
  } else if (callerUid === 0 && o.hostUid === undefined && o.hostGid === undefined) {
    const env = process.env.CUBICLE_HOST_ID_RANGE;
    hostIdRange =
      o.hostIdRange !== undefined
        ? checkIdRange('hostIdRange', o.hostIdRange)
        : env
          ? checkIdRange('CUBICLE_HOST_ID_RANGE', env)
          : defaultHostIdRange();
    outerUid = outerGid = hostIdRange.start;
  } else if (callerUid === 0) {
    outerUid = checkId('hostUid', o.hostUid, 65534);
    outerGid = checkId('hostGid', o.hostGid, 65534);
    if (outerUid === 0 || outerGid === 0)
      fail(o.hostUid === 0 ? 'hostUid' : 'hostGid', 'the sandbox never maps to host root: choose an unprivileged hostUid/hostGid');
  } else if ((o.hostUid !== undefined && o.hostUid !== callerUid) || (o.hostGid !== undefined && o.hostGid !== callerGid)) {
    fail(
      'hostUid',
      `hostUid/hostGid can only be chosen by root; a rootless sandbox maps to the caller's own ids (${callerUid}/${callerGid})`,
    );
  }
  const username = o.username === undefined ? (uid === 0 ? 'root' : 'sandbox') : String(o.username);
  if (!/^[a-z_][a-z0-9_-]{0,31}$/.test(username)) fail('username', `username "${username}" must match [a-z_][a-z0-9_-]{0,31}`);

  const home = o.homeSize === undefined ? undefined : { path: `/home/${username}`, size: checkSize('homeSize', o.homeSize, 0) };
  if (home && home.size < 4096) fail('homeSize', 'homeSize must be at least 4096 bytes');
  env.HOME ??= home?.path ?? '/tmp';
  const hostname = o.hostname === undefined ? 'cubicle' : String(o.hostname);
  if (!/^[A-Za-z0-9]([A-Za-z0-9.-]{0,62})$/.test(hostname))
    fail('hostname', `hostname "${hostname}" must be 1-63 letters, digits, '.' or '-'`);

  const name = o.name === undefined ? undefined : checkSandboxName(o.name);
  const network =
    o.network === undefined || o.network === NETWORK_NONE || o.network === NETWORK_EGRESS
      ? undefined
      : checkNetworkOption(o.network, runAs !== undefined);

  if (o.mounts !== undefined && !Array.isArray(o.mounts)) fail('mounts', 'mounts must be an array');
  const mounts = ((o.mounts as unknown[]) ?? []).map(checkMount);

  let timeout: number | undefined;
  if (o.timeout !== undefined && o.timeout !== 0) {
    if (typeof o.timeout !== 'number' || !Number.isFinite(o.timeout) || o.timeout < 0)
      fail('timeout', `timeout must be a positive number of milliseconds, got ${String(o.timeout)}`);
    if ((o.timeout as number) > MAX_TIME_MS)
      fail('timeout', `timeout must be at most a year (${MAX_TIME_MS} ms), got ${String(o.timeout)}`);
    timeout = o.timeout as number;
  }
  if (o.cancelSignal !== undefined && !(o.cancelSignal instanceof AbortSignal)) fail('cancelSignal', 'cancelSignal must be an AbortSignal');
  const forceKillAfterDelay = o.forceKillAfterDelay === undefined ? 2000 : (o.forceKillAfterDelay as number);
  if (typeof forceKillAfterDelay !== 'number' || !(forceKillAfterDelay >= 0) || forceKillAfterDelay > MAX_TIME_MS)
    fail('forceKillAfterDelay', `forceKillAfterDelay must be a number of milliseconds from 0 to ${MAX_TIME_MS}`);
  if (o.reject !== undefined && typeof o.reject !== 'boolean') fail('reject', 'reject must be a boolean');
  if (o.seccompLog !== undefined && typeof o.seccompLog !== 'boolean') fail('seccompLog', 'seccompLog must be a boolean');
  if (o.strictLimits !== undefined && typeof o.strictLimits !== 'boolean') fail('strictLimits', 'strictLimits must be a boolean');
  if (o.cgroups !== undefined && typeof o.cgroups !== 'boolean' && o.cgroups !== 'v1' && o.cgroups !== 'v2')
    fail('cgroups', "cgroups must be true, false, 'v1' or 'v2'");
  if (o.cgroupParent !== undefined && o.cgroups === 'v1')
    fail('cgroupParent', 'cgroupParent is a cgroup v2 directory; it cannot be combined with cgroups: v1');
  if (o.cgroups === false && o.strictLimits === true)
    fail('strictLimits', 'strictLimits needs cgroups; do not combine it with cgroups: false');

  const input = o.input;
  if (input !== undefined && typeof input !== 'string' && !(input instanceof Uint8Array) && !(input instanceof nodeStream().Readable))
    fail('input', 'input must be a string, a Buffer/Uint8Array or a Readable stream');
  if (o.inputFile !== undefined) {
    if (input !== undefined) fail('inputFile', 'give either input or inputFile, not both');
    if (typeof o.inputFile !== 'string') fail('inputFile', 'inputFile must be a path');
    // Opened again when the run starts (a sandbox may plant a symlink meanwhile); checked here to fail early.
    try {
      closeSync(openRegularForRead(o.inputFile as string));
    } catch (e) {
      fail('inputFile', `inputFile: ${(e as Error).message}`);
    }
  }
  const limits = resolveLimits(o.limits, timeout);
  // The longest path execve may be given: argv[0] itself, or argv[0] under the longest PATH directory.
  const program = argv[0]!.includes('/')
    ? argv[0]!
    : env.PATH.split(':').reduce((longest, dir) => (`${dir}/${argv[0]}`.length > longest.length ? `${dir}/${argv[0]}` : longest), argv[0]!);
  checkExecSize(argv, env, program, limits.stackBytes ?? callerStackLimit());
  const encoding = oneOf('encoding', o.encoding, ['utf8', 'buffer'] as const, 'utf8');
  const box = resolveBox(o);
  if (o.tty !== undefined && typeof o.tty !== 'boolean' && (typeof o.tty !== 'object' || o.tty === null))
    fail('tty', `tty must be true, false or { columns, rows }, got ${JSON.stringify(o.tty)}`);
  const tty = checkTty(o);
  if (box && mounts.some((m) => m.target === BOX_DIR))
    fail('mounts', `${BOX_DIR} is the work directory of files/copyOut; mount elsewhere, or leave files and copyOut out`);
  return {
    argv,
    env,
    cwd: o.cwd === undefined ? (box ? BOX_DIR : '/tmp') : checkInsidePath('cwd', o.cwd),
    hostname,
    ...(network !== undefined ? { network } : {}),
    ...(name !== undefined ? { name } : {}),
    uid,
    gid,
    username,
    outerUid,
    outerGid,
    ...(hostIdRange ? { hostIdRange } : {}),
    ...(runAs ? { runAs } : {}),
    mounts,
    rootSize: checkSize('rootSize', o.rootSize, 16 << 20),
    tmpSize: checkSize('tmpSize', o.tmpSize, 64 << 20),
    shmSize: checkSize('shmSize', o.shmSize, 64 << 20),
    ...(timeout !== undefined ? { timeout } : {}),
    ...(o.cancelSignal ? { cancelSignal: o.cancelSignal as AbortSignal } : {}),
    forceKillAfterDelay,
    reject: o.reject !== false,
    ...(input !== undefined ? { input: input as ResolvedOptions['input'] } : {}),
    ...(o.inputFile !== undefined ? { inputFile: o.inputFile as string } : {}),
    stdin: oneOf('stdin', o.stdin, ['ignore', 'inherit', 'pipe'] as const, 'ignore'),
    stdout: oneOf('stdout', o.stdout, ['pipe', 'inherit', 'ignore'] as const, 'pipe'),
    stderr: tty ? 'ignore' : oneOf('stderr', o.stderr, ['pipe', 'inherit', 'ignore'] as const, 'pipe'),
    ...(tty ? { tty } : {}),
    encoding,
    maxBuffer: checkMaxBuffer(o.maxBuffer, encoding),
    seccompLog: o.seccompLog === true,
    limits,
    strictLimits: o.strictLimits === true,
    cgroups: o.cgroups === undefined ? true : (o.cgroups as CgroupChoice),
    ...(o.cgroupParent !== undefined ? { cgroupParent: checkHostDir('cgroupParent', o.cgroupParent) } : {}),
    ...(box ? { box } : {}),
    ...(rootfs ? { rootfs } : {}),
    egress: resolveNetwork(o, runAs ?? { uid: process.geteuid!(), gid: process.getegid!() }),
    ...(home ? { home } : {}),
  };
}

/** Policy defaults under the call's options: call options > policy > built-in defaults. An option set to
 *  undefined never cancels a policy default; env and limits merge key by key. */
export function mergeOptions(policy: PolicyOptions, call: SandboxOptions): SandboxOptions {
  const given = Object.fromEntries(Object.entries(call).filter(([, v]) => v !== undefined)) as SandboxOptions;
  const merged: SandboxOptions = { ...(policy as SandboxOptions), ...given };
  // Only objects merge: anything else given (e.g. env: 'A=1') stays as it is, for resolveOptions to refuse.
  const isObject = (v: unknown): v is object => typeof v === 'object' && v !== null && !Array.isArray(v);
  if (isObject(policy.env) && isObject(given.env)) merged.env = { ...policy.env, ...given.env };
  if (isObject(policy.limits) && isObject(given.limits)) merged.limits = { ...policy.limits, ...given.limits };
  return merged;
}
