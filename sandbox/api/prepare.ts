// Everything before a run starts, all synchronous: policy, option merge and validation, seccomp compile, plan.
import { constants as osConstants } from 'node:os';
import { DEFAULT_POLICY, loadPolicy, PolicyError, type PolicyOptions, type ResolvedPolicy } from '../policy/load.js';
import { compileProfile, type CompiledFilter } from '../seccomp/compile.js';
import { ARCH_TOKENS, libseccomp, SeccompUnavailableError } from '../seccomp/libseccomp.js';
import { ProfileError } from '../seccomp/profile.js';
import { buildPlan, tmpfsPaths } from '../plan/build-plan.js';
import { planLimits, type LimitPlan } from '../limits/limits.js';
import { encodePlan, type PlanOp } from '../plan/ops.js';
import type { SeccompContext } from '../supervisor/supervisor.js';
import { resolveOptions, type ResolvedOptions, type SandboxOptions } from './options.js';
import type { SeccompViolation, SetupFailure } from './result.js';

let runCounter = 0;

export interface PreparedRun {
  options: ResolvedOptions;
  policy: ResolvedPolicy;
  filter: CompiledFilter | undefined;
  plan: PlanOp[];
  bpf: Uint8Array;
  seccomp: SeccompContext | undefined;
  /** Set when the host cannot apply the policy (e.g. no libseccomp): the run fails without starting. */
  failure: SetupFailure | undefined;
  planBytes: Buffer;
  /** Limits as applied, and the run's cgroups (created here; removed by the supervisor). */
  limits: LimitPlan;
}

const ARCH_NAMES = new Map(Object.entries(ARCH_TOKENS).map(([k, v]) => [v, k.replace('SCMP_ARCH_', '').toLowerCase()]));

/** Policy defaults under the call's options: call options > policy > built-in defaults. */
function mergeOptions(policy: PolicyOptions, call: SandboxOptions): SandboxOptions {
  const given = Object.fromEntries(Object.entries(call).filter(([, v]) => v !== undefined)) as SandboxOptions; // undefined never cancels a policy default
  const merged: SandboxOptions = { ...(policy as SandboxOptions), ...given };
  if (policy.env || given.env) merged.env = { ...policy.env, ...given.env };
  if (policy.limits || given.limits) merged.limits = { ...policy.limits, ...given.limits }; // limit by limit
  return merged;
}

function describeViolation(arch: number, nr: number): SeccompViolation {
  let syscall: string | null = null;
  try {
    syscall = libseccomp().resolveNum(arch, nr);
  } catch {
    /* names need libseccomp; the number still says it */
  }
  return { syscall, nr, arch: ARCH_NAMES.get(arch) ?? `0x${arch.toString(16)}` };
}

/** Validates everything and builds the plan; throws SandboxOptionError/PolicyError for bad input. */
export function prepareRun(cmd: unknown, call: SandboxOptions = {}, dryRun = false): PreparedRun {
  if (typeof call !== 'object' || call === null) resolveOptions(cmd, call); // throws the option error
  const policy = loadPolicy(call.policy ?? DEFAULT_POLICY);
  const options = resolveOptions(cmd, mergeOptions(policy.options, call));
  if (options.seccompLog && !policy.seccomp) throw new PolicyError(policy.name, 'has no seccomp filter, so seccompLog (audit mode) would report nothing; choose a policy with a filter');
  let filter: CompiledFilter | undefined;
  let failure: SetupFailure | undefined;
  if (policy.seccomp) {
    try {
      filter = compileProfile(policy.seccomp, options.seccompLog ? 'log' : 'enforce', 'seccomp');
    } catch (e) {
      if (e instanceof ProfileError) throw new PolicyError(policy.name, e.message);
      if (!(e instanceof SeccompUnavailableError)) throw e;
      failure = {
        stage: 'seccomp',
        message: e.message,
        hint: `install libseccomp (Debian/Ubuntu: apt-get install libseccomp2), or choose policy 'none' to run without a seccomp filter; npx cubicle doctor checks the host`,
        errnoName: 'ENOENT',
        errno: osConstants.errno.ENOENT,
      };
    }
  }
  const runId = `${process.pid}-${++runCounter}-${Date.now().toString(36)}`;
  const limits = planLimits(options.limits, options.strictLimits, tmpfsPaths(options), runId, dryRun, options.cgroups, options.cgroupParent, options.runAs !== undefined);
  let plan: PlanOp[];
  let planBytes: Buffer;
  try {
    plan = buildPlan(options, filter?.notify ?? 'none', limits);
    planBytes = encodePlan(plan); // may refuse the plan (size, NUL): before anything is left behind
  } catch (e) {
    limits.cgroup?.finish();
    throw e;
  }
  const seccomp: SeccompContext | undefined = filter ? { policy: policy.name, mode: options.seccompLog ? 'log' : 'enforce', notify: filter.notify, describe: describeViolation } : undefined;
  return { options, policy, filter, plan, planBytes, bpf: filter?.bpf ?? new Uint8Array(0), seccomp, failure, limits };
}

