// A named run's life in the registry, as the supervisor drives it: reserve the name before anything starts, tell
// the helper to serve the join socket, record the pids and namespaces once the payload runs, remove it at the end.
import { dirname } from 'node:path';
import type { CgroupPlan } from '../cgroup/index.js';
import type { ResolvedOptions } from '../options/resolve.js';
import { Op, type PlanOp } from '../plan/ops.js';
import type { ReadyEvent } from '../protocol/events.js';
import type { HostIds } from '../types.js';
import { processStart, removeEntry, reserveName, selfRef, socketPath, updateEntry, type SandboxEntry } from '../host/registry.js';

/** The payload ops exec repeats inside a running sandbox (the rest of a plan builds the sandbox itself; api/exec.ts
 *  accepts exactly these). */
const JOIN_OPS = new Set(['userns', 'id-mapper', 'rlimit', 'cwd', 'env', 'search', 'seccomp']);

export interface Registration {
  /** The plan with the listen-join op (just before `end`, so every other op keeps its index). */
  plan(ops: readonly PlanOp[]): PlanOp[];
  /** The helper started and reported ready: the entry becomes `running`. */
  ready(ev: ReadyEvent, helperPid: number | undefined, ops: readonly PlanOp[], bpf: Uint8Array, hostIds: HostIds): void;
  /** The sandbox is gone: entry and socket are removed. */
  remove(): void;
}

/** Reserves `o.name` (throws SandboxNameError when it is taken); undefined for an unnamed run. */
export function registerRun(
  o: ResolvedOptions,
  cgroup: CgroupPlan | undefined,
  detached: boolean,
  seccomp: SandboxEntry['seccomp'],
  applied: SandboxEntry['limits'],
): Registration | undefined {
  if (o.name === undefined) return undefined;
  const name = o.name;
  const socket = socketPath(name);
  const entry: SandboxEntry = {
    version: 1,
    name,
    state: 'starting',
    supervisor: selfRef(),
    startedAt: new Date().toISOString(),
    owner: process.geteuid!(),
    command: o.argv,
    detached,
    limits: applied,
    hostIds: { uid: o.outerUid, gid: o.outerGid, counters: 'shared', source: 'caller' },
    forceKillAfterDelay: o.forceKillAfterDelay,
    ...(seccomp ? { seccomp } : {}),
    join: { socket, ops: [], bpf: '' },
    ...(cgroup
      ? {
          cgroup: {
            version: cgroup.version,
            dirs: cgroup.dirs,
            // a command exec'd in joins the payload's groups: with v1, the memory limit's child of the run's group
            join: [...cgroup.helper.join, ...(cgroup.helper.into ? [cgroup.helper.into] : [])].map((d) =>
              cgroup.helper.oomWatchDir && d === dirname(cgroup.helper.oomWatchDir) ? cgroup.helper.oomWatchDir : d,
            ),
          },
        }
      : {}),
  };
  reserveName(entry);
  let removed = false;
  return {
    plan: (ops) => {
      const out = [...ops];
      out.splice(out.length - 1, 0, Op.listenJoin(socket));
      return out;
    },
    ready: (ev, helperPid, ops, bpf, hostIds) => {
      if (removed) return;
      const start = processStart(ev.initPid);
      const helperStart = helperPid === undefined ? undefined : processStart(helperPid);
      if (start === undefined || helperPid === undefined || helperStart === undefined) return; // already gone
      // The userns op as sent (with leased outer ids), so exec takes the same identity.
      const joinOps = ops.filter((op) => JOIN_OPS.has(op.op));
      Object.assign(entry, {
        state: 'running',
        helper: { pid: helperPid, start: helperStart },
        init: { pid: ev.initPid, start },
        payloadPid: ev.payloadPid,
        namespaces: { ...ev.ns },
        hostIds,
        join: { socket, ops: joinOps, bpf: Buffer.from(bpf).toString('base64') },
      });
      updateEntry(entry);
    },
    remove: () => {
      removed = true;
      removeEntry(name);
    },
  };
}
