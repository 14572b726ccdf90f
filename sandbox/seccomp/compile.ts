// Compiles an OCI seccomp profile to BPF with libseccomp; results are cached by content hash (per process).
import { readFileSync } from 'node:fs';
import { constants as osConstants } from 'node:os';
import { Act, ARCH_TOKENS, Attr, CompareOp, libseccomp, nativeArchName, type ArgCmp } from './libseccomp.js';
import type { NotifyMode, SeccompProfile } from '../types.js';
import { prebuiltKey, prebuiltSource, readPrebuilt, writePrebuilt } from './prebuilt.js';
import { argValue, ProfileError } from './profile.js';

/** How the helper treats the filter's notifications: kill the sandbox and report, or log and let it continue. */

export interface CompiledFilter {
  bpf: Buffer;
  notify: NotifyMode;
  hash: string;
  architectures: string[];
  /** Names the profile gives that libseccomp does not know for an architecture (ignored, as OCI runtimes do). */
  unknownSyscalls: string[];
  compileMs: number;
  cached: boolean;
}

/** Syscalls the helper itself makes after installing the filter: reporting an exec failure, and execve. */
export const HELPER_NEEDS = ['execve', 'write', 'exit', 'exit_group'];
const EPERM = osConstants.errno.EPERM;
const CACHE_FORMAT = 1;
const cache = new Map<string, CompiledFilter>();

function userNotifAvailable(): boolean {
  try {
    return /\buser_notif\b/.test(readFileSync('/proc/sys/kernel/seccomp/actions_avail', 'utf8'));
  } catch {
    return false;
  }
}

/**
 * A BPF prologue for x86_64: x32 syscalls (nr >= 0x40000000) share the x86_64 audit arch, so a filter that
 * allows by default would let them through unfiltered. Kill them unless the profile lists SCMP_ARCH_X32.
 */
function x32Prologue(): Buffer {
  const insn = (code: number, jt: number, jf: number, k: number): Buffer => {
    const b = Buffer.alloc(8);
    b.writeUInt16LE(code, 0);
    b.writeUInt8(jt, 2);
    b.writeUInt8(jf, 3);
    b.writeUInt32LE(k >>> 0, 4);
    return b;
  };
  const LD_W_ABS = 0x20,
    JEQ_K = 0x15,
    JGE_K = 0x35,
    RET_K = 0x06;
  return Buffer.concat([
    insn(LD_W_ABS, 0, 0, 4), // A = seccomp_data.arch
    insn(JEQ_K, 0, 4, ARCH_TOKENS.SCMP_ARCH_X86_64!), // not x86_64: on to the filter
    insn(LD_W_ABS, 0, 0, 0), // A = seccomp_data.nr
    insn(JEQ_K, 2, 0, 0xffffffff), // nr -1 (a tracer's skipped call): on to the filter, as libseccomp does
    insn(JGE_K, 0, 1, 0x40000000), // x32 bit set: kill
    insn(RET_K, 0, 0, Act.KILL_PROCESS),
  ]);
}

interface BuiltFilter {
  ctx: unknown;
  usesNotify: boolean;
  archs: string[];
  unknown: string[];
}

/** Builds a libseccomp context for `profile` (the caller exports and releases it). */
function buildFilter(profile: SeccompProfile, mode: 'enforce' | 'log', where: string, notifyOk: boolean): BuiltFilter {
  const lib = libseccomp();
  const archs = profile.architectures?.length ? profile.architectures : [nativeArchName()];
  let usesNotify = false;
  const map = (action: string, errnoRet: number | undefined): number => {
    if (action === 'SCMP_ACT_ALLOW') return Act.ALLOW;
    if (mode === 'log' && notifyOk) return ((usesNotify = true), Act.NOTIFY);
    switch (action) {
      case 'SCMP_ACT_ERRNO':
        return Act.errno(errnoRet ?? profile.defaultErrnoRet ?? EPERM);
      case 'SCMP_ACT_TRAP':
        return Act.TRAP;
      case 'SCMP_ACT_LOG':
        return Act.LOG;
      default: // every kill action: report which syscall through a notification, then kill (or plainly kill)
        if (notifyOk) return ((usesNotify = true), Act.NOTIFY);
        return Act.KILL_PROCESS;
    }
  };
  const defAction = map(profile.defaultAction, profile.defaultErrnoRet);
  const ctx = lib.init(defAction);
  const unknown = new Set<string>();
  try {
    lib.attrSet(ctx, Attr.ACT_BADARCH, Act.KILL_PROCESS); // i386 int 0x80 and other foreign ABIs: killed
    lib.attrSet(ctx, Attr.CTL_NNP, 0); // the helper sets NO_NEW_PRIVS itself
    lib.attrSet(ctx, Attr.CTL_OPTIMIZE, 2); // binary tree: long allowlists cost O(log n) per syscall
    const tokens = archs.map((a) => {
      const t = ARCH_TOKENS[a];
      if (t === undefined)
        throw new ProfileError(`${where}.architectures`, `${a} is not supported (known: ${Object.keys(ARCH_TOKENS).join(', ')})`);
      return t;
    });
    const native = ARCH_TOKENS[nativeArchName()]!;
    for (const t of tokens) if (t !== native) lib.archAdd(ctx, t);
    if (!tokens.includes(native)) lib.archRemove(ctx, native);

    profile.syscalls.forEach((rule, i) => {
      const action = map(rule.action, rule.errnoRet);
      if (action === defAction) return; // libseccomp refuses rules that repeat the default
      const cmps: ArgCmp[] = (rule.args ?? []).map((a, j) => {
        const w = `${where}.syscalls[${i}].args[${j}]`;
        const value = argValue(a.value, `${w}.value`);
        const two = a.valueTwo === undefined ? 0n : argValue(a.valueTwo, `${w}.valueTwo`);
        // As in OCI and libseccomp, MASKED_EQ takes the mask in value and the expected bits in valueTwo.
        return { index: a.index, op: CompareOp[a.op]!, a: value, b: two };
      });
      for (const name of rule.names) {
        if (HELPER_NEEDS.includes(name)) {
          // The helper calls these after installing the filter: only an unconditional allow can be honoured.
          if (rule.action !== 'SCMP_ACT_ALLOW' || cmps.length)
            throw new ProfileError(
              `${where}.syscalls[${i}]`,
              `${name} cannot be restricted: the helper needs ${HELPER_NEEDS.join(', ')} after installing the filter`,
            );
          continue;
        }
        // One rule, by the native (or libseccomp pseudo) number: libseccomp translates it for every architecture.
        const nr = lib.resolveNative(name);
        if (nr === -1) {
          unknown.add(name);
          continue;
        }
        const rc = lib.ruleAdd(ctx, action, nr, cmps);
        if (rc !== 0) throw new ProfileError(`${where}.syscalls[${i}]`, `libseccomp refused the rule for ${name} (${ruleError(-rc)})`);
      }
    });
    if (defAction !== Act.ALLOW)
      for (const name of HELPER_NEEDS) {
        const nr = lib.resolveNative(name);
        if (nr !== -1) lib.ruleAdd(ctx, Act.ALLOW, nr, []);
      }
    return { ctx, usesNotify, archs, unknown: [...unknown].sort() };
  } catch (e) {
    lib.release(ctx);
    throw e;
  }
}

/** Compiles `profile` to BPF; mode 'log' turns every non-allow action into a logged, continued notification. */
const byObject = new WeakMap<SeccompProfile, Map<string, CompiledFilter>>();

export function compileProfile(profile: SeccompProfile, mode: 'enforce' | 'log', where = 'seccomp'): CompiledFilter {
  // The same (cached, unmodified) profile object: skip even the hashing.
  const seen = byObject.get(profile)?.get(mode);
  if (seen) return { ...seen, cached: true, compileMs: 0 };
  const compiled = compileByHash(profile, mode, where);
  if (!byObject.has(profile)) byObject.set(profile, new Map());
  byObject.get(profile)!.set(mode, compiled);
  return compiled;
}

function compileByHash(profile: SeccompProfile, mode: 'enforce' | 'log', where: string): CompiledFilter {
  const notifyOk = userNotifAvailable();
  const source = prebuiltSource(profile, mode, notifyOk);
  const prebuilt = readPrebuilt(source);
  if (prebuilt) return { ...prebuilt, hash: prebuiltKey(source), compileMs: 0, cached: true };
  const lib = libseccomp();
  const hash = prebuiltKey(JSON.stringify({ CACHE_FORMAT, source, v: lib.version }));
  const hit = cache.get(hash);
  if (hit) return { ...hit, cached: true, compileMs: 0 };
  const compiled = compileNow(profile, mode, where, notifyOk, hash);
  cache.set(hash, compiled);
  return compiled;
}

/** Compiles with libseccomp, no cache; `notifyOk` says whether the kernel has user notifications. */
export function compileNow(
  profile: SeccompProfile,
  mode: 'enforce' | 'log',
  where: string,
  notifyOk: boolean,
  hash: string,
): CompiledFilter {
  const lib = libseccomp();
  const started = performance.now();
  const built = buildFilter(profile, mode, where, notifyOk);
  try {
    let bpf = lib.exportBpf(built.ctx);
    if (process.arch === 'x64' && !built.archs.includes('SCMP_ARCH_X32')) bpf = Buffer.concat([x32Prologue(), bpf]);
    const compiled: CompiledFilter = {
      bpf,
      notify: built.usesNotify ? (mode === 'log' ? 'log' : 'kill') : 'none',
      hash,
      architectures: built.archs,
      unknownSyscalls: built.unknown,
      compileMs: performance.now() - started,
      cached: false,
    };
    return compiled;
  } finally {
    lib.release(built.ctx);
  }
}

/** libseccomp's own text rendering (PFC) of the compiled profile: what golden files and `policy show` print. */
export function profileToText(profile: SeccompProfile, mode: 'enforce' | 'log' = 'enforce', where = 'seccomp'): string {
  const lib = libseccomp();
  const built = buildFilter(profile, mode, where, userNotifAvailable());
  try {
    const prologue =
      process.arch === 'x64' && !built.archs.includes('SCMP_ARCH_X32')
        ? '# prologue: x86_64 syscalls with the x32 bit (nr >= 0x40000000) -> KILL_PROCESS\n'
        : '';
    return prologue + lib.exportPfc(built.ctx);
  } finally {
    lib.release(built.ctx);
  }
}

function ruleError(errno: number): string {
  if (errno === osConstants.errno.EEXIST) return 'a conflicting rule for the same syscall and arguments exists';
  if (errno === osConstants.errno.EINVAL) return 'invalid argument comparison';
  if (errno === osConstants.errno.EACCES) return 'the action equals the default action';
  return `errno ${errno}`;
}

/** Compiles every given profile in both modes, with and without user notifications, into the package's prebuilt
 *  filters (the build runs this for the shipped policies). */
export function prebuildFilters(profiles: readonly SeccompProfile[]): number {
  let n = 0;
  for (const profile of profiles)
    for (const mode of ['enforce', 'log'] as const)
      for (const notifyOk of [true, false]) {
        const source = prebuiltSource(profile, mode, notifyOk);
        writePrebuilt(source, compileNow(profile, mode, 'seccomp', notifyOk, prebuiltKey(source)));
        n++;
      }
  return n;
}
