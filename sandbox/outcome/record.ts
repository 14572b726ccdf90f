// What happened during one run, as the supervisor saw it: a plain record of facts, judged by ./judge.ts.
import type { CgroupCounters, CgroupReadBack } from '../cgroup/index.js';
import type { ErrorEvent, ExitEvent, ReadyEvent } from '../protocol/events.js';
import type { HostIds, SetupFailure } from '../types.js';

/** Why the supervisor itself stopped the sandbox. */
export type SupervisorStopReason = 'timeout' | 'cancel' | 'output' | 'max-buffer' | 'user';

export interface SupervisorStop {
  reason: SupervisorStopReason;
  /** µs since the payload's fork (as seen through the ready event), or -1 when it came before the payload ran. */
  atUs: number;
}

/** How the run failed before or outside the helper's protocol. */
export type RunFailure =
  | { kind: 'prepared'; failure: SetupFailure } // known before anything started (e.g. no libseccomp)
  | { kind: 'cgroup'; failure: SetupFailure } // the run's cgroup could not be created
  | { kind: 'launch'; error: Error } // the helper could not be started
  | { kind: 'protocol'; error: Error }; // the helper broke the protocol (it was killed)

export interface RunRecord {
  /** The helper's host pid, when it started. */
  helperPid: number | undefined;
  failure: RunFailure | undefined;
  ready: ReadyEvent | undefined;
  /** The helper's terminal event: `exit` (the payload ran) or `error` (setup failed); none if it died first. */
  terminal: ExitEvent | ErrorEvent | undefined;
  /** How the helper process itself ended. */
  helperExit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  /** The supervisor's own stops, in the order they happened (each reason once). */
  stops: SupervisorStop[];
  /** What the run's cgroup counted, and the limits it read back; undefined without a cgroup. */
  cgroup: { counters: CgroupCounters; readBack: CgroupReadBack } | undefined;
  /** Captured output (only when captured); each stream holds at most the output limit. */
  stdout: Buffer[] | undefined;
  stderr: Buffer[] | undefined;
  /** The doctor's diagnosis of this host's user-namespace settings, gathered when the kernel refused the
   *  namespaces (the hint of that setup error); undefined otherwise. */
  hostDiagnosis: string | undefined;
  /** The host ids the sandbox mapped to, and whether its per-user counters were its own. */
  hostIds: HostIds;
  /** Wall time of the whole run as the supervisor measured it (ms). */
  elapsedMs: number;
  /** With copyOut: init's framed files as they arrived (bounded by boxSize and a header per name). */
  copyOut?: Buffer;
}
