// Error classes with stable codes. A run's error carries the whole result (the error *is* the result).
import type { SandboxResult, SetupFailure } from './api/result.js';

const kSandboxError = Symbol.for('cubicle.error');

/** Stable error codes; match on these, never on messages. */
export const ErrorCode = {
  invalidOption: 'ERR_SANDBOX_INVALID_OPTION',
  bindSource: 'ERR_SANDBOX_BIND_SOURCE',
  setup: 'ERR_SANDBOX_SETUP',
  helper: 'ERR_SANDBOX_HELPER',
  nonzeroExit: 'ERR_SANDBOX_NONZERO_EXIT',
  signaled: 'ERR_SANDBOX_SIGNALED',
  timeout: 'ERR_SANDBOX_TIMEOUT',
  canceled: 'ERR_SANDBOX_CANCELED',
  policy: 'ERR_SANDBOX_POLICY',
  seccompUnavailable: 'ERR_SANDBOX_SECCOMP_UNAVAILABLE',
  seccompViolation: 'ERR_SANDBOX_SECCOMP_VIOLATION',
  limit: 'ERR_SANDBOX_LIMIT',
} as const;
export type ErrorCodeValue = (typeof ErrorCode)[keyof typeof ErrorCode];

/** Thrown synchronously, before anything is spawned, for an option that is wrong; names the option. */
export class SandboxOptionError extends TypeError {
  readonly code: ErrorCodeValue;
  readonly option: string;
  constructor(option: string, message: string, code: ErrorCodeValue = ErrorCode.invalidOption) {
    super(message);
    this.name = 'SandboxOptionError';
    this.option = option;
    this.code = code;
  }
}

/** A run that failed: setup error, nonzero exit, signal, timeout or cancel. Carries every result field. */
export class SandboxError extends Error implements SandboxResult {
  readonly [kSandboxError] = true;
  readonly code: ErrorCodeValue;
  declare command: SandboxResult['command'];
  declare stdout: SandboxResult['stdout'];
  declare stderr: SandboxResult['stderr'];
  declare exitCode: SandboxResult['exitCode'];
  declare signal: SandboxResult['signal'];
  declare verdict: SandboxResult['verdict'];
  declare timedOut: boolean;
  declare isCanceled: boolean;
  declare failed: boolean;
  declare usage: SandboxResult['usage'];
  declare setup: SandboxResult['setup'];
  declare helperPid: SandboxResult['helperPid'];
  declare initPid: SandboxResult['initPid'];
  declare namespaces: SandboxResult['namespaces'];
  declare seccomp: SandboxResult['seccomp'];
  declare violation: SandboxResult['violation'];
  declare limits: SandboxResult['limits'];
  declare setupFailure: SetupFailure | undefined;
  /** For setup failures: where it failed and how to fix it. */
  declare stage: string | undefined;
  declare op: string | undefined;
  declare syscall: string | undefined;
  declare errno: number | undefined;
  declare errnoName: string | undefined;
  declare hint: string | undefined;

  constructor(message: string, code: ErrorCodeValue, result: SandboxResult, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'SandboxError';
    this.code = code;
    Object.assign(this, result);
    const f = result.setupFailure;
    this.stage = f?.stage;
    this.op = f?.op;
    this.syscall = f?.syscall;
    this.errno = f?.errno;
    this.errnoName = f?.errnoName;
    this.hint = f?.hint;
  }

  static override [Symbol.hasInstance](v: unknown): boolean {
    return typeof v === 'object' && v !== null && (v as Record<symbol, unknown>)[kSandboxError] === true;
  }
}
