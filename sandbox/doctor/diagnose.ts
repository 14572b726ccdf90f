// Judges the probed facts of a host: one check per requirement, each naming the exact fix when not ok.
// Pure: everything it knows comes in through HostFacts.
import { describeFailure } from '../outcome/render.js';
import type { SetupFailure } from '../types.js';
import {
  NS_KINDS,
  type CgroupFacts,
  type Fact,
  type HostFacts,
  type NsKind,
  type SandboxProbe,
  type SysctlValue,
  type UserCgroupFacts,
} from './facts.js';

export type DoctorStatus = 'ok' | 'warn' | 'fail' | 'skip';

export interface DoctorCheck {
  id: string;
  title: string;
  status: DoctorStatus;
  detail: string;
  /** What to run to fix it: one command (or `# comment`) per line. */
  fix?: string;
}

/** Oldest kernel cubicle supports, and the one that brings mount_setattr (recursive read-only binds). */
export const MIN_KERNEL: readonly [number, number] = [5, 4];
export const MOUNT_SETATTR_KERNEL: readonly [number, number] = [5, 12];
/** cgroup v2 run groups need clone3 with CLONE_INTO_CGROUP. */
export const CGROUP_V2_KERNEL: readonly [number, number] = [5, 7];
/** Below this many allowed namespaces of a kind, concurrent sandboxes run out. */
export const SMALL_NS_LIMIT = 64;
export const SUGGESTED_NS_LIMIT = 15000;
export const SYSCTL_CONF = '/etc/sysctl.d/99-cubicle.conf';

const KCONFIG: Record<NsKind, string> = {
  user: 'CONFIG_USER_NS',
  mnt: 'CONFIG_NAMESPACES',
  pid: 'CONFIG_PID_NS',
  net: 'CONFIG_NET_NS',
  uts: 'CONFIG_UTS_NS',
  ipc: 'CONFIG_IPC_NS',
  cgroup: 'CONFIG_CGROUPS',
};
const NS_SYSCALLS = new Set(['clone', 'clone3', 'unshare', 'setns']);
const MOUNT_SYSCALLS = new Set(['mount', 'umount2', 'pivot_root', 'mount_setattr', 'open_tree', 'move_mount']);

/** `sysctl -w` now, and the line that keeps it across reboots. */
const sysctlFix = (key: string, value: number | string): string[] => [
  `sudo sysctl -w ${key}=${value}`,
  `echo '${key}=${value}' | sudo tee -a ${SYSCTL_CONF}   # keep it after a reboot`,
];

/** The facts that decide whether this host lets cubicle create its namespaces (a subset of HostFacts). */
export type NamespaceFacts = Pick<
  HostFacts,
  'euid' | 'hostNamespaces' | 'sysctl' | 'confinement' | 'helperPath' | 'sandbox' | 'sandboxUnprivileged'
>;

const versionBelow = (major: number, minor: number, [wantMajor, wantMinor]: readonly [number, number]): boolean =>
  major < wantMajor || (major === wantMajor && minor < wantMinor);

const value = <T>(f: Fact<T> | undefined): T | undefined => (f?.ok ? f.value : undefined);

/** The sandbox probes that were made, the caller's first. */
const probes = (f: NamespaceFacts): SandboxProbe[] => (f.sandboxUnprivileged ? [f.sandbox, f.sandboxUnprivileged] : [f.sandbox]);

const failureOf = (p: SandboxProbe | undefined): SetupFailure | undefined => value(p?.run)?.setupFailure;
const runOk = (p: SandboxProbe | undefined): boolean => value(p?.run)?.verdict === 'ok';

/** The probe that went through the unprivileged path: the runAs one, or the caller's when not root. */
function unprivilegedProbe(f: NamespaceFacts): SandboxProbe | undefined {
  if (f.sandboxUnprivileged) return f.sandboxUnprivileged;
  const euid = value(f.euid);
  return euid !== undefined && euid !== 0 ? f.sandbox : undefined;
}

const isRoot = (f: NamespaceFacts): boolean => value(f.euid) === 0;

const apparmorRestricts = (f: NamespaceFacts): boolean =>
  value(f.sysctl.apparmorRestrictUnprivilegedUserns) === 1 && value(f.confinement)?.apparmorEnabled !== false;

/** Whether the unprivileged probe's failure is explained by a userns sysctl (then it is not seccomp's doing). */
function explainedByUsernsPolicy(f: NamespaceFacts, p: SandboxProbe): boolean {
  if (p !== unprivilegedProbe(f)) return false;
  return value(f.sysctl.unprivilegedUsernsClone) === 0 || apparmorRestricts(f);
}

const isProcFailure = (sf: SetupFailure | undefined): boolean =>
  !!sf && (sf.op === 'proc' || (sf.step?.startsWith('proc ') ?? false)) && sf.syscall === 'mount' && sf.errnoName === 'EPERM';

const isSeccompLike = (sf: SetupFailure | undefined): boolean =>
  !!sf &&
  sf.syscall !== undefined &&
  (NS_SYSCALLS.has(sf.syscall) || MOUNT_SYSCALLS.has(sf.syscall)) &&
  (sf.errnoName === 'EPERM' || sf.errnoName === 'ENOSYS') &&
  !isProcFailure(sf);

const isApparmorDenial = (sf: SetupFailure | undefined): boolean =>
  !!sf && sf.syscall !== undefined && MOUNT_SYSCALLS.has(sf.syscall) && sf.errnoName === 'EACCES';

const skip = (id: string, title: string, what: string, f: { error: string }): DoctorCheck => ({
  id,
  title,
  status: 'skip',
  detail: `could not read ${what}: ${f.error}`,
});

function checkKernel(f: HostFacts): DoctorCheck {
  const id = 'kernel';
  const title = 'kernel version';
  if (!f.kernel.ok) return skip(id, title, 'the kernel release', f.kernel);
  const { release, major, minor } = f.kernel.value;
  if (versionBelow(major, minor, MIN_KERNEL))
    return {
      id,
      title,
      status: 'fail',
      detail: `${release} is older than ${MIN_KERNEL.join('.')}, the oldest kernel cubicle supports`,
      fix: [
        `# upgrade to a kernel >= ${MIN_KERNEL.join('.')}, then reboot:`,
        'sudo apt-get update && sudo apt-get install linux-image-generic   # Ubuntu (Debian: linux-image-amd64)',
        'sudo dnf upgrade kernel   # Fedora/RHEL',
      ].join('\n'),
    };
  if (versionBelow(major, minor, MOUNT_SETATTR_KERNEL))
    return {
      id,
      title,
      status: 'warn',
      detail:
        `${release} has no mount_setattr (added in ${MOUNT_SETATTR_KERNEL.join('.')}): ` +
        'read-only binds fall back to remounting the top mount only, so mounts below a read-only bind stay writable',
      fix:
        `# upgrade to a kernel >= ${MOUNT_SETATTR_KERNEL.join('.')} for recursive read-only binds, ` +
        'or avoid read-only binds of trees that contain other mounts',
    };
  return { id, title, status: 'ok', detail: `${release} (>= ${MOUNT_SETATTR_KERNEL.join('.')}: mount_setattr available)` };
}

function checkKernelNamespaces(f: NamespaceFacts): DoctorCheck {
  const id = 'kernel-namespaces';
  const title = 'namespace support';
  if (!f.hostNamespaces.ok) return skip(id, title, '/proc/self/ns', f.hostNamespaces);
  const missing = NS_KINDS.filter((k) => f.hostNamespaces.ok && f.hostNamespaces.value[k] === undefined);
  if (missing.length)
    return {
      id,
      title,
      status: 'fail',
      detail: `this kernel was built without ${missing.join(', ')} namespaces (/proc/self/ns/${missing[0]} is missing)`,
      fix: `# boot a kernel built with ${missing.map((k) => `${KCONFIG[k]}=y`).join(' ')} (every mainstream distribution kernel has them)`,
    };
  return { id, title, status: 'ok', detail: `kernel supports ${NS_KINDS.join(', ')} namespaces` };
}

function checkUsernsSysctl(f: NamespaceFacts): DoctorCheck {
  const id = 'userns-sysctl';
  const title = 'unprivileged user namespaces';
  const s = f.sysctl.unprivilegedUsernsClone;
  if (!s.ok) return skip(id, title, 'kernel.unprivileged_userns_clone', s);
  if (s.value === null) return { id, title, status: 'ok', detail: 'enabled (no kernel.unprivileged_userns_clone switch on this kernel)' };
  if (s.value !== 0) return { id, title, status: 'ok', detail: `enabled (kernel.unprivileged_userns_clone = ${s.value})` };
  return {
    id,
    title,
    status: 'fail',
    detail:
      'disabled: kernel.unprivileged_userns_clone = 0, so only root can create user namespaces' +
      `${isRoot(f) ? ' (this root caller can, but runAs and every non-root caller cannot)' : ''}`,
    fix: sysctlFix('kernel.unprivileged_userns_clone', 1).join('\n'),
  };
}

function checkApparmorUserns(f: NamespaceFacts): DoctorCheck {
  const id = 'apparmor-userns';
  const title = 'AppArmor user-namespace restriction';
  const s = f.sysctl.apparmorRestrictUnprivilegedUserns;
  if (!s.ok) return skip(id, title, 'kernel.apparmor_restrict_unprivileged_userns', s);
  if (s.value === null) return { id, title, status: 'ok', detail: 'none (no kernel.apparmor_restrict_unprivileged_userns on this kernel)' };
  if (s.value === 0) return { id, title, status: 'ok', detail: 'off (kernel.apparmor_restrict_unprivileged_userns = 0)' };
  if (value(f.confinement)?.apparmorEnabled === false)
    return { id, title, status: 'ok', detail: `kernel.apparmor_restrict_unprivileged_userns = ${s.value}, but AppArmor is not enabled` };
  const p = unprivilegedProbe(f);
  if (p && runOk(p))
    return {
      id,
      title,
      status: 'ok',
      detail:
        `on (kernel.apparmor_restrict_unprivileged_userns = ${s.value}), ` +
        "but an AppArmor profile lets cubicle's helper create user namespaces",
    };
  const helper = f.helperPath;
  const profile = '/etc/apparmor.d/cubicle-helper';
  return {
    id,
    title,
    status: 'fail',
    detail:
      `on (kernel.apparmor_restrict_unprivileged_userns = ${s.value}, Ubuntu 23.10+): ` +
      'an unprivileged process gets a user namespace without capabilities, so cubicle cannot map ids or mount' +
      `${isRoot(f) ? ' (root is not affected; runAs and non-root callers are)' : ''}`,
    fix: [
      ...sysctlFix('kernel.apparmor_restrict_unprivileged_userns', 0),
      `# or keep the restriction and allow only cubicle's helper (${helper} creates the namespaces, not node):`,
      "printf 'abi <abi/4.0>,\\ninclude <tunables/global>\\n" +
        `profile cubicle-helper ${helper} flags=(unconfined) {\\n  userns,\\n}\\n' | sudo tee ${profile}`,
      `sudo apparmor_parser -r ${profile}`,
    ].join('\n'),
  };
}

function checkNamespaceLimits(f: NamespaceFacts): DoctorCheck {
  const id = 'namespace-limits';
  const title = 'namespace limits';
  const limits = f.sysctl.maxNamespaces;
  const unreadable = NS_KINDS.filter((k) => !limits[k].ok);
  const known = NS_KINDS.flatMap((k): [NsKind, number][] => {
    const v: SysctlValue | undefined = value(limits[k]);
    return v === null || v === undefined ? [] : [[k, v]];
  });
  const zero = known.filter(([, v]) => v === 0);
  const small = known.filter(([, v]) => v > 0 && v < SMALL_NS_LIMIT);
  const exhausted = probes(f).find((p) => failureOf(p)?.errnoName === 'ENOSPC' && NS_SYSCALLS.has(failureOf(p)?.syscall ?? ''));
  // A limit already at or above the suggestion is raised further (doubled), never lowered to it.
  const target = (k: NsKind): number => {
    const current = known.find(([x]) => x === k)?.[1];
    return current !== undefined && current >= SUGGESTED_NS_LIMIT ? current * 2 : SUGGESTED_NS_LIMIT;
  };
  const fixFor = (kinds: NsKind[]): string => kinds.flatMap((k) => sysctlFix(`user.max_${k}_namespaces`, target(k))).join('\n');
  const show = (list: [NsKind, number][]): string => list.map(([k, v]) => `user.max_${k}_namespaces = ${v}`).join(', ');
  if (zero.length)
    return {
      id,
      title,
      status: 'fail',
      detail: `${show(zero)}: no such namespace can be created`,
      fix: fixFor([...zero, ...small].map(([k]) => k)),
    };
  if (exhausted) {
    const kinds = small.length ? small.map(([k]) => k) : (['user'] as NsKind[]);
    return {
      id,
      title,
      status: 'fail',
      detail:
        'the kernel refused a new namespace with ENOSPC: ' +
        `a limit is reached (${show(known.filter(([k]) => kinds.includes(k))) || 'limits unknown'})`,
      fix: `${fixFor(kinds)}\nlsns   # shows which namespaces are in use`,
    };
  }
  if (small.length)
    return {
      id,
      title,
      status: 'warn',
      detail: `${show(small)}: each sandbox needs one of each, so only a few can run at once`,
      fix: fixFor(small.map(([k]) => k)),
    };
  if (unreadable.length === NS_KINDS.length) return skip(id, title, 'user.max_*_namespaces', limits[unreadable[0]!] as { error: string });
  if (!known.length) return { id, title, status: 'ok', detail: 'no per-user namespace limits on this kernel' };
  const user = known.find(([k]) => k === 'user');
  return {
    id,
    title,
    status: 'ok',
    detail:
      `${user ? `user.max_user_namespaces = ${user[1]}` : 'limits'}` +
      `${known.length > 1 ? `; every max_*_namespaces >= ${SMALL_NS_LIMIT}` : ''}`,
  };
}

function checkSeccompFilter(f: NamespaceFacts): DoctorCheck {
  const id = 'seccomp-filter';
  const title = 'seccomp filter on this process';
  if (!f.confinement.ok) return skip(id, title, '/proc/self/status', f.confinement);
  const c = f.confinement.value;
  const inContainer = c.dockerenv || c.containerenv;
  if (c.seccompMode === null) return { id, title, status: 'ok', detail: 'none (this kernel has no seccomp)' };
  if (c.seccompMode === 0)
    return { id, title, status: 'ok', detail: `none (Seccomp: 0)${inContainer ? ', though inside a container' : ''}` };
  const filters = c.seccompFilters !== null ? `, ${c.seccompFilters} filter${c.seccompFilters === 1 ? '' : 's'}` : '';
  const blocked = probes(f).find((p) => isSeccompLike(failureOf(p)));
  const fix = inContainer
    ? [
        'docker run --security-opt seccomp=unconfined ...   # ' +
          `${c.containerenv ? 'podman run takes the same flag' : 'or podman run --security-opt seccomp=unconfined'}`,
        "# or a seccomp profile (Docker's default) that also allows clone, unshare, setns, mount, umount2, pivot_root: " +
          'docker run --security-opt seccomp=/path/to/profile.json ...',
        '# Kubernetes: securityContext.seccompProfile.type: Unconfined',
      ].join('\n')
    : [
        '# a seccomp filter was inherited from whatever started this process, e.g. a systemd unit:',
        '# remove RestrictNamespaces= and the SystemCallFilter= lines that deny @mount/clone/unshare from the unit, ' +
          'then: sudo systemctl daemon-reload && sudo systemctl restart <unit>',
      ].join('\n');
  if (blocked && !explainedByUsernsPolicy(f, blocked)) {
    const sf = failureOf(blocked)!;
    return {
      id,
      title,
      status: 'fail',
      detail:
        `a seccomp filter is active (Seccomp: ${c.seccompMode}${filters}` +
        `${inContainer ? ', inside a container, whose default profile blocks these calls without CAP_SYS_ADMIN' : ''}) ` +
        `and ${sf.syscall} failed with ${sf.errnoName}`,
      fix,
    };
  }
  if (blocked)
    return {
      id,
      title,
      status: 'warn',
      detail:
        `a seccomp filter is active (Seccomp: ${c.seccompMode}${filters}); ` +
        `${failureOf(blocked)!.syscall} failed with ${failureOf(blocked)!.errnoName}, ` +
        'explained by the user-namespace setting above, but the filter may block it too',
      fix,
    };
  if (probes(f).every(runOk))
    return {
      id,
      title,
      status: 'ok',
      detail: `a seccomp filter is active (Seccomp: ${c.seccompMode}${filters}) but allows the namespace and mount calls cubicle needs`,
    };
  return {
    id,
    title,
    status: 'warn',
    detail:
      `a seccomp filter is active (Seccomp: ${c.seccompMode}${filters}); ` +
      'the sandbox failed elsewhere, so whether it blocks namespace creation is unknown',
    fix,
  };
}

function checkApparmorProfile(f: HostFacts): DoctorCheck {
  const id = 'apparmor-profile';
  const title = 'AppArmor confinement';
  if (!f.confinement.ok) return skip(id, title, 'the AppArmor state', f.confinement);
  const c = f.confinement.value;
  if (c.apparmorEnabled !== true) return { id, title, status: 'ok', detail: 'AppArmor is not enabled' };
  const label = c.apparmorLabel;
  if (label === null || label === 'unconfined' || /\((unconfined|complain)\)$/.test(label))
    return {
      id,
      title,
      status: 'ok',
      detail: label && label !== 'unconfined' ? `profile ${label} does not enforce` : 'this process is unconfined',
    };
  const containerProfile = /^(docker-default|containers-default|lxc-container-default)/.test(label);
  const fix = [
    'docker run --security-opt apparmor=unconfined ...   # podman: --security-opt apparmor=unconfined',
    '# or a profile that allows mount, umount and pivot_root for the container',
  ].join('\n');
  const denied = probes(f).find((p) => isApparmorDenial(failureOf(p)));
  if (denied) {
    const sf = failureOf(denied)!;
    return {
      id,
      title,
      status: 'fail',
      detail: `confined by ${label}, and ${sf.syscall} failed with EACCES: the profile denies mounting`,
      fix,
    };
  }
  if (probes(f).every(runOk)) return { id, title, status: 'ok', detail: `confined by ${label}, which allows what cubicle needs` };
  if (containerProfile)
    return {
      id,
      title,
      status: 'warn',
      detail: `confined by ${label}, which denies mount; the sandbox failed before mounting, so this will likely block it next`,
      fix,
    };
  return { id, title, status: 'ok', detail: `confined by ${label}; no failure points at it` };
}

function checkProc(f: HostFacts): DoctorCheck {
  const id = 'proc';
  const title = 'fresh /proc in a user namespace';
  const refused = probes(f).find((p) => isProcFailure(failureOf(p)));
  const submounts = value(f.mounts)?.procSubmounts ?? [];
  const list = submounts.length > 4 ? `${submounts.slice(0, 4).join(', ')} and ${submounts.length - 4} more` : submounts.join(', ');
  const fix = [
    'docker run --security-opt systempaths=unconfined ...',
    'podman run --security-opt unmask=ALL ...',
    '# Kubernetes: securityContext.procMount: Unmasked (with hostUsers: false)',
  ].join('\n');
  const why =
    'the kernel only mounts a fresh proc in a user namespace when no file of the existing /proc is covered by another mount ' +
    '(Docker/Podman mask /proc/kcore and others that way)';
  if (refused)
    return {
      id,
      title,
      status: 'fail',
      detail: `refused (mount proc: EPERM)${submounts.length ? `; /proc has mounts over ${list}` : ''}: ${why}`,
      fix,
    };
  if (probes(f).some(runOk))
    return { id, title, status: 'ok', detail: `mounted${submounts.length ? ` (despite mounts over ${list})` : ''}` };
  if (!f.mounts.ok) return skip(id, title, '/proc/self/mountinfo', f.mounts);
  if (submounts.length) return { id, title, status: 'fail', detail: `will be refused: /proc has mounts over ${list}; ${why}`, fix };
  return { id, title, status: 'ok', detail: 'nothing covers parts of /proc, so the kernel allows it' };
}

function checkPivotRoot(f: HostFacts): DoctorCheck {
  const id = 'pivot-root';
  const title = 'pivot_root';
  const failed = probes(f).find((p) => failureOf(p)?.syscall === 'pivot_root');
  const root = value(f.mounts)?.rootFsType;
  const fix =
    '# pivot_root cannot leave the initramfs: boot with a real root filesystem, ' +
    'or switch_root onto a tmpfs or disk in the init script, or run cubicle inside a container';
  if (root === 'rootfs')
    return {
      id,
      title,
      status: 'fail',
      detail: 'this system runs from the initramfs (/ is rootfs), where the kernel refuses pivot_root (EINVAL)',
      fix,
    };
  if (failed) {
    const sf = failureOf(failed)!;
    return { id, title, status: 'fail', detail: describeFailure(sf), fix: sf.hint };
  }
  if (!f.mounts.ok) return skip(id, title, '/proc/self/mountinfo', f.mounts);
  return { id, title, status: 'ok', detail: `/ is ${root ?? 'a mount'}, not the initramfs` };
}

function checkLibseccomp(f: HostFacts): DoctorCheck {
  const id = 'libseccomp';
  const title = 'libseccomp';
  const l = f.libseccomp;
  const override = f.libseccompOverride;
  if (l.ok)
    return {
      id,
      title,
      status: 'ok',
      detail:
        `${l.value.library} ${l.value.major}.${l.value.minor}.${l.value.micro} loads through koffi` +
        `${override ? ' (named by CUBICLE_LIBSECCOMP)' : ''}`,
    };
  if (l.code === 'KOFFI')
    return {
      id,
      title,
      status: 'fail',
      detail: `${l.error}; it is needed to compile seccomp policies`,
      fix: 'npm rebuild koffi   # in the directory that has cubicle in node_modules',
    };
  return {
    id,
    title,
    status: 'fail',
    detail: `${l.error}; it is needed to compile seccomp policies`,
    fix: [
      ...(override
        ? [
            `# CUBICLE_LIBSECCOMP=${override} names the library to load: ` +
              'point it at an installed libseccomp, or unset it to use libseccomp.so.2',
          ]
        : []),
      'sudo apt-get install libseccomp2   # Debian/Ubuntu',
      'sudo dnf install libseccomp   # Fedora/RHEL',
      'sudo apk add libseccomp   # Alpine',
    ].join('\n'),
  };
}

function sandboxCheck(f: HostFacts, id: string, title: string, p: SandboxProbe): DoctorCheck {
  if (!p.run.ok)
    return {
      id,
      title,
      status: 'fail',
      detail: `runSandboxed threw: ${p.run.error}`,
      fix: /not built/.test(p.run.error)
        ? 'npm run build   # in the cubicle package'
        : 'rerun with NODE_DEBUG=cubicle and report it as a bug',
    };
  const r = p.run.value;
  if (r.verdict === 'ok') {
    const host = value(f.hostNamespaces) ?? {};
    const ns = Object.entries(r.namespaces ?? {}).filter(([, ino]) => ino > 0);
    const shared = ns.filter(([k, ino]) => host[k as NsKind] === ino).map(([k]) => k);
    if (shared.length)
      return {
        id,
        title,
        status: 'fail',
        detail: `/bin/true ran, but shares the host's ${shared.join(', ')} namespace${shared.length > 1 ? 's' : ''}`,
        fix: 'rerun with NODE_DEBUG=cubicle and report it as a bug',
      };
    const setup = r.setupMs !== undefined ? `setup ${r.setupMs.toFixed(1)} ms` : undefined;
    const fresh = ns.length ? `new ${ns.map(([k]) => k).join(', ')} namespaces` : undefined;
    return {
      id,
      title,
      status: 'ok',
      detail: `/bin/true ran in a fresh sandbox${setup || fresh ? ` (${[setup, fresh].filter(Boolean).join('; ')})` : ''}`,
    };
  }
  if (r.setupFailure) {
    const sf = r.setupFailure;
    const cannotExec = p.runAs && sf.stage === 'helper' && /EACCES|permission denied/i.test(sf.message);
    return {
      id,
      title,
      status: 'fail',
      detail: describeFailure(sf),
      fix: cannotExec
        ? `# uid ${p.runAs!.uid} cannot execute ${f.helperPath}: ` +
          'install cubicle where every user can read it (not under /root), or: chmod o+x on each directory above it'
        : sf.hint,
    };
  }
  const how = r.verdict === 'nonzero-exit' ? `exit code ${r.exitCode}` : r.verdict === 'signaled' ? `signal ${r.signal}` : r.verdict;
  return {
    id,
    title,
    status: 'fail',
    detail: `/bin/true did not succeed inside the sandbox (${how})${r.stderr ? `: ${r.stderr.trim().split('\n')[0]}` : ''}`,
    fix: 'rerun with NODE_DEBUG=cubicle; check that /bin/true exists on the host (the sandbox binds /usr, /bin, /lib from it)',
  };
}

function checkSandbox(f: HostFacts): DoctorCheck {
  const euid = value(f.euid);
  const who = euid === undefined ? 'the caller' : euid === 0 ? 'root' : `uid ${euid}`;
  return sandboxCheck(f, 'sandbox', `sandbox as ${who}`, f.sandbox);
}

function checkSandboxUnprivileged(f: HostFacts): DoctorCheck {
  const id = 'sandbox-unprivileged';
  const p = f.sandboxUnprivileged;
  if (!p) {
    const title = 'sandbox as an unprivileged user';
    return {
      id,
      title,
      status: 'skip',
      detail: isRoot(f) ? 'not run' : 'the caller is not root: the run above is already the rootless path',
    };
  }
  return sandboxCheck(f, id, `sandbox as uid ${p.runAs?.uid ?? '?'} (runAs, the rootless path)`, p);
}

/** Whether a warm pool works here: a sandbox made ahead, then /bin/true run in it. */
function checkPool(f: HostFacts): DoctorCheck {
  const id = 'pool';
  const title = 'warm pool (createPool)';
  if (!f.pool) return { id, title, status: 'skip', detail: 'not probed' };
  const fix = 'runs still work cold (runSandboxed); rerun with NODE_DEBUG=cubicle and report it as a bug';
  if (!f.pool.ok) return { id, title, status: 'warn', detail: `createPool failed: ${f.pool.error}`, fix };
  const p = f.pool.value;
  if (p.failure) return { id, title, status: 'warn', detail: `no sandbox became ready: ${p.failure}`, fix };
  if (p.use !== 'hit' || p.verdict !== 'ok')
    return {
      id,
      title,
      status: 'warn',
      detail: `/bin/true in the pool: ${p.use ?? '?'} ${p.poolMiss ?? ''}, verdict ${p.verdict ?? '?'}`,
      fix,
    };
  return {
    id,
    title,
    status: 'ok',
    detail: `supported: a sandbox made ahead was ready in ${p.readyMs?.toFixed(1)} ms and ran /bin/true in ${p.runMs?.toFixed(1)} ms`,
  };
}

/** The fallback every run without a memory and pids cgroup gets. */
const FALLBACK = "rlimits and init's 10 ms sampling";

/** What root's runs get on this host, from the mounts (the same order as the limits code: v2 where it holds
 *  memory and pids, else v1). */
function rootMechanism(c: CgroupFacts, kernelOk: boolean): string {
  const v2Has = (k: string): boolean => c.v2Controllers?.includes(k) ?? false;
  if (c.v2Mount && kernelOk && v2Has('memory') && v2Has('pids')) return `cgroup v2 groups under ${c.v2Mount}/cubicle`;
  if (c.v1Controllers.includes('memory') && c.v1Controllers.includes('pids')) return 'cgroup v1 groups';
  return FALLBACK;
}

/** How the caller's own runs get (or would get) an exact mechanism, in words. */
function ownMechanism(c: CgroupFacts): string | undefined {
  if (c.v1 === true) return 'cgroup v1 groups';
  if (typeof c.v2 !== 'string') return undefined;
  if (c.v2Source === 'own-subtree') return `cgroup v2 groups under ${c.v2} (the delegated subtree it sits in)`;
  if (c.v2Source === 'systemd-scope')
    return 'cgroup v2 groups in a delegated scope its systemd user manager gives each process (asked for once)';
  return `cgroup v2 groups under ${c.v2}`;
}

/** The commands that give user `u` a delegated cgroup v2 subtree on this host. */
function delegationFix(c: CgroupFacts, u: UserCgroupFacts): string[] {
  const who = u.name ?? String(u.uid);
  const lacking = u.own ? ['memory', 'pids'].filter((k) => !u.own!.controllers.includes(k)) : [];
  if (u.own && lacking.length && /\/user@\d+\.service(\/|$)/.test(u.own.path))
    return [
      `# systemd's user@.service does not delegate ${lacking.join(' and ')} to uid ${u.uid}: delegate them, then log in again`,
      'sudo mkdir -p /etc/systemd/system/user@.service.d',
      "printf '[Service]\\nDelegate=memory pids cpu\\n' | sudo tee /etc/systemd/system/user@.service.d/delegate.conf",
      'sudo systemctl daemon-reload',
    ];
  if (u.bus)
    return [
      `# start the program in a delegated scope of uid ${u.uid}'s systemd user manager (runs then go beside it):`,
      'systemd-run --user --scope -p Delegate=yes -- YOUR-PROGRAM',
    ];
  const g = `${c.v2Mount}/cubicle-${u.uid}`;
  return [
    `# no systemd user manager runs for uid ${u.uid}: start one that stays (cubicle then asks it for a delegated scope)`,
    `sudo loginctl enable-linger ${who}`,
    `# or delegate a group to uid ${u.uid} by hand and move this shell into a leaf of it (runs go beside the leaf):`,
    `sudo sh -c "mkdir -p ${g}/shell && echo '+memory +pids' > ${g}/cgroup.subtree_control && ` +
      `chown ${u.uid} ${g} ${g}/cgroup.procs ${g}/cgroup.subtree_control ${g}/cgroup.threads ${g}/shell ${g}/shell/cgroup.procs && ` +
      `echo $$ > ${g}/shell/cgroup.procs"`,
  ];
}

/**
 * Where runs' memory and process limits come from, for root and for the unprivileged user the doctor speaks for
 * (the caller, or the user who ran sudo): cgroup v1 groups (root on a v1 or hybrid host), cgroup v2 groups (root
 * on a v2 host; a user in its delegated subtree or its systemd user manager's delegated scope; anyone with a
 * cgroupParent), else rlimits and init's sampling. When the caller's own runs get no exact mechanism, the fix is
 * the command that gives one on this host.
 */
/** Whether each sandbox gets a host uid of its own, so it cannot exhaust the caller's per-user kernel counters. */
function checkHostIds(f: HostFacts): DoctorCheck {
  const id = 'host-ids';
  const title = 'host ids per sandbox';
  if (isRoot(f))
    return {
      id,
      title,
      status: 'ok',
      detail: 'each sandbox maps to a uid of its own from hostIdRange (per-user counters are never shared)',
    };
  if (f.subids === undefined) return { id, title, status: 'skip', detail: 'not probed' };
  if (!f.subids.ok) return skip(id, title, 'the subordinate ids', f.subids);
  const s = f.subids.value;
  if (!('reason' in s))
    return {
      id,
      title,
      status: 'ok',
      detail:
        `each sandbox maps to a uid of its own from the subordinate ids ${s.uid.start}-${s.uid.start + s.uid.count - 1} ` +
        `(via ${s.newuidmap}); runs with a read-write bind keep the caller's ids`,
    };
  return {
    id,
    title,
    status: 'warn',
    detail:
      `sandboxes share this user's per-user kernel counters (each capped at half of the host's limit): ${s.reason}. ` +
      'Subordinate ids give each sandbox a uid of its own',
    fix: /uidmap/.test(s.reason)
      ? 'apt-get install uidmap   # as root'
      : (/as root: (.*)\)$/.exec(s.reason)?.[1] ?? s.reason) + '   # as root',
  };
}

function checkCgroups(f: HostFacts): DoctorCheck {
  const id = 'limits';
  const title = 'resource limits';
  if (f.cgroups === undefined) return { id, title, status: 'skip', detail: 'not probed' };
  if (!f.cgroups.ok) return skip(id, title, 'the cgroup mounts', f.cgroups);
  const c = f.cgroups.value;
  const root = isRoot(f);
  const kernel = value(f.kernel);
  const kernelOk = !kernel || !versionBelow(kernel.major, kernel.minor, CGROUP_V2_KERNEL);
  const lacking = c.v2Controllers === null ? [] : ['memory', 'pids'].filter((k) => !c.v2Controllers!.includes(k));
  const hybrid = c.v1Controllers.some((k) => k === 'memory' || k === 'pids');
  const u = c.user;
  // The unprivileged user's runs (the caller's own when it is not root).
  const userWord = u ? `uid ${u.uid}${u.name ? ` (${u.name})` : ''}` : 'an unprivileged user';
  let userLine: string;
  if (!root) userLine = `${userWord}: ${ownMechanism(c) ?? FALLBACK}`;
  else if (hybrid && lacking.length)
    userLine = `${userWord}: ${FALLBACK} (memory and pids belong to cgroup v1 here, which only root can use)`;
  else if (!c.v2Mount || lacking.length || !kernelOk) userLine = `${userWord}: ${FALLBACK}`;
  else if (u?.bus) userLine = `${userWord}: cgroup v2 groups in a delegated scope from its systemd user manager (${u.bus})`;
  else
    userLine =
      `${userWord}: cgroup v2 groups only from inside a delegated subtree ` +
      (u ? `(no systemd user manager runs for it: no /run/user/${u.uid}/bus)` : "(its session's, or a scope of its systemd user manager)") +
      `, else ${FALLBACK}`;
  const runAs = c.v1 === true ? ' (runAs runs too)' : `; runs with runAs cannot use cgroup v2 groups (${FALLBACK} for them)`;
  const rootLine = root ? `root: ${ownMechanism(c) ?? FALLBACK}${ownMechanism(c) ? runAs : ''}` : `root: ${rootMechanism(c, kernelOk)}`;
  const detail = `${rootLine}; ${userLine}`;

  if (root && ownMechanism(c)) {
    if (typeof c.v2 === 'string' && c.v1 !== true && lacking.length)
      return {
        id,
        title,
        status: 'warn',
        detail:
          `cgroup v2 groups under ${c.v2} get no ${lacking.join(' or ')} controller ` +
          `(${c.v2Mount}/cgroup.controllers: ${c.v2Controllers!.join(' ') || 'none'}), ` +
          `so ${lacking.join(' and ')} limits fall back to ${FALLBACK}; ${userLine}`,
        fix:
          `# the cgroup above ${c.v2Mount} must hand ${lacking.join(' and ')} down: ` +
          `enable ${lacking.map((k) => `+${k}`).join(' ')} in its cgroup.subtree_control (in a container: have the runtime delegate them)`,
      };
    // Root's runs are exact; the user who ran sudo gets a fix for its own runs when nothing would delegate to it.
    if (u && !u.bus && c.v2Mount && !lacking.length && kernelOk)
      return { id, title, status: 'warn', detail, fix: delegationFix(c, u).join('\n') };
    return { id, title, status: 'ok', detail };
  }
  if (!root && ownMechanism(c)) return { id, title, status: 'ok', detail };

  // The caller's own runs fall back: say why, and what gives them an exact mechanism here.
  let fix: string;
  if (c.v2Mount === null)
    fix = [
      ...(root
        ? ['# mount the cgroup v1 memory and pids controllers, or the cgroup2 hierarchy (mount -t cgroup2 none /sys/fs/cgroup)']
        : ['# run as root for cgroup v1 groups']),
      '# or boot with the unified hierarchy (systemd.unified_cgroup_hierarchy=1 on the kernel command line)',
    ].join('\n');
  else if (!kernelOk)
    fix =
      `# cgroup v2 groups need Linux ${CGROUP_V2_KERNEL.join('.')}+ (clone3 with CLONE_INTO_CGROUP): upgrade the kernel` +
      `${root ? '' : ', or run as root on a host with cgroup v1 memory and pids controllers'}`;
  else if (hybrid && lacking.length)
    fix = [
      `# on this hybrid host ${lacking.join(' and ')} belong to cgroup v1, which only root can use: run as root,`,
      '# or boot with the unified hierarchy (systemd.unified_cgroup_hierarchy=1 on the kernel command line)',
    ].join('\n');
  else if (lacking.length)
    fix = `# the cgroup above ${c.v2Mount} must hand ${lacking.join(' and ')} down (in a container: have the runtime delegate them)`;
  else fix = delegationFix(c, u ?? { uid: value(f.euid) ?? -1, bus: null }).join('\n');
  const v1Why = !root
    ? 'cgroup v1 groups need root'
    : c.v1 === true
      ? ''
      : c.v1Controllers.length === 0
        ? 'no cgroup v1 memory, pids or cpuacct controller is mounted'
        : c.v1;
  const why = [v1Why, typeof c.v2 === 'string' ? '' : c.v2.reason].filter(Boolean).join('; ');
  return { id, title, status: 'warn', detail: `${detail}${why ? ` (${why})` : ''}; strictLimits would refuse these runs`, fix };
}

/**
 * Every check, root causes first: the kernel, then the switches that refuse namespaces, then what confines this
 * process (seccomp, AppArmor, masked /proc), then libraries and limits, and last the end-to-end runs that show the symptoms.
 */
/** Egress and published ports (optional features): a slirp4netns, an nft and a /dev/net/tun the caller may use. */
function checkEgress(e: NonNullable<HostFacts['egress']>): DoctorCheck {
  const id = 'egress';
  const title = 'egress and published ports';
  if (!e.problems.length) return { id, title, status: 'ok', detail: 'slirp4netns, nft and /dev/net/tun are usable' };
  return {
    id,
    title,
    status: 'warn',
    detail: `${e.problems.map((p) => p.detail).join('; ')}: network 'egress' and publish fail until fixed (other runs are unaffected)`,
    fix: e.problems.map((p) => p.fix).join('\n'),
  };
}

export function diagnose(f: HostFacts): DoctorCheck[] {
  return [
    checkKernel(f),
    checkKernelNamespaces(f),
    checkUsernsSysctl(f),
    checkApparmorUserns(f),
    checkNamespaceLimits(f),
    checkSeccompFilter(f),
    checkApparmorProfile(f),
    checkProc(f),
    checkPivotRoot(f),
    checkLibseccomp(f),
    checkCgroups(f),
    checkHostIds(f),
    ...(f.egress ? [checkEgress(f.egress)] : []),
    checkSandbox(f),
    checkSandboxUnprivileged(f),
    checkPool(f),
  ];
}

/** The checks about creating namespaces, in diagnose() order: everything that can make the kernel refuse them. */
export function namespaceChecks(f: NamespaceFacts): DoctorCheck[] {
  return [checkKernelNamespaces(f), checkUsernsSysctl(f), checkApparmorUserns(f), checkNamespaceLimits(f), checkSeccompFilter(f)];
}

/** What a refused clone is answered with when no namespace check explains it. */
export const USERNS_FALLBACK_HINT = 'the kernel refused new namespaces; run `npx cubicle doctor` for a diagnosis of this host';

/**
 * What to tell a caller whose sandbox could not get its namespaces (the failure is in the facts' sandbox run):
 * the first failing namespace check, else the first warning, as `title: detail` followed by its fix lines.
 */
export function usernsFixFor(f: NamespaceFacts): string {
  const checks = namespaceChecks(f);
  const c = checks.find((x) => x.status === 'fail' && x.fix) ?? checks.find((x) => x.status === 'warn' && x.fix);
  return c ? `${c.title}: ${c.detail}\n${c.fix}` : USERNS_FALLBACK_HINT;
}
