/*
 * The status events the helper writes on CUB_FD_STATUS, declared once. Both directions of the protocol derive
 * from this module and ./opcodes.ts: the C structs and JSON emitters (generated into protocol.h by
 * ./c-header.ts), the TypeScript event types (derived below at the type level) and the validator that checks
 * every line the helper sends (./status.ts). Change a field here and both sides follow; a test fails if the
 * C emitters and the TS validator ever disagree.
 *
 * C reports facts (what it saw, what it did, and when, in microseconds since the payload's fork); the
 * TypeScript outcome module judges them.
 */

/** The kinds of field a status event may carry. */
export type FieldSpec =
  | { readonly type: 'int' } // a signed integer (C: long long)
  | { readonly type: 'bool' }
  | { readonly type: 'string'; readonly maxBytes: number } // escaped by the helper; at most maxBytes raw bytes
  | { readonly type: 'enum'; readonly values: readonly string[] } // C passes the index
  | { readonly type: 'object'; readonly fields: FieldsSpec }
  | { readonly type: 'array'; readonly maxItems: number; readonly item: FieldsSpec };

export interface FieldsSpec {
  readonly [name: string]: FieldSpec & { readonly optional?: boolean };
}

const int = { type: 'int' } as const;
const optInt = { type: 'int', optional: true } as const;

/** Distinct seccomp violations reported per run (log mode lists each syscall once). */
export const MAX_VIOLATIONS = 64;
/** Stops recorded per run (each kind at most once). */
export const MAX_STOPS = 8;

/** Why the helper itself stopped the sandbox. */
export const STOP_KINDS = [
  'memory', // init's sampler: memory over the limit (observed: bytes)
  'tasks', // init's sampler: more tasks than the limit (observed: tasks)
  'cpu', // init's sampler: CPU over the limit plus grace (observed: µs)
  'wall', // init's sampler: wall time over the limit plus grace (observed: µs)
  'oom', // stage 0: the memory cgroup reported an OOM (observed: 0)
  'seccomp', // init: a kill-mode seccomp notification (observed: the syscall number)
] as const;
export type StopKind = (typeof STOP_KINDS)[number];

/** Namespaces whose inode numbers the ready event carries. */
export const NAMESPACE_NAMES = ['user', 'mnt', 'pid', 'net', 'uts', 'ipc', 'cgroup'] as const;

/** Every status event: its fields, in the order the helper writes them. */
export const STATUS_EVENTS = {
  /** Stage 0 is alive and speaks this protocol version. */
  hello: { v: int },
  /** A plan with await: the sandbox is built up to its mounts and init waits for the run plan on fd run. */
  warm: { initPid: int },
  /** The namespaces exist and the payload was forked and exec'd. */
  ready: {
    initPid: int, // init's pid on the host
    payloadPid: int, // the payload's pid inside
    setupUs: int, // from the helper's start to the payload's fork
    ns: {
      type: 'object',
      fields: Object.fromEntries(NAMESPACE_NAMES.map((n) => [n, int])) as Record<(typeof NAMESPACE_NAMES)[number], typeof int>,
    },
  },
  /** Terminal: exec happened; how the payload ended and what the sandbox used. */
  exit: {
    code: optInt, // the payload exited with this status...
    signal: optInt, // ...or was killed by this signal (exactly one of code/signal, unless initSignal)
    initSignal: optInt, // init itself died by this signal before reporting the payload's status
    wallUs: optInt, // the payload's fork to its exit, measured by init
    rusage: {
      // wait4 on init: the whole tree, init's own share included
      type: 'object',
      fields: { utimeUs: int, stimeUs: int, maxRssKb: int, minflt: int, majflt: int, nvcsw: int, nivcsw: int },
    },
    init: {
      // init's own CPU (sampling, reaping, notifications): not the payload's
      type: 'object',
      optional: true,
      fields: { utimeUs: int, stimeUs: int, sinceForkUs: int },
    },
    sample: {
      // init's sampler, once everything is reaped
      type: 'object',
      optional: true,
      fields: {
        samples: int,
        peakMemory: int, // bytes; 0 when memory is not measured by sampling
        peakTasks: int,
        cgroupCpuUs: optInt, // the CPU cgroup's usage since the payload's fork (init's own share included)
      },
    },
    stops: { type: 'array', maxItems: MAX_STOPS, item: { kind: { type: 'enum', values: STOP_KINDS }, atUs: int, observed: int } },
    violations: { type: 'array', maxItems: MAX_VIOLATIONS, item: { nr: int, arch: int } },
  },
  /** Holder mode, terminal: the network's holder is up (its namespaces, bridge and socket exist). */
  holder: { pid: int },
  /** Terminal: setup failed; nothing ran. */
  error: {
    stage: { type: 'string', maxBytes: 32 },
    op: { type: 'string', maxBytes: 32, optional: true },
    opIndex: optInt,
    syscall: { type: 'string', maxBytes: 32, optional: true },
    errno: optInt,
    msg: { type: 'string', maxBytes: 1024 },
  },
} as const satisfies Record<string, FieldsSpec>;

export type EventName = keyof typeof STATUS_EVENTS;
/** Events after which nothing more may arrive; exactly one per run. */
export const TERMINAL_EVENTS = ['exit', 'error', 'holder'] as const satisfies readonly EventName[];

// ---- TypeScript types derived from the declaration ----

type ValueOf<F> = F extends { type: 'int' }
  ? number
  : F extends { type: 'bool' }
    ? boolean
    : F extends { type: 'string' }
      ? string
      : F extends { type: 'enum'; values: readonly (infer V)[] }
        ? V
        : F extends { type: 'object'; fields: infer S }
          ? FieldsOf<S>
          : F extends { type: 'array'; item: infer S }
            ? FieldsOf<S>[]
            : never;

type OptionalKeys<S> = { [K in keyof S]: S[K] extends { optional: true } ? K : never }[keyof S];
type Simplify<T> = { [K in keyof T]: T[K] };
type FieldsOf<S> = Simplify<
  { -readonly [K in Exclude<keyof S, OptionalKeys<S>>]: ValueOf<S[K]> } & { -readonly [K in OptionalKeys<S>]?: ValueOf<S[K]> }
>;

export type EventOf<N extends EventName> = Simplify<{ ev: N } & FieldsOf<(typeof STATUS_EVENTS)[N]>>;
export type HelloEvent = EventOf<'hello'>;
export type WarmEvent = EventOf<'warm'>;
export type ReadyEvent = EventOf<'ready'>;
export type ExitEvent = EventOf<'exit'>;
export type ErrorEvent = EventOf<'error'>;
export type HelperEvent = HelloEvent | WarmEvent | ReadyEvent | ExitEvent | ErrorEvent;
export type StopEvent = ExitEvent['stops'][number];
