// Usage errors of the command line: one exit code (2) for all of them, each naming the flag the user typed
// (never the API option behind it), with a "did you mean" for a mistyped flag.
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { ErrorCode, SandboxOptionError } from '../errors.js';

export class UsageError extends Error {
  override name = 'UsageError';
}

/** Edit distance between two short strings (flags), for suggestions. */
function distance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) row[j] = Math.min(prev[j]! + 1, row[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    prev = row;
  }
  return prev[b.length]!;
}

/** The known flag closest to `typed` (e.g. '--tmeout' -> '--timeout'), if one is close enough to be meant. */
export function didYouMean(typed: string, known: readonly string[]): string | undefined {
  const bare = typed.replace(/^-+/, '').replace(/=.*$/, '');
  let best: { flag: string; d: number } | undefined;
  for (const flag of known) {
    const d = flag.startsWith(bare) && bare.length >= 3 ? 0.5 : distance(bare, flag);
    if (d <= Math.max(2, Math.floor(flag.length / 3)) && (!best || d < best.d)) best = { flag, d };
  }
  return best && `--${best.flag}`;
}

/** node:util's parseArgs with its errors turned into UsageErrors that suggest the flag meant. */
type Flags = NonNullable<ParseArgsConfig['options']>;
type Strict<T extends Flags> = { args: string[]; options: T; allowPositionals: true; strict: true };
export type ParsedFlags<T extends Flags> = ReturnType<typeof parseArgs<Strict<T>>>;

export function parseFlags<T extends Flags>(args: string[], options: T): ParsedFlags<T> {
  try {
    return parseArgs({ args, options, allowPositionals: true, strict: true });
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const unknown = /Unknown option '([^']+)'/.exec((e as Error).message)?.[1];
    if (code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION' && unknown) {
      const guess = didYouMean(unknown, Object.keys(options));
      throw new UsageError(`unknown option ${unknown}${guess ? `; did you mean ${guess}?` : ''}`);
    }
    const flag = /Option '([^']+)'/.exec((e as Error).message)?.[1];
    if (code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE' && flag) throw new UsageError(`${flag.replace(/^-\w, /, '')} needs a value`);
    throw new UsageError((e as Error).message.split('\n')[0]!);
  }
}

/** An invalid option (or a bind source that cannot be used) found while validating what the flags became, as a
 *  usage error naming the flag: `flagOf`
 *  maps the API option (e.g. 'limits.memory') to what the user typed ('--memory'). Other errors pass through. */
export function asUsageError(e: unknown, flagOf: (option: string) => string | undefined): unknown {
  if (!(e instanceof SandboxOptionError) || (e.code !== ErrorCode.invalidOption && e.code !== ErrorCode.bindSource)) return e;
  const flag = flagOf(e.option) ?? flagOf(e.option.replace(/\[\d+\].*$/, '[]'));
  if (!flag) return e;
  // the option's name becomes the flag, except in a command the message quotes (`cubicle network create`)
  const cmd = `cubicle ${e.option}`;
  const renamed = e.message
    .split(cmd)
    .map((part) => part.split(e.option).join(flag))
    .join(cmd);
  return new UsageError(e.message.includes(e.option) ? renamed : `${flag}: ${e.message}`);
}
