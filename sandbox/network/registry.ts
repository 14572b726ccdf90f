// The per-user registry of private networks, under the runtime directory: one directory per network holding its
// record (network.json), its holder's socket, a lock file, and the records of the sandboxes on it (members/). A
// holder is identified by pid and start time, so a dead one (or a recycled pid) is never taken for a live one.
import { closeSync, openSync, readdirSync, readFileSync, renameSync, writeFileSync, constants as fsConstants } from 'node:fs';
import { join } from 'node:path';
import { loadFlock } from '../host/flock.js';
import { nodeNet } from '../lazy-require.js';
import { runtimeDir, RuntimeDirError } from '../host/runtime-dir.js';
import { SANDBOX_NAME } from '../options/resolve.js';
import { HolderRequest } from '../protocol/opcodes.js';
import { parseSubnet, type Subnet } from './subnet.js';

/** Names a network can never have: `none` is the default (only lo), `egress` the way out. */
export const RESERVED_NETWORKS = ['none', 'egress'] as const;

/** One line of a user namespace map: ids inner..inner+count-1 are outer..outer+count-1 outside. */
export type IdMapLine = [inner: number, outer: number, count: number];

export interface NetworkRecord {
  name: string;
  subnet: string;
  /** The holder's host pid and start time (clock ticks after boot, /proc/PID/stat field 22). */
  pid: number;
  start: number;
  /** The holder's user namespace maps, host ids as outer. */
  maps: { uid: IdMapLine[]; gid: IdMapLine[] };
  created: string;
}

export class NetworkError extends Error {
  override name = 'NetworkError';
  readonly code = 'ERR_SANDBOX_NETWORK';
  constructor(
    readonly detail: string,
    readonly hint: string,
  ) {
    super(`${detail}; ${hint}`);
  }
}

/** The directory of all networks of this user (made 0700 if missing); a NetworkError when it cannot be used. */
export function networksDir(): string {
  try {
    return runtimeDir('networks');
  } catch (e) {
    if (e instanceof RuntimeDirError) throw new NetworkError(e.message.slice(0, e.message.length - e.hint.length - 2), e.hint);
    throw e;
  }
}
export const networkDir = (name: string): string => join(networksDir(), name);
export const socketPath = (name: string): string => join(networkDir(name), 'sock');

/** A process's start time, or undefined when it does not exist. */
export function processStart(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return Number(fields[19]);
  } catch {
    return undefined;
  }
}

/** Whether the process that wrote a record is still that process. */
export const isAlive = (pid: number, start: number): boolean => processStart(pid) === start;

function validRecord(v: unknown, name: string): NetworkRecord | undefined {
  const r = v as NetworkRecord;
  const lines = (a: unknown): boolean =>
    Array.isArray(a) && a.every((l) => Array.isArray(l) && l.length === 3 && l.every(Number.isInteger));
  if (typeof r !== 'object' || r === null || r.name !== name || typeof r.subnet !== 'string') return undefined;
  if (!Number.isInteger(r.pid) || !Number.isInteger(r.start) || !lines(r.maps?.uid) || !lines(r.maps?.gid)) return undefined;
  return r;
}

/** The record of a network, or undefined when there is none (or it is unreadable). */
export function readRecord(name: string): NetworkRecord | undefined {
  if (!SANDBOX_NAME.test(name)) return undefined;
  try {
    const fd = openSync(join(networkDir(name), 'network.json'), fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW);
    try {
      return validRecord(JSON.parse(readFileSync(fd, 'utf8')), name);
    } finally {
      closeSync(fd);
    }
  } catch {
    return undefined;
  }
}

export function writeRecord(r: NetworkRecord): void {
  const tmp = join(networkDir(r.name), 'network.json.tmp');
  writeFileSync(tmp, `${JSON.stringify(r)}\n`, { mode: 0o600 });
  renameSync(tmp, join(networkDir(r.name), 'network.json'));
}

/** Every network of this user with a readable record, by name. */
export function listRecords(): NetworkRecord[] {
  const out: NetworkRecord[] = [];
  for (const name of readdirSync(networksDir()).sort()) {
    const r = SANDBOX_NAME.test(name) ? readRecord(name) : undefined;
    if (r) out.push(r);
  }
  return out;
}

export const recordSubnet = (r: NetworkRecord): Subnet => parseSubnet(r.subnet);

const LOCK_EX = 2;

/** Runs `fn` holding an exclusive flock on `file` (created 0600 if missing); the lock drops when it returns. */
export function withLock<T>(file: string, fn: () => T): T {
  const flock = loadFlock();
  if (!flock)
    throw new NetworkError('file locks are unavailable (flock through koffi)', 'reinstall cubicle with its optional dependencies');
  const fd = openSync(file, fsConstants.O_RDWR | fsConstants.O_CREAT | fsConstants.O_NOFOLLOW, 0o600);
  try {
    if (flock(fd, LOCK_EX) !== 0)
      throw new NetworkError(`cannot lock ${file}`, 'check that the runtime directory is on a local filesystem');
    return fn();
  } finally {
    closeSync(fd); // closing the only descriptor drops the lock
  }
}

/** Sends one request byte to a network's holder (through `path`, its socket by default); resolves with its answer
 *  byte, or undefined when it did not answer within `ms` (it is gone or wedged). */
export function askHolder(name: string, request: string, ms = 1000, path = socketPath(name)): Promise<string | undefined> {
  return new Promise((resolve) => {
    const s = nodeNet().connect(path);
    const done = (v: string | undefined): void => {
      clearTimeout(timer);
      s.destroy();
      resolve(v);
    };
    const timer = setTimeout(() => done(undefined), ms);
    s.on('connect', () => s.write(request));
    s.on('data', (d: Buffer) => done(d.toString('latin1', 0, 1)));
    s.on('error', () => done(undefined));
    s.on('close', () => done(undefined));
  });
}

/** Whether a network's holder is up: its process is the one recorded and it answers on its socket. */
export async function holderUp(r: NetworkRecord): Promise<boolean> {
  return isAlive(r.pid, r.start) && (await askHolder(r.name, HolderRequest.ping)) === HolderRequest.ok;
}
