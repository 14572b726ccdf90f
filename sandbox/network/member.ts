// A run joining a private network: under the registry's lock (the one `network create` and `network rm` take, so
// the record read is the network the member joins, never an old one a rm + create of the same name replaced), stale
// member records are dropped, the name is checked, the lowest free address is taken and recorded (with this
// process's pid and start time), and /etc/hosts names every live member. The plan then gets the network op and the
// sandbox's outer ids as the holder's user namespace sees them (the sandbox's user namespace is a child of the
// holder's).
import {
  closeSync,
  fstatSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
  constants as fsConstants,
} from 'node:fs';
import { join } from 'node:path';
import { debuglog } from 'node:util';
import { SANDBOX_NAME, type ResolvedOptions } from '../options/resolve.js';
import { Op, opArg, type PlanOp } from '../plan/ops.js';
import type { HostIds } from '../types.js';
import {
  isAlive,
  networkDir,
  networksDir,
  NetworkError,
  processStart,
  readRecord,
  socketPath,
  withLock,
  type IdMapLine,
  type NetworkRecord,
} from './registry.js';
import { hostAddress, hostCount, parseSubnet } from './subnet.js';

const debug = debuglog('cubicle');

interface MemberRecord {
  name?: string;
  address: string;
  pid: number;
  start: number;
  /** This join's own: two runs of one process (same pid and start) on a network removed and created between. */
  lease?: string;
}

export interface NetworkMember {
  address: string;
  /** The plan with the network op, /etc/hosts and the ids in the holder's terms. */
  plan: PlanOp[];
  /** Drops the member record (idempotent; the network may be gone by then). */
  release: () => void;
}

/** A host id as the holder's user namespace sees it, or undefined when its maps do not hold it. */
export function holderId(lines: readonly IdMapLine[], hostId: number): number | undefined {
  for (const [inner, outer, count] of lines) if (hostId >= outer && hostId < outer + count) return inner + (hostId - outer);
  return undefined;
}

/** The network's record if it exists and its holder lives; a NetworkError saying what to do otherwise. */
export function liveNetwork(name: string): NetworkRecord {
  const r = readRecord(name);
  if (!r) throw new NetworkError(`there is no network "${name}" of this user`, `create it with: cubicle network create ${name}`);
  if (!isAlive(r.pid, r.start))
    throw new NetworkError(
      `the holder of network "${name}" (pid ${r.pid}) is gone, so nothing can join it`,
      `remove it and create it again: cubicle network rm ${name} && cubicle network create ${name} --subnet ${r.subnet}`,
    );
  return r;
}

const IPV4 = /^\d{1,3}(\.\d{1,3}){3}$/;

/** A member record as its run wrote it, or undefined for anything else (never followed through a symlink, never
 *  waited on as a fifo, bounded; its name and address are checked before /etc/hosts may carry them). */
function readMember(file: string): MemberRecord | undefined {
  let fd: number;
  try {
    fd = openSync(file, fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW | fsConstants.O_NONBLOCK);
  } catch {
    return undefined;
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile() || st.size > 4096) return undefined;
    const m = JSON.parse(readFileSync(fd, 'utf8')) as Partial<MemberRecord>;
    const ok =
      Number.isInteger(m.pid) &&
      Number.isInteger(m.start) &&
      typeof m.address === 'string' &&
      IPV4.test(m.address) &&
      file.endsWith(`/${m.address}`) &&
      (m.name === undefined || (typeof m.name === 'string' && SANDBOX_NAME.test(m.name))) &&
      (m.lease === undefined || typeof m.lease === 'string');
    return ok ? (m as MemberRecord) : undefined;
  } catch {
    return undefined;
  } finally {
    closeSync(fd);
  }
}

function removeEntry(file: string): void {
  try {
    rmSync(file, { force: true, recursive: true });
  } catch (e) {
    debug('network member %s: %s', file, (e as Error).message);
  }
}

function liveMembers(dir: string): MemberRecord[] {
  const out: MemberRecord[] = [];
  for (const f of readdirSync(dir)) {
    const m = readMember(join(dir, f));
    if (m && isAlive(m.pid, m.start)) out.push(m);
    else removeEntry(join(dir, f)); // its run ended without removing it (the process died), or not a record
  }
  return out;
}

/** The lock every change of the networks' directories happens under: create, rm, a join, a member's release. */
const registryLock = (): string => join(networksDir(), '.lock');

/** How many sandboxes are on a network now (stale records are dropped). */
export function memberCount(name: string): number {
  try {
    return withLock(registryLock(), () => liveMembers(join(networkDir(name), 'members')).length);
  } catch {
    return 0;
  }
}

/** Removes a member record if it is still this one's: after a rm and a create of the same name, the same path may
 *  hold another run's record of the same address, which stays. */
function releaseMember(file: string, rec: MemberRecord): void {
  withLock(registryLock(), () => {
    const now = readMember(file); // undefined: gone with its network, or never written
    if (now && now.lease === rec.lease && now.pid === rec.pid && now.start === rec.start) removeEntry(file); // its address is the path
  });
}

/** Joins made by this process: with its pid and start time, a member record's own (node:crypto would load streams). */
let joins = 0;

/** Joins `o.network` with the host ids the run got; throws NetworkError when it cannot. */
export function joinNetwork(o: ResolvedOptions, plan: readonly PlanOp[], hostIds: HostIds): NetworkMember {
  const name = o.network!;
  const dir = join(networkDir(name), 'members');
  const self = { pid: process.pid, start: processStart(process.pid)! };
  const { r, uid, gid, subnet, address, hosts, file, rec } = withLock(registryLock(), () => {
    const r = liveNetwork(name);
    const uid = holderId(r.maps.uid, hostIds.uid);
    const gid = holderId(r.maps.gid, hostIds.gid);
    if (uid === undefined || gid === undefined)
      throw new NetworkError(
        `network "${name}" maps host ids ${JSON.stringify(r.maps.uid)}, ` +
          `which do not hold this sandbox's host ids ${hostIds.uid}/${hostIds.gid}`,
        'create the network again as the user who runs the sandboxes (their subordinate ids may have changed since)',
      );
    const subnet = parseSubnet(r.subnet);
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const live = liveMembers(dir);
    if (o.name !== undefined && live.some((m) => m.name === o.name))
      throw new NetworkError(`a running sandbox on network "${name}" is already named "${o.name}"`, 'choose another --name');
    const used = new Set(live.map((m) => m.address));
    let i = 0;
    while (i < hostCount(subnet) && used.has(hostAddress(subnet, i))) i++;
    if (i >= hostCount(subnet))
      throw new NetworkError(
        `network "${name}" (${r.subnet}) has no free address`,
        'wait for a sandbox on it to end, or use a larger subnet',
      );
    const address = hostAddress(subnet, i);
    const file = join(dir, address);
    const rec: MemberRecord = {
      ...(o.name !== undefined ? { name: o.name } : {}),
      address,
      ...self,
      lease: `${++joins}-${Date.now().toString(36)}`,
    };
    writeFileSync(file, JSON.stringify(rec), { mode: 0o600 });
    const named = live.filter((m) => m.name !== undefined).map((m) => `${m.address}\t${m.name}`);
    if (o.name !== undefined) named.push(`${address}\t${o.name}`);
    return { r, uid, gid, subnet, address, hosts: named, file, rec };
  });
  let released = false;
  const release = (): void => {
    if (released) return;
    released = true;
    try {
      releaseMember(file, rec);
    } catch (e) {
      debug('network member %s: %s', file, (e as Error).message); // a stale record is dropped by the next join
    }
  };
  try {
    const out = plan.map((op) => {
      if (op.op === 'userns') return Op.userns(Number(opArg(op, 'innerUid')), Number(opArg(op, 'innerGid')), uid, gid);
      if (op.op === 'file' && opArg(op, 'path') === '/etc/hosts')
        return Op.file('/etc/hosts', `${opArg(op, 'content')}${hosts.map((h) => `${h}\n`).join('')}`);
      return op;
    });
    // just before `end`: every other op keeps its index (setup failures and copy-out frames name ops by index)
    out.splice(out.length - 1, 0, Op.network(socketPath(name), address, subnet.prefix, r.pid));
    return { address, plan: out, release };
  } catch (e) {
    release();
    throw e;
  }
}
