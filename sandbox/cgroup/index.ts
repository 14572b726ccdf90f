// Which cgroup a run gets, if any: v1 and v2 are peers that each plan a group (./v1.ts, ./v2.ts); creating,
// reading and removing it is the same for both (./group.ts) and is the supervisor's job.
import type { CgroupChoice } from '../types.js';
import { cgroupV1Available, planV1 } from './v1.js';
import { cgroupV2Base, planV2 } from './v2.js';

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
export { cgroup2Mount, cgroupV2Base } from './v2.js';

export interface CgroupRequest {
  choice: CgroupChoice;
  /** A delegated cgroup v2 directory (rootless cgroup limits). */
  parent: string | undefined;
  /** The helper is started as another user (root's runAs): it could not clone into a root-owned v2 group. */
  runAs: boolean;
}

/** Plans the run's cgroup with the first version this host and caller allow, or says why none. Touches nothing. */
export function planCgroup(l: GroupLimits, runId: string, req: CgroupRequest): CgroupPlan | { reason: string } {
  if (req.choice === false) return { reason: 'the caller turned cgroups off (cgroups: false)' };
  const reasons: string[] = [];
  if (req.choice !== 'v2' && req.parent === undefined) {
    const v1 = cgroupV1Available();
    if (v1 === true) return planV1(l, runId);
    reasons.push(v1);
  }
  if (req.choice !== 'v1' && req.runAs) {
    // CLONE_INTO_CGROUP needs write access up to the common ancestor of the helper's group and the run's:
    // a helper dropped to another user (runAs) from root's group has none.
    reasons.push('cgroup v2 cannot be combined with runAs (the unprivileged helper may not clone into a root-owned group)');
  } else if (req.choice !== 'v1') {
    const base = cgroupV2Base(req.parent);
    if (typeof base === 'string') return planV2(l, base, runId);
    reasons.push(base.reason);
  }
  return { reason: reasons.join('; ') };
}
