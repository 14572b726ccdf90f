// Owns every side effect of one run: creates the run's cgroup, starts the helper and feeds it the plan, reads
// its events, enforces the wall-time backstop, cancel and output limit, then reads and removes the cgroup — all
// in one try/finally around the helper's lifetime. Returns a plain record of what happened; nothing is judged here.
import type { Readable, Writable } from 'node:stream';
import { debuglog } from 'node:util';
import { CgroupSetupError, createCgroup, removeCgroup, type CgroupPlan, type CgroupReadBack } from '../cgroup/index.js';
import type { ResolvedOptions } from '../options/resolve.js';
import type { RunFailure, RunRecord, SupervisorStopReason } from '../outcome/record.js';
import { cgroupFailure } from '../outcome/setup-failure.js';
import type { HelperEvent } from '../protocol/events.js';
import { ControlByte, TerminalResize } from '../protocol/opcodes.js';
import { StatusReader } from '../protocol/status.js';
import type { AppliedLimit, HostIds, NotifyMode, SetupFailure } from '../types.js';
import type { NoSubids, Subids } from '../host/subids.js';
import { encodePlan, Op, opArg, type PlanOp } from '../plan/ops.js';
import { HOST_ID_LOCK_DIR, leaseHostIds, leaseSubids, type HostIdLease } from './host-ids.js';
import { errnoName } from '../os-names.js';
import { assertHelperBuilt } from '../native/helper-path.js';
import { registerRun } from './register.js';
import { joinNetwork, type NetworkMember } from '../network/member.js';
import { NetworkError } from '../network/registry.js';
import { launchHelper, type HelperExitStatus, type LaunchedHelper } from './launch.js';
import { nodeStream } from '../lazy-require.js';
import { mark } from '../timing.js';

const debug = debuglog('cubicle');
/** A monotonic clock in ms (process.hrtime: the `performance` global would load perf_hooks on every CLI call). */
const nowMs = (): number => Number(process.hrtime.bigint()) / 1e6;
/** The shared host ids (nobody) of a root caller's sandbox when no ids of its own can be leased. */
const SHARED_HOST_ID = 65534;

/** The userns op with the leased outer ids in place of the planned ones. */
const withOuterIds = (op: PlanOp, ids: HostIds): PlanOp =>
  Op.userns(
    Number(opArg(op as Extract<PlanOp, { op: 'userns' }>, 'innerUid')),
    Number(opArg(op as Extract<PlanOp, { op: 'userns' }>, 'innerGid')),
    ids.uid,
    ids.gid,
  );
/** After asking the helper to kill the sandbox, how long before the helper itself is SIGKILLed. */
const HELPER_KILL_FALLBACK_MS = 3000;
/** Node's timers hold at most 2^31-1 ms (a longer delay fires after 1 ms); longer delays are chained. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** Everything a run needs, prepared beforehand without side effects (see api/prepare.ts). */
export interface SuperviseInput {
  options: ResolvedOptions;
  plan: readonly PlanOp[];
  /** The encoded plan (re-encoded here when host ids are leased into its userns op). */
  planBytes: Buffer;
  bpf: Uint8Array;
  cgroup: CgroupPlan | undefined;
  /** The files option's contents, back to back (see plan/build-plan.ts filesBlob). */
  files?: Buffer;
  /** A rootless caller's subordinate ids to lease from, or why it has none it may use (see host/subids.ts). */
  subids?: Subids | NoSubids;
  /** Set when the run cannot start at all (e.g. no libseccomp): nothing is created or launched. */
  failure: SetupFailure | undefined;
  /** How long past the wall limit (and its grace) the supervisor's backstop waits for init's own kill. */
  backstopSlackMs: number;
  /** exec into a running sandbox: the ids it maps to are that sandbox's (nothing is leased). */
  joinHostIds?: HostIds;
  /** A named run started by a detached supervisor (recorded in its registry entry). */
  detached?: boolean;
  /** The limits in force and their mechanisms (recorded in a named run's registry entry). */
  applied?: Partial<Record<string, AppliedLimit>>;
  /** The seccomp policy compiled into `bpf` (recorded for exec's results). */
  seccomp?: { policy: string; mode: 'enforce' | 'log'; notify: NotifyMode };
}

export interface Supervision {
  readonly pid: number | undefined;
  readonly stdin: Writable | null;
  readonly stdout: Readable | null;
  readonly stderr: Readable | null;
  readonly record: Promise<RunRecord>;
  kill(signal?: 'SIGTERM' | 'SIGKILL'): void;
  /** With a terminal: its new window size (the foreground process group inside gets SIGWINCH). */
  resize(columns: number, rows: number): void;
}

/** The ids the plan already holds: the caller's own, or root's fixed hostUid. */
function callerIds(input: SuperviseInput): { hostIds: HostIds; planBytes: Buffer; plan: readonly PlanOp[] } {
  const o = input.options;
  if (input.joinHostIds) return { hostIds: input.joinHostIds, planBytes: input.planBytes, plan: input.plan };
  const source = process.geteuid?.() === 0 && !o.runAs ? 'fixed' : 'caller';
  const reason = input.subids && 'reason' in input.subids ? input.subids.reason : undefined;
  return {
    hostIds: { uid: o.outerUid, gid: o.outerGid, counters: 'shared', source, ...(reason ? { reason } : {}) },
    planBytes: input.planBytes,
    plan: input.plan,
  };
}

/**
 * Host ids of the sandbox's own where it can have them, so per-user kernel counters are its own: from root's
 * hostIdRange, or from a rootless caller's subordinate ids (mapped by newuidmap/newgidmap). Where none can be
 * leased, root's sandbox maps to nobody and a rootless one keeps the caller's ids, sharing the counters (capped to
 * half of the host's), and the result says why. The lease is the caller's to release.
 */
export function takeHostIds(input: SuperviseInput): {
  hostIds: HostIds;
  lease: HostIdLease | undefined;
  planBytes: Buffer;
  plan: readonly PlanOp[];
} {
  const o = input.options;
  if (input.joinHostIds) return { ...callerIds(input), lease: undefined };
  let lease: HostIdLease | undefined;
  let hostIds: HostIds;
  let extra: PlanOp[] = [];
  if (o.hostIdRange) {
    lease = leaseHostIds(o.hostIdRange) ?? undefined;
    hostIds = lease
      ? { uid: lease.uid, gid: lease.gid, counters: 'own', source: 'range' }
      : {
          uid: SHARED_HOST_ID,
          gid: SHARED_HOST_ID,
          counters: 'shared',
          source: 'nobody',
          reason: `every id of hostIdRange is held, or ${HOST_ID_LOCK_DIR} is unusable`,
        };
  } else if (input.subids && !('reason' in input.subids)) {
    const got = leaseSubids(input.subids);
    if ('reason' in got) return { ...callerIds(input), hostIds: { ...callerIds(input).hostIds, reason: got.reason }, lease: undefined };
    lease = got;
    hostIds = { uid: lease.uid, gid: lease.gid, counters: 'own', source: 'subids' };
    // on a network, stage 0 maps the ids itself from inside the holder's user namespace (which maps the whole range)
    extra = o.network ? [] : [Op.idMapper(input.subids.newuidmap, input.subids.newgidmap)];
  } else return { ...callerIds(input), lease: undefined };
  try {
    // Extra ops go just before `end`: every other op keeps its index, which setup failures and copy-out frames name.
    const plan = input.plan.map((op) => (op.op === 'userns' ? withOuterIds(op, hostIds) : op));
    plan.splice(plan.length - 1, 0, ...extra);
    return { hostIds, lease, planBytes: encodePlan(plan), plan };
  } catch (e) {
    lease?.release();
    throw e;
  }
}

/**
 * A helper started ahead with a plan that awaits its run (a warm pool's sandbox, see pool/): its host ids, the
 * status bytes it wrote so far, and `start`, which sends the run plan, the BPF and the files.
 */
export interface WarmHelper {
  helper: LaunchedHelper;
  hostIds: HostIds;
  lease: HostIdLease | undefined;
  status: Buffer;
  /** The sandbox's cgroup, made with it and given the run's limits (written and read back) by the pool. */
  cgroup?: { plan: CgroupPlan; readBack: CgroupReadBack };
  start(): void;
}

/** Starts one run. `capture` buffers stdout/stderr into the record instead of exposing streams. With `warm`, the
 *  run goes to that waiting helper (and its cgroup, removed here as a run's own is) instead of a new one. */
export function supervise(input: SuperviseInput, capture: boolean, warm?: WarmHelper): Supervision {
  const o = input.options;
  const started = nowMs();
  let failure: RunFailure | undefined = input.failure ? { kind: 'prepared', failure: input.failure } : undefined;

  // A named run reserves its name first (a taken name throws before anything else happens) and serves a join socket.
  const registration = failure ? undefined : registerRun(o, input.cgroup, input.detached === true, input.seccomp, input.applied ?? {});
  if (registration) {
    const plan = registration.plan(input.plan);
    input = { ...input, plan, planBytes: encodePlan(plan) };
  }
  // Side effects start here; the finally in `lifetime` undoes them whatever happens.
  let taken: ReturnType<typeof takeHostIds>;
  try {
    taken = warm
      ? { hostIds: warm.hostIds, lease: warm.lease, planBytes: input.planBytes, plan: input.plan }
      : failure
        ? { ...callerIds(input), lease: undefined }
        : takeHostIds(input);
  } catch (e) {
    registration?.remove();
    throw e;
  }
  const { hostIds, lease } = taken;
  let { planBytes, plan: sentPlan } = taken;
  let member: NetworkMember | undefined;
  if (!failure && !warm && o.network !== undefined) {
    try {
      member = joinNetwork(o, input.plan, hostIds);
      sentPlan = member.plan;
      planBytes = encodePlan(member.plan);
    } catch (e) {
      member?.release();
      if (!(e instanceof NetworkError)) {
        lease?.release();
        registration?.remove();
        throw e;
      }
      failure = { kind: 'prepared', failure: { stage: 'network', message: e.detail, hint: e.hint } };
    }
  }
  let cgroup: { plan: CgroupPlan; readBack: CgroupReadBack } | undefined;
  let helper: LaunchedHelper | undefined;
  if (!failure && input.cgroup && !warm) {
    try {
      cgroup = { plan: input.cgroup, readBack: createCgroup(input.cgroup) };
    } catch (e) {
      if (!(e instanceof CgroupSetupError)) {
        lease?.release();
        registration?.remove();
        member?.release();
        throw e;
      }
      failure = { kind: 'cgroup', failure: cgroupFailure(e) };
    }
  }
  if (warm) {
    helper = warm.helper;
    cgroup = warm.cgroup;
  } else if (!failure) {
    try {
      assertHelperBuilt();
      helper = launchHelper(o, planBytes, input.bpf, input.files);
    } catch (e) {
      failure = { kind: 'launch', error: e as Error };
    }
  }

  const status = new StatusReader();
  const stops: RunRecord['stops'] = [];
  const timers: NodeJS.Timeout[] = [];
  /** Runs `fn` after `delay` ms, however long; every timer is cleared when the run finishes. */
  const after = (delay: number, fn: () => void, unref = false): void => {
    const step = Math.min(delay, MAX_TIMER_MS);
    const t = setTimeout(() => (delay > step ? after(delay - step, fn, unref) : fn()), step);
    if (unref) t.unref();
    timers.push(t);
  };
  let readyAt: number | undefined;
  let finished = false;

  const sendControl = (message: string | Buffer): void => {
    const c = helper?.control;
    if (c && !c.destroyed && c.writable) c.write(message);
  };
  const stop = (signal: 'SIGTERM' | 'SIGKILL', reason: SupervisorStopReason): void => {
    if (finished || !helper) return;
    if (!stops.some((s) => s.reason === reason))
      stops.push({ reason, atUs: readyAt === undefined ? -1 : Math.round((nowMs() - readyAt) * 1000) });
    sendControl(signal === 'SIGKILL' ? ControlByte.kill : ControlByte.terminate);
    if (signal === 'SIGTERM') after(o.forceKillAfterDelay, () => stop('SIGKILL', reason), true);
    // Last resort if the helper does not react: killing it takes init (PDEATHSIG) and so the whole sandbox.
    const h = helper;
    after((signal === 'SIGTERM' ? o.forceKillAfterDelay : 0) + HELPER_KILL_FALLBACK_MS, () => h.kill(), true);
  };

  // Output limit: count each stream; keep at most the limit; past it, stop the sandbox.
  const outputLimit = o.limits.outputBytes;
  const counted = { out: 0, err: 0 };
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  /** Counts a chunk; returns the part within the limit. */
  const within = (which: 'out' | 'err', chunk: Buffer, cap = outputLimit): Buffer => {
    const before = counted[which];
    counted[which] += chunk.length;
    if (cap === undefined) return chunk;
    if (counted[which] > cap) stop('SIGKILL', outputLimit !== undefined && outputLimit <= cap ? 'output' : 'max-buffer');
    return counted[which] <= cap ? chunk : chunk.subarray(0, Math.max(0, cap - before));
  };
  // Captured output is also bounded by maxBuffer, so a flood never grows this process past what a result holds.
  const captureCap = Math.min(outputLimit ?? Infinity, o.maxBuffer);
  const keep = (into: Buffer[], which: 'out' | 'err', chunk: Buffer): void => {
    if (counted[which] > captureCap) return; // already stopped; what is kept is complete
    const kept = within(which, chunk, captureCap);
    if (kept.length) into.push(kept);
  };
  const limitStream = (src: Readable | null, which: 'out' | 'err'): Readable | null => {
    if (!src || outputLimit === undefined) return src;
    const t = new (nodeStream().PassThrough)(); // keeps backpressure; nothing past the limit reaches the consumer
    src.on('data', (c: Buffer) => {
      const kept = within(which, c);
      if (kept.length > 0 && !t.write(kept)) src.pause();
    });
    t.on('drain', () => src.resume());
    src.on('end', () => t.end());
    return t;
  };
  const stdoutOut = helper && !capture ? limitStream(helper.stdout, 'out') : null;
  const stderrOut = helper && !capture ? limitStream(helper.stderr, 'err') : null;

  // Copied-out files: at most boxSize of content and a header line per name.
  const copyOut: Buffer[] = [];
  let copied = 0;
  const copyOutBound = o.box ? o.box.size + 64 * o.box.copyOut.length : 0;

  const onAbort = (): void => stop('SIGKILL', 'cancel');
  const onEvents = (chunk: Buffer): void => {
    if (failure?.kind === 'protocol') return;
    let events: HelperEvent[];
    try {
      events = status.push(chunk);
    } catch (e) {
      failure = { kind: 'protocol', error: e as Error };
      sendControl(ControlByte.kill);
      return;
    }
    for (const ev of events) {
      debug('event %j', ev);
      if (ev.ev === 'ready') readyAt = nowMs(); // the payload was forked just before
      if (ev.ev === 'ready' && registration) {
        try {
          registration.ready(ev, helper?.pid, sentPlan, input.bpf, hostIds);
        } catch (e) {
          debug('registry: %s', (e as Error).message); // the run goes on; it is only not listed
        }
      }
    }
  };

  /** The helper's whole life; the finally removes the cgroup whatever happened. */
  const lifetime = async (): Promise<RunRecord> => {
    let helperExit: HelperExitStatus | undefined;
    let counters: ReturnType<CgroupPlan['collect']> | undefined;
    try {
      if (helper) {
        helper.stdin?.on('error', (e) => debug('stdin: %s', e.message)); // EPIPE when the payload stops reading
        if (warm) onEvents(warm.status);
        helper.status.on('data', onEvents);
        helper.copyOut?.on('data', (c: Buffer) => {
          copied += c.length;
          if (copied <= copyOutBound) copyOut.push(c);
          else helper?.copyOut?.destroy(); // more than init may send: nothing past the bound is kept
        });
        if (capture) {
          helper.stdout?.on('data', (c: Buffer) => keep(out, 'out', c));
          helper.stderr?.on('data', (c: Buffer) => keep(err, 'err', c));
        }
        warm?.start();
        feedInput(o, helper.stdin);
        // init enforces the wall-time limit precisely; this timer is the backstop (setup hangs, a stuck helper).
        const wall = o.limits.wallTimeMs;
        if (wall !== undefined) after(wall + o.limits.extraTimeMs + input.backstopSlackMs, () => stop('SIGKILL', 'timeout'));
        if (o.cancelSignal?.aborted) onAbort();
        else o.cancelSignal?.addEventListener('abort', onAbort, { once: true });
        try {
          helperExit = await helper.done;
          mark('ended');
        } catch (e) {
          failure ??= { kind: 'launch', error: e as Error };
        }
      }
      if (cgroup) counters = cgroup.plan.collect();
    } finally {
      if (helper && !helperExit) helper.kill(); // only if something above threw: the group must not be removed under it
      finished = true;
      for (const t of timers) clearTimeout(t);
      o.cancelSignal?.removeEventListener('abort', onAbort);
      helper?.status.destroy();
      helper?.control.destroy();
      if (cgroup) removeCgroup(cgroup.plan);
      lease?.release();
      registration?.remove();
      member?.release();
    }
    const terminal = status.terminal();
    // The kernel refused the namespaces: the doctor's diagnosis of this host is the fix to give.
    const refused =
      terminal?.ev === 'error' && terminal.stage === 'parent' && (terminal.syscall === 'clone' || terminal.syscall === 'clone3');
    // Loaded only then: the doctor's probes are no part of a run that worked.
    const hostDiagnosis = refused
      ? (await import('../doctor/userns.js')).usernsFix(terminal.errno === undefined ? undefined : errnoName(terminal.errno))
      : undefined;
    const record: RunRecord = {
      helperPid: helper?.pid,
      failure,
      ready: status.events.find((e) => e.ev === 'ready'),
      terminal,
      helperExit,
      stops,
      cgroup: cgroup && counters ? { counters, readBack: cgroup.readBack } : undefined,
      stdout: capture && o.stdout === 'pipe' ? out : undefined,
      stderr: capture && o.stderr === 'pipe' ? err : undefined,
      hostDiagnosis,
      hostIds,
      elapsedMs: nowMs() - started,
      ...(helper?.copyOut ? { copyOut: Buffer.concat(copyOut) } : {}),
    };
    debug('run finished in %d ms via %s', Math.round(record.elapsedMs), helper?.launcher);
    return record;
  };

  return {
    pid: helper?.pid,
    stdin: helper?.stdin ?? null,
    stdout: capture ? null : stdoutOut,
    stderr: capture ? null : stderrOut,
    record: lifetime(),
    kill: (signal = 'SIGTERM') => stop(signal, 'user'),
    resize: (columns, rows) => {
      if (finished) return;
      const m = Buffer.alloc(TerminalResize.bytes);
      m.write(ControlByte.resize, 0, 'latin1');
      m.writeUInt16BE(columns, 1);
      m.writeUInt16BE(rows, 3);
      sendControl(m);
    },
  };
}

/** Writes `input` (data or a stream) to the payload's stdin. */
function feedInput(o: ResolvedOptions, stdin: Writable | null): void {
  if (o.input === undefined || !stdin) return;
  if (typeof o.input === 'object' && !(o.input instanceof Uint8Array) && o.input instanceof nodeStream().Readable) {
    o.input.on('error', (e) => {
      debug('input stream: %s', e.message);
      stdin.destroy();
    });
    o.input.pipe(stdin);
  } else stdin.end(o.input);
}
