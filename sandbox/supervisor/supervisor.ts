// Spawns the helper, feeds it the plan, reads its events, enforces timeout/cancel, and builds the result.
import { signalName } from '../os-names.js';
import { performance } from 'node:perf_hooks';
import { Readable, type Writable } from 'node:stream';
import { debuglog } from 'node:util';
import type { ResolvedOptions } from '../api/options.js';
import type { SandboxResult, SandboxUsage, SeccompViolation, SetupFailure, Verdict } from '../api/result.js';
import { ErrorCode, SandboxError, type ErrorCodeValue } from '../errors.js';
import type { PlanOp } from '../plan/ops.js';
import { ControlByte } from '../protocol/opcodes.js';
import { StatusReader, type ExitEvent, type ReadyEvent } from '../protocol/status.js';
import { assertHelperBuilt } from './helper-path.js';
import { launchHelper, type LaunchedHelper } from './launch.js';
import type { LimitPlan } from '../limits/limits.js';
import type { CgroupReport } from '../limits/cgroup-v1.js';
import { PassThrough } from 'node:stream';
import { toSetupFailure } from './hints.js';

const debug = debuglog('cubicle');
/** After asking the helper to kill the sandbox, how long before the helper itself is SIGKILLed. */
const HELPER_KILL_FALLBACK_MS = 3000;

export interface Supervision {
  readonly pid: number | undefined;
  readonly stdin: Writable | null;
  readonly stdout: Readable | null;
  readonly stderr: Readable | null;
  readonly result: Promise<SandboxResult>;
  kill(signal?: 'SIGTERM' | 'SIGKILL'): void;
}

type Reason = 'timeout' | 'cancel' | 'user' | 'output';

function usageOf(exit: ExitEvent | undefined, elapsedMs: number, cg: CgroupReport | undefined): SandboxUsage | undefined {
  if (!exit) return undefined;
  const u = exit.rusage;
  // wait4 on init counts init's own CPU (sampling, reaping) too: that is not the payload's
  const cpuUserMs = Math.max(0, u.utimeUs - (exit.init?.utimeUs ?? 0)) / 1000;
  const cpuSystemMs = Math.max(0, u.stimeUs - (exit.init?.stimeUs ?? 0)) / 1000;
  const cgroupCpuUs = exit.sample?.cgroupCpuUs;
  return {
    wallMs: exit.wallUs !== undefined ? exit.wallUs / 1000 : elapsedMs,
    cpuUserMs,
    cpuSystemMs,
    // The CPU cgroup's count when there is one (it includes children nobody waited for), less init's own; else wait4's.
    cpuMs: cgroupCpuUs !== undefined ? Math.max(Math.max(0, cgroupCpuUs - (exit.init?.sinceForkUs ?? 0)) / 1000, cpuUserMs + cpuSystemMs) : cpuUserMs + cpuSystemMs,
    maxRssBytes: u.maxRssKb * 1024,
    voluntaryContextSwitches: u.nvcsw,
    involuntaryContextSwitches: u.nivcsw,
    minorPageFaults: u.minflt,
    majorPageFaults: u.majflt,
    // The cgroup's peak is exact; otherwise the sampled peak, never below the largest single process's peak RSS.
    peakMemoryBytes: cg?.peakMemoryBytes ?? Math.max(exit.sample && exit.sample.samples > 0 ? exit.sample.peakMemory : 0, u.maxRssKb * 1024),
    // (with a memory cgroup init does not read PSS, so the sample's memory is 0 there)
    peakProcesses: exit.sample && exit.sample.samples > 0 ? exit.sample.peakTasks : undefined,
  };
}

const LIMIT_VERDICTS: Record<string, Verdict> = { memory: 'memory-limit', tasks: 'process-limit', cpu: 'cpu-time-limit', wall: 'wall-time-limit', oom: 'memory-limit' };

const fmtBytes = (n: number): string => (n >= 1 << 20 ? `${(n / (1 << 20)).toFixed(n % (1 << 20) ? 1 : 0)} MiB` : `${n} bytes`);

/** Why the run stopped, and how much of the limit was used, for the error message. */
function limitMessage(verdict: Verdict, r: SandboxResult, o: ResolvedOptions): string {
  const l = o.limits;
  switch (verdict) {
    case 'cpu-time-limit':
      return `exceeded the CPU-time limit of ${l.cpuTimeMs} ms (used ${r.usage?.cpuMs.toFixed(0) ?? '?'} ms)`;
    case 'wall-time-limit':
      return `exceeded the wall-time limit of ${l.wallTimeMs} ms (ran ${r.usage?.wallMs.toFixed(0) ?? '?'} ms)`;
    case 'memory-limit':
      return `exceeded the memory limit of ${fmtBytes(l.memoryBytes ?? 0)}${r.usage?.peakMemoryBytes ? ` (peak ${fmtBytes(r.usage.peakMemoryBytes)})` : ''}`;
    case 'process-limit':
      return `exceeded the process limit of ${l.processes}`;
    case 'output-limit':
      return `exceeded the output limit of ${fmtBytes(l.outputBytes ?? 0)} per stream`;
    case 'file-size-limit':
      return `exceeded the file-size limit of ${fmtBytes(l.fileSizeBytes ?? 0)}`;
    default:
      return verdict;
  }
}

const quote = (argv: readonly string[]): string => argv.map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : JSON.stringify(a))).join(' ');

function messageFor(verdict: Verdict, r: SandboxResult, o: ResolvedOptions, failure: SetupFailure | undefined): [string, ErrorCodeValue] {
  const cmd = quote(r.command);
  switch (verdict) {
    case 'nonzero-exit':
      return [`Command failed with exit code ${r.exitCode}: ${cmd}`, ErrorCode.nonzeroExit];
    case 'signaled':
      return [`Command was killed with ${r.signal}: ${cmd}`, ErrorCode.signaled];
    case 'wall-time-limit':
      return [`Command timed out: it ${limitMessage(verdict, r, o)}: ${cmd}`, ErrorCode.timeout];
    case 'cpu-time-limit':
    case 'memory-limit':
    case 'process-limit':
    case 'output-limit':
    case 'file-size-limit':
      return [`Command ${limitMessage(verdict, r, o)}: ${cmd}`, ErrorCode.limit];
    case 'canceled':
      return [`Command was canceled: ${cmd}`, ErrorCode.canceled];
    case 'seccomp-violation': {
      const v = r.violation!;
      const what = v.syscall ? `calling ${v.syscall} (nr ${v.nr}, ${v.arch})` : 'a syscall the kernel refused outright (SIGSYS: a foreign ABI such as i386 int 0x80 or x32, or a kill action)';
      return [`Command was killed by the seccomp policy "${r.seccomp?.policy}" for ${what}: ${cmd}`, ErrorCode.seccompViolation];
    }
    default: {
      const f = failure!;
      const where = [f.stage, f.step].filter(Boolean).join(', ');
      const sys = f.syscall ? `${f.syscall}: ${f.errnoName ?? ''} ` : '';
      const code = f.stage === 'helper' ? ErrorCode.helper : f.stage === 'seccomp' ? ErrorCode.seccompUnavailable : ErrorCode.setup;
      return [`Sandbox setup failed (${where}): ${sys}(${f.message}). Hint: ${f.hint}`, code];
    }
  }
}

export interface SeccompContext {
  policy: string;
  mode: 'enforce' | 'log';
  notify: 'none' | 'kill' | 'log';
  /** Turns a reported (arch, nr) into names. */
  describe(arch: number, nr: number): SeccompViolation;
}

/** Everything a run needs, prepared synchronously beforehand (see api/prepare.ts). */
export interface SuperviseInput {
  options: ResolvedOptions;
  plan: readonly PlanOp[];
  planBytes: Buffer;
  bpf: Uint8Array;
  seccomp: SeccompContext | undefined;
  failure: SetupFailure | undefined;
  limits: LimitPlan;
}

/** Starts one sandbox run. `capture` buffers stdout/stderr into the result instead of exposing streams. */
export function supervise(input: SuperviseInput, capture: boolean): Supervision {
  const { options: o, plan, planBytes, bpf, seccomp, failure: preFailure, limits } = input;
  const started = performance.now();
  let helper: LaunchedHelper | undefined;
  let launchError: Error | undefined;
  if (!preFailure) {
    try {
      assertHelperBuilt();
      helper = launchHelper(o, planBytes, bpf);
    } catch (e) {
      launchError = e as Error;
    }
  }

  const status = new StatusReader();
  let protocolError: Error | undefined;
  let timedOut = false;
  let isCanceled = false;
  let finished = false;
  let readyAt: number | undefined;
  /** When (ms, performance.now) the supervisor itself stopped the run, and why. */
  const stoppedBy: { reason: Reason; at: number }[] = [];
  const timers: NodeJS.Timeout[] = [];
  const out: Buffer[] = [];
  const err: Buffer[] = [];

  const sendControl = (byte: string): void => {
    const c = helper?.control;
    if (c && !c.destroyed && c.writable) c.write(byte);
  };
  const kill = (signal: 'SIGTERM' | 'SIGKILL', reason: Reason): void => {
    if (finished || !helper) return;
    if (!stoppedBy.some((s) => s.reason === reason)) stoppedBy.push({ reason, at: performance.now() });
    if (reason === 'timeout') timedOut = true;
    if (reason === 'cancel') isCanceled = true;
    sendControl(signal === 'SIGKILL' ? ControlByte.kill : ControlByte.terminate);
    if (signal === 'SIGTERM') timers.push(setTimeout(() => kill('SIGKILL', reason), o.forceKillAfterDelay).unref());
    // Last resort if the helper does not react: killing it takes init (PDEATHSIG) and so the whole sandbox.
    const h = helper;
    timers.push(setTimeout(() => h.kill(), (signal === 'SIGTERM' ? o.forceKillAfterDelay : 0) + HELPER_KILL_FALLBACK_MS).unref());
  };

  // Output limit: count each stream; keep at most the limit in memory; past it, stop the sandbox.
  const outputLimit = o.limits.outputBytes;
  const counted = { out: 0, err: 0 };
  const onOutput = (which: 'out' | 'err', chunk: Buffer, keep: Buffer[] | undefined): void => {
    const before = counted[which];
    counted[which] += chunk.length;
    if (keep) keep.push(outputLimit === undefined || counted[which] <= outputLimit ? chunk : chunk.subarray(0, Math.max(0, outputLimit - before)));
    if (outputLimit !== undefined && counted[which] > outputLimit) kill('SIGKILL', 'output');
  };
  let stdoutOut: Readable | null = null;
  let stderrOut: Readable | null = null;
  if (helper && !capture) {
    // Streaming: a counting pass-through keeps backpressure and the output limit.
    const wrap = (src: Readable | null, which: 'out' | 'err'): Readable | null => {
      if (!src || outputLimit === undefined) return src;
      const t = new PassThrough();
      src.on('data', (c: Buffer) => {
        const before = counted[which];
        onOutput(which, c, undefined);
        const room = Math.max(0, outputLimit - before); // nothing past the limit reaches the consumer
        if (room > 0 && !t.write(room >= c.length ? c : c.subarray(0, room))) src.pause();
      });
      t.on('drain', () => src.resume());
      src.on('end', () => t.end());
      return t;
    };
    stdoutOut = wrap(helper.stdout, 'out');
    stderrOut = wrap(helper.stderr, 'err');
  }

  const result = new Promise<SandboxResult>((resolve, reject) => {
    const onAbort = (): void => kill('SIGKILL', 'cancel');
    const finish = (exitCode: number | null, exitSignal: NodeJS.Signals | null): void => {
      if (finished) return;
      finished = true;
      for (const t of timers) clearTimeout(t);
      o.cancelSignal?.removeEventListener('abort', onAbort);
      helper?.status.destroy();
      helper?.control.destroy();
      const cg = limits.cgroup?.finish();
      const elapsedMs = performance.now() - started;
      const terminal = status.terminal();
      const ready = status.events.find((e): e is ReadyEvent => e.ev === 'ready');
      const exit = terminal?.ev === 'exit' ? terminal : undefined;
      let failure: SetupFailure | undefined = preFailure;
      if (failure) {
        /* nothing was started */
      } else if (terminal?.ev === 'error') failure = toSetupFailure(terminal, plan, o.argv[0]!);
      else if (!exit) {
        const why = launchError?.message ?? protocolError?.message ?? `the helper ended (${exitSignal ?? `exit code ${exitCode}`}) without reporting a result`;
        failure = { stage: 'helper', message: why, hint: launchError ? 'run npm install (or npm run build) to build the helper, and check it is executable by this user' : 'this is a bug in cubicle or the helper was killed from outside; rerun with NODE_DEBUG=cubicle' };
      }
      const signal = exit?.signal !== undefined ? signalName(exit.signal) : null;
      const exitCodeOut = exit?.code ?? null;
      const usage = usageOf(exit, elapsedMs, cg);
      const violations = seccomp && exit ? exit.violations.map((v) => seccomp.describe(v.arch, v.nr)) : [];
      let violation: SeccompViolation | undefined;
      if (seccomp?.notify === 'kill' && violations.length) violation = violations[0];
      else if (seccomp && signal === 'SIGSYS') violation = { syscall: null, nr: null, arch: null }; // the kernel killed it: a foreign ABI, or a kill action

      // What stopped the run, earliest first: init's limits carry their time since the payload's fork;
      // the supervisor's own stops are placed on the same axis through the ready event.
      const causes: { verdict: Verdict; atUs: number }[] = [];
      const sample = exit?.sample;
      const limitStop = exit?.stops.filter((s) => s.kind !== 'oom' && s.kind !== 'seccomp').sort((a, b) => a.atUs - b.atUs)[0];
      if (limitStop) causes.push({ verdict: LIMIT_VERDICTS[limitStop.kind]!, atUs: limitStop.atUs });
      // Memory over the limit in a sample that came too late to kill (the payload was already exiting).
      if (o.limits.memoryBytes !== undefined && !cg?.peakMemoryBytes && (sample?.peakMemory ?? 0) > o.limits.memoryBytes && !causes.some((c) => c.verdict === 'memory-limit'))
        causes.push({ verdict: 'memory-limit', atUs: Number.MAX_SAFE_INTEGER - 4 });
      if (exit?.stops.some((s) => s.kind === 'oom') || (cg?.oomKills ?? 0) > 0) causes.push({ verdict: 'memory-limit', atUs: Number.MAX_SAFE_INTEGER - 2 });
      // A fork the kernel refused, or more tasks seen than allowed, is the process limit at work.
      const procLimit = o.limits.processes;
      if (procLimit !== undefined && ((cg?.pidsRefused ?? 0) > 0 || (sample?.peakTasks ?? 0) > procLimit) && !causes.some((c) => c.verdict === 'process-limit'))
        causes.push({ verdict: 'process-limit', atUs: Number.MAX_SAFE_INTEGER - 3 });
      if (violation) causes.push({ verdict: 'seccomp-violation', atUs: Number.MAX_SAFE_INTEGER - 1 });
      const toUs = (at: number): number => (readyAt === undefined ? 0 : Math.max(0, (at - readyAt) * 1000));
      for (const s of stoppedBy) {
        if (s.reason === 'output') causes.push({ verdict: 'output-limit', atUs: toUs(s.at) });
        if (s.reason === 'timeout') causes.push({ verdict: 'wall-time-limit', atUs: toUs(s.at) });
        if (s.reason === 'cancel') causes.push({ verdict: 'canceled', atUs: toUs(s.at) });
      }
      causes.sort((a, b) => a.atUs - b.atUs);
      let verdict: Verdict;
      if (failure && !causes.some((c) => c.verdict === 'canceled' || c.verdict === 'wall-time-limit')) verdict = 'setup-error';
      else if (causes.length) verdict = causes[0]!.verdict;
      // isolate semantics: within the grace period the run may finish, but over the limit is still over it.
      else if (o.limits.cpuTimeMs !== undefined && usage && usage.cpuMs > o.limits.cpuTimeMs) verdict = 'cpu-time-limit';
      else if (o.limits.wallTimeMs !== undefined && usage && usage.wallMs > o.limits.wallTimeMs) verdict = 'wall-time-limit';
      else if (signal === 'SIGXFSZ') verdict = 'file-size-limit';
      else if (signal === 'SIGXCPU' && o.limits.cpuTimeMs !== undefined) verdict = 'cpu-time-limit';
      else if (exitCodeOut === 0) verdict = 'ok';
      else if (exitCodeOut !== null) verdict = 'nonzero-exit';
      else verdict = 'signaled';
      if (verdict === 'wall-time-limit') timedOut = true;

      const decode = (chunks: Buffer[], mode: string): string | Buffer | undefined => {
        if (!capture || mode !== 'pipe') return undefined;
        const b = Buffer.concat(chunks);
        return o.encoding === 'buffer' ? b : b.toString('utf8');
      };
      const r: SandboxResult = {
        command: o.argv,
        stdout: decode(out, o.stdout),
        stderr: decode(err, o.stderr),
        exitCode: exitCodeOut,
        signal,
        verdict,
        timedOut,
        isCanceled,
        failed: verdict !== 'ok',
        usage,
        setup: ready ? { ms: ready.setupUs / 1000 } : undefined,
        helperPid: helper?.pid,
        initPid: ready?.initPid,
        namespaces: ready?.ns,
        setupFailure: failure,
        seccomp: seccomp ? { policy: seccomp.policy, mode: seccomp.mode, violations } : undefined,
        violation: verdict === 'seccomp-violation' ? violation : undefined,
        limits: limits.applied,
      };
      debug('run finished in %d ms via %s: %s', Math.round(elapsedMs), helper?.launcher, verdict);
      if (!r.failed || !o.reject) return resolve(r);
      const [message, code] = messageFor(verdict, r, o, failure);
      reject(new SandboxError(message, code, r, launchError ? { cause: launchError } : undefined));
    };

    if (!helper) return finish(null, null);
    helper.done.then(
      (x) => finish(x.code, x.signal),
      (e: Error) => {
        launchError = e;
        finish(null, null);
      },
    );
    helper.stdin?.on('error', (e) => debug('stdin: %s', e.message)); // EPIPE when the payload stops reading: not an error of the run
    helper.status.on('data', (chunk: Buffer) => {
      if (protocolError) return;
      try {
        for (const ev of status.push(chunk)) {
          debug('event %j', ev);
          if (ev.ev === 'ready') readyAt = performance.now(); // the payload was forked just before
        }
      } catch (e) {
        protocolError = e as Error;
        sendControl(ControlByte.kill);
      }
    });
    if (capture) {
      helper.stdout?.on('data', (c: Buffer) => onOutput('out', c, out));
      helper.stderr?.on('data', (c: Buffer) => onOutput('err', c, err));
    }
    const stdin = helper.stdin;
    if (o.input !== undefined && stdin) {
      if (o.input instanceof Readable) {
        o.input.on('error', (e) => {
          debug('input stream: %s', e.message);
          stdin.destroy();
        });
        o.input.pipe(stdin);
      } else stdin.end(o.input);
    }
    // init enforces the wall-time limit precisely; this timer is the backstop (setup hangs, a stuck helper).
    const wall = o.limits.wallTimeMs;
    if (wall !== undefined) timers.push(setTimeout(() => kill('SIGKILL', 'timeout'), wall + o.limits.extraTimeMs + (plan.some((p) => p.op === 'watch') ? 1000 : 0)));
    if (o.cancelSignal) {
      if (o.cancelSignal.aborted) onAbort();
      else o.cancelSignal.addEventListener('abort', onAbort, { once: true });
    }
  });

  return {
    pid: helper?.pid,
    stdin: helper?.stdin ?? null,
    stdout: capture ? null : stdoutOut,
    stderr: capture ? null : stderrOut,
    result,
    kill: (signal = 'SIGTERM') => kill(signal, 'user'),
  };
}
