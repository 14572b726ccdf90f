// Which cgroup a run gets, if any: v1 and v2 are peers that each plan a group (./v1.ts, ./v2.ts); creating,
// reading and removing it is the same for both (./group.ts) and is the supervisor's job.
import type { CgroupChoice } from '../types.js';
import { cgroupV1Available, planV1 } from './v1.js';
import { cgroupV2HasControllers, planV2, v2Placement } from './v2.js';

export {
  createCgroup,
  removeCgroup,
  CgroupSetupError,
  type CgroupPlan,
  type CgroupCounters,
  type CgroupReadBack,
  type GroupLimits,
} from './group.js';
import type { CgroupPlan, GroupLimits } from './group.js';
export { cgroupV1Available } from './v1.js';
export { cgroup2Mount, cgroupV2Base, v2Placement, type V2Placement } from './v2.js';
export { removeStaleGroups } from './group.js';

export interface CgroupRequest {
  choice: CgroupChoice;
  /** A delegated cgroup v2 directory (rootless cgroup limits). */
  parent: string | undefined;
  /** The helper is started as another user (root's runAs): it could not clone into a root-owned v2 group. */
  runAs: boolean;
}

/**
 * Plans the run's cgroup with the first mechanism this host and caller allow, or says why none. In order: an explicit
 * cgroupParent; for a caller without root, the delegated v2 subtree it sits in, else a delegated scope from the
 * systemd user manager (asked for once per process: the only side effect of planning); for root, v2 when the v2
 * hierarchy has the memory and pids controllers, else v1, else v2 for CPU alone.
 */
export function planCgroup(l: GroupLimits, runId: string, req: CgroupRequest): CgroupPlan | { reason: string } {
  if (req.choice === false) return { reason: 'the caller turned cgroups off (cgroups: false)' };
  const reasons: string[] = [];
  const v2 = (): CgroupPlan | undefined => {
    if (req.runAs) {
      // CLONE_INTO_CGROUP needs write access up to the common ancestor of the helper's group and the run's:
      // a helper dropped to another user (runAs) from root's group has none.
      reasons.push('cgroup v2 cannot be combined with runAs (the unprivileged helper may not clone into a root-owned group)');
      return undefined;
    }
    const at = v2Placement(req.parent);
    if ('reason' in at) {
      reasons.push(at.reason);
      return undefined;
    }
    const plan = planV2(l, at.base, runId, undefined, at.moveSelfInto);
    if (at.source === 'own-subtree' || at.source === 'systemd-scope') plan.sweep.push(at.base.slice(0, at.base.lastIndexOf('/')));
    return plan;
  };
  const v1 = (): CgroupPlan | undefined => {
    const ok = cgroupV1Available();
    if (ok === true) return planV1(l, runId);
    reasons.push(ok);
    return undefined;
  };
  if (req.choice === 'v2' || req.parent !== undefined) return v2() ?? { reason: reasons.join('; ') };
  if (req.choice === 'v1') return v1() ?? { reason: reasons.join('; ') };
  // Root on a hybrid host has memory and pids in v1 only: v1 first there, v2 first where v2 holds them.
  const v2First = process.geteuid?.() !== 0 || cgroupV2HasControllers(['memory', 'pids']);
  const plan = v2First ? (v2() ?? v1()) : (v1() ?? v2());
  return plan ?? { reason: reasons.join('; ') };
}
