// PLACEHOLDER until the shared parser lands: the cgroup mount points from /proc/self/mountinfo.
import { readFileSync } from 'node:fs';

export interface MountEntry { mountPoint: string; fsType: string; superOptions: string[] }

let cached: MountEntry[] | undefined;
export function readMountinfo(): MountEntry[] {
  if (cached) return cached;
  cached = [];
  try {
    for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
      const [left, right] = line.split(' - ');
      if (!left || !right) continue;
      const [fsType, , superOpts] = right.split(' ');
      cached.push({ mountPoint: left.split(' ')[4]!, fsType: fsType!, superOptions: (superOpts ?? '').split(',') });
    }
  } catch {
    /* none */
  }
  return cached;
}
export const cgroup2MountPoint = (entries: readonly MountEntry[]): string | null => entries.find((e) => e.fsType === 'cgroup2')?.mountPoint ?? null;
export function cgroupV1Controllers(entries: readonly MountEntry[]): Map<string, string> {
  const m = new Map<string, string>();
  for (const e of entries) if (e.fsType === 'cgroup') for (const c of e.superOptions) if (!m.has(c)) m.set(c, e.mountPoint);
  return m;
}
