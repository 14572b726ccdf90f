// Splits a run's plan at the point a warm sandbox waits: what is built ahead (namespaces, ids, root, mounts, /proc,
// /box) and what arrives with the command (payload, limits, files, copy-out). Pure.
import { encodePlan, Op, type PlanOp } from '../plan/ops.js';
import { RUN_OPS } from '../protocol/opcodes.js';

const RUN = new Set<string>(RUN_OPS);

export interface SplitPlan {
  /** The first plan: every op that is not a run op, in order, then await and end. */
  ahead: PlanOp[];
  /** The run plan: every run op, in order, then end. */
  run: PlanOp[];
}

/** Splits a whole plan (ending in end) into the plan a warm sandbox is made from and its run plan. */
export function splitPlan(plan: readonly PlanOp[]): SplitPlan {
  const ahead: PlanOp[] = [];
  const run: PlanOp[] = [];
  for (const op of plan) if (op.op !== 'end') (RUN.has(op.op) ? run : ahead).push(op);
  return { ahead: [...ahead, Op.await(), Op.end()], run: [...run, Op.end()] };
}

/** The ops as the helper numbers them (setup failures and copy-out frames name ops by index): the first plan as it
 *  was sent, up to its end, then the run plan. */
export const joinedPlan = (sent: readonly PlanOp[], run: readonly PlanOp[]): PlanOp[] => [...sent.slice(0, -1), ...run];

/** A first plan with each tmpfs's inode cap left out: a run sets its own (tmpfs-inodes, in its run plan). */
export const withoutInodes = (ops: readonly PlanOp[]): PlanOp[] =>
  ops.map((op) => (op.op === 'tmpfs' ? ({ op: 'tmpfs', args: [...op.args.slice(0, 3), '*'] } as PlanOp) : op));

/** The tmpfs-inodes ops that give a sandbox's tmpfs mounts (its first plan) the run's own caps, where they differ.
 *  The two plans are the same but for those caps (see withoutInodes). */
export function inodeOps(sandbox: readonly PlanOp[], run: readonly PlanOp[]): PlanOp[] {
  const ops: PlanOp[] = [];
  sandbox.forEach((op, i) => {
    const mine = run[i];
    if (op.op === 'tmpfs' && mine?.op === 'tmpfs' && op.args[3] !== mine.args[3])
      ops.push(Op.tmpfsInodes(mine.args[0]!, Number(mine.args[3])));
  });
  return ops;
}

/** Why two first plans differ (undefined when they are the same): the first op that is not the pool's. */
export function planDifference(pool: readonly PlanOp[], mine: readonly PlanOp[]): string | undefined {
  if (encodePlan(pool).equals(encodePlan(mine))) return undefined;
  const n = Math.max(pool.length, mine.length);
  for (let i = 0; i < n; i++) {
    const a = pool[i];
    const b = mine[i];
    if (!a || !b || a.op !== b.op || a.args.join('\0') !== b.args.join('\0')) {
      const shown = b ?? a!;
      return `its sandbox differs from the pool's at step ${i} (${shown.op} ${shown.args.join(' ').slice(0, 80)})`;
    }
  }
  return 'its sandbox differs from the pool';
}
