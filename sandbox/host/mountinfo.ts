// The mount table of this process (/proc/self/mountinfo): one parser, one cached read, and the lookups
// the rest of cubicle needs (where the cgroup hierarchies are mounted).
import { readFileSync } from 'node:fs';

/** One line of mountinfo (see proc(5)), with the kernel's octal escapes undone. */
export interface MountinfoEntry {
  /** Unique id of the mount (may be reused after an unmount). */
  mountId: number;
  /** Id of the parent mount (its own id for the root of the mount tree). */
  parentId: number;
  /** st_dev of the filesystem, 'major:minor'. */
  device: string;
  /** The directory of the filesystem that forms the root of this mount (not '/' for a bind of a subtree). */
  root: string;
  /** Where it is mounted, relative to this process's root. */
  mountPoint: string;
  /** Per-mount options, e.g. ['rw', 'nosuid', 'relatime']. */
  options: string[];
  /** Propagation tags such as 'shared:1', 'master:2', 'unbindable'; often empty. */
  optionalFields: string[];
  /** Filesystem type, e.g. 'ext4', 'cgroup2', 'fuse.sshfs'. */
  fsType: string;
  /** Filesystem-specific source, e.g. '/dev/sda1', 'tmpfs', 'none'. */
  source: string;
  /** Per-superblock options, e.g. ['rw', 'memory'] for a cgroup v1 memory hierarchy. */
  superOptions: string[];
}

export const MOUNTINFO_PATH = '/proc/self/mountinfo';

/** cgroup v1 controller names, as they appear in a v1 hierarchy's super options. */
export const CGROUP_V1_CONTROLLERS: readonly string[] = [
  'blkio',
  'cpu',
  'cpuacct',
  'cpuset',
  'devices',
  'freezer',
  'hugetlb',
  'memory',
  'misc',
  'net_cls',
  'net_prio',
  'perf_event',
  'pids',
  'rdma',
];

/** Undoes the kernel's octal escapes in mountinfo fields (\040 space, \011 tab, \012 newline, \134 backslash). */
export const unescapeMountinfo = (s: string): string =>
  s.includes('\\') ? s.replace(/\\([0-3][0-7]{2})/g, (_, octal: string) => String.fromCharCode(parseInt(octal, 8))) : s;

const splitOptions = (s: string): string[] => (s === '' ? [] : s.split(',').map(unescapeMountinfo));

const isId = (s: string | undefined): s is string => s !== undefined && /^\d+$/.test(s);

/** Parses one mountinfo line; null when it does not have the expected shape. */
export function parseMountinfoLine(line: string): MountinfoEntry | null {
  // Fields are separated by single spaces (spaces inside fields are escaped); a lone '-' ends the optional fields.
  const fields = line.split(' ');
  const sep = fields.indexOf('-', 6);
  if (sep < 0 || fields.length < sep + 4) return null;
  const [mountId, parentId, device, root, mountPoint, options] = fields;
  if (!isId(mountId) || !isId(parentId) || !device || !root || !mountPoint || options === undefined) return null;
  if (!/^\d+:\d+$/.test(device)) return null;
  const [fsType, source, superOptions] = fields.slice(sep + 1);
  if (!fsType || source === undefined || superOptions === undefined) return null;
  return {
    mountId: Number(mountId),
    parentId: Number(parentId),
    device,
    root: unescapeMountinfo(root),
    mountPoint: unescapeMountinfo(mountPoint),
    options: splitOptions(options),
    optionalFields: fields.slice(6, sep).filter((f) => f !== ''),
    fsType: unescapeMountinfo(fsType),
    source: unescapeMountinfo(source),
    superOptions: splitOptions(superOptions),
  };
}

/** Parses mountinfo text in order; lines that do not parse are skipped, never thrown on. */
export function parseMountinfo(text: string): MountinfoEntry[] {
  const entries: MountinfoEntry[] = [];
  for (const line of text.split('\n')) {
    if (!line) continue;
    const e = parseMountinfoLine(line);
    if (e) entries.push(e);
  }
  return entries;
}

let cached: readonly MountinfoEntry[] | undefined;

/**
 * This process's mount table, read once and then served from memory (cubicle looks up long-lived mounts such
 * as the cgroup hierarchies). Throws when the file cannot be read; a failed read is not cached.
 * `refresh` reads the file again and replaces the cached table.
 */
export function readMountinfo(opts: { refresh?: boolean } = {}): readonly MountinfoEntry[] {
  if (cached && !opts.refresh) return cached;
  cached = Object.freeze(parseMountinfo(readFileSync(MOUNTINFO_PATH, 'utf8')));
  return cached;
}

/** Where the cgroup2 (unified) hierarchy is mounted: the first cgroup2 mount, or null when there is none. */
export function cgroup2MountPoint(entries: readonly MountinfoEntry[]): string | null {
  return entries.find((e) => e.fsType === 'cgroup2')?.mountPoint ?? null;
}

/**
 * cgroup v1 controller name -> mount point of the hierarchy it is bound to (a co-mounted hierarchy such as
 * cpu,cpuacct gives both names the same point). When a controller is mounted more than once, the last mount
 * in the table wins. `only` restricts the result to these controllers.
 */
export function cgroupV1Controllers(entries: readonly MountinfoEntry[], only?: readonly string[]): Map<string, string> {
  const wanted = only ?? CGROUP_V1_CONTROLLERS;
  const out = new Map<string, string>();
  for (const e of entries) {
    if (e.fsType !== 'cgroup') continue;
    for (const opt of e.superOptions) if (wanted.includes(opt)) out.set(opt, e.mountPoint);
  }
  return out;
}
