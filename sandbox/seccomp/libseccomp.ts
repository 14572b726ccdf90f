// Koffi bindings to the system libseccomp: build a filter, add rules with argument comparisons, export BPF/PFC.
import { closeSync, readSync, fstatSync } from 'node:fs';
import { koffi as loadKoffi } from '../lazy-require.js';

/** libseccomp action values (seccomp.h). */
export const Act = {
  KILL_PROCESS: 0x80000000,
  KILL_THREAD: 0x00000000,
  TRAP: 0x00030000,
  NOTIFY: 0x7fc00000,
  LOG: 0x7ffc0000,
  ALLOW: 0x7fff0000,
  errno: (n: number): number => (0x00050000 | (n & 0xffff)) >>> 0,
} as const;

/** Architecture tokens (the AUDIT_ARCH_* values). */
export const ARCH_TOKENS: Record<string, number> = {
  SCMP_ARCH_X86_64: 0xc000003e,
  SCMP_ARCH_X86: 0x40000003,
  SCMP_ARCH_X32: 0x4000003e,
  SCMP_ARCH_AARCH64: 0xc00000b7,
  SCMP_ARCH_ARM: 0x40000028,
};

/** The architecture Node runs on, as a libseccomp name. */
export function nativeArchName(): string {
  const m: Record<string, string> = { x64: 'SCMP_ARCH_X86_64', arm64: 'SCMP_ARCH_AARCH64', ia32: 'SCMP_ARCH_X86', arm: 'SCMP_ARCH_ARM' };
  const name = m[process.arch];
  if (!name) throw new SeccompUnavailableError(`seccomp profiles are not supported on ${process.arch}`);
  return name;
}

export const CompareOp: Record<string, number> = {
  SCMP_CMP_NE: 1,
  SCMP_CMP_LT: 2,
  SCMP_CMP_LE: 3,
  SCMP_CMP_EQ: 4,
  SCMP_CMP_GE: 5,
  SCMP_CMP_GT: 6,
  SCMP_CMP_MASKED_EQ: 7,
};

const ATTR_ACT_BADARCH = 2;
const ATTR_CTL_NNP = 3;
const ATTR_CTL_OPTIMIZE = 8;

export class SeccompUnavailableError extends Error {
  override name = 'SeccompUnavailableError';
  readonly code = 'ERR_SANDBOX_SECCOMP_UNAVAILABLE';
}

export interface ArgCmp {
  index: number;
  op: number;
  a: bigint;
  b: bigint;
}

interface Bindings {
  version: { major: number; minor: number; micro: number };
  init(defAction: number): unknown;
  release(ctx: unknown): void;
  archAdd(ctx: unknown, token: number): number;
  archRemove(ctx: unknown, token: number): number;
  archExist(ctx: unknown, token: number): number;
  attrSet(ctx: unknown, attr: number, value: number): number;
  resolveName(arch: number, name: string): number;
  /** The native number, or libseccomp's negative pseudo number for a call the native arch lacks; -1 if unknown. */
  resolveNative(name: string): number;
  resolveNum(arch: number, num: number): string | null;
  ruleAdd(ctx: unknown, action: number, syscall: number, cmps: ArgCmp[]): number;
  exportBpf(ctx: unknown): Buffer;
  exportPfc(ctx: unknown): string;
}

let bindings: Bindings | undefined;
let loadError: string | undefined;
/** The library the first load tried, and the loader's own message when that failed. */
let loadedLibrary: string | undefined;
let loadCause: string | undefined;

/** The library libseccomp() loads: CUBICLE_LIBSECCOMP (another soname, or a path) when set, else libseccomp.so.2. */
export function libseccompLibrary(): string {
  return process.env.CUBICLE_LIBSECCOMP || 'libseccomp.so.2';
}

/** Loads libseccomp once; throws SeccompUnavailableError with the fix when it cannot. */
export function libseccomp(): Bindings {
  if (bindings) return bindings;
  if (loadError) throw new SeccompUnavailableError(loadError);
  try {
    loadedLibrary = libseccompLibrary();
    bindings = load(loadedLibrary);
    return bindings;
  } catch (e) {
    loadCause = (e as Error).message;
    loadError =
      `libseccomp cannot be loaded (${(e as Error).message}); ` +
      'install it (Debian/Ubuntu: apt-get install libseccomp2, Fedora: dnf install libseccomp) ' +
      'or run without a seccomp policy; npx cubicle doctor checks it';
    throw new SeccompUnavailableError(loadError);
  }
}

/** What loading libseccomp gave: the library and its version, or why it does not load. */
export type LibseccompStatus =
  | { ok: true; library: string; major: number; minor: number; micro: number }
  /** `koffi`: the FFI module itself does not load; `library`: koffi loads, the library (or a symbol of it) does not. */
  | { ok: false; library: string; reason: 'koffi' | 'library'; error: string };

/** Loads libseccomp exactly as libseccomp() does (once per process, same library) and reports how it went; never throws. */
export function libseccompStatus(): LibseccompStatus {
  try {
    const { version } = libseccomp();
    return { ok: true, library: loadedLibrary ?? libseccompLibrary(), ...version };
  } catch (e) {
    const library = loadedLibrary ?? libseccompLibrary();
    const error = loadCause ?? (e as Error).message;
    try {
      loadKoffi();
    } catch (k) {
      return { ok: false, library, reason: 'koffi', error: (k as Error).message };
    }
    return { ok: false, library, reason: 'library', error };
  }
}

/** A foreign function with the signature its C declaration gives (koffi types every call as `any`). */
const typed = <A extends unknown[], R>(f: unknown): ((...args: A) => R) => f as (...args: A) => R;

function load(library: string): Bindings {
  const koffi = loadKoffi();
  const lib = koffi.load(library);
  const libc = koffi.load('libc.so.6');
  const Version = koffi.struct({ major: 'uint', minor: 'uint', micro: 'uint' });
  const ArgCmpT = koffi.struct({ arg: 'uint', op: 'int', datum_a: 'uint64', datum_b: 'uint64' });
  const seccompVersion = typed<[], unknown>(lib.func('seccomp_version', koffi.pointer(Version), []));
  const init = typed<[number], unknown>(lib.func('void *seccomp_init(uint32_t def_action)'));
  const release = typed<[unknown], void>(lib.func('void seccomp_release(void *ctx)'));
  const archAdd = typed<[unknown, number], number>(lib.func('int seccomp_arch_add(void *ctx, uint32_t arch)'));
  const archRemove = typed<[unknown, number], number>(lib.func('int seccomp_arch_remove(void *ctx, uint32_t arch)'));
  const archExist = typed<[unknown, number], number>(lib.func('int seccomp_arch_exist(void *ctx, uint32_t arch)'));
  const attrSet = typed<[unknown, number, number], number>(lib.func('int seccomp_attr_set(void *ctx, int attr, uint32_t value)'));
  const resolveName = typed<[number, string], number>(lib.func('int seccomp_syscall_resolve_name_arch(uint32_t arch, const char *name)'));
  const resolveNative = typed<[string], number>(lib.func('int seccomp_syscall_resolve_name(const char *name)'));
  const resolveNum = typed<[number, number], unknown>(lib.func('void *seccomp_syscall_resolve_num_arch(uint32_t arch, int num)'));
  const ruleAdd = typed<[unknown, number, number, number, { arg: number; op: number; datum_a: bigint; datum_b: bigint }[] | null], number>(
    lib.func('seccomp_rule_add_array', 'int', ['void *', 'uint32_t', 'int', 'uint', koffi.pointer(ArgCmpT)]),
  );
  const exportBpf = typed<[unknown, number], number>(lib.func('int seccomp_export_bpf(void *ctx, int fd)'));
  const exportPfc = typed<[unknown, number], number>(lib.func('int seccomp_export_pfc(void *ctx, int fd)'));
  const memfdCreate = typed<[string, number], number>(libc.func('int memfd_create(const char *name, unsigned int flags)'));
  // libseccomp 2.6+ exports to memory; 2.5 only to an fd (a memfd here).
  let exportBpfMem: ((ctx: unknown, buf: Buffer | null, len: bigint[]) => number) | undefined;
  try {
    exportBpfMem = typed<[unknown, Buffer | null, bigint[]], number>(
      lib.func('int seccomp_export_bpf_mem(void *ctx, void *buf, _Inout_ size_t *len)'),
    );
  } catch {
    exportBpfMem = undefined;
  }
  const free = typed<[unknown], void>(libc.func('void free(void *p)'));
  const v = koffi.decode(seccompVersion(), Version) as { major: number; minor: number; micro: number };

  /** libseccomp 2.5 can only export to an fd: a memfd, read back whole. */
  const viaMemfd = (fn: (fd: number) => number, what: string): Buffer => {
    const fd = memfdCreate(`cubicle-${what}`, 1 /* MFD_CLOEXEC */);
    if (fd < 0) throw new Error(`memfd_create failed for the ${what} export`);
    try {
      const rc = fn(fd);
      if (rc !== 0) throw new Error(`seccomp_export_${what} failed: ${-rc}`);
      const size = fstatSync(fd).size;
      const buf = Buffer.alloc(size);
      let off = 0;
      while (off < size) off += readSync(fd, buf, off, size - off, off);
      return buf;
    } finally {
      closeSync(fd);
    }
  };

  return {
    version: { major: v.major, minor: v.minor, micro: v.micro },
    init: (a) => {
      const ctx = init(a);
      if (!ctx) throw new Error('seccomp_init failed');
      return ctx;
    },
    release: (ctx) => release(ctx),
    archAdd: (ctx, t) => archAdd(ctx, t),
    archRemove: (ctx, t) => archRemove(ctx, t),
    archExist: (ctx, t) => archExist(ctx, t),
    attrSet: (ctx, attr, value) => attrSet(ctx, attr, value),
    resolveName: (arch, name) => resolveName(arch, name),
    resolveNative: (name) => resolveNative(name),
    resolveNum: (arch, num) => {
      const p = resolveNum(arch, num);
      if (!p) return null;
      const s = koffi.decode(p, 'char', -1) as string;
      free(p);
      return s;
    },
    ruleAdd: (ctx, action, syscall, cmps) =>
      ruleAdd(
        ctx,
        action >>> 0,
        syscall,
        cmps.length,
        cmps.length ? cmps.map((c) => ({ arg: c.index, op: c.op, datum_a: c.a, datum_b: c.b })) : null,
      ),
    exportBpf: (ctx) => {
      if (!exportBpfMem) return viaMemfd((fd) => exportBpf(ctx, fd), 'bpf');
      const len = [0n];
      if (exportBpfMem(ctx, null, len) !== 0) throw new Error('seccomp_export_bpf_mem failed to size the program');
      const buf = Buffer.alloc(Number(len[0]));
      if (exportBpfMem(ctx, buf, len) !== 0) throw new Error('seccomp_export_bpf_mem failed');
      return buf.subarray(0, Number(len[0]));
    },
    exportPfc: (ctx) => viaMemfd((fd) => exportPfc(ctx, fd), 'pfc').toString('utf8'),
  };
}

export const Attr = { ACT_BADARCH: ATTR_ACT_BADARCH, CTL_NNP: ATTR_CTL_NNP, CTL_OPTIMIZE: ATTR_CTL_OPTIMIZE };
