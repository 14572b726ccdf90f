// listSandboxes(): the caller's live named sandboxes with their live usage. CPU and memory of the processes come from
// pidusage (init and every process below it, as /proc shows the tree), and from the sandbox's cgroup where it has one
// (which also counts what left the tree, e.g. a command exec'd in).
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import pidusage from 'pidusage';
import type { AppliedLimit } from '../types.js';
import { listEntries, findSandbox, checkSandboxName, type SandboxEntry } from '../host/registry.js';

/** Live usage of a sandbox: cumulative CPU (ms) and current memory (bytes) of its processes, and its cgroup's. */
export interface LiveUsage {
  cpuMs: number;
  memoryBytes: number;
  processes: number;
  /** What the sandbox's cgroup counts, when it has one. */
  cgroup?: { cpuMs?: number; memoryBytes?: number };
}

export interface LiveSandbox {
  name: string;
  /** The sandbox's init (PID 1 inside) as the host sees it. */
  pid: number;
  helperPid: number;
  /** The payload's pid inside the sandbox. */
  payloadPid: number | undefined;
  state: 'running' | 'starting';
  startedAt: string;
  ageMs: number;
  command: string[];
  detached: boolean;
  /** Namespace inode numbers by /proc/PID/ns name (user, mnt, pid, net, ipc, uts, cgroup). */
  namespaces: Record<string, number>;
  usage: LiveUsage;
  /** The limits in force: value, unit and mechanism of each (absent when not set). */
  limits: Partial<Record<string, AppliedLimit>>;
  cgroup?: { version: 'v1' | 'v2'; dirs: string[] };
  hostIds: { uid: number; gid: number };
}

/**
 * Host pids of the sandbox's processes: init and every process below it (parent links from /proc/PID/stat, which
 * anyone may read), and every process whose pid namespace is the sandbox's where this user may read that link (a
 * command exec'd in is a child of its join process outside until that ends).
 */
function processesOf(root: number, pidNs: number | undefined): number[] {
  const children = new Map<number, number[]>();
  const inNs = new Set<number>();
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, 'latin1');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      const list = children.get(ppid) ?? [];
      list.push(Number(d));
      children.set(ppid, list);
      if (pidNs !== undefined && readlinkSync(`/proc/${d}/ns/pid`) === `pid:[${pidNs}]`) inNs.add(Number(d));
    } catch {
      /* gone meanwhile, or not this user's to inspect */
    }
  }
  const out = new Set<number>();
  const queue = [root, ...inNs];
  while (queue.length) {
    const pid = queue.shift()!;
    if (out.has(pid)) continue;
    out.add(pid);
    queue.push(...(children.get(pid) ?? []));
  }
  return [...out];
}

const readNumber = (path: string, key?: string): number | undefined => {
  try {
    const text = readFileSync(path, 'utf8');
    if (!key) return Number(text.trim());
    const m = new RegExp(`^${key} (\\d+)$`, 'm').exec(text);
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
};

/** The cgroup's CPU (ms) and memory charge (bytes), v1 or v2. */
function cgroupUsage(e: SandboxEntry): LiveUsage['cgroup'] {
  if (!e.cgroup) return undefined;
  let cpuMs: number | undefined;
  let memoryBytes: number | undefined;
  for (const dir of e.cgroup.dirs) {
    const v1cpu = readNumber(join(dir, 'cpuacct.usage'));
    if (v1cpu !== undefined && !Number.isNaN(v1cpu)) cpuMs = v1cpu / 1e6;
    const v2cpu = readNumber(join(dir, 'cpu.stat'), 'usage_usec');
    if (v2cpu !== undefined) cpuMs = v2cpu / 1e3;
    const mem = readNumber(join(dir, 'memory.usage_in_bytes')) ?? readNumber(join(dir, 'memory.current'));
    if (mem !== undefined && !Number.isNaN(mem)) memoryBytes = mem;
  }
  return { ...(cpuMs !== undefined ? { cpuMs } : {}), ...(memoryBytes !== undefined ? { memoryBytes } : {}) };
}

async function usageOf(e: SandboxEntry): Promise<LiveUsage> {
  const pids = e.init ? processesOf(e.init.pid, e.namespaces?.pid) : [];
  const stats = await Promise.allSettled(pids.map((pid) => pidusage(pid)));
  let cpuMs = 0;
  let memoryBytes = 0;
  let processes = 0;
  for (const s of stats)
    if (s.status === 'fulfilled') {
      cpuMs += s.value.ctime;
      memoryBytes += s.value.memory;
      processes++;
    }
  const cgroup = cgroupUsage(e);
  return { cpuMs, memoryBytes, processes, ...(cgroup ? { cgroup } : {}) };
}

async function describe(e: SandboxEntry): Promise<LiveSandbox> {
  return {
    name: e.name,
    pid: e.init?.pid ?? 0,
    helperPid: e.helper?.pid ?? 0,
    payloadPid: e.payloadPid,
    state: e.state,
    startedAt: e.startedAt,
    ageMs: Date.now() - Date.parse(e.startedAt),
    command: e.command,
    detached: e.detached,
    namespaces: e.namespaces ?? {},
    usage: await usageOf(e),
    limits: e.limits,
    ...(e.cgroup ? { cgroup: { version: e.cgroup.version, dirs: e.cgroup.dirs } } : {}),
    hostIds: { uid: e.hostIds.uid, gid: e.hostIds.gid },
  };
}

/** Every live named sandbox of the calling user, with live usage (another user's never appear: the registry is per user). */
export async function listSandboxes(): Promise<LiveSandbox[]> {
  const entries = listEntries();
  try {
    return await Promise.all(entries.map(describe));
  } finally {
    pidusage.clear();
  }
}

/** One live named sandbox, or undefined. */
export async function inspectSandbox(name: string): Promise<LiveSandbox | undefined> {
  const e = findSandbox(checkSandboxName(name));
  if (!e) return undefined;
  try {
    return await describe(e);
  } finally {
    pidusage.clear();
  }
}
