import type { AppliedLimit } from '../limits/limits.js';
// The result shape shared by a resolved run and a SandboxError, and the verdict derived from it.

/** Why a run ended; exactly one per run. */
export type Verdict =
  | 'ok'
  | 'nonzero-exit'
  | 'signaled'
  | 'cpu-time-limit'
  | 'wall-time-limit'
  | 'memory-limit'
  | 'output-limit'
  | 'process-limit'
  | 'file-size-limit'
  | 'seccomp-violation'
  | 'setup-error'
  | 'canceled';

/** A syscall the seccomp filter stopped (or, in log mode, would have stopped). */
export interface SeccompViolation {
  /** e.g. 'ptrace'; null when the kernel killed the process itself (SIGSYS) and did not say which call. */
  syscall: string | null;
  nr: number | null;
  /** e.g. 'x86_64', 'x86' (i386), or null. */
  arch: string | null;
}

export interface SeccompReport {
  policy: string;
  mode: 'enforce' | 'log';
  /** Distinct syscalls reported by the filter, in the order they happened (at most 64). */
  violations: SeccompViolation[];
}

export interface SandboxUsage {
  /** Wall time from the payload's fork to its exit, measured inside by init (ms). */
  wallMs: number;
  /** CPU of every process of the sandbox, from the helper's wait4 on init (ms). */
  cpuUserMs: number;
  cpuSystemMs: number;
  cpuMs: number;
  /** Largest resident set of any single process (bytes). */
  maxRssBytes: number;
  voluntaryContextSwitches: number;
  involuntaryContextSwitches: number;
  minorPageFaults: number;
  majorPageFaults: number;
  /** Peak memory of the whole sandbox (process memory, tmpfs, shm, memfd): the cgroup's peak when a memory
   *  cgroup enforced the limit, else the peak of init's samples (PSS of every process + tmpfs pages); undefined
   *  when nothing sampled it. */
  peakMemoryBytes: number | undefined;
  /** Most tasks (processes and threads) seen at once by the sampler. */
  peakProcesses: number | undefined;
}

/** A setup failure reported by the helper: where, which syscall, which errno, and the fix. */
export interface SetupFailure {
  stage: string;
  op?: string;
  /** The plan step that failed, e.g. 'bind /data -> /data (rw)'. */
  step?: string;
  syscall?: string;
  errno?: number;
  errnoName?: string;
  message: string;
  hint: string;
}

export interface SandboxResult {
  command: readonly string[];
  stdout: string | Buffer | undefined;
  stderr: string | Buffer | undefined;
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  verdict: Verdict;
  timedOut: boolean;
  isCanceled: boolean;
  failed: boolean;
  usage: SandboxUsage | undefined;
  /** Setup time inside the helper, from start to the payload's fork (ms). */
  setup: { ms: number } | undefined;
  helperPid: number | undefined;
  initPid: number | undefined;
  namespaces: Record<string, number> | undefined;
  setupFailure: SetupFailure | undefined;
  /** The seccomp policy in force and what it reported; undefined without a filter. */
  seccomp: SeccompReport | undefined;
  /** With verdict seccomp-violation: the call that ended the run. */
  violation: SeccompViolation | undefined;
  /** Each limit that was set: its value and the mechanism that enforced it. */
  limits: Record<string, AppliedLimit>;
}
