// A rootless caller's subordinate ids: the ranges /etc/subuid and /etc/subgid give it (by name or by uid), and
// the setuid tools that may map them (shadow's newuidmap/newgidmap, Debian's package uidmap). With both, each
// sandbox maps to a host uid of the range that no other sandbox of the caller holds, so per-user kernel counters
// (tasks, inotify instances, mqueue bytes, pending signals) are its own, as root's hostIdRange gives.
import { readFileSync, statSync } from 'node:fs';

export interface IdRange {
  start: number;
  count: number;
}

export interface Subids {
  uid: IdRange;
  gid: IdRange;
  newuidmap: string;
  newgidmap: string;
}

/** Why a caller has no subordinate ids to use: shown in the result's hostIds and by doctor. */
export interface NoSubids {
  reason: string;
}

const TOOL_DIRS = ['/usr/bin', '/bin', '/usr/sbin', '/sbin'];
const MAX_ID = 0xfffffffe;

function readText(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
}

/** The /etc/passwd entry of `uid`: login name, primary gid and home directory. */
export function passwdEntry(uid: number, passwd = readText('/etc/passwd') ?? ''): { name: string; gid: number; home: string } | undefined {
  for (const line of passwd.split('\n')) {
    const f = line.split(':');
    if (f.length >= 7 && f[2] === String(uid) && f[0] && /^\d+$/.test(f[3]!)) return { name: f[0], gid: Number(f[3]), home: f[5]! };
  }
  return undefined;
}

/** The first well-formed range of `owner` (a name or a decimal uid) in a subuid/subgid file's text. */
export function findRange(text: string, uid: number, name: string | undefined): IdRange | undefined {
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    const f = line.split(':');
    if (f.length !== 3 || (f[0] !== name && f[0] !== String(uid))) continue;
    if (!/^\d{1,10}$/.test(f[1]!) || !/^\d{1,10}$/.test(f[2]!)) continue;
    const start = Number(f[1]),
      count = Number(f[2]);
    // Never a range that holds root or the caller itself: neither is a sandbox's own.
    if (start < 1 || count < 1 || start + count - 1 > MAX_ID) continue;
    if (uid >= start && uid < start + count) continue;
    return { start, count };
  }
  return undefined;
}

/** A root-owned executable that only root may change, in the usual places; undefined if none. */
function rootTool(name: string): string | undefined {
  for (const dir of TOOL_DIRS) {
    const path = `${dir}/${name}`;
    try {
      const st = statSync(path);
      if (st.isFile() && st.uid === 0 && (st.mode & 0o022) === 0 && (st.mode & 0o111) !== 0) return path;
    } catch {
      /* not here */
    }
  }
  return undefined;
}

/** A host account (passwd, group) or, with `subordinate`, a subordinate range (subuid, subgid) whose ids fall in
 *  first..last, named; undefined when none does. */
export function idsTakenIn(first: number, last: number, subordinate = true): string | undefined {
  const read = (f: string): string[] => {
    try {
      return readFileSync(f, 'utf8').split('\n');
    } catch {
      return [];
    }
  };
  for (const [file, what] of [
    ['/etc/passwd', 'uid'],
    ['/etc/group', 'gid'],
  ] as const)
    for (const line of read(file)) {
      const [name, , id] = line.split(':');
      if (name && id !== undefined && /^\d+$/.test(id) && Number(id) >= first && Number(id) <= last) return `${what} ${id} (${name})`;
    }
  for (const file of subordinate ? ['/etc/subuid', '/etc/subgid'] : [])
    for (const line of read(file)) {
      const [owner, s, c] = line.trim().split(':');
      if (!owner || !/^\d+$/.test(s ?? '') || !/^\d+$/.test(c ?? '')) continue;
      const a = Number(s),
        b = a + Number(c) - 1;
      if (a <= last && b >= first) return `${owner}'s subordinate ids ${a}-${b} in ${file}`;
    }
  return undefined;
}

const cache = new Map<number, Subids | NoSubids>();

/** The subordinate ids `uid` may map, or why there are none (cached per uid for the life of the process). */
export function subidsFor(uid: number): Subids | NoSubids {
  const hit = cache.get(uid);
  if (hit) return hit;
  const name = passwdEntry(uid)?.name;
  const who = name ? `${name} (uid ${uid})` : `uid ${uid}`;
  const add = `usermod --add-subuids 100000-165535 --add-subgids 100000-165535 ${name ?? uid}`;
  let found: Subids | NoSubids;
  const newuidmap = rootTool('newuidmap'),
    newgidmap = rootTool('newgidmap');
  const uidRange = findRange(readText('/etc/subuid') ?? '', uid, name);
  const gidRange = findRange(readText('/etc/subgid') ?? '', uid, name);
  if (!newuidmap || !newgidmap) found = { reason: 'newuidmap/newgidmap are not installed (Debian/Ubuntu: apt-get install uidmap)' };
  else if (!uidRange || !gidRange) found = { reason: `${who} has no range in /etc/sub${uidRange ? 'g' : 'u'}id (as root: ${add})` };
  else {
    // A range holding an account would run sandboxes as that account.
    const taken =
      idsTakenIn(uidRange.start, uidRange.start + uidRange.count - 1, false) ??
      idsTakenIn(gidRange.start, gidRange.start + gidRange.count - 1, false);
    found = taken
      ? { reason: `${who}'s subordinate range holds ${taken}; fix /etc/subuid and /etc/subgid` }
      : { uid: uidRange, gid: gidRange, newuidmap, newgidmap };
  }
  cache.set(uid, found);
  return found;
}
