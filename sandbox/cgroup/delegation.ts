// Where a caller without root gets cgroup v2 groups, found once per process: the delegated subtree it already sits
// in, else a delegated scope the systemd user manager gives this process (as rootless Podman asks for one). Reads
// the hierarchy only; the one side effect is asking the user manager for that scope, once, when nothing else fits.
import { constants, statSync } from 'node:fs';
import { childProcess } from '../lazy-require.js';
import { mayAccess, readText, words } from './group.js';

/** The controllers a run's group needs for exact limits. */
export const DELEGATED_CONTROLLERS = ['memory', 'pids'] as const;

/** A layout that makes room for run groups in a subtree this user may write. */
export interface Delegation {
  /** How the subtree was found: the caller already sat in it, or the user manager made a scope for it. */
  source: 'own-subtree' | 'systemd-scope';
  /** The group cubicle organizes: its run groups go under `${group}/cubicle`. */
  group: string;
  /** Set when the caller sits in `group` itself: it first moves into this leaf (a group that holds processes cannot
   *  hand controllers to its children), once per process. */
  moveSelfInto?: string;
}

/** This process's cgroup v2 directory (from /proc/self/cgroup), or undefined when it has none. */
export function ownCgroup(mnt: string, text = readText('/proc/self/cgroup')): string | undefined {
  const m = /^0::(\/.*)$/m.exec(text ?? '');
  if (!m) return undefined;
  const rel = m[1]!.replace(/ \(deleted\)$/, '');
  return rel === '/' ? mnt : `${mnt}${rel}`;
}

/** May this user reorganize `dir`: create groups in it, move processes through it, hand controllers down? */
const delegatedToMe = (dir: string): boolean =>
  mayAccess(dir) && mayAccess(`${dir}/cgroup.procs`) && mayAccess(`${dir}/cgroup.subtree_control`);

/** Whether `dir` has every controller run groups need, and either delegates them already or may (holds no process). */
function canHandDown(dir: string, emptied: boolean): boolean {
  const have = words(readText(`${dir}/cgroup.controllers`));
  const handed = words(readText(`${dir}/cgroup.subtree_control`));
  const empty = emptied || words(readText(`${dir}/cgroup.procs`)).length === 0;
  return DELEGATED_CONTROLLERS.every((c) => have.includes(c) && (handed.includes(c) || empty));
}

/** The leaf the caller moves into when it sits alone in its delegated group. */
export const callerLeaf = (group: string, pid = process.pid): string => `${group}/caller-${pid}`;

/**
 * The delegated subtree this process sits in, without changing anything: its own cgroup when it is the only
 * process there (it will move into a leaf and put run groups beside it), else the parent of its cgroup when that
 * is writable too (run groups go beside the caller's group). Either way the helper, a child of this process,
 * sits inside the subtree, as CLONE_INTO_CGROUP requires.
 */
export function findOwnSubtree(
  mnt: string,
  own = ownCgroup(mnt),
  pid = process.pid,
  uid = process.geteuid?.() ?? -1,
): Delegation | { reason: string } {
  if (own === undefined) return { reason: 'this process has no cgroup v2 group (/proc/self/cgroup has no 0:: line)' };
  if (own === mnt) return { reason: 'this process sits in the root cgroup, which only root may organize' };
  if (!delegatedToMe(own)) return { reason: `its own cgroup ${own} is not delegated to uid ${uid} (not writable)` };
  const procs = words(readText(`${own}/cgroup.procs`));
  if (procs.length === 1 && procs[0] === String(pid) && canHandDown(own, true))
    return { source: 'own-subtree', group: own, moveSelfInto: callerLeaf(own, pid) };
  const parent = own.slice(0, own.lastIndexOf('/'));
  if (parent.length > mnt.length && delegatedToMe(parent) && canHandDown(parent, false)) return { source: 'own-subtree', group: parent };
  const lacking = DELEGATED_CONTROLLERS.filter((c) => !words(readText(`${own}/cgroup.controllers`)).includes(c));
  if (lacking.length)
    return { reason: `its own cgroup ${own} has no ${lacking.join(' or ')} controller (its parent does not delegate it)` };
  return {
    reason:
      `its own cgroup ${own} holds other processes (${procs.length}), and its parent is not delegated to uid ${uid}, ` +
      'so no group can be made beside it (a group with processes cannot hand controllers down)',
  };
}

/** The systemd user manager's bus, or why it cannot be reached. */
export function userManagerBus(env: NodeJS.ProcessEnv = process.env, uid = process.getuid?.() ?? -1): { bus: string } | { reason: string } {
  const runtime = env.XDG_RUNTIME_DIR || `/run/user/${uid}`;
  const bus = `${runtime}/bus`;
  try {
    if (!statSync(bus).isSocket()) return { reason: `no systemd user manager is reachable (${bus} is not a socket)` };
  } catch {
    return { reason: `no systemd user manager is reachable (no ${bus}: no systemd user session for uid ${uid})` };
  }
  const busctl = (env.PATH ?? '/usr/bin:/bin').split(':').some((d) => d && mayAccess(`${d}/busctl`, constants.X_OK));
  if (!busctl) return { reason: `the systemd user manager's bus ${bus} exists, but busctl (systemd) is not on PATH` };
  return { bus };
}

const pause = (ms: number): void => {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
};

/** How long the user manager may take to move this process into the scope it made. */
const SCOPE_WAIT_MS = 3000;

/**
 * Asks the systemd user manager for a transient scope with Delegate=yes holding this process (StartTransientUnit
 * with PIDs = [this pid], over the user bus with busctl). The manager moves the process; this waits until
 * /proc/self/cgroup shows the scope. The scope goes away by itself when the process exits.
 */
export function requestUserScope(bus: string, mnt: string): { scope: string } | { reason: string } {
  const unit = `cubicle-${process.pid}-${Date.now().toString(36)}.scope`;
  const r = childProcess().spawnSync(
    'busctl',
    [
      '--user',
      'call',
      'org.freedesktop.systemd1',
      '/org/freedesktop/systemd1',
      'org.freedesktop.systemd1.Manager',
      'StartTransientUnit',
      'ssa(sv)a(sa(sv))',
      unit,
      'fail',
      '3',
      'PIDs',
      'au',
      '1',
      String(process.pid),
      'Delegate',
      'b',
      'true',
      'CollectMode',
      's',
      'inactive-or-failed',
      '0',
    ],
    { encoding: 'utf8', timeout: SCOPE_WAIT_MS, env: { ...process.env, DBUS_SESSION_BUS_ADDRESS: `unix:path=${bus}` } },
  );
  if (r.error || r.status !== 0) {
    const why = r.error ? r.error.message : (r.stderr || `exit status ${r.status}`).trim();
    return { reason: `the systemd user manager did not give a delegated scope (busctl StartTransientUnit ${unit}: ${why})` };
  }
  const end = Date.now() + SCOPE_WAIT_MS;
  for (;;) {
    const own = ownCgroup(mnt);
    if (own?.endsWith(`/${unit}`)) return { scope: own };
    if (Date.now() > end)
      return { reason: `the systemd user manager made ${unit} but did not move this process into it within ${SCOPE_WAIT_MS} ms` };
    pause(10);
  }
}

let found: { mnt: string; result: Delegation | { reason: string } } | undefined;

/**
 * The delegation this process uses, found once: the subtree it sits in, else a scope from the systemd user
 * manager (requested once), else why there is none (both reasons). Later calls return the same answer, so runs
 * of one process share one layout.
 */
export function delegation(mnt: string): Delegation | { reason: string } {
  if (found?.mnt === mnt) return found.result;
  let result: Delegation | { reason: string } = findOwnSubtree(mnt);
  if ('reason' in result) {
    const own = result.reason;
    const bus = userManagerBus();
    if ('reason' in bus) result = { reason: `${own}; ${bus.reason}` };
    else {
      const scope = requestUserScope(bus.bus, mnt);
      const inScope = 'reason' in scope ? scope : findOwnSubtree(mnt);
      result = 'reason' in inScope ? { reason: `${own}; ${inScope.reason}` } : { ...inScope, source: 'systemd-scope' };
    }
  }
  found = { mnt, result };
  return result;
}

/** Without side effects: what delegation() would find, or would ask the user manager for (the doctor's view). */
export function predictDelegation(mnt: string): Delegation | { systemd: string } | { reason: string } {
  if (found?.mnt === mnt) return found.result;
  const own = findOwnSubtree(mnt);
  if (!('reason' in own)) return own;
  const bus = userManagerBus();
  return 'reason' in bus ? { reason: `${own.reason}; ${bus.reason}` } : { systemd: bus.bus };
}
