// Resource limits as the caller gives them, validated and turned into numbers (ms, bytes, counts).
import { SandboxOptionError } from '../errors.js';
import { LIMIT_NAMES } from '../types.js';
import { parseDurationMs, parseSize } from '../units.js';

export interface ResolvedLimits {
  cpuTimeMs?: number;
  wallTimeMs?: number;
  extraTimeMs: number;
  memoryBytes?: number;
  processes?: number;
  fileSizeBytes?: number;
  openFiles?: number;
  stackBytes?: number;
  outputBytes?: number;
}

const fail = (option: string, message: string): never => {
  throw new SandboxOptionError(option, message);
};

/** The longest time limit accepted: a year. Longer is surely a mistake (e.g. ms given where seconds were meant). */
export const MAX_TIME_MS = 365 * 24 * 3600 * 1000;
/** The largest memory limit the helper's sampler takes (1 PiB). */
export const MAX_MEMORY_BYTES = 2 ** 50;

function ms(option: string, v: unknown): number | undefined {
  if (v === undefined) return undefined;
  let n: number;
  if (typeof v === 'number') {
    if (!Number.isFinite(v) || v <= 0) fail(option, `${option} must be a positive number of milliseconds, got ${v}`);
    n = v;
  } else if (typeof v !== 'string') return fail(option, `${option} must be milliseconds or a string like "1.5s"`);
  else
    try {
      n = parseDurationMs(v, option);
    } catch (e) {
      return fail(option, (e as Error).message);
    }
  if (n > MAX_TIME_MS) fail(option, `${option} must be at most a year (${MAX_TIME_MS} ms), got ${n} ms`);
  return n;
}

/** A size option (bytes or units) within min..max; undefined when not given. */
export function bytes(option: string, v: unknown, min: number, max = Number.MAX_SAFE_INTEGER): number | undefined {
  if (v === undefined) return undefined;
  let n: number;
  try {
    n = parseSize(v, option);
  } catch (e) {
    return fail(option, (e as Error).message);
  }
  if (n < min) fail(option, `${option} must be at least ${min} bytes`);
  if (n > max) fail(option, `${option} must be at most ${max} bytes`);
  return n;
}

function count(option: string, v: unknown, max: number): number | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > max)
    fail(option, `${option} must be an integer from 1 to ${max}, got ${String(v)}`);
  return v as number;
}

/** Validates `limits` (and folds `timeout` in as the wall-time limit). */
export function resolveLimits(limits: unknown, timeout: number | undefined): ResolvedLimits {
  if (limits !== undefined && (typeof limits !== 'object' || limits === null || Array.isArray(limits)))
    fail('limits', 'limits must be an object');
  const l = (limits ?? {}) as Record<string, unknown>;
  const known: readonly string[] = LIMIT_NAMES;
  for (const k of Object.keys(l)) if (!known.includes(k)) fail(`limits.${k}`, `unknown limit "${k}" (known: ${known.join(', ')})`);
  const wall = ms('limits.wallTime', l.wallTime);
  if (wall !== undefined && timeout !== undefined) fail('timeout', 'give either timeout or limits.wallTime, not both');
  const r: ResolvedLimits = { extraTimeMs: ms('limits.extraTime', l.extraTime) ?? 0 };
  const set = <K extends keyof ResolvedLimits>(k: K, v: ResolvedLimits[K] | undefined): void => {
    if (v !== undefined) r[k] = v;
  };
  set('cpuTimeMs', ms('limits.cpuTime', l.cpuTime));
  set('wallTimeMs', wall ?? timeout);
  set('memoryBytes', bytes('limits.memory', l.memory, 1 << 20, MAX_MEMORY_BYTES));
  set('processes', count('limits.processes', l.processes, 1 << 20));
  set('fileSizeBytes', bytes('limits.fileSize', l.fileSize, 1));
  set('openFiles', count('limits.openFiles', l.openFiles, 1 << 20));
  set('stackBytes', bytes('limits.stack', l.stack, 64 << 10));
  set('outputBytes', bytes('limits.outputLimit', l.outputLimit, 1));
  return r;
}
