// Spawns the helper, feeds it the plan, reads its events, enforces timeout/cancel, and builds the result.
import { constants as osConstants } from 'node:os';
import { performance } from 'node:perf_hooks';
import { Readable, type Writable } from 'node:stream';
import { debuglog } from 'node:util';
import type { ResolvedOptions } from '../api/options.js';
import type { SandboxResult, SandboxUsage, SeccompViolation, SetupFailure, Verdict } from '../api/result.js';
import { ErrorCode, SandboxError, type ErrorCodeValue } from '../errors.js';
import { encodePlan, type PlanOp } from '../plan/ops.js';
import { ControlByte } from '../protocol/opcodes.js';
import { StatusReader, type ExitEvent, type ReadyEvent } from '../protocol/status.js';
import { assertHelperBuilt } from './helper-path.js';
import { launchHelper, type LaunchedHelper } from './launch.js';
import { toSetupFailure } from './hints.js';

const debug = debuglog('cubicle');
/** Signal number -> name; the first name wins, so 6 is SIGABRT rather than its alias SIGIOT. */
const SIGNAL_NAMES = new Map<number, NodeJS.Signals>();
for (const [name, num] of Object.entries(osConstants.signals)) if (!SIGNAL_NAMES.has(num)) SIGNAL_NAMES.set(num, name as NodeJS.Signals);
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

type Reason = 'timeout' | 'cancel' | 'user';

function usageOf(exit: ExitEvent | undefined, elapsedMs: number): SandboxUsage | undefined {
  if (!exit) return undefined;
  const u = exit.usage;
  const cpuUserMs = u.utimeUs / 1000;
  const cpuSystemMs = u.stimeUs / 1000;
  return {
    wallMs: exit.wallUs >= 0 ? exit.wallUs / 1000 : elapsedMs,
    cpuUserMs,
    cpuSystemMs,
    cpuMs: cpuUserMs + cpuSystemMs,
    maxRssBytes: u.maxRssKb * 1024,
    voluntaryContextSwitches: u.nvcsw,
    involuntaryContextSwitches: u.nivcsw,
    minorPageFaults: u.minflt,
    majorPageFaults: u.majflt,
  };
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
      return [`Command timed out after ${o.timeout} ms (wall-time limit): ${cmd}`, ErrorCode.timeout];
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

/** Starts one sandbox run. `capture` buffers stdout/stderr into the result instead of exposing streams. */
export interface SeccompContext {
  policy: string;
  mode: 'enforce' | 'log';
  notify: 'none' | 'kill' | 'log';
  /** Turns a reported (arch, nr) into names. */
  describe(arch: number, nr: number): SeccompViolation;
}

export function supervise(o: ResolvedOptions, plan: readonly PlanOp[], bpf: Uint8Array, capture: boolean, seccomp?: SeccompContext, preFailure?: SetupFailure): Supervision {
  const planBytes = encodePlan(plan);
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
  const timers: NodeJS.Timeout[] = [];
  const out: Buffer[] = [];
  const err: Buffer[] = [];

  const sendControl = (byte: string): void => {
    const c = helper?.control;
    if (c && !c.destroyed && c.writable) c.write(byte);
  };
  const kill = (signal: 'SIGTERM' | 'SIGKILL', reason: Reason): void => {
    if (finished || !helper) return;
    if (reason === 'timeout') timedOut = true;
    if (reason === 'cancel') isCanceled = true;
    sendControl(signal === 'SIGKILL' ? ControlByte.kill : ControlByte.terminate);
    if (signal === 'SIGTERM') timers.push(setTimeout(() => kill('SIGKILL', reason), o.forceKillAfterDelay).unref());
    // Last resort if the helper does not react: killing it takes init (PDEATHSIG) and so the whole sandbox.
    const h = helper;
    timers.push(setTimeout(() => h.kill(), (signal === 'SIGTERM' ? o.forceKillAfterDelay : 0) + HELPER_KILL_FALLBACK_MS).unref());
  };

  const result = new Promise<SandboxResult>((resolve, reject) => {
    const onAbort = (): void => kill('SIGKILL', 'cancel');
    const finish = (exitCode: number | null, exitSignal: NodeJS.Signals | null): void => {
      if (finished) return;
      finished = true;
      for (const t of timers) clearTimeout(t);
      o.cancelSignal?.removeEventListener('abort', onAbort);
      helper?.status.destroy();
      helper?.control.destroy();
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
      const signal = exit?.signal !== undefined ? SIGNAL_NAMES.get(exit.signal) ?? (`SIG${exit.signal}` as NodeJS.Signals) : null;
      const exitCodeOut = exit?.code ?? null;
      const violations = seccomp && exit ? exit.violations.map((v) => seccomp.describe(v.arch, v.nr)) : [];
      let violation: SeccompViolation | undefined;
      if (seccomp?.notify === 'kill' && violations.length) violation = violations[0];
      else if (seccomp && signal === 'SIGSYS') violation = { syscall: null, nr: null, arch: null }; // the kernel killed it: a foreign ABI, or a kill action
      let verdict: Verdict;
      if (isCanceled) verdict = 'canceled';
      else if (timedOut) verdict = 'wall-time-limit';
      else if (failure) verdict = 'setup-error';
      else if (violation) verdict = 'seccomp-violation';
      else if (exitCodeOut === 0) verdict = 'ok';
      else if (exitCodeOut !== null) verdict = 'nonzero-exit';
      else verdict = 'signaled';
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
        usage: usageOf(exit, elapsedMs),
        setup: ready ? { ms: ready.setupUs / 1000 } : undefined,
        helperPid: helper?.pid,
        initPid: ready?.initPid,
        namespaces: ready?.ns,
        setupFailure: failure,
        seccomp: seccomp ? { policy: seccomp.policy, mode: seccomp.mode, violations } : undefined,
        violation,
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
        for (const ev of status.push(chunk)) debug('event %j', ev);
      } catch (e) {
        protocolError = e as Error;
        sendControl(ControlByte.kill);
      }
    });
    if (capture) {
      helper.stdout?.on('data', (c: Buffer) => out.push(c));
      helper.stderr?.on('data', (c: Buffer) => err.push(c));
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
    if (o.timeout !== undefined) timers.push(setTimeout(() => kill('SIGKILL', 'timeout'), o.timeout));
    if (o.cancelSignal) {
      if (o.cancelSignal.aborted) onAbort();
      else o.cancelSignal.addEventListener('abort', onAbort, { once: true });
    }
  });

  return {
    pid: helper?.pid,
    stdin: helper?.stdin ?? null,
    stdout: capture ? null : helper?.stdout ?? null,
    stderr: capture ? null : helper?.stderr ?? null,
    result,
    kill: (signal = 'SIGTERM') => kill(signal, 'user'),
  };
}
