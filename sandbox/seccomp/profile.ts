// The OCI seccomp profile format (the subset cubicle reads), and its validation with errors that name the field.

import type { SeccompProfile } from '../types.js';

export type { SeccompArg, SeccompProfile, SeccompRule } from '../types.js';

export const ACTIONS = [
  'SCMP_ACT_ALLOW',
  'SCMP_ACT_ERRNO',
  'SCMP_ACT_KILL',
  'SCMP_ACT_KILL_PROCESS',
  'SCMP_ACT_KILL_THREAD',
  'SCMP_ACT_TRAP',
  'SCMP_ACT_LOG',
] as const;
export const OPS = [
  'SCMP_CMP_NE',
  'SCMP_CMP_LT',
  'SCMP_CMP_LE',
  'SCMP_CMP_EQ',
  'SCMP_CMP_GE',
  'SCMP_CMP_GT',
  'SCMP_CMP_MASKED_EQ',
] as const;

export class ProfileError extends TypeError {
  readonly code = 'ERR_SANDBOX_POLICY';
  constructor(
    readonly where: string,
    message: string,
  ) {
    super(`${where}: ${message}`);
    this.name = 'ProfileError';
  }
}

const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** A 64-bit argument value: a non-negative integer, or a string "0x..."/decimal for values past 2^53. */
export function argValue(v: number | string, where: string): bigint {
  if (typeof v === 'number') {
    if (!Number.isSafeInteger(v) || v < 0)
      throw new ProfileError(where, `must be a non-negative integer (use a "0x..." string for large values), got ${v}`);
    return BigInt(v);
  }
  if (typeof v === 'string' && /^(0x[0-9a-fA-F]{1,16}|\d{1,20})$/.test(v)) {
    const b = BigInt(v);
    if (b > 0xffffffffffffffffn) throw new ProfileError(where, `${v} does not fit in 64 bits`);
    return b;
  }
  throw new ProfileError(where, `must be an integer or a "0x..." string, got ${JSON.stringify(v)}`);
}

const errnoRet = (v: unknown, where: string): void => {
  if (v !== undefined && (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > 4095))
    throw new ProfileError(where, `must be an errno number from 1 to 4095, got ${JSON.stringify(v)}`);
};

/** Checks a profile's shape; `where` prefixes every error (e.g. "policies/judge.json: seccomp"). */
export function validateProfile(p: unknown, where: string): SeccompProfile {
  if (!isObj(p)) throw new ProfileError(where, 'must be an object with defaultAction and syscalls');
  for (const k of Object.keys(p))
    if (!['defaultAction', 'defaultErrnoRet', 'architectures', 'syscalls', 'comment'].includes(k))
      throw new ProfileError(`${where}.${k}`, 'is not a known field');
  if (!ACTIONS.includes(p.defaultAction as never)) throw new ProfileError(`${where}.defaultAction`, `must be one of ${ACTIONS.join(', ')}`);
  errnoRet(p.defaultErrnoRet, `${where}.defaultErrnoRet`);
  if (
    p.architectures !== undefined &&
    (!Array.isArray(p.architectures) || !p.architectures.every((a) => typeof a === 'string' && /^SCMP_ARCH_[A-Z0-9_]+$/.test(a)))
  )
    throw new ProfileError(`${where}.architectures`, 'must be an array of SCMP_ARCH_* names');
  if (!Array.isArray(p.syscalls)) throw new ProfileError(`${where}.syscalls`, 'must be an array');
  p.syscalls.forEach((r: unknown, i: number) => {
    const w = `${where}.syscalls[${i}]`;
    if (!isObj(r)) throw new ProfileError(w, 'must be an object');
    for (const k of Object.keys(r))
      if (!['names', 'action', 'errnoRet', 'args', 'comment'].includes(k)) throw new ProfileError(`${w}.${k}`, 'is not a known field');
    if (!Array.isArray(r.names) || r.names.length === 0 || !r.names.every((n) => typeof n === 'string' && /^[a-z0-9_]+$/.test(n)))
      throw new ProfileError(`${w}.names`, 'must be a non-empty array of syscall names');
    if (!ACTIONS.includes(r.action as never)) throw new ProfileError(`${w}.action`, `must be one of ${ACTIONS.join(', ')}`);
    errnoRet(r.errnoRet, `${w}.errnoRet`);
    if (r.args !== undefined) {
      if (!Array.isArray(r.args) || r.args.length > 6) throw new ProfileError(`${w}.args`, 'must be an array of at most 6 comparisons');
      r.args.forEach((a: unknown, j: number) => {
        const wa = `${w}.args[${j}]`;
        if (!isObj(a)) throw new ProfileError(wa, 'must be an object { index, value, valueTwo?, op }');
        if (typeof a.index !== 'number' || !Number.isInteger(a.index) || a.index < 0 || a.index > 5)
          throw new ProfileError(`${wa}.index`, 'must be 0-5');
        if (!OPS.includes(a.op as never)) throw new ProfileError(`${wa}.op`, `must be one of ${OPS.join(', ')}`);
        argValue(a.value as number, `${wa}.value`);
        if (a.valueTwo !== undefined) argValue(a.valueTwo as number, `${wa}.valueTwo`);
      });
    }
  });
  return p as unknown as SeccompProfile;
}
