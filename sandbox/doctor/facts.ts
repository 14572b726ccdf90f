// What `cubicle doctor` knows about a host: plain data, gathered by probe.ts and judged by diagnose.ts.
import type { SetupFailure, Verdict } from '../types.js';

/** One probed fact: its value, or why the probe could not get it (a probe never throws). */
export type Fact<T> = { ok: true; value: T } | { ok: false; error: string; code?: string };

/** The namespace kinds cubicle creates, plus user (whose limit matters most). */
export const NS_KINDS = ['user', 'mnt', 'pid', 'net', 'uts', 'ipc', 'cgroup'] as const;
export type NsKind = (typeof NS_KINDS)[number];

export interface KernelFacts {
  /** os.release(), e.g. '6.8.0-45-generic'. */
  release: string;
  major: number;
  minor: number;
}

/** A sysctl's numeric value; null when the file does not exist on this kernel. */
export type SysctlValue = number | null;

export interface SysctlFacts {
  /** kernel.unprivileged_userns_clone (Debian/Ubuntu patch; absent on mainline kernels). */
  unprivilegedUsernsClone: Fact<SysctlValue>;
  /** kernel.apparmor_restrict_unprivileged_userns (Ubuntu 23.10+). */
  apparmorRestrictUnprivilegedUserns: Fact<SysctlValue>;
  /** user.max_<kind>_namespaces. */
  maxNamespaces: Record<NsKind, Fact<SysctlValue>>;
}

export interface ConfinementFacts {
  /** /.dockerenv exists. */
  dockerenv: boolean;
  /** /run/.containerenv exists (Podman). */
  containerenv: boolean;
  /** `Seccomp:` of /proc/self/status: 0 none, 1 strict, 2 filter (e.g. Docker's default profile); null if absent. */
  seccompMode: number | null;
  /** `Seccomp_filters:` of /proc/self/status; null if absent. */
  seccompFilters: number | null;
  /** /sys/module/apparmor/parameters/enabled is Y; null when AppArmor is not built in. */
  apparmorEnabled: boolean | null;
  /** This process's AppArmor label, e.g. 'docker-default (enforce)' or 'unconfined'; null without AppArmor. */
  apparmorLabel: string | null;
}

export interface MountFacts {
  /** Filesystem type of the mount at /, e.g. 'overlay', 'ext4', or 'rootfs' (initramfs, where pivot_root is refused). */
  rootFsType: string | null;
  /** Mounts on paths below /proc (Docker/Podman mask /proc/kcore etc. this way), except the harmless binfmt_misc. */
  procSubmounts: string[];
}

export interface LibseccompFacts {
  /** The library that was loaded (libseccomp.so.2, or what CUBICLE_LIBSECCOMP names). */
  library: string;
  major: number;
  minor: number;
  micro: number;
}

/** The cgroup choices the limits code makes for a run on this host, and the mounts behind them. */
export interface CgroupFacts {
  /** Whether runs get cgroup v1 groups (memory, pids, cpuacct): true, or why not (the limits code's own answer). */
  v1: true | string;
  /** Runs without cgroupParent: the cgroup v2 directory their groups go under, or why they get none. */
  v2: string | { reason: string };
  /** Where the cgroup2 hierarchy is mounted; null when it is not. */
  v2Mount: string | null;
  /** cgroup.controllers at that mount (what groups below it can have); null when unknown. */
  v2Controllers: string[] | null;
  /** Which of memory, pids and cpuacct are bound to a mounted cgroup v1 hierarchy (and so are not in v2). */
  v1Controllers: string[];
  /** How `v2` was found: root's own tree, the delegated subtree the caller sits in, or a scope its systemd user
   *  manager would give it (predicted: the doctor asks nothing of systemd). Absent in older fact sets. */
  v2Source?: 'root' | 'own-subtree' | 'systemd-scope';
  /** The unprivileged user the doctor speaks for: the caller, or (when the caller is root) the user who ran sudo. */
  user?: UserCgroupFacts;
}

/** The cgroup v2 surroundings of an unprivileged user. */
export interface UserCgroupFacts {
  uid: number;
  name?: string;
  /** The user's systemd user manager bus, when one runs (its socket exists); null when none does. */
  bus: string | null;
  /** The caller's own v2 group and its controllers (only when the caller is that user). */
  own?: { path: string; controllers: string[] };
}

/** What one end-to-end `runSandboxed(['/bin/true'])` gave. */
export interface SandboxRunFacts {
  verdict: Verdict;
  exitCode: number | null;
  signal: string | null;
  setupFailure?: SetupFailure;
  setupMs?: number;
  /** Namespace inodes of the sandbox's init (0 when the helper could not read them). */
  namespaces?: Record<string, number>;
  /** The first part of stderr, for runs that did not end 'ok'. */
  stderr?: string;
}

export interface SandboxProbe {
  /** Set for the run made as an unprivileged host user (the caller being root). */
  runAs?: { uid: number; gid: number };
  run: Fact<SandboxRunFacts>;
}

/** What one warm pool of size 1 did: how long its sandbox took to be ready, and how /bin/true ran in it. */
export interface PoolFacts {
  /** From createPool() to a sandbox waiting; undefined when none became ready (then `failure` says why). */
  readyMs?: number;
  failure?: string;
  use?: 'hit' | 'miss';
  poolMiss?: string;
  verdict?: Verdict;
  runMs?: number;
}

export interface HostFacts {
  kernel: Fact<KernelFacts>;
  euid: Fact<number>;
  /** Inode of /proc/self/ns/<kind> for each kind this kernel supports (missing key = not built in). */
  hostNamespaces: Fact<Partial<Record<NsKind, number>>>;
  sysctl: SysctlFacts;
  confinement: Fact<ConfinementFacts>;
  mounts: Fact<MountFacts>;
  libseccomp: Fact<LibseccompFacts>;
  /** CUBICLE_LIBSECCOMP when it was set: the library loaded instead of libseccomp.so.2. */
  libseccompOverride?: string;
  /** Which cgroups runs can get for their limits. Optional: older fact sets lack it. */
  cgroups?: Fact<CgroupFacts>;
  /** For a rootless caller: the subordinate ids its sandboxes get host uids of their own from, or why none. */
  subids?: Fact<{ uid: { start: number; count: number }; newuidmap: string } | { reason: string }>;
  /** What egress (`network: 'egress'`) and published ports lack for the caller, with fixes. Optional: older fact sets lack it. */
  egress?: { problems: { detail: string; fix: string }[] };
  /** Where the C helper (the process that creates the namespaces) lives. */
  helperPath: string;
  /** The sandbox run as the caller. */
  sandbox: SandboxProbe;
  /** When the caller is root: the same run with runAs an unprivileged user (the rootless path). */
  sandboxUnprivileged?: SandboxProbe;
  /** A warm pool's run of /bin/true. Optional: older fact sets lack it. */
  pool?: Fact<PoolFacts>;
}
