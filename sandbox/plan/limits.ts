// Resource limits: which mechanism enforces each one, and the plan ops for it. Pure: the run's cgroup is only
// planned here (its paths and limit files); the supervisor creates and removes it.
import { planCgroup, type CgroupPlan, type CgroupRequest } from '../cgroup/index.js';
import { SandboxOptionError } from '../errors.js';
import { Op, type PlanOp } from './ops.js';
import type { AppliedLimit, LIMIT_NAMES } from '../types.js';
import type { ResolvedLimits } from '../limits/resolve.js';
import { hostRlimit, hostUcountMax } from '../host/user-limits.js';

/** Tasks (processes and threads) a sandbox may hold at once when the caller sets no process limit: protects
 *  the host from a fork bomb; raise it with limits.processes. */
export const DEFAULT_PROCESSES = 1024;

/** Open files per process when the caller sets none: a common soft default. It also bounds what a payload can
 *  make init walk (init's sampler stats every fd of every process to count memfds) and the pipe and socket
 *  buffers it can hold. Raise it with limits.openFiles. */
export const DEFAULT_OPEN_FILES = 1024;

/** How often init samples the sandbox when something is watched. */
const SAMPLE_INTERVAL_US = 10_000;

/** Per-user kernel counters capped inside the sandbox's own user namespace (protects the host user's): at most
 *  these, and never more than half of the host's own cap (see ucountCaps). */
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

/** Half of a host limit (at least 1): what one sandbox may take of a counter it shares with the host user. */
const half = (n: number): number => Math.max(1, Math.floor(n / 2));

/** The caps init writes to /proc/sys/user/max_* inside: each fixed cap, lowered to half of the host's. */
export function ucountCaps(hostMax: (name: string) => number | null = hostUcountMax): Record<string, number> {
  const caps: Record<string, number> = {};
  for (const [name, cap] of Object.entries(UCOUNT_CAPS)) {
    const host = hostMax(name);
    caps[name] = host === null ? cap : Math.min(cap, half(host));
  }
  return caps;
}

/** Per-user rlimits charged to the sandbox's host uid that would otherwise be inherited whole (mqueue bytes,
 *  pending signals): half of this process's soft limit, so the host user keeps the other half. */
export function sharedRlimitCaps(get: typeof hostRlimit = hostRlimit): { msgqueue?: number; sigpending?: number } {
  const caps: { msgqueue?: number; sigpending?: number } = {};
  for (const name of ['msgqueue', 'sigpending'] as const) {
    const l = get(name);
    if (l && Number.isFinite(l.soft)) caps[name] = name === 'msgqueue' ? Math.floor(l.soft / 2) : half(l.soft);
  }
  return caps;
}

/**
 * Files each writable tmpfs may hold (nr_inodes). An inode and its dentry cost ~0.6 KiB of kernel memory that
 * no sampler sees, so their number is capped: 1 per 32 KiB of the memory limit (≤ 2% of it per tmpfs), at
 * least 4096 (≤ 2.5 MiB), 65536 without a memory limit.
 */
export const tmpfsInodes = (memoryBytes: number | undefined): number =>
  memoryBytes === undefined ? 65536 : Math.min(1 << 20, Math.max(4096, Math.floor(memoryBytes / (32 << 10))));

export interface LimitPlan {
  /** Ops placed before the root (cgroup joins) and among the init/payload ops. */
  stage0Ops: PlanOp[];
  initOps: PlanOp[];
  payloadOps: PlanOp[];
  /** Each limit set, with its mechanism; cgroup read-back values are added once the group exists. */
  applied: Partial<Record<(typeof LIMIT_NAMES)[number], AppliedLimit>>;
  /** The run's cgroup, planned (the supervisor creates it); undefined when no limit needs one or none is usable. */
  cgroup: CgroupPlan | undefined;
}

/**
 * Chooses mechanisms: a cgroup (v1 for root on a v1/hybrid host, v2 for root on a v2 host or with a delegated
 * cgroupParent) for memory and process counts, else init's sampler plus rlimits. CPU and wall time are always
 * judged by init's sampler (with an RLIMIT_CPU backstop per process). `strict` fails closed when memory or
 * processes would not be enforced by a cgroup.
 */
export function planLimits(
  l: ResolvedLimits,
  strict: boolean,
  tmpfsPaths: readonly string[],
  runId: string,
  req: CgroupRequest,
): LimitPlan {
  const applied: LimitPlan['applied'] = {};
  const stage0Ops: PlanOp[] = [];
  const initOps: PlanOp[] = [];
  const payloadOps: PlanOp[] = [];
  const wantsCgroup = l.memoryBytes !== undefined || l.processes !== undefined || l.cpuTimeMs !== undefined;
  // The process cap: the caller's, or the default. Exactly that many payload tasks may live at once.
  const processes = l.processes ?? DEFAULT_PROCESSES;
  let cgroup: CgroupPlan | undefined;
  if (wantsCgroup) {
    const pidsMax = processes + 1; // init is in the group too (and on v1 stage 0, which v1.ts adds)
    const planned = planCgroup({ memoryBytes: l.memoryBytes, pidsMax }, runId, req);
    const why = 'reason' in planned ? planned.reason : undefined;
    if (!('reason' in planned)) {
      cgroup = planned;
      const h = planned.helper;
      for (const dir of h.join) stage0Ops.push(Op.cgroupJoin(dir));
      if (h.oomWatchDir) stage0Ops.push(Op.cgroupOomWatch(h.oomWatchDir));
      if (h.into) stage0Ops.push(Op.cgroupInto(h.into));
      if (h.eventsFile) stage0Ops.push(Op.cgroupEvents(h.eventsFile));
      if (h.cpuFile) stage0Ops.push(Op.cgroupCpu(h.cpuFile));
    }
    const unenforced = (l.memoryBytes !== undefined && !cgroup?.memoryDir) || (l.processes !== undefined && !cgroup?.pidsDir);
    if (strict && unenforced)
      throw new SandboxOptionError(
        'strictLimits',
        'strict limits need cgroups for memory and processes, and ' +
          `${why ?? `the ${cgroup?.version} group here lacks the memory or pids controller`}. ` +
          'Run as root on a cgroup host, pass a delegated cgroupParent, or drop strictLimits to accept rlimits and sampling',
      );
  }
  const cgMech = cgroup?.version === 'v2' ? 'cgroup-v2' : 'cgroup-v1';
  for (const [name, value] of Object.entries(ucountCaps())) initOps.push(Op.ucount(name, value));
  const shared = sharedRlimitCaps();
  if (shared.msgqueue !== undefined) payloadOps.push(Op.rlimit('msgqueue', shared.msgqueue, shared.msgqueue));
  if (shared.sigpending !== undefined) payloadOps.push(Op.rlimit('sigpending', shared.sigpending, shared.sigpending));

  const grace = l.extraTimeMs;
  const watch = {
    cpuUs: l.cpuTimeMs !== undefined ? Math.round((l.cpuTimeMs + grace) * 1000) : 0,
    wallUs: l.wallTimeMs !== undefined ? Math.round((l.wallTimeMs + grace) * 1000) : 0,
    memory: l.memoryBytes !== undefined && !cgroup?.memoryDir ? l.memoryBytes : 0,
    tasks: l.processes ?? 0,
  };
  if (l.cpuTimeMs !== undefined) {
    applied.cpuTime = { value: l.cpuTimeMs, unit: 'ms', mechanism: cgroup?.helper.cpuFile ? `${cgMech}+sampling` : 'rlimit+sampling' };
    // Backstop per process: RLIMIT_CPU a second past the kill point (SIGXCPU, then SIGKILL at the hard limit).
    const s = Math.ceil((l.cpuTimeMs + grace) / 1000) + 1;
    payloadOps.push(Op.rlimit('cpu', s, s + 1));
  }
  if (l.wallTimeMs !== undefined) applied.wallTime = { value: l.wallTimeMs, unit: 'ms', mechanism: 'sampling' };
  if (grace) applied.extraTime = { value: grace, unit: 'ms', mechanism: 'sampling' };
  if (l.memoryBytes !== undefined) {
    if (cgroup?.memoryDir) applied.memory = { value: l.memoryBytes, unit: 'bytes', mechanism: cgMech };
    else {
      // The sampler alone, as a memory cgroup: memory is counted when touched, never when asked for. A
      // per-process RLIMIT_DATA (or RLIMIT_AS) would make one large request fail inside the program (MemoryError,
      // bad_alloc, a JVM that cannot reserve its heap) instead of being judged memory-limit, and it never bounded
      // the sandbox (every process had its own). Near the limit init samples every millisecond.
      applied.memory = { value: l.memoryBytes, unit: 'bytes', mechanism: 'sampling' };
    }
  }
  // At most `processes` payload tasks alive at once, enforced by the kernel: a fork or thread creation past it
  // fails with EAGAIN and the program goes on (outcome/judge.ts decides when that is process-limit).
  if (cgroup?.pidsDir) applied.processes = { value: processes, unit: 'count', mechanism: `${cgMech}+sampling` };
  else {
    // RLIMIT_NPROC counts per user namespace and uid (Linux 5.14+); init has the payload's uid in the
    // sandbox's namespace, so it is one of the count. It cannot be raised past this process's hard limit.
    const hard = hostRlimit('nproc')?.hard ?? Infinity;
    const cap = Math.min(processes + 1, hard);
    if (l.processes !== undefined || cap > 1) {
      applied.processes = { value: cap - 1, unit: 'count', mechanism: l.processes !== undefined ? 'rlimit+sampling' : 'rlimit' };
      payloadOps.push(Op.rlimit('nproc', cap, cap));
    }
  }
  if (l.fileSizeBytes !== undefined) {
    applied.fileSize = { value: l.fileSizeBytes, unit: 'bytes', mechanism: 'rlimit' };
    payloadOps.push(Op.rlimit('fsize', l.fileSizeBytes, l.fileSizeBytes));
  }
  {
    // The default never asks for more than this process may have (its hard limit); an explicit value must hold.
    const openFiles = l.openFiles ?? Math.min(DEFAULT_OPEN_FILES, hostRlimit('nofile')?.hard ?? Infinity);
    applied.openFiles = { value: openFiles, unit: 'count', mechanism: 'rlimit' };
    payloadOps.push(Op.rlimit('nofile', openFiles, openFiles));
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
