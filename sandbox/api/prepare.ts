// Everything before a run starts, all synchronous and without side effects on the host: policy, option merge and
// validation, seccomp compile, limits and cgroup planning, the plan. `cubicle plan` prints exactly this.
import { constants as osConstants } from 'node:os';
import { hostViewOps } from '../../rootfs-builder/host-view.js';
import { PolicyError, SandboxHostError, SandboxOptionError } from '../errors.js';
import { readRecord } from '../network/registry.js';
import { passwdEntry, subidsFor, type NoSubids, type Subids } from '../host/subids.js';
import { planLimits, type LimitPlan } from '../plan/limits.js';
import { mergeOptions, resolveOptions, type ResolvedOptions } from '../options/resolve.js';
import type { JudgeContext } from '../outcome/judge.js';
import { buildPlan, filesBlob, tmpfsPaths } from '../plan/build-plan.js';
import { encodePlan, Op, type PlanOp } from '../plan/ops.js';
import { DEFAULT_POLICY, loadPolicy, type ResolvedPolicy } from '../policy/load.js';
import { compileProfile, type CompiledFilter } from '../seccomp/compile.js';
import { ARCH_TOKENS, libseccomp, SeccompUnavailableError } from '../seccomp/libseccomp.js';
import { ProfileError } from '../seccomp/profile.js';
import type { SuperviseInput } from '../supervisor/supervisor.js';
import type { SandboxOptions, SeccompViolation, SetupFailure } from '../types.js';
import { mark } from '../timing.js';

let runCounter = 0;

/** A run id unique on this host while its owner lives: the owner's pid first (stale cgroups are found by it). */
export const newRunId = (): string => `${process.pid}-${++runCounter}-${Date.now().toString(36)}`;

export interface PreparedRun {
  options: ResolvedOptions;
  policy: ResolvedPolicy;
  filter: CompiledFilter | undefined;
  plan: PlanOp[];
  limits: LimitPlan;
  /** What the supervisor needs to run it. */
  supervise: SuperviseInput;
  /** What judging the run's record needs. */
  judge: JudgeContext;
}

const ARCH_NAMES = new Map(Object.entries(ARCH_TOKENS).map(([k, v]) => [v, k.replace('SCMP_ARCH_', '').toLowerCase()]));

export function nameViolation(arch: number, nr: number): SeccompViolation {
  let syscall: string | null = null;
  try {
    syscall = libseccomp().resolveNum(arch, nr);
  } catch {
    /* names need libseccomp; the number still says it */
  }
  return { syscall, nr, arch: ARCH_NAMES.get(arch) ?? `0x${arch.toString(16)}` };
}

/**
 * Whether a rootless caller's sandbox maps to subordinate ids of its own (undefined: not a rootless caller). A
 * read-write bind keeps the caller's own uid, so the payload can write where the caller asked it to.
 */
function subidChoice(o: ResolvedOptions): Subids | NoSubids | undefined {
  const uid = process.geteuid?.();
  if (uid === undefined || uid === 0) return undefined;
  if (o.rootfs)
    return { reason: `the image ${o.rootfs.ref}'s files are the caller's: keeping the caller's own ids makes them the sandbox user's` };
  const rw = o.mounts.find((m) => m.type === 'bind' && !m.readOnly);
  if (rw) return { reason: `the read-write bind of ${rw.source ?? rw.target} keeps the caller's own ids, so the payload can write there` };
  // newuidmap maps only for a process whose gid is the caller's primary one from /etc/passwd
  const pw = passwdEntry(uid)?.gid;
  if (pw !== undefined && pw !== process.getegid?.())
    return { reason: `newuidmap needs this process's gid to be the primary gid of /etc/passwd (${pw}); it is ${process.getegid?.()}` };
  return subidsFor(uid);
}

/** Validates everything and builds the plan; throws SandboxOptionError/PolicyError for bad input and
 *  SandboxHostError when the host lacks what every run needs. Creates nothing: a root caller's host ids of its
 *  own (hostIdRange) are leased by the supervisor, which puts them into the plan's userns op. */
export function prepareRun(cmd: unknown, call: SandboxOptions = {}, runId: string = newRunId()): PreparedRun {
  if (typeof call !== 'object' || call === null) resolveOptions(cmd, call); // throws the option error
  const policy = loadPolicy(call.policy ?? DEFAULT_POLICY);
  const options = resolveOptions(cmd, mergeOptions(policy.options, call));
  if (options.network !== undefined && !readRecord(options.network))
    throw new SandboxOptionError(
      'network',
      `network "${options.network}" does not exist for this user; ` +
        `create it with: cubicle network create ${options.network} (cubicle network ls lists them)`,
    );
  if (options.seccompLog && !policy.seccomp)
    throw new PolicyError(
      policy.name,
      'has no seccomp filter, so seccompLog (audit mode) would report nothing; choose a policy with a filter',
    );
  const mode = options.seccompLog ? 'log' : 'enforce';
  let filter: CompiledFilter | undefined;
  let failure: SetupFailure | undefined;
  if (policy.seccomp) {
    try {
      filter = compileProfile(policy.seccomp, mode, 'seccomp');
    } catch (e) {
      if (e instanceof ProfileError) throw new PolicyError(policy.name, e.message);
      if (!(e instanceof SeccompUnavailableError))
        throw new SandboxHostError(
          `libseccomp failed to compile policy ${policy.name}: ${(e as Error).message}`,
          'run `npx cubicle doctor` to check libseccomp on this host',
        );
      failure = {
        stage: 'seccomp',
        message: e.message,
        hint:
          'install libseccomp (Debian/Ubuntu: apt-get install libseccomp2), ' +
          "or choose policy 'none' to run without a seccomp filter; npx cubicle doctor checks the host",
        errnoName: 'ENOENT',
        errno: osConstants.errno.ENOENT,
      };
    }
  }
  const limits = planLimits(options.limits, options.strictLimits, tmpfsPaths(options), runId, {
    choice: options.cgroups,
    parent: options.cgroupParent,
    runAs: options.runAs !== undefined,
  });
  const notify = filter?.notify ?? 'none';
  // an image root replaces the host view: the overlay of the image is all the root holds before cubicle's own files
  const view = options.rootfs ? [Op.image(options.rootfs.dir, options.rootfs.writable)] : hostViewOps();
  const plan = buildPlan(options, view, notify, limits);
  const planBytes = encodePlan(plan); // refuses an oversize plan before anything runs
  const seccomp = filter ? ({ policy: policy.name, mode, notify, name: nameViolation } as const) : undefined;
  mark('planned');
  return {
    options,
    policy,
    filter,
    plan,
    limits,
    supervise: {
      options,
      plan,
      planBytes,
      bpf: filter?.bpf ?? new Uint8Array(0),
      cgroup: limits.cgroup,
      subids: subidChoice(options),
      files: filesBlob(options),
      failure,
      // init's sampler kills at the limit; the supervisor's timer is a backstop a second behind it
      backstopSlackMs: plan.some((p) => p.op === 'watch') ? 1000 : 0,
      ...(filter ? { seccomp: { policy: policy.name, mode, notify } } : {}),
      applied: limits.applied,
    },
    judge: {
      argv: options.argv,
      limits: options.limits,
      applied: limits.applied,
      plan,
      seccomp,
      encoding: options.encoding,
      maxBuffer: options.maxBuffer,
    },
  };
}
