// A warm pool: sandboxes made ahead (namespaces, ids, root, mounts, /proc, /box), each waiting in init for its run
// plan, each used once. A run whose first plan is exactly the pool's takes a waiting sandbox ('hit'); any other
// run, or one that finds none waiting, runs cold as runSandboxed would ('miss', and the result says why).
import { performance } from 'node:perf_hooks';
import { newRunId, prepareRun, type PreparedRun } from '../api/prepare.js';
import { CgroupSetupError, createCgroup, removeCgroup, type CgroupPlan } from '../cgroup/index.js';
import { SandboxHostError, SandboxOptionError } from '../errors.js';
import { assertHelperBuilt } from '../native/helper-path.js';
import { judge } from '../outcome/judge.js';
import type { RunRecord } from '../outcome/record.js';
import { toSandboxError } from '../outcome/render.js';
import { encodePlan, type PlanOp } from '../plan/ops.js';
import { ControlByte } from '../protocol/opcodes.js';
import { StatusReader } from '../protocol/status.js';
import type { HostIdLease } from '../supervisor/host-ids.js';
import { supervise, takeHostIds, type WarmHelper } from '../supervisor/supervisor.js';
import type { HostIds, SandboxOptions, SandboxResult } from '../types.js';
import { launchWarm, warmLaunchSupported, type WarmLaunch } from './launch-warm.js';
import { inodeOps, joinedPlan, planDifference, splitPlan, withoutInodes } from './split.js';

export interface PoolOptions {
  /** Sandboxes kept waiting (default 2, at most 64). */
  size?: number;
  /** The sandbox options the waiting sandboxes are made with. A run gets one when its own options build the same
   *  sandbox (policy, rootfs, mounts, network, sizes, user, hostname); its command, env, cwd, limits, files and
   *  copy-out may differ freely. */
  options?: SandboxOptions;
  /** Sandboxes being made at once while refilling (default 1, at most size). */
  maxStarting?: number;
  /** After a sandbox fails to start, how long before trying again (ms, default 1000). */
  retryDelayMs?: number;
  /** Refill only once no run has started or ended for this long (ms, default 30), so making a sandbox does not
   *  compete with the runs for the CPU; a pool with nothing left waiting refills at once. 0: refill at once. */
  refillIdleMs?: number;
}

const POOL_OPTION_NAMES = ['size', 'options', 'maxStarting', 'retryDelayMs', 'refillIdleMs'] as const;

export interface PoolStats {
  /** The pool's size: sandboxes it keeps waiting. */
  size: number;
  /** How it refills: sandboxes made at once, and the quiet time a refill waits for (ms). */
  maxStarting: number;
  refillIdleMs: number;
  /** Waiting, ready for a run. */
  ready: number;
  /** Being made. */
  starting: number;
  /** Running a command now (hits not yet settled). */
  inUse: number;
  /** Runs that used a waiting sandbox. */
  hits: number;
  /** Runs that ran cold, and why. */
  misses: number;
  missReasons: Record<string, number>;
  /** Runs served in all (hits and misses). */
  served: number;
  /** Sandboxes that failed before they were ready, and the last reason. */
  failures: number;
  lastFailure: string | undefined;
}

export interface SandboxPool {
  readonly size: number;
  /** runSandboxed, from a waiting sandbox when the run fits the pool; the result's `pool` says 'hit' or 'miss'. */
  run<O extends SandboxOptions = Record<never, never>>(cmd: string | readonly string[], options?: O): Promise<SandboxResult<O>>;
  stats(): PoolStats;
  /** Ends every waiting sandbox and resolves once they are gone; runs already started finish on their own. */
  close(): Promise<void>;
}

/** One sandbox made ahead. */
interface Warm {
  /** Its run id: a run that takes it is prepared with it, so the run's cgroup is the sandbox's. */
  runId: string;
  /** The first plan it was made from (before leased ids): a run fits when its own is exactly this. */
  ahead: PlanOp[];
  /** Its cgroup, made without limits (the run writes its own), removed when the sandbox ends unused. */
  cgroup: CgroupPlan | undefined;
  launch: WarmLaunch;
  hostIds: HostIds;
  lease: HostIdLease | undefined;
  /** The first plan as sent (with leased ids): the helper numbers the run plan's ops after it. */
  sent: readonly PlanOp[];
  chunks: Buffer[];
  reader: StatusReader;
  state: 'starting' | 'ready' | 'taken' | 'gone';
  onData: (c: Buffer) => void;
}

function intOption(name: string, v: unknown, def: number, min: number, max: number): number {
  if (v === undefined) return def;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max)
    throw new SandboxOptionError(name, `pool ${name} must be an integer from ${min} to ${max}; got ${JSON.stringify(v)}`);
  return v;
}

/** A first plan with its run id (in cgroup paths) made neutral, to compare runs prepared with different ids. */
const neutral = (ops: readonly PlanOp[], runId: string): PlanOp[] =>
  ops.map((op) => ({ op: op.op, args: op.args.map((a) => a.split(runId).join('{run}')) }) as PlanOp);

/** Why a prepared run cannot use the pool's sandboxes (apart from its plan), or undefined when it can. */
function misfit(p: PreparedRun, template: PreparedRun): string | undefined {
  const s = p.supervise;
  const o = p.options;
  if (s.failure) return `it cannot start (${s.failure.message})`;
  if (o.inputFile !== undefined) return 'inputFile is not pooled (pass its content as input)';
  if (o.stdin === 'inherit' || o.stdout === 'inherit' || o.stderr === 'inherit') return 'inherited stdio is not pooled';
  if (JSON.stringify(o.hostIdRange) !== JSON.stringify(template.options.hostIdRange)) return "its hostIdRange is not the pool's";
  if (JSON.stringify(s.subids) !== JSON.stringify(template.supervise.subids)) return "its host ids would not be the pool's";
  return undefined;
}

/** Judges a finished run like runSandboxed, with the pool's word on it. */
function settle(p: PreparedRun, record: RunRecord, use: 'hit' | 'miss', why?: string): SandboxResult {
  const r = judge(record, p.judge);
  r.pool = use;
  if (why) r.poolMiss = why;
  if (!r.failed || !p.options.reject) return r;
  throw toSandboxError(r, record.failure?.kind === 'launch' || record.failure?.kind === 'protocol' ? record.failure.error : undefined);
}

class Pool implements SandboxPool {
  readonly size: number;
  readonly #maxStarting: number;
  readonly #retryDelayMs: number;
  readonly #refillIdleMs: number;
  /** When a run last started or ended (performance.now()). */
  #lastActivity = -Infinity;
  #idleTimer: NodeJS.Timeout | undefined;
  readonly #options: SandboxOptions;
  readonly #template: PreparedRun;
  readonly #templateRunId: string;
  readonly #all = new Set<Warm>();
  readonly #ready: Warm[] = [];
  #inUse = 0;
  #hits = 0;
  #misses = 0;
  readonly #missReasons: Record<string, number> = {};
  #failures = 0;
  #failedInARow = 0;
  #lastFailure: string | undefined;
  #retry: NodeJS.Timeout | undefined;
  #closed = false;

  constructor(
    size: number,
    maxStarting: number,
    retryDelayMs: number,
    refillIdleMs: number,
    options: SandboxOptions,
    template: PreparedRun,
    templateRunId: string,
  ) {
    this.size = size;
    this.#maxStarting = maxStarting;
    this.#retryDelayMs = retryDelayMs;
    this.#refillIdleMs = refillIdleMs;
    this.#options = options;
    this.#template = template;
    this.#templateRunId = templateRunId;
    this.#fill();
  }

  run<O extends SandboxOptions = Record<never, never>>(cmd: string | readonly string[], options?: O): Promise<SandboxResult<O>> {
    // Prepared with the first waiting sandbox's run id, so a run that needs a cgroup plans exactly the sandbox's.
    const w = this.#ready[0];
    this.#lastActivity = performance.now();
    const runId = w?.runId ?? newRunId();
    const p = prepareRun(cmd, options, runId); // invalid options throw here, synchronously, as runSandboxed's do
    if (this.#closed) return Promise.reject(new SandboxHostError('the pool is closed', 'create a new pool with createPool()'));
    const mine = splitPlan(p.plan).ahead;
    const template = (): string | undefined =>
      planDifference(
        withoutInodes(neutral(splitPlan(this.#template.plan).ahead, this.#templateRunId)),
        withoutInodes(neutral(mine, runId)),
      );
    const why =
      misfit(p, this.#template) ??
      (w
        ? planDifference(withoutInodes(w.ahead), withoutInodes(mine))
        : (template() ?? 'no waiting sandbox was ready (the pool refills in the background)'));
    // A cold run never shares the waiting sandbox's cgroup: it is planned again with a run id of its own.
    const cold = (): PreparedRun => (w && p.supervise.cgroup ? prepareRun(cmd, options) : p);
    const result = why ? this.#cold(cold(), why) : this.#hot(p, this.#take()!, cmd, options);
    return result as unknown as Promise<SandboxResult<O>>;
  }

  stats(): PoolStats {
    const starting = [...this.#all].filter((w) => w.state === 'starting').length;
    return {
      size: this.size,
      maxStarting: this.#maxStarting,
      refillIdleMs: this.#refillIdleMs,
      ready: this.#ready.length,
      starting,
      inUse: this.#inUse,
      hits: this.#hits,
      misses: this.#misses,
      missReasons: { ...this.#missReasons },
      served: this.#hits + this.#misses,
      failures: this.#failures,
      lastFailure: this.#lastFailure,
    };
  }

  async close(): Promise<void> {
    this.#closed = true;
    if (this.#retry) clearTimeout(this.#retry);
    if (this.#idleTimer) clearTimeout(this.#idleTimer);
    this.#ready.length = 0;
    const waiting = [...this.#all].filter((w) => w.state !== 'taken');
    await Promise.all(waiting.map((w) => this.#end(w)));
  }

  #cold(p: PreparedRun, why: string): Promise<SandboxResult> {
    this.#misses++;
    const key = why.replace(/ \(.*$/, '').replace(/ at step \d+.*$/, '');
    this.#missReasons[key] = (this.#missReasons[key] ?? 0) + 1;
    this.#fill(); // nothing was waiting (or it did not fit): the refill need not wait for quiet
    return supervise(p.supervise, true)
      .record.finally(() => this.#ranOut())
      .then((record) => settle(p, record, 'miss', why));
  }

  #hot(p: PreparedRun, w: Warm, cmd: string | readonly string[], options: SandboxOptions | undefined): Promise<SandboxResult> {
    // The run's limits go into the sandbox's cgroup (made without any), written and read back as for a cold run.
    let cgroup: WarmHelper['cgroup'];
    if (p.supervise.cgroup)
      try {
        cgroup = { plan: p.supervise.cgroup, readBack: createCgroup(p.supervise.cgroup) };
      } catch (e) {
        if (!(e instanceof CgroupSetupError)) throw e;
        void this.#end(w);
        return this.#cold(prepareRun(cmd, options), `its limits could not be written to the sandbox's cgroup (${e.message})`);
      }
    this.#hits++;
    this.#inUse++;
    const o = p.options;
    const split = splitPlan(p.plan);
    // The run's own inode caps (its memory limit sets them) on the tmpfs mounts the sandbox was made with.
    const runOps = [...inodeOps(w.ahead, split.ahead), ...split.run];
    const runBytes = encodePlan(runOps);
    const h = w.launch.helper;
    h.status.off('data', w.onData);
    w.launch.ref();
    // The waiting sandbox's stdio are pipes: what the run does not ask for is drained or closed here.
    if (o.input === undefined && o.stdin !== 'pipe') h.stdin.end();
    if (o.stdout !== 'pipe') h.stdout.resume();
    if (o.stderr !== 'pipe') h.stderr.resume();
    const wantsCopyOut = Boolean(o.box?.copyOut.length);
    if (!wantsCopyOut) h.copyOut.resume();
    const warm: WarmHelper = {
      helper: {
        ...h,
        stdin: o.input !== undefined || o.stdin === 'pipe' ? h.stdin : null,
        stdout: o.stdout === 'pipe' ? h.stdout : null,
        stderr: o.stderr === 'pipe' ? h.stderr : null,
        copyOut: wantsCopyOut ? h.copyOut : null,
      },
      hostIds: w.hostIds,
      lease: w.lease, // released by the run once the sandbox is gone
      status: Buffer.concat(w.chunks),
      ...(cgroup ? { cgroup } : {}),
      start: () => w.launch.send(runBytes, p.supervise.bpf, p.supervise.files),
    };
    const joined = joinedPlan(w.sent, runOps);
    const run = { ...p, plan: joined, judge: { ...p.judge, plan: joined } };
    const s = supervise({ ...p.supervise, plan: joined, planBytes: runBytes }, true, warm);
    this.#fill();
    return s.record
      .finally(() => {
        this.#ranOut();
        this.#inUse--;
        w.state = 'gone';
        w.launch.dispose();
        this.#all.delete(w);
      })
      .then((record) => settle(run, record, 'hit'));
  }

  #take(): Warm | undefined {
    const w = this.#ready.shift();
    if (w) w.state = 'taken';
    return w;
  }

  /** A run ended: the pool is busy a little longer. */
  #ranOut(): void {
    this.#lastActivity = performance.now();
  }

  /** Whether a refill should wait: runs are going on (one in flight, or one started or ended within refillIdleMs)
   *  and some sandbox is still waiting for the next. Arms a timer that tries again. */
  #deferRefill(): boolean {
    if (this.#refillIdleMs === 0 || this.#ready.length === 0) return false;
    const quietFor = performance.now() - this.#lastActivity;
    if (this.#inUse === 0 && quietFor >= this.#refillIdleMs) return false;
    if (!this.#idleTimer) {
      const wait = this.#inUse > 0 ? this.#refillIdleMs : Math.max(1, this.#refillIdleMs - quietFor);
      this.#idleTimer = setTimeout(() => {
        this.#idleTimer = undefined;
        this.#fill();
      }, wait);
      this.#idleTimer.unref();
    }
    return true;
  }

  /** Starts sandboxes until `size` are ready or starting (at most maxStarting at once), once the runs leave the
   *  CPU to it (refillIdleMs). */
  #fill(): void {
    if (this.#closed || this.#retry) return;
    if (this.#deferRefill()) return;
    let starting = [...this.#all].filter((w) => w.state === 'starting').length;
    while (this.#ready.length + starting < this.size && starting < this.#maxStarting) {
      if (!this.#start()) return;
      starting++;
    }
  }

  /** A sandbox failed before it was ready: try again later, not at once (the host may refuse every one). */
  #failed(why: string): void {
    this.#failures++;
    this.#failedInARow++;
    this.#lastFailure = why;
    if (this.#closed || this.#retry) return;
    const delay = Math.min(this.#retryDelayMs * 2 ** Math.min(this.#failedInARow - 1, 5), 60_000);
    this.#retry = setTimeout(() => {
      this.#retry = undefined;
      this.#fill();
    }, delay);
    this.#retry.unref();
  }

  #start(): boolean {
    const runId = newRunId();
    let made: PreparedRun;
    let ahead: PlanOp[];
    let ids: ReturnType<typeof takeHostIds>;
    let launch: WarmLaunch;
    try {
      made = prepareRun(['true'], this.#options, runId);
      ahead = splitPlan(made.plan).ahead;
    } catch (e) {
      this.#failed(`options: ${(e as Error).message}`);
      return false;
    }
    const cgroup = made.supervise.cgroup;
    try {
      if (cgroup) createCgroup({ ...cgroup, writes: [] }); // no limits yet: each run writes its own
    } catch (e) {
      this.#failed(`cgroup: ${(e as Error).message}`);
      return false;
    }
    try {
      ids = takeHostIds({ ...made.supervise, plan: ahead, planBytes: encodePlan(ahead) });
    } catch (e) {
      if (cgroup) removeCgroup(cgroup);
      this.#failed(`host ids: ${(e as Error).message}`);
      return false;
    }
    try {
      assertHelperBuilt();
      launch = launchWarm(ids.planBytes);
    } catch (e) {
      ids.lease?.release();
      if (cgroup) removeCgroup(cgroup);
      this.#failed((e as Error).message);
      return false;
    }
    const w: Warm = {
      runId,
      ahead,
      cgroup,
      launch,
      hostIds: ids.hostIds,
      lease: ids.lease,
      sent: ids.plan ?? ahead,
      chunks: [],
      reader: new StatusReader(),
      state: 'starting',
      onData: (c) => this.#onStatus(w, c),
    };
    this.#all.add(w);
    const h = launch.helper;
    h.status.on('data', w.onData);
    for (const s of [h.stdin, h.control]) s.on('error', () => {}); // EPIPE once the helper is gone: its record says why
    void h.done.then(() => {
      if (w.cgroup && w.state !== 'taken') removeCgroup(w.cgroup); // a taken sandbox's is removed by its run
      if (w.state === 'taken' || w.state === 'gone') return;
      const before = w.state;
      this.#gone(w);
      if (before === 'starting' && !this.#closed) {
        const t = w.reader.terminal();
        this.#failed(t?.ev === 'error' ? `${t.stage}: ${t.msg}` : 'the helper ended before its sandbox was ready');
      } else this.#fill();
    });
    return true;
  }

  #onStatus(w: Warm, chunk: Buffer): void {
    w.chunks.push(chunk);
    let events;
    try {
      events = w.reader.push(chunk);
    } catch (e) {
      this.#failed(`protocol: ${(e as Error).message}`);
      void this.#end(w);
      return;
    }
    for (const ev of events)
      if (ev.ev === 'warm' && w.state === 'starting') {
        w.state = 'ready';
        this.#failedInARow = 0;
        this.#ready.push(w);
        this.#fill();
      }
  }

  #gone(w: Warm): void {
    w.state = 'gone';
    const i = this.#ready.indexOf(w);
    if (i >= 0) this.#ready.splice(i, 1);
    this.#all.delete(w);
    w.launch.dispose();
    w.lease?.release();
  }

  /** Ends a waiting sandbox: init is asked to stop; the helper is killed if it has not ended within 2 s. */
  async #end(w: Warm): Promise<void> {
    const h = w.launch.helper;
    if (w.state !== 'gone') this.#gone(w);
    if (!h.control.destroyed) h.control.end(ControlByte.kill);
    const t = setTimeout(() => h.kill(), 2000);
    await h.done;
    clearTimeout(t);
  }
}

/**
 * Creates a warm pool: `size` sandboxes made ahead with `options`, each waiting for one command. A run whose options
 * build the same sandbox starts in one of them; any other runs cold. Invalid pool options throw synchronously.
 */
export function createPool(options: PoolOptions = {}): SandboxPool {
  if (typeof options !== 'object' || options === null)
    throw new SandboxOptionError(
      'options',
      'createPool takes an options object: { size, options, maxStarting, retryDelayMs, refillIdleMs }',
    );
  for (const k of Object.keys(options))
    if (!(POOL_OPTION_NAMES as readonly string[]).includes(k))
      throw new SandboxOptionError(k, `unknown pool option '${k}'; the pool's options are ${POOL_OPTION_NAMES.join(', ')}`);
  const size = intOption('size', options.size, 2, 1, 64);
  const maxStarting = intOption('maxStarting', options.maxStarting, 1, 1, size);
  const retryDelayMs = intOption('retryDelayMs', options.retryDelayMs, 1000, 0, 600_000);
  const refillIdleMs = intOption('refillIdleMs', options.refillIdleMs, 30, 0, 60_000);
  if (!warmLaunchSupported())
    throw new SandboxHostError('a warm pool needs posix_spawn through koffi, which cannot load here', 'run `npx cubicle doctor`');
  const sandboxOptions = options.options ?? {};
  if (
    typeof sandboxOptions === 'object' &&
    sandboxOptions !== null &&
    'network' in sandboxOptions &&
    sandboxOptions.network !== undefined &&
    sandboxOptions.network !== 'none'
  )
    throw new SandboxOptionError(
      'options.network',
      'a warm pool does not make sandboxes on a network yet: leave network out of its options',
    );
  const templateRunId = newRunId();
  const template = prepareRun(['true'], sandboxOptions, templateRunId); // bad sandbox options throw here
  if (template.supervise.failure)
    throw new SandboxHostError(
      `the pool's sandboxes cannot start: ${template.supervise.failure.message}`,
      template.supervise.failure.hint ?? '',
    );
  return new Pool(size, maxStarting, retryDelayMs, refillIdleMs, sandboxOptions, template, templateRunId);
}
