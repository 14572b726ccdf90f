// `cubicle network create|ls|rm`: a network is a holder process (the helper in holder mode) owning a user and a
// network namespace with a bridge, and a record in the per-user registry. Creation and removal hold the registry's
// lock, so two of them never race on a name or a subnet.
import { spawnSync } from 'node:child_process';
import { closeSync, mkdirSync, openSync, renameSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { SandboxOptionError } from '../errors.js';
import { passwdEntry, subidsFor } from '../host/subids.js';
import { helperPath } from '../native/helper-path.js';
import { SANDBOX_NAME } from '../options/resolve.js';
import { encodePlan, Op, type PlanOp } from '../plan/ops.js';
import { HolderRequest } from '../protocol/opcodes.js';
import { memberCount } from './member.js';
import {
  askHolder,
  holderUp,
  listRecords,
  networkDir,
  networksDir,
  NetworkError,
  processStart,
  readRecord,
  RESERVED_NETWORKS,
  socketPath,
  withLock,
  writeRecord,
  type IdMapLine,
  type NetworkRecord,
} from './registry.js';
import { defaultSubnet, overlaps, parseSubnet, SubnetError, type Subnet } from './subnet.js';

export interface NetworkInfo {
  name: string;
  subnet: string;
  /** up: the holder answers; down: it is gone (nothing can join; `network rm` clears it). */
  state: 'up' | 'down';
  holderPid: number;
  /** Sandboxes on it now. */
  sandboxes: number;
}

/** Checks a network name for create/rm; throws SandboxOptionError naming the rule. */
export function checkNetworkName(name: unknown): string {
  if (typeof name !== 'string' || !SANDBOX_NAME.test(name))
    throw new SandboxOptionError(
      'name',
      `network name ${JSON.stringify(name)} must be 1-63 of letters, digits, '_', '.' or '-', starting with a letter or digit`,
    );
  if ((RESERVED_NETWORKS as readonly string[]).includes(name))
    throw new SandboxOptionError('name', `"${name}" is reserved (${RESERVED_NETWORKS.join(', ')} are built in); choose another name`);
  return name;
}

/**
 * The holder's user namespace maps, host ids as outer: root maps every id as itself (its sandboxes keep the host ids
 * they get without a network, never 0); a rootless owner maps itself as 0 and, with subordinate ids, its whole range
 * from 1 (through newuidmap/newgidmap), so each sandbox on the network still gets a host uid of its own.
 */
function holderMaps(): { uid: IdMapLine[]; gid: IdMapLine[]; mapper?: [string, string] } {
  const uid = process.geteuid!(),
    gid = process.getegid!();
  if (uid === 0) return { uid: [[0, 0, 4294967295]], gid: [[0, 0, 4294967295]] };
  const sub = subidsFor(uid);
  if ('reason' in sub || passwdEntry(uid)?.gid !== gid) return { uid: [[0, uid, 1]], gid: [[0, gid, 1]] };
  const count = Math.min(sub.uid.count, sub.gid.count);
  return {
    uid: [
      [0, uid, 1],
      [1, sub.uid.start, count],
    ],
    gid: [
      [0, gid, 1],
      [1, sub.gid.start, count],
    ],
    mapper: [sub.newuidmap, sub.newgidmap],
  };
}

/** Starts the holder (the helper in holder mode) and returns its pid once it is up. */
function startHolder(name: string, maps: ReturnType<typeof holderMaps>): number {
  const ops: PlanOp[] = [Op.holder(socketPath(name))];
  if (maps.mapper) ops.push(Op.idMapper(...maps.mapper));
  for (const kind of ['uid', 'gid'] as const)
    for (const [inner, outer, count] of maps[kind]) ops.push(Op.holderMap(kind, inner, outer, count));
  ops.push(Op.end());
  const planFile = join(networkDir(name), 'plan');
  writeFileSync(planFile, encodePlan(ops), { mode: 0o600 });
  const planFd = openSync(planFile, 'r');
  unlinkSync(planFile);
  const nullFd = openSync('/dev/null', 'r');
  try {
    // fd 3 plan, 4 an empty seccomp program, 5 status (read to EOF: the holder closes its copy once up), 6 control
    const r = spawnSync(helperPath(), [], {
      stdio: ['ignore', 'ignore', 'pipe', planFd, nullFd, 'pipe', nullFd],
      env: {},
      argv0: 'cubicle-helper',
      timeout: 15000,
      cwd: '/',
    });
    const lines = String(r.output?.[5] ?? '')
      .split('\n')
      .filter(Boolean);
    for (const line of lines) {
      let ev: { ev?: string; pid?: number; msg?: string; syscall?: string; errno?: number } = {};
      try {
        ev = JSON.parse(line) as typeof ev;
      } catch {
        /* not an event */
      }
      if (ev.ev === 'holder' && Number.isInteger(ev.pid)) return ev.pid!;
      if (ev.ev === 'error')
        throw new NetworkError(
          `the holder of network "${name}" could not start: ${ev.msg}${ev.syscall ? ` (${ev.syscall})` : ''}`,
          'run `cubicle doctor` to check user namespaces on this host',
        );
    }
    const why = r.error ? r.error.message : `exit ${r.status ?? r.signal}${r.stderr?.length ? `: ${String(r.stderr).trim()}` : ''}`;
    throw new NetworkError(`the holder of network "${name}" did not report (${why})`, 'rebuild the helper (npm run build) and try again');
  } finally {
    closeSync(planFd);
    closeSync(nullFd);
  }
}

/** Creates a network; a given subnet is kept exactly as written. Throws SandboxOptionError for bad input and
 *  NetworkError when the name or subnet is taken or the holder cannot start. */
export function createNetwork(nameArg: unknown, subnetArg?: unknown): NetworkRecord {
  const name = checkNetworkName(nameArg);
  let asked: Subnet | undefined;
  if (subnetArg !== undefined) {
    try {
      asked = parseSubnet(String(subnetArg));
    } catch (e) {
      if (e instanceof SubnetError) throw new SandboxOptionError('subnet', e.message);
      throw e;
    }
  }
  const maps = holderMaps();
  return withLock(join(networksDir(), '.lock'), () => {
    const all = listRecords();
    if (all.some((r) => r.name === name))
      throw new NetworkError(`network "${name}" exists`, `remove it first (cubicle network rm ${name}) or choose another name`);
    const taken = all.map((r) => ({ r, s: parseSubnet(r.subnet) }));
    let subnet: Subnet;
    try {
      subnet = asked ?? defaultSubnet(taken.map((t) => t.s));
    } catch (e) {
      throw new NetworkError((e as Error).message, 'give a free subnet with --subnet');
    }
    const clash = taken.find((t) => overlaps(t.s, subnet));
    if (clash)
      throw new NetworkError(
        `subnet ${subnet.text} overlaps network "${clash.r.name}" (${clash.r.subnet})`,
        'choose a subnet no other network of yours uses',
      );
    rmSync(networkDir(name), { recursive: true, force: true }); // a leftover without a record (a create that died)
    mkdirSync(networkDir(name), { mode: 0o700 });
    try {
      const pid = startHolder(name, maps);
      const start = processStart(pid);
      if (start === undefined)
        throw new NetworkError(`the holder of network "${name}" (pid ${pid}) ended right after starting`, 'run `cubicle doctor`');
      const record: NetworkRecord = {
        name,
        subnet: subnet.text,
        pid,
        start,
        maps: { uid: maps.uid, gid: maps.gid },
        created: new Date().toISOString(),
      };
      writeRecord(record);
      return record;
    } catch (e) {
      rmSync(networkDir(name), { recursive: true, force: true });
      throw e;
    }
  });
}

/** Every network of this user, with whether its holder is up and how many sandboxes are on it. */
export async function listNetworks(): Promise<NetworkInfo[]> {
  const out: NetworkInfo[] = [];
  for (const r of listRecords())
    out.push({
      name: r.name,
      subnet: r.subnet,
      state: (await holderUp(r)) ? 'up' : 'down',
      holderPid: r.pid,
      sandboxes: memberCount(r.name),
    });
  return out;
}

/**
 * Removes a network: at once nothing can join it; sandboxes on it keep their links until they end, and its holder
 * exits with the last of them (at once when none is left). Resolves with how many sandboxes were still on it.
 */
let removals = 0;

export async function removeNetwork(nameArg: unknown): Promise<{ name: string; sandboxes: number; holder: 'stopped' | 'gone' }> {
  const name = checkNetworkName(nameArg);
  const r = readRecord(name);
  if (!r) throw new NetworkError(`there is no network "${name}" of this user`, 'cubicle network ls lists them');
  const sandboxes = memberCount(name);
  // Under the registry's lock the network's directory is moved aside (record, socket and all), so no run joins it
  // once this returns and a create of the same name starts afresh; the holder is then told through its socket at
  // the new path, which reaches this network's holder only (it was told by name once, and a create that ran in
  // between had put a new holder's socket there). A holder nobody tells sees its socket path gone and exits.
  const aside = join(networksDir(), `.removed-${process.pid}-${++removals}-${Math.random().toString(36).slice(2, 8)}`);
  withLock(join(networksDir(), '.lock'), () => {
    if (!readRecord(name)) throw new NetworkError(`there is no network "${name}" of this user`, 'cubicle network ls lists them');
    renameSync(networkDir(name), aside);
  });
  try {
    const answered = (await askHolder(name, HolderRequest.remove, 1000, join(aside, 'sock'))) === HolderRequest.ok;
    return { name, sandboxes, holder: answered ? 'stopped' : 'gone' };
  } finally {
    rmSync(aside, { recursive: true, force: true });
  }
}
