// Parsing of human units for sizes ("64M") and durations ("1.5s"), shared by the API and the CLI.
import { SandboxOptionError } from './errors.js';

const SIZE_UNITS: Record<string, number> = {
  '': 1,
  b: 1,
  k: 1024,
  kb: 1024,
  kib: 1024,
  m: 1024 ** 2,
  mb: 1024 ** 2,
  mib: 1024 ** 2,
  g: 1024 ** 3,
  gb: 1024 ** 3,
  gib: 1024 ** 3,
  t: 1024 ** 4,
  tb: 1024 ** 4,
  tib: 1024 ** 4,
};

/** Parses a byte size: a non-negative integer of bytes, or a string like "512K", "64M", "1.5G" (binary units). */
export function parseSize(value: unknown, what: string): number {
  if (typeof value === 'number') {
    if (!Number.isSafeInteger(value) || value < 0)
      throw new SandboxOptionError(what, `${what} must be a non-negative integer of bytes, got ${value}`);
    return value;
  }
  if (typeof value !== 'string')
    throw new SandboxOptionError(what, `${what} must be a number of bytes or a string like "64M", got ${typeof value}`);
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(value);
  const unit = m ? SIZE_UNITS[m[2]!.toLowerCase()] : undefined;
  if (!m || unit === undefined)
    throw new SandboxOptionError(what, `${what} "${value}" is not a size; use bytes or a unit: K, M, G, T (e.g. "64M")`);
  const bytes = Math.round(Number(m[1]) * unit);
  if (!Number.isSafeInteger(bytes)) throw new SandboxOptionError(what, `${what} "${value}" is too large`);
  return bytes;
}

const TIME_UNITS: Record<string, number> = { ms: 1, s: 1000, '': 1000, m: 60_000, min: 60_000, h: 3_600_000 };

/** Parses a duration to milliseconds: a string like "1.5s", "200ms", "2m"; a bare number is seconds. */
export function parseDurationMs(value: string, what: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(value);
  const unit = m ? TIME_UNITS[m[2]!.toLowerCase()] : undefined;
  if (!m || unit === undefined)
    throw new SandboxOptionError(what, `${what} "${value}" is not a duration; use seconds or a unit: ms, s, m, h (e.g. "1.5s")`);
  const ms = Number(m[1]) * unit;
  if (!Number.isFinite(ms) || ms <= 0) throw new SandboxOptionError(what, `${what} must be greater than zero`);
  return ms;
}
