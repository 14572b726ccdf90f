// Judges a run once: turns the supervisor's record (the helper's facts, the supervisor's stops, the cgroup's
// counters) into the result's verdict, usage and status. Pure: no I/O, no clock, table-tested without a sandbox.
import type { LimitPlan } from '../plan/limits.js';
import type { ResolvedLimits } from '../limits/resolve.js';
import { signalName } from '../os-names.js';
import type { PlanOp } from '../plan/ops.js';
import type { ExitEvent, StopKind } from '../protocol/events.js';
import type { NotifyMode, SandboxResult, SandboxUsage, SeccompViolation, SetupFailure, Verdict } from '../types.js';
import type { RunRecord, SupervisorStopReason } from './record.js';
import { parseCopyOut } from './copy-out.js';
import { helperFailure, toSetupFailure } from './setup-failure.js';

/** What judging needs besides the record: the run's limits, plan, policy and output settings. */
export interface JudgeContext {
  argv: readonly string[];
  limits: ResolvedLimits;
  applied: LimitPlan['applied'];
  plan: readonly PlanOp[];
  seccomp: { policy: string; mode: 'enforce' | 'log'; notify: NotifyMode; name(arch: number, nr: number): SeccompViolation } | undefined;
  encoding: 'utf8' | 'buffer';
  maxBuffer: number;
}

/** The verdict each timed stop stands for (a user's kill is no verdict: the run ends as its status says). */
const STOP_VERDICT: Record<StopKind | SupervisorStopReason, Verdict | undefined> = {
  memory: 'memory-limit',
  oom: 'memory-limit',
  tasks: 'process-limit',
  cpu: 'cpu-time-limit',
  wall: 'wall-time-limit',
  seccomp: 'seccomp-violation',
  output: 'output-limit',
  'max-buffer': 'output-limit',
  timeout: 'wall-time-limit',
  cancel: 'canceled',
  user: undefined,
};

/**
 * Evidence that carries no time, in priority order: consulted only when nothing stopped the run at a known
 * moment. Each entry says whether its evidence is present.
 */
const UNTIMED_EVIDENCE: readonly { verdict: Verdict; seen(f: Facts): boolean }[] = [
  // a sample that came too late to kill (the payload was already exiting) saw memory over the limit
  { verdict: 'memory-limit', seen: (f) => f.limits.memoryBytes !== undefined && f.sampledMemory > f.limits.memoryBytes },
  // the pids controller refused a task and the payload did not finish successfully (see processCapHit)
  { verdict: 'process-limit', seen: (f) => f.refusedTask && f.exit?.code !== 0 },
  // the kernel's OOM killer acted in the memory cgroup (a refused fork is the likelier first cause)
  { verdict: 'memory-limit', seen: (f) => (f.cgroup?.oomKills ?? 0) > 0 },
  // the kernel's own seccomp kill (a foreign ABI such as i386 int 0x80 or x32): SIGSYS under a filter
  { verdict: 'seccomp-violation', seen: (f) => f.filtered && f.signal === 'SIGSYS' },
  // isolate's semantics: within the grace period the run may finish, but over the limit is still over it
  {
    verdict: 'cpu-time-limit',
    seen: (f) => f.limits.cpuTimeMs !== undefined && f.usage !== undefined && f.usage.cpuMs > f.limits.cpuTimeMs,
  },
  {
    verdict: 'wall-time-limit',
    seen: (f) => f.limits.wallTimeMs !== undefined && f.usage !== undefined && f.usage.wallMs > f.limits.wallTimeMs,
  },
  { verdict: 'file-size-limit', seen: (f) => f.signal === 'SIGXFSZ' },
  { verdict: 'cpu-time-limit', seen: (f) => f.signal === 'SIGXCPU' && f.limits.cpuTimeMs !== undefined },
];

interface Facts {
  limits: ResolvedLimits;
  exit: ExitEvent | undefined;
  cgroup: NonNullable<RunRecord['cgroup']>['counters'] | undefined;
  usage: SandboxUsage | undefined;
  signal: NodeJS.Signals | null;
  filtered: boolean;
  /** Peak memory from init's samples, when the sampler (not a memory cgroup) measured it. */
  sampledMemory: number;
  /** The kernel refused a task past the process cap (the pids cgroup counted it). */
  refusedTask: boolean;
  /** Without a pids cgroup (refusals are not counted there): the sampler saw the sandbox holding every task
   *  the cap allows, with a cap of at least 2 (a single process is always at a cap of 1). */
  sampledAtCap: boolean;
}

/**
 * Process-cap evidence. The kernel holds the payload to N tasks: a fork or thread creation past N fails with
 * EAGAIN and the program goes on. A refusal is a limit passed, so the run is process-limit when it did not
 * finish successfully (exit 0 means the program handled the refusal, as with a write refused by fileSize);
 * and it happened before any time limit that then stopped the run (a fork bomb spins at the cap until one).
 * With a pids cgroup the refusals are counted; without one they cannot be seen, and a time limit that stops a
 * sandbox the sampler saw at its cap counts instead (a nonzero exit there keeps its own verdict).
 */
export function processCapHit(
  cap: number | undefined,
  exit: ExitEvent | undefined,
  pidsRefused: number | undefined,
): Pick<Facts, 'refusedTask' | 'sampledAtCap'> {
  if (cap === undefined) return { refusedTask: false, sampledAtCap: false };
  if (pidsRefused !== undefined) return { refusedTask: pidsRefused > 0, sampledAtCap: false };
  return { refusedTask: false, sampledAtCap: cap >= 2 && (exit?.sample?.peakTasks ?? 0) >= cap };
}

const TIME_VERDICTS: readonly Verdict[] = ['cpu-time-limit', 'wall-time-limit'];

const us = (v: number): number => v / 1000;

/** Usage from the exit event's raw facts: init's own CPU removed, the CPU cgroup's count when there is one. */
function usageOf(exit: ExitEvent, cgroupPeakMemory: number | undefined, elapsedMs: number): SandboxUsage {
  const r = exit.rusage;
  const userUs = Math.max(0, r.utimeUs - (exit.init?.utimeUs ?? 0));
  const systemUs = Math.max(0, r.stimeUs - (exit.init?.stimeUs ?? 0));
  const waited = us(userUs) + us(systemUs); // exactly cpuUserMs + cpuSystemMs
  const cg = exit.sample?.cgroupCpuUs;
  const cgroupCpu = cg === undefined ? undefined : us(Math.max(0, cg - (exit.init?.sinceForkUs ?? 0)));
  const sampled = exit.sample && exit.sample.samples > 0 ? exit.sample : undefined;
  const maxRssBytes = r.maxRssKb * 1024;
  return {
    wallMs: exit.wallUs !== undefined ? us(exit.wallUs) : elapsedMs,
    cpuUserMs: us(userUs),
    cpuSystemMs: us(systemUs),
    // the cgroup counts children nobody waited for; wait4 counts what was reaped
    cpuMs: cgroupCpu === undefined ? waited : Math.max(cgroupCpu, waited),
    maxRssBytes,
    voluntaryContextSwitches: r.nvcsw,
    involuntaryContextSwitches: r.nivcsw,
    minorPageFaults: r.minflt,
    majorPageFaults: r.majflt,
    // one definition (memory the sandbox owns, not page cache of programs and libraries): the memory cgroup's
    // peak charge, else the peak of init's samples, which count the same pages. Never maxRss: it includes
    // mapped file pages, and a peak the limit did not count would contradict the verdict.
    peakMemoryBytes: cgroupPeakMemory ?? sampled?.peakMemory,
    peakProcesses: sampled?.peakTasks,
  };
}

/** The single verdict: a setup failure, else the earliest timed stop, else untimed evidence by priority, else
 *  the payload's own status. */
export function decideVerdict(record: RunRecord, failure: SetupFailure | undefined, f: Facts): Verdict {
  const timed: { verdict: Verdict; atUs: number }[] = [];
  for (const s of f.exit?.stops ?? []) timed.push({ verdict: STOP_VERDICT[s.kind]!, atUs: s.atUs });
  for (const s of record.stops) {
    const v = STOP_VERDICT[s.reason];
    if (v) timed.push({ verdict: v, atUs: s.atUs });
  }
  timed.sort((a, b) => a.atUs - b.atUs); // stable: the helper's stops first on a tie
  // A cancel or timeout explains a setup that never finished; any other failure is the verdict.
  if (failure) return timed.find((t) => t.verdict === 'canceled' || t.verdict === 'wall-time-limit')?.verdict ?? 'setup-error';
  if (timed.length) {
    const first = timed[0]!.verdict;
    if (TIME_VERDICTS.includes(first) && (f.refusedTask || f.sampledAtCap)) return 'process-limit';
    return first;
  }
  const evidence = UNTIMED_EVIDENCE.find((e) => e.seen(f));
  if (evidence) return evidence.verdict;
  const code = f.exit?.code;
  if (code === 0) return 'ok';
  if (code !== undefined) return 'nonzero-exit';
  return 'signaled';
}

function decode(chunks: Buffer[] | undefined, encoding: 'utf8' | 'buffer'): string | Buffer | undefined {
  if (!chunks) return undefined;
  const b = Buffer.concat(chunks);
  return encoding === 'buffer' ? b : b.toString('utf8');
}

/** The payload was started (the ready event came) and then the helper ended without a terminal event and
 *  without breaking the protocol: it was killed from outside. That run started, so it is no setup error. */
function diedAfterStart(record: RunRecord): boolean {
  return record.ready !== undefined && record.failure === undefined && record.terminal === undefined;
}

/** The run's result, judged from its record. */
export function judge(record: RunRecord, ctx: JudgeContext): SandboxResult {
  const terminal = record.terminal;
  const exit = terminal?.ev === 'exit' ? terminal : undefined;
  let failure: SetupFailure | undefined;
  if (record.failure?.kind === 'prepared' || record.failure?.kind === 'cgroup') failure = record.failure.failure;
  else if (terminal?.ev === 'error') failure = toSetupFailure(terminal, ctx.plan, ctx.argv[0]!, record.hostDiagnosis);
  else if (!exit && !diedAfterStart(record)) failure = helperFailure(record);

  // A helper killed from outside once the payload ran (SIGKILL: nothing could report) took the sandbox with it
  // (every stage has PDEATHSIG SIGKILL): the payload was killed, and its usage is unknown.
  const lost = !exit && !failure;
  const signal =
    exit?.signal !== undefined
      ? signalName(exit.signal)
      : exit?.initSignal !== undefined
        ? signalName(exit.initSignal)
        : lost
          ? 'SIGKILL'
          : null;
  const usage = exit ? usageOf(exit, record.cgroup?.counters.peakMemoryBytes, record.elapsedMs) : undefined;
  const facts: Facts = {
    limits: ctx.limits,
    exit,
    cgroup: record.cgroup?.counters,
    usage,
    signal,
    filtered: ctx.seccomp !== undefined,
    sampledMemory: record.cgroup?.counters.peakMemoryBytes === undefined ? (exit?.sample?.peakMemory ?? 0) : 0,
    ...processCapHit(ctx.applied.processes?.value ?? ctx.limits.processes, exit, record.cgroup?.counters.pidsRefused),
  };
  const verdict = decideVerdict(record, failure, facts);

  const violations = ctx.seccomp && exit ? exit.violations.map((v) => ctx.seccomp!.name(v.arch, v.nr)) : [];
  let violation: SeccompViolation | undefined;
  if (verdict === 'seccomp-violation')
    violation = ctx.seccomp?.notify === 'kill' && violations.length ? violations[0] : { syscall: null, nr: null, arch: null };

  const applied = { ...ctx.applied };
  const readBack = record.cgroup?.readBack;
  if (readBack?.memory !== undefined && applied.memory) applied.memory = { ...applied.memory, readBack: readBack.memory };
  if (readBack?.pids !== undefined && applied.processes) applied.processes = { ...applied.processes, readBack: readBack.pids };
  // Captured output past maxBuffer ended the run: that bound is the output limit it passed.
  if (record.stops.some((s) => s.reason === 'max-buffer') && !(applied.outputLimit && applied.outputLimit.value <= ctx.maxBuffer))
    applied.outputLimit = { value: ctx.maxBuffer, unit: 'bytes', mechanism: 'maxBuffer' };

  return {
    command: ctx.argv,
    stdout: decode(record.stdout, ctx.encoding),
    stderr: decode(record.stderr, ctx.encoding),
    exitCode: exit?.code ?? null,
    signal,
    verdict,
    timedOut: verdict === 'wall-time-limit' || record.stops.some((s) => s.reason === 'timeout'),
    isCanceled: record.stops.some((s) => s.reason === 'cancel'),
    failed: verdict !== 'ok',
    usage,
    setup: record.ready ? { ms: us(record.ready.setupUs) } : undefined,
    helperPid: record.helperPid,
    initPid: record.ready?.initPid,
    namespaces: record.ready?.ns,
    setupFailure: failure,
    seccomp: ctx.seccomp ? { policy: ctx.seccomp.policy, mode: ctx.seccomp.mode, violations } : undefined,
    violation,
    limits: applied,
    hostIds: record.hostIds,
    ...parseCopyOut(record.copyOut, ctx.plan),
  };
}
