// What execve accepts, so a command or environment it would refuse is refused here, with the option named,
// before anything runs (and everything it accepts fits the plan: see ProtocolLimits).
import { readFileSync } from 'node:fs';
import { SandboxOptionError } from '../errors.js';
import { ProtocolLimits } from '../protocol/opcodes.js';

/** The longest string execve takes, its NUL included (MAX_ARG_STRLEN: 32 pages of 4 KiB). */
export const MAX_ARG_STRLEN = ProtocolLimits.tokenMaxBytes;
const ARG_MAX = 128 << 10; // the least space execve ever grants
const STACK_CAP = 6 << 20; // three quarters of _STK_LIM: the most it ever grants
const POINTER = 8;

/**
 * The space execve grants the strings of argv and envp (and the program's path), pointers included: a quarter
 * of the stack's soft limit, at most 6 MiB, at least 128 KiB (fs/exec.c). `stackBytes` undefined: unlimited.
 */
export function execSpace(stackBytes: number | undefined): number {
  return stackBytes === undefined ? STACK_CAP : Math.max(ARG_MAX, Math.min(STACK_CAP, Math.floor(stackBytes / 4)));
}

/** The caller's soft stack limit, which the payload inherits unless limits.stack sets its own (undefined: unlimited). */
export function callerStackLimit(): number | undefined {
  try {
    const line = readFileSync('/proc/self/limits', 'utf8')
      .split('\n')
      .find((l) => l.startsWith('Max stack size'));
    const soft = line?.slice('Max stack size'.length).trim().split(/\s+/)[0];
    if (soft === 'unlimited') return undefined;
    const n = Number(soft);
    return Number.isSafeInteger(n) && n > 0 ? n : 8 << 20;
  } catch {
    return 8 << 20; // the usual default
  }
}

const bytes = (s: string): number => Buffer.byteLength(s) + 1;

/**
 * Refuses an argv or environment execve would refuse (E2BIG): a string over MAX_ARG_STRLEN, or more than the
 * space of the payload's stack limit in all. `program` is the longest path execve may be given for argv[0].
 */
export function checkExecSize(
  argv: readonly string[],
  env: Readonly<Record<string, string>>,
  program: string,
  stackBytes: number | undefined,
): void {
  argv.forEach((a, i) => {
    if (bytes(a) > MAX_ARG_STRLEN)
      throw new SandboxOptionError(
        'command',
        `argv[${i}] is ${bytes(a) - 1} bytes; execve takes at most ${MAX_ARG_STRLEN - 1} bytes per argument (MAX_ARG_STRLEN)`,
      );
  });
  let envBytes = 0;
  for (const [k, v] of Object.entries(env)) {
    const n = bytes(`${k}=${v}`);
    if (n > MAX_ARG_STRLEN)
      throw new SandboxOptionError(
        'env',
        `env.${k} is ${n - 1} bytes as KEY=VALUE; execve takes at most ${MAX_ARG_STRLEN - 1} bytes per entry (MAX_ARG_STRLEN)`,
      );
    envBytes += n + POINTER;
  }
  const argBytes = argv.reduce((sum, a) => sum + bytes(a) + POINTER, 0);
  const space = execSpace(stackBytes);
  const total = argBytes + envBytes + bytes(program);
  if (total > space) {
    const option = envBytes > space / 2 ? 'env' : 'command';
    throw new SandboxOptionError(
      option,
      `the command (${argv.length} arguments, ${argBytes} bytes) and environment (${Object.keys(env).length} entries, ` +
        `${envBytes} bytes), one pointer each, need ${total} bytes; execve takes at most ${space} ` +
        `(a quarter of the stack limit${stackBytes === undefined ? ', which is unlimited' : ` of ${stackBytes} bytes`}, ` +
        'at most 6 MiB); raise limits.stack or pass fewer or shorter arguments',
    );
  }
}
