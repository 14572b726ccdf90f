// The host user's per-user kernel limits, read once: the rlimits this process carries into every sandbox
// (/proc/self/limits) and the per-user-namespace counter caps of the namespace it runs in (/proc/sys/user).
import { readFileSync } from 'node:fs';

export interface RlimitPair {
  soft: number;
  hard: number;
}

/** Rows of /proc/self/limits this module reads, by the name the kernel prints. */
const ROWS = {
  nproc: 'Max processes',
  nofile: 'Max open files',
  sigpending: 'Max pending signals',
  msgqueue: 'Max msgqueue size',
} as const;

export type HostRlimit = keyof typeof ROWS;

let rlimits: Partial<Record<HostRlimit, RlimitPair>> | undefined;

/** Parses /proc/self/limits text; "unlimited" is Infinity. Exported for tests. */
export function parseLimits(text: string): Partial<Record<HostRlimit, RlimitPair>> {
  const out: Partial<Record<HostRlimit, RlimitPair>> = {};
  const num = (s: string | undefined): number => (s === 'unlimited' ? Infinity : Number(s));
  for (const line of text.split('\n')) {
    for (const [key, row] of Object.entries(ROWS) as [HostRlimit, string][]) {
      if (!line.startsWith(row)) continue;
      const [soft, hard] = line.slice(row.length).trim().split(/\s+/);
      const pair = { soft: num(soft), hard: num(hard) };
      if (!Number.isNaN(pair.soft) && !Number.isNaN(pair.hard)) out[key] = pair;
    }
  }
  return out;
}

/** This process's rlimit (inherited by the helper, so the sandbox's ceiling), or undefined when unreadable. */
export function hostRlimit(name: HostRlimit): RlimitPair | undefined {
  if (!rlimits) {
    try {
      rlimits = parseLimits(readFileSync('/proc/self/limits', 'utf8'));
    } catch {
      rlimits = {};
    }
  }
  return rlimits[name];
}

const ucountCache = new Map<string, number | null>();

/** The per-user cap of a kernel counter in this process's user namespace (/proc/sys/user/max_NAME), or null. */
export function hostUcountMax(name: string): number | null {
  let v = ucountCache.get(name);
  if (v === undefined) {
    try {
      v = Number(readFileSync(`/proc/sys/user/max_${name}`, 'utf8').trim());
      if (!Number.isFinite(v)) v = null;
    } catch {
      v = null;
    }
    ucountCache.set(name, v);
  }
  return v;
}
