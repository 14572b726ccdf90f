// Every error cubicle throws or rejects with: branded, with a stable code. A run's error carries the whole
// result (the error *is* the result); messages are rendered by the outcome module, never here.
import type { SandboxResult, SetupFailure } from './types.js';

const kCubicleError = Symbol.for('cubicle.error');

/** Stable error codes; match on these, never on messages. */
export const ErrorCode = {
  /** An option is wrong (thrown synchronously, before anything runs); `option` names it. */
  invalidOption: 'ERR_SANDBOX_INVALID_OPTION',
  /** A bind source is missing, goes through a symlink, or covers cubicle's own code. */
  bindSource: 'ERR_SANDBOX_BIND_SOURCE',
  /** A policy file or object is wrong. */
  policy: 'ERR_SANDBOX_POLICY',
  /** The host lacks something every run needs (e.g. a /usr to bind); nothing ran. */
  host: 'ERR_SANDBOX_HOST',
  /** Setup inside the helper (or of the run's cgroup) failed; nothing ran. */
  setup: 'ERR_SANDBOX_SETUP',
  /** The helper could not be started, or ended outside the protocol. */
  helper: 'ERR_SANDBOX_HELPER',
  seccompUnavailable: 'ERR_SANDBOX_SECCOMP_UNAVAILABLE',
  nonzeroExit: 'ERR_SANDBOX_NONZERO_EXIT',
  signaled: 'ERR_SANDBOX_SIGNALED',
  timeout: 'ERR_SANDBOX_TIMEOUT',
  canceled: 'ERR_SANDBOX_CANCELED',
  seccompViolation: 'ERR_SANDBOX_SECCOMP_VIOLATION',
  limit: 'ERR_SANDBOX_LIMIT',
  /** An image could not be built, found or removed (a refused entry, an unknown name, an unsafe cache). */
  image: 'ERR_SANDBOX_IMAGE',
  /** A named sandbox of that name is already running (run --name). */
  nameTaken: 'ERR_SANDBOX_NAME_TAKEN',
  /** No running named sandbox of the caller has that name (exec, stop, wait, inspect). */
  notFound: 'ERR_SANDBOX_NOT_FOUND',
} as const;
export type ErrorCodeValue = (typeof ErrorCode)[keyof typeof ErrorCode];

/** True for every error cubicle made, whichever class and whichever copy of the package made it. */
export function isCubicleError(v: unknown): v is SandboxOptionError | SandboxHostError | SandboxError | ImageError {
  return typeof v === 'object' && v !== null && (v as Record<symbol, unknown>)[kCubicleError] === true;
}

const brand = (e: object): void => {
  Object.defineProperty(e, kCubicleError, { value: true });
};

/** Thrown synchronously, before anything is spawned, for an option that is wrong; names the option. */
export class SandboxOptionError extends TypeError {
  readonly code: ErrorCodeValue;
  readonly option: string;
  constructor(option: string, message: string, code: ErrorCodeValue = ErrorCode.invalidOption) {
    super(message);
    brand(this);
    this.name = 'SandboxOptionError';
    this.option = option;
    this.code = code;
  }
}

/** A policy that cannot be loaded or would not mean what it says; `option` is 'policy'. */
export class PolicyError extends SandboxOptionError {
  constructor(where: string, message: string) {
    super('policy', `policy ${where}: ${message}`, ErrorCode.policy);
    this.name = 'PolicyError';
  }
}

/** Thrown synchronously when this host lacks what every run needs; `hint` names the fix. */
export class SandboxHostError extends Error {
  readonly code = ErrorCode.host;
  readonly hint: string;
  constructor(message: string, hint: string) {
    super(`${message}. Hint: ${hint}`);
    brand(this);
    this.name = 'SandboxHostError';
    this.hint = hint;
  }
}

/** An image build refused its input, or the image cache could not be used; `entry` names a refused entry. */
export class ImageError extends Error {
  readonly code = ErrorCode.image;
  readonly entry: string | undefined;
  constructor(message: string, entry?: string) {
    super(message);
    brand(this);
    this.name = 'ImageError';
    this.entry = entry;
  }
}

type FailureFields = Partial<Pick<SetupFailure, 'stage' | 'op' | 'syscall' | 'errno' | 'errnoName' | 'hint'>>;

/** A failed run: setup error, nonzero exit, signal, limit, violation, timeout or cancel. Carries every result
 *  field, and for setup failures where it failed and how to fix it. */
// Declaration merging gives the class every result field without restating them; the constructor assigns
// each one (Object.assign), so no declared field is ever left unset.
// eslint-disable-next-line @typescript-eslint/no-unsafe-declaration-merging
export interface SandboxError extends SandboxResult, FailureFields {}
// eslint-disable-next-line @typescript-eslint/no-unsafe-declaration-merging
export class SandboxError extends Error {
  readonly code: ErrorCodeValue;
  /** What happened, in one line, without the output (`message` ends with the captured stderr and stdout). */
  readonly shortMessage: string;

  constructor(message: string, code: ErrorCodeValue, result: SandboxResult, options?: { cause?: unknown; shortMessage?: string }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    brand(this);
    this.name = 'SandboxError';
    this.code = code;
    this.shortMessage = options?.shortMessage ?? message;
    Object.assign(this, result);
    const f = result.setupFailure;
    if (f) Object.assign(this, { stage: f.stage, op: f.op, syscall: f.syscall, errno: f.errno, errnoName: f.errnoName, hint: f.hint });
  }

  static override [Symbol.hasInstance](v: unknown): boolean {
    return isCubicleError(v) && (v as { name?: unknown }).name === 'SandboxError';
  }
}
