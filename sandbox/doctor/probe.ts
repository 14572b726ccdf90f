// Reads the facts `cubicle doctor` diagnoses about the host's state. Each probe is small, synchronous and
// independent; a probe that fails records its error as a fact instead of throwing. The sandbox runs that
// complete the picture are in probe-run.ts, so that the supervisor's error path can use these without
// importing the runner that imports it.
import { existsSync, readFileSync, statSync } from 'node:fs';
import { release } from 'node:os';
import { cgroup2MountPoint, cgroupV1Controllers, readMountinfo, type MountinfoEntry } from '../host/mountinfo.js';
import { cgroupV1Available, v2Placement } from '../cgroup/index.js';
import { ownCgroup, userManagerBus } from '../cgroup/delegation.js';
import { libseccompStatus } from '../seccomp/libseccomp.js';
import {
  NS_KINDS,
  type CgroupFacts,
  type UserCgroupFacts,
  type ConfinementFacts,
  type Fact,
  type KernelFacts,
  type LibseccompFacts,
  type MountFacts,
  type NsKind,
  type SysctlFacts,
  type SysctlValue,
} from './facts.js';

export type * from './facts.js';

const errorOf = (e: unknown): { ok: false; error: string; code?: string } => {
  const err = e as NodeJS.ErrnoException;
  const error = err instanceof Error ? err.message : String(e);
  return typeof err?.code === 'string' ? { ok: false, error, code: err.code } : { ok: false, error };
};

/** Runs a probe, turning a throw into an error fact. */
export function attempt<T>(probe: () => T): Fact<T> {
  try {
    return { ok: true, value: probe() };
  } catch (e) {
    return errorOf(e);
  }
}

/** Async form of attempt(). */
export async function attemptAsync<T>(probe: () => Promise<T>): Promise<Fact<T>> {
  try {
    return { ok: true, value: await probe() };
  } catch (e) {
    return errorOf(e);
  }
}

/** A text file's content, or null when it does not exist. */
function readIfExists(path: string): string | null {
  try {
    return readFileSync(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw e;
  }
}

/** Parses os.release()-style text: '6.8.0-45-generic' -> 6.8. */
export function parseKernelRelease(rel: string): KernelFacts {
  const m = /^(\d+)\.(\d+)/.exec(rel);
  if (!m) throw new Error(`cannot parse the kernel release "${rel}"`);
  return { release: rel, major: Number(m[1]), minor: Number(m[2]) };
}

export function probeKernel(): Fact<KernelFacts> {
  return attempt(() => parseKernelRelease(release()));
}

export function probeEuid(): Fact<number> {
  return attempt(() => {
    if (typeof process.geteuid !== 'function') throw new Error('process.geteuid is not available on this platform');
    return process.geteuid();
  });
}

/** A numeric sysctl under /proc/sys; null when this kernel does not have it. */
export function probeSysctl(path: string): Fact<SysctlValue> {
  return attempt(() => {
    const text = readIfExists(path);
    if (text === null) return null;
    const n = Number(text.trim());
    if (!Number.isInteger(n)) throw new Error(`${path} holds "${text.trim()}", not an integer`);
    return n;
  });
}

export function probeSysctls(): SysctlFacts {
  const maxNamespaces = Object.fromEntries(
    NS_KINDS.map((k) => [k, probeSysctl(`/proc/sys/user/max_${k}_namespaces`)]),
  ) as SysctlFacts['maxNamespaces'];
  return {
    unprivilegedUsernsClone: probeSysctl('/proc/sys/kernel/unprivileged_userns_clone'),
    apparmorRestrictUnprivilegedUserns: probeSysctl('/proc/sys/kernel/apparmor_restrict_unprivileged_userns'),
    maxNamespaces,
  };
}

/** The namespaces this kernel supports, by the inode of /proc/self/ns/<kind>. */
export function probeHostNamespaces(): Fact<Partial<Record<NsKind, number>>> {
  return attempt(() => {
    const out: Partial<Record<NsKind, number>> = {};
    for (const k of NS_KINDS) {
      try {
        out[k] = statSync(`/proc/self/ns/${k}`).ino;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
      }
    }
    return out;
  });
}

/** A numeric `Key:` line of /proc/self/status. */
export function statusField(status: string, key: string): number | null {
  const m = new RegExp(`^${key}:\\s*(\\d+)`, 'm').exec(status);
  return m ? Number(m[1]) : null;
}

export function probeConfinement(): Fact<ConfinementFacts> {
  return attempt(() => {
    const status = readFileSync('/proc/self/status', 'utf8');
    const enabled = readIfExists('/sys/module/apparmor/parameters/enabled');
    const apparmorEnabled = enabled === null ? null : enabled.trim().toUpperCase().startsWith('Y');
    let apparmorLabel: string | null = null;
    if (apparmorEnabled) {
      // The AppArmor-specific file exists since 5.8; before, attr/current is AppArmor's when it is the major LSM.
      const label = attempt(() => readIfExists('/proc/self/attr/apparmor/current') ?? readIfExists('/proc/self/attr/current'));
      if (label.ok && label.value !== null) apparmorLabel = label.value.replace(/\0/g, '').trim() || null;
    }
    return {
      dockerenv: existsSync('/.dockerenv'),
      containerenv: existsSync('/run/.containerenv'),
      seccompMode: statusField(status, 'Seccomp'),
      seccompFilters: statusField(status, 'Seccomp_filters'),
      apparmorEnabled,
      apparmorLabel,
    };
  });
}

/** The facts about / and /proc in a parsed mount table. */
export function mountFacts(entries: readonly MountinfoEntry[]): MountFacts {
  let rootFsType: string | null = null;
  const procSubmounts: string[] = [];
  for (const { mountPoint, fsType } of entries) {
    if (mountPoint === '/')
      rootFsType = fsType; // the last one at / is the visible one
    // binfmt_misc sits on an always-empty procfs directory, which the kernel accepts under a fresh /proc.
    else if (mountPoint.startsWith('/proc/') && fsType !== 'binfmt_misc' && mountPoint !== '/proc/sys/fs/binfmt_misc')
      procSubmounts.push(mountPoint);
  }
  return { rootFsType, procSubmounts };
}

export function probeMounts(): Fact<MountFacts> {
  return attempt(() => mountFacts(readMountinfo()));
}

/**
 * Loads libseccomp the way seccomp policies do (sandbox/seccomp/libseccomp.ts, so CUBICLE_LIBSECCOMP applies and
 * the handle is the one later policies use) and reads its version.
 */
export function probeLibseccomp(): Fact<LibseccompFacts> {
  const s = libseccompStatus();
  if (s.ok) return { ok: true, value: { library: s.library, major: s.major, minor: s.minor, micro: s.micro } };
  if (s.reason === 'koffi') return { ok: false, error: `the koffi FFI module does not load: ${s.error}`, code: 'KOFFI' };
  return { ok: false, error: `${s.library} cannot be loaded: ${s.error}`, code: 'MISSING' };
}

/** The cgroup v1 controllers cubicle uses for a run. */
const V1_RUN_CONTROLLERS = ['memory', 'pids', 'cpuacct'];

/** Which cgroups a run would get (asking the limits code itself, without asking systemd for anything), and the
 *  mounts and the unprivileged user's surroundings behind that answer. */
export function probeCgroups(): Fact<CgroupFacts> {
  return attempt(() => {
    const table = readMountinfo();
    const v2Mount = cgroup2MountPoint(table);
    const controllers =
      v2Mount === null ? null : attempt(() => readFileSync(`${v2Mount}/cgroup.controllers`, 'utf8').trim().split(/\s+/).filter(Boolean));
    const at = v2Placement(undefined, true);
    const facts: CgroupFacts = {
      v1: cgroupV1Available(),
      v2: 'reason' in at ? at : at.base,
      v2Mount,
      v2Controllers: controllers?.ok ? controllers.value : null,
      v1Controllers: [...cgroupV1Controllers(table, V1_RUN_CONTROLLERS).keys()].sort(),
    };
    if (!('reason' in at) && at.source !== 'cgroup-parent') facts.v2Source = at.source;
    const user = probeCgroupUser(v2Mount);
    if (user) facts.user = user;
    return facts;
  });
}

/** The unprivileged user the doctor speaks for: the caller itself, or the user who ran sudo; undefined for root alone. */
function probeCgroupUser(v2Mount: string | null): UserCgroupFacts | undefined {
  const euid = process.geteuid?.() ?? -1;
  const sudo = Number(process.env.SUDO_UID);
  const uid = euid !== 0 ? euid : Number.isInteger(sudo) && sudo > 0 ? sudo : undefined;
  if (uid === undefined) return undefined;
  const env = euid !== 0 ? process.env : { PATH: process.env.PATH ?? '/usr/bin:/bin', XDG_RUNTIME_DIR: `/run/user/${uid}` };
  const bus = userManagerBus(env, uid);
  const user: UserCgroupFacts = { uid, bus: 'bus' in bus ? bus.bus : null };
  const name = euid !== 0 ? process.env.USER : process.env.SUDO_USER;
  if (name) user.name = name;
  const own = euid !== 0 && v2Mount ? ownCgroup(v2Mount) : undefined;
  if (own) {
    const c = attempt(() => readFileSync(`${own}/cgroup.controllers`, 'utf8').trim().split(/\s+/).filter(Boolean));
    user.own = { path: own, controllers: c.ok ? c.value : [] };
  }
  return user;
}
