// Resource limits: parsing with units, choosing the mechanism that enforces each one, and the plan ops for it.
import { SandboxOptionError } from '../errors.js';
import { Op, type PlanOp } from '../plan/ops.js';
import { parseDurationMs, parseSize } from '../units.js';
import { cgroupV1Available, createV1, type CgroupRun } from './cgroup-v1.js';
import { cgroupV2Base, createV2 } from './cgroup-v2.js';

/** Limits as the caller gives them: numbers (ms, bytes, counts) or strings with units ("1.5s", "256M"). */
export interface LimitOptions {
  /** CPU time of every process and thread together. */
  cpuTime?: number | string;
  /** Wall-clock time from the payload's start (the same as `timeout`, with extraTime semantics). */
  wallTime?: number | string;
  /** Grace after cpuTime/wallTime before the kill, so the true time is measured (isolate's --extra-time). */
  extraTime?: number | string;
  /** Everything the sandbox holds: process memory, tmpfs and /dev/shm pages, memfd pages. */
  memory?: number | string;
  /** Processes and threads alive at once. */
  processes?: number;
  /** Largest file a process may write (RLIMIT_FSIZE). */
  fileSize?: number | string;
  /** Open files per process (RLIMIT_NOFILE). */
  openFiles?: number;
  /** Stack size per process (RLIMIT_STACK). */
  stack?: number | string;
  /** Bytes per output stream (stdout, stderr); the run is killed past it. */
  outputLimit?: number | string;
}

export type Mechanism = 'cgroup-v1' | 'cgroup-v2' | 'sampling' | 'rlimit' | 'rlimit+sampling' | 'cgroup-v1+sampling' | 'cgroup-v2+sampling' | 'supervisor';

export interface ResolvedLimits {
  cpuTimeMs?: number;
  wallTimeMs?: number;
  extraTimeMs: number;
  memoryBytes?: number;
  processes?: number;
  fileSizeBytes?: number;
  openFiles?: number;
  stackBytes?: number;
  outputBytes?: number;
}

/** What the result says of each limit that was set. */
export interface AppliedLimit {
  value: number;
  unit: 'ms' | 'bytes' | 'count';
  mechanism: Mechanism;
  /** The value the kernel reports back after setup (cgroup files), when it differs in form (rounding). */
  readBack?: number;
}

/** Tasks the kernel still allows past the process limit, so the sampler sees the limit passed. */
export const processHeadroom = (n: number): number => Math.max(4, Math.ceil(n / 4));

/** How often init samples the sandbox when something is watched. */
export const SAMPLE_INTERVAL_US = 10_000;

/** Per-user kernel counters capped inside the sandbox's own user namespace (protects the host user's). */
export const UCOUNT_CAPS: Record<string, number> = {
  inotify_instances: 128,
  inotify_watches: 65536,
  fanotify_groups: 16,
  fanotify_marks: 8192,
  user_namespaces: 16,
  mnt_namespaces: 16,
  pid_namespaces: 16,
  net_namespaces: 16,
  uts_namespaces: 16,
  ipc_namespaces: 16,
  cgroup_namespaces: 16,
  time_namespaces: 16,
};

const fail = (option: string, message: string): never => {
  throw new SandboxOptionError(option, message);
};

function ms(option: string, v: unknown): number | undefined {
  if (v === undefined) return undefined;
  if (typeof v === 'number') {
    if (!Number.isFinite(v) || v <= 0) fail(option, `${option} must be a positive number of milliseconds, got ${v}`);
    return v;
  }
  if (typeof v !== 'string') return fail(option, `${option} must be milliseconds or a string like "1.5s"`);
  try {
    return parseDurationMs(v, option);
  } catch (e) {
    return fail(option, (e as Error).message);
  }
}

function bytes(option: string, v: unknown, min: number): number | undefined {
  if (v === undefined) return undefined;
  let n: number;
  try {
    n = parseSize(v, option);
  } catch (e) {
    return fail(option, (e as Error).message);
  }
  if (n < min) fail(option, `${option} must be at least ${min} bytes`);
  return n;
}

function count(option: string, v: unknown, max: number): number | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > max) fail(option, `${option} must be an integer from 1 to ${max}, got ${String(v)}`);
  return v as number;
}

/** Validates `limits` (and folds `timeout` in as the wall-time limit). */
export function resolveLimits(limits: unknown, timeout: number | undefined): ResolvedLimits {
  if (limits !== undefined && (typeof limits !== 'object' || limits === null)) fail('limits', 'limits must be an object');
  const l = (limits ?? {}) as Record<string, unknown>;
  const known = ['cpuTime', 'wallTime', 'extraTime', 'memory', 'processes', 'fileSize', 'openFiles', 'stack', 'outputLimit'];
  for (const k of Object.keys(l)) if (!known.includes(k)) fail(`limits.${k}`, `unknown limit "${k}" (known: ${known.join(', ')})`);
  const wall = ms('limits.wallTime', l.wallTime);
  if (wall !== undefined && timeout !== undefined) fail('timeout', 'give either timeout or limits.wallTime, not both');
  const r: ResolvedLimits = { extraTimeMs: ms('limits.extraTime', l.extraTime) ?? 0 };
  const set = <K extends keyof ResolvedLimits>(k: K, v: ResolvedLimits[K] | undefined): void => {
    if (v !== undefined) r[k] = v;
  };
  set('cpuTimeMs', ms('limits.cpuTime', l.cpuTime));
  set('wallTimeMs', wall ?? timeout);
  set('memoryBytes', bytes('limits.memory', l.memory, 1 << 20));
  set('processes', count('limits.processes', l.processes, 1 << 20));
  set('fileSizeBytes', bytes('limits.fileSize', l.fileSize, 1));
  set('openFiles', count('limits.openFiles', l.openFiles, 1 << 20));
  set('stackBytes', bytes('limits.stack', l.stack, 64 << 10));
  set('outputBytes', bytes('limits.outputLimit', l.outputLimit, 1));
  return r;
}

export interface LimitPlan {
  /** Ops placed before the root (cgroup joins) and among the init/payload ops. */
  stage0Ops: PlanOp[];
  initOps: PlanOp[];
  payloadOps: PlanOp[];
  applied: Record<string, AppliedLimit>;
  cgroup: CgroupRun | undefined;
}

/**
 * Chooses mechanisms: cgroup v1 (root on a v1/hybrid host) for memory and process counts, else init's
 * sampler plus rlimits. CPU and wall time are always judged by init's sampler (and CPU has an RLIMIT_CPU
 * backstop per process). `strict` fails closed when memory or processes would not be enforced by a cgroup.
 */
/** Which cgroups a run may use: any (v1 first, then v2), one version, or none. */
export type CgroupChoice = boolean | 'v1' | 'v2';

/** Creates the run's cgroup with the first version that works, or says why none does. */
function createCgroup(l: ResolvedLimits, runId: string, dryRun: boolean, choice: CgroupChoice, parent: string | undefined, runAs: boolean): CgroupRun | string {
  if (choice === false) return 'the caller turned cgroups off (cgroups: false)';
  const reasons: string[] = [];
  if (choice !== 'v2' && parent === undefined) {
    const v1 = cgroupV1Available();
    if (v1 === true) return createV1(l, runId, dryRun);
    reasons.push(v1);
  }
  if (choice !== 'v1' && runAs) {
    // CLONE_INTO_CGROUP needs write access up to the common ancestor of the helper's group and the run's:
    // a helper dropped to another user (runAs) from root's group has none.
    reasons.push('cgroup v2 cannot be combined with runAs (the unprivileged helper may not clone into a root-owned group)');
  } else if (choice !== 'v1') {
    const base = cgroupV2Base(parent);
    if (typeof base === 'string') return createV2(l, base, runId, dryRun);
    reasons.push(base.reason);
  }
  return reasons.join('; ');
}

export function planLimits(l: ResolvedLimits, strict: boolean, tmpfsPaths: string[], runId: string, dryRun = false, useCgroups: CgroupChoice = true, cgroupParent?: string, runAs = false): LimitPlan {
  const applied: Record<string, AppliedLimit> = {};
  const stage0Ops: PlanOp[] = [];
  const initOps: PlanOp[] = [];
  const payloadOps: PlanOp[] = [];
  const wantsCgroup = l.memoryBytes !== undefined || l.processes !== undefined || l.cpuTimeMs !== undefined;
  let cgroup: CgroupRun | undefined;
  if (wantsCgroup) {
    const made = createCgroup(l, runId, dryRun, useCgroups, cgroupParent, runAs);
    const why = typeof made === 'string' ? made : undefined;
    if (typeof made !== 'string') {
      cgroup = made;
      if (made.kind === 'v1') {
        for (const dir of made.dirs) stage0Ops.push(Op.cgroupJoin(dir));
        if (made.memoryDir) stage0Ops.push(Op.cgroupOomWatch(made.memoryDir));
      } else {
        stage0Ops.push(Op.cgroupInto(made.intoDir!));
        if (made.eventsFile) stage0Ops.push(Op.cgroupEvents(made.eventsFile));
      }
      if (made.cpuFile) stage0Ops.push(Op.cgroupCpu(made.cpuFile));
    }
    const unenforced = (l.memoryBytes !== undefined && !cgroup?.memoryDir) || (l.processes !== undefined && !cgroup?.pidsDir);
    if (strict && unenforced) {
      cgroup?.finish();
      fail('strictLimits', `strict limits need cgroups for memory and processes, and ${why ?? `the ${cgroup?.kind} group here lacks the memory or pids controller`}. Run as root on a cgroup host, pass a delegated cgroupParent, or drop strictLimits to accept rlimits and sampling`);
    }
  }
  const cgMech = (cgroup?.kind === 'v2' ? 'cgroup-v2' : 'cgroup-v1') as 'cgroup-v1' | 'cgroup-v2';
  for (const [name, value] of Object.entries(UCOUNT_CAPS)) initOps.push(Op.ucount(name, value));

  const grace = l.extraTimeMs;
  const watch = {
    cpuUs: l.cpuTimeMs !== undefined ? Math.round((l.cpuTimeMs + grace) * 1000) : 0,
    wallUs: l.wallTimeMs !== undefined ? Math.round((l.wallTimeMs + grace) * 1000) : 0,
    memory: l.memoryBytes !== undefined && !cgroup?.memoryDir ? l.memoryBytes : 0,
    tasks: l.processes ?? 0,
  };
  if (l.cpuTimeMs !== undefined) {
    applied.cpuTime = { value: l.cpuTimeMs, unit: 'ms', mechanism: cgroup?.cpuFile ? `${cgMech}+sampling` : 'rlimit+sampling' };
    // Backstop per process: RLIMIT_CPU a second past the kill point (SIGXCPU, then SIGKILL at the hard limit).
    const s = Math.ceil((l.cpuTimeMs + grace) / 1000) + 1;
    payloadOps.push(Op.rlimit('cpu', s, s + 1));
  }
  if (l.wallTimeMs !== undefined) applied.wallTime = { value: l.wallTimeMs, unit: 'ms', mechanism: 'sampling' };
  if (grace) applied.extraTime = { value: grace, unit: 'ms', mechanism: 'sampling' };
  if (l.memoryBytes !== undefined) {
    if (cgroup?.memoryDir) applied.memory = { value: l.memoryBytes, unit: 'bytes', mechanism: cgMech, readBack: cgroup.readBack.memory! };
    else {
      applied.memory = { value: l.memoryBytes, unit: 'bytes', mechanism: 'rlimit+sampling' };
      // Backstop per process, past the point where the sampler kills: committed private writable memory
      // (RLIMIT_DATA counts commitments, not reservations, unlike RLIMIT_AS which breaks JITs).
      const backstop = 2 * l.memoryBytes + (64 << 20);
      payloadOps.push(Op.rlimit('data', backstop, backstop));
    }
  }
  if (l.processes !== undefined) {
    // More than N tasks at once gets the sandbox killed by init; the kernel refuses tasks past N + headroom
    // (the headroom lets the sampler see a fork bomb pass N before the kernel caps it).
    if (cgroup?.pidsDir) applied.processes = { value: l.processes, unit: 'count', mechanism: `${cgMech}+sampling`, readBack: cgroup.readBack.pids! };
    else {
      applied.processes = { value: l.processes, unit: 'count', mechanism: 'rlimit+sampling' };
      // RLIMIT_NPROC counts per user namespace and uid (Linux 5.14+): init, N payload tasks, the headroom.
      const cap = l.processes + 1 + processHeadroom(l.processes);
      payloadOps.push(Op.rlimit('nproc', cap, cap));
    }
  }
  if (l.fileSizeBytes !== undefined) {
    applied.fileSize = { value: l.fileSizeBytes, unit: 'bytes', mechanism: 'rlimit' };
    payloadOps.push(Op.rlimit('fsize', l.fileSizeBytes, l.fileSizeBytes));
  }
  if (l.openFiles !== undefined) {
    applied.openFiles = { value: l.openFiles, unit: 'count', mechanism: 'rlimit' };
    payloadOps.push(Op.rlimit('nofile', l.openFiles, l.openFiles));
  }
  if (l.stackBytes !== undefined) {
    applied.stack = { value: l.stackBytes, unit: 'bytes', mechanism: 'rlimit' };
    payloadOps.push(Op.rlimit('stack', l.stackBytes, l.stackBytes));
  }
  if (l.outputBytes !== undefined) applied.outputLimit = { value: l.outputBytes, unit: 'bytes', mechanism: 'supervisor' };
  // init always samples: the peak memory and task count are part of every run's accounting.
  for (const p of tmpfsPaths) initOps.push(Op.watchTmpfs(p));
  // Memory is measured by sampling unless a memory cgroup measures it (PSS reads cost CPU on big processes).
  initOps.push(Op.watch(SAMPLE_INTERVAL_US, watch.cpuUs, watch.wallUs, watch.memory, watch.tasks, !cgroup?.memoryDir));
  return { stage0Ops, initOps, payloadOps, applied, cgroup };
}
