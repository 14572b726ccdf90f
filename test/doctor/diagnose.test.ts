// diagnose() on the facts of broken hosts: the right check fails, first, and its fix is the exact command.
import { strict as assert } from 'node:assert';
import type { SetupFailure } from '../../sandbox/types.js';
import { diagnose, type DoctorCheck } from '../../sandbox/doctor/diagnose.js';
import { NS_KINDS, type CgroupFacts, type HostFacts, type NsKind, type SandboxProbe } from '../../sandbox/doctor/facts.js';

const HELPER = '/opt/cubicle/dist/native/cubicle-helper';

const okRun = (nsBase = 4026532200): SandboxProbe['run'] => ({
  ok: true,
  value: {
    verdict: 'ok',
    exitCode: 0,
    signal: null,
    setupMs: 4.2,
    namespaces: { user: nsBase, mnt: nsBase + 1, pid: nsBase + 2, net: nsBase + 3, uts: nsBase + 4, ipc: nsBase + 5 },
  },
});

const failedRun = (setupFailure: SetupFailure): SandboxProbe['run'] => ({
  ok: true,
  value: { verdict: 'setup-error', exitCode: null, signal: null, setupFailure },
});

/** A healthy mainline-kernel host, the caller an ordinary user (uid 1000). */
function healthy(): HostFacts {
  const hostNs = Object.fromEntries(NS_KINDS.map((k, i) => [k, 4026531830 + i])) as Record<NsKind, number>;
  return {
    kernel: { ok: true, value: { release: '6.8.0-45-generic', major: 6, minor: 8 } },
    euid: { ok: true, value: 1000 },
    hostNamespaces: { ok: true, value: hostNs },
    sysctl: {
      unprivilegedUsernsClone: { ok: true, value: null },
      apparmorRestrictUnprivilegedUserns: { ok: true, value: null },
      maxNamespaces: Object.fromEntries(NS_KINDS.map((k) => [k, { ok: true, value: 63412 }])) as HostFacts['sysctl']['maxNamespaces'],
    },
    confinement: {
      ok: true,
      value: { dockerenv: false, containerenv: false, seccompMode: 0, seccompFilters: 0, apparmorEnabled: null, apparmorLabel: null },
    },
    mounts: { ok: true, value: { rootFsType: 'ext4', procSubmounts: [] } },
    libseccomp: { ok: true, value: { library: 'libseccomp.so.2', major: 2, minor: 5, micro: 4 } },
    cgroups: {
      ok: true,
      value: {
        v1: true,
        v2: '/sys/fs/cgroup/unified/cubicle',
        v2Mount: '/sys/fs/cgroup/unified',
        v2Controllers: [],
        v1Controllers: ['cpuacct', 'memory', 'pids'],
      },
    },
    helperPath: HELPER,
    sandbox: { run: okRun() },
  };
}

/** The same host with the caller root, which also probes the rootless path as 65534. */
function healthyRoot(): HostFacts {
  return { ...healthy(), euid: { ok: true, value: 0 }, sandboxUnprivileged: { runAs: { uid: 65534, gid: 65534 }, run: okRun(4026532300) } };
}

const byId = (checks: DoctorCheck[], id: string): DoctorCheck => {
  const c = checks.find((x) => x.id === id);
  assert.ok(c, `no check ${id} in ${checks.map((x) => x.id).join(', ')}`);
  return c;
};
const failing = (checks: DoctorCheck[]): string[] => checks.filter((c) => c.status === 'fail').map((c) => c.id);

// What the helper reports (through toSetupFailure) for each way of failing.
const CLONE_EPERM: SetupFailure = {
  stage: 'parent',
  syscall: 'clone',
  errno: 1,
  errnoName: 'EPERM',
  message: 'creating the namespaces',
  hint: 'unprivileged user namespaces are disabled',
};
const CLONE_ENOSPC: SetupFailure = {
  stage: 'parent',
  syscall: 'clone',
  errno: 28,
  errnoName: 'ENOSPC',
  message: 'creating the namespaces',
  hint: 'the user namespace limit is reached or zero',
};
const UIDMAP_EPERM: SetupFailure = {
  stage: 'userns',
  syscall: 'write',
  errno: 1,
  errnoName: 'EPERM',
  message: 'writing /proc/1234/uid_map',
  hint: 'the kernel refused the uid/gid map',
};
const PROC_EPERM: SetupFailure = {
  stage: 'init',
  op: 'proc',
  step: 'proc /proc',
  syscall: 'mount',
  errno: 1,
  errnoName: 'EPERM',
  message: 'proc on /proc',
  hint: 'the kernel refused a fresh /proc',
};

describe('doctor diagnose()', () => {
  it('finds nothing wrong on a healthy host (caller non-root)', () => {
    const checks = diagnose(healthy());
    assert.deepEqual(failing(checks), []);
    assert.deepEqual(
      checks.filter((c) => c.status === 'warn').map((c) => c.id),
      [],
    );
    assert.equal(byId(checks, 'sandbox').status, 'ok');
    assert.equal(byId(checks, 'sandbox').title, 'sandbox as uid 1000');
    assert.match(byId(checks, 'sandbox').detail, /new user, mnt, pid, net, uts, ipc namespaces/);
    assert.equal(byId(checks, 'sandbox-unprivileged').status, 'skip');
    for (const c of checks) assert.equal(c.fix, undefined, `${c.id} has a fix although it is ${c.status}`);
  });

  it('finds nothing wrong on a healthy host (caller root, both paths ok)', () => {
    const checks = diagnose(healthyRoot());
    assert.deepEqual(failing(checks), []);
    assert.equal(byId(checks, 'sandbox').title, 'sandbox as root');
    assert.equal(byId(checks, 'sandbox-unprivileged').status, 'ok');
    assert.match(byId(checks, 'sandbox-unprivileged').title, /65534/);
  });

  it('orders the checks from root causes to the end-to-end runs', () => {
    const ids = diagnose(healthyRoot()).map((c) => c.id);
    assert.deepEqual(ids, [
      'kernel',
      'kernel-namespaces',
      'userns-sysctl',
      'apparmor-userns',
      'namespace-limits',
      'seccomp-filter',
      'apparmor-profile',
      'proc',
      'pivot-root',
      'libseccomp',
      'limits',
      'host-ids',
      'sandbox',
      'sandbox-unprivileged',
      'pool',
    ]);
  });

  it('reports warm pool support: ok with its timings, a warning naming why none became ready, skip when not probed', () => {
    const ok = byId(diagnose({ ...healthy(), pool: { ok: true, value: { readyMs: 12, use: 'hit', verdict: 'ok', runMs: 3 } } }), 'pool');
    assert.equal(ok.status, 'ok');
    assert.match(ok.detail, /ready in 12\.0 ms and ran \/bin\/true in 3\.0 ms/);
    const failed = byId(diagnose({ ...healthy(), pool: { ok: true, value: { failure: 'init: mount: EPERM' } } }), 'pool');
    assert.equal(failed.status, 'warn');
    assert.match(failed.detail, /no sandbox became ready: init: mount: EPERM/);
    assert.match(failed.fix ?? '', /runs still work cold/);
    assert.equal(byId(diagnose(healthy()), 'pool').status, 'skip');
  });
  it('egress lacking slirp4netns, nft or a usable /dev/net/tun is a warning whose fix names the package or the chmod', () => {
    const ok = byId(diagnose({ ...healthy(), egress: { problems: [] } }), 'egress');
    assert.equal(ok.status, 'ok');
    const problems = [
      { detail: 'nft (for the allowlist) is not installed', fix: 'apt-get install nftables   # as root' },
      { detail: '/dev/net/tun is missing or not readable and writable by uid 1000', fix: 'chmod 0666 /dev/net/tun' },
    ];
    const c = byId(diagnose({ ...healthy(), egress: { problems } }), 'egress');
    assert.equal(c.status, 'warn');
    assert.match(c.detail, /nft .*\/dev\/net\/tun/);
    assert.equal(c.fix, 'apt-get install nftables   # as root\nchmod 0666 /dev/net/tun');
  });

  it('a rootless caller without subordinate ids is warned that sandboxes share its counters, with the command that fixes it', () => {
    const reason =
      'alice (uid 1000) has no range in /etc/subuid (as root: usermod --add-subuids 100000-165535 --add-subgids 100000-165535 alice)';
    const c = byId(diagnose({ ...healthy(), subids: { ok: true, value: { reason } } }), 'host-ids');
    assert.equal(c.status, 'warn');
    assert.match(c.detail, /share this user's per-user kernel counters/);
    assert.equal(c.fix, 'usermod --add-subuids 100000-165535 --add-subgids 100000-165535 alice   # as root');
    const tools = byId(
      diagnose({ ...healthy(), subids: { ok: true, value: { reason: 'newuidmap/newgidmap are not installed (apt-get install uidmap)' } } }),
      'host-ids',
    );
    assert.equal(tools.fix, 'apt-get install uidmap   # as root');
    const ok = byId(
      diagnose({ ...healthy(), subids: { ok: true, value: { uid: { start: 100000, count: 65536 }, newuidmap: '/usr/bin/newuidmap' } } }),
      'host-ids',
    );
    assert.equal(ok.status, 'ok');
    assert.match(ok.detail, /100000-165535/);
  });

  it('unprivileged user namespaces disabled (kernel.unprivileged_userns_clone=0)', () => {
    const f = healthy();
    f.sysctl.unprivilegedUsernsClone = { ok: true, value: 0 };
    f.sandbox = { run: failedRun(CLONE_EPERM) };
    const checks = diagnose(f);
    const c = byId(checks, 'userns-sysctl');
    assert.equal(c.status, 'fail');
    assert.match(c.detail, /kernel\.unprivileged_userns_clone = 0/);
    assert.ok(c.fix?.includes('sudo sysctl -w kernel.unprivileged_userns_clone=1'), c.fix);
    assert.ok(c.fix?.includes("echo 'kernel.unprivileged_userns_clone=1' | sudo tee -a /etc/sysctl.d/99-cubicle.conf"), c.fix);
    assert.deepEqual(failing(checks), ['userns-sysctl', 'sandbox'], 'the root cause first, the symptom last');
    assert.match(byId(checks, 'sandbox').detail, /clone: EPERM/);
  });

  it('unprivileged user namespaces disabled, caller root: root works, the rootless path fails', () => {
    const f = healthyRoot();
    f.sysctl.unprivilegedUsernsClone = { ok: true, value: 0 };
    f.sandboxUnprivileged = { runAs: { uid: 65534, gid: 65534 }, run: failedRun(CLONE_EPERM) };
    const checks = diagnose(f);
    assert.deepEqual(failing(checks), ['userns-sysctl', 'sandbox-unprivileged']);
    assert.match(byId(checks, 'userns-sysctl').detail, /runAs/);
    assert.equal(byId(checks, 'sandbox').status, 'ok');
  });

  it('AppArmor restricts unprivileged user namespaces (Ubuntu 23.10+)', () => {
    const f = healthy();
    f.sysctl.apparmorRestrictUnprivilegedUserns = { ok: true, value: 1 };
    f.confinement = {
      ok: true,
      value: {
        dockerenv: false,
        containerenv: false,
        seccompMode: 0,
        seccompFilters: 0,
        apparmorEnabled: true,
        apparmorLabel: 'unconfined',
      },
    };
    f.sandbox = { run: failedRun(UIDMAP_EPERM) };
    const checks = diagnose(f);
    const c = byId(checks, 'apparmor-userns');
    assert.equal(c.status, 'fail');
    assert.ok(c.fix?.includes('sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0'), c.fix);
    assert.ok(c.fix?.includes(`profile cubicle-helper ${HELPER} flags=(unconfined)`), c.fix);
    assert.ok(c.fix?.includes('userns,'), c.fix);
    assert.ok(c.fix?.includes('sudo apparmor_parser -r /etc/apparmor.d/cubicle-helper'), c.fix);
    assert.deepEqual(failing(checks), ['apparmor-userns', 'sandbox']);
  });

  it('AppArmor restriction on, but a profile allows the helper: ok', () => {
    const f = healthy();
    f.sysctl.apparmorRestrictUnprivilegedUserns = { ok: true, value: 1 };
    f.confinement = {
      ok: true,
      value: {
        dockerenv: false,
        containerenv: false,
        seccompMode: 0,
        seccompFilters: 0,
        apparmorEnabled: true,
        apparmorLabel: 'unconfined',
      },
    };
    const c = byId(diagnose(f), 'apparmor-userns');
    assert.equal(c.status, 'ok');
    assert.match(c.detail, /profile/);
  });

  it('max_user_namespaces = 0', () => {
    const f = healthy();
    f.sysctl.maxNamespaces.user = { ok: true, value: 0 };
    f.sandbox = { run: failedRun(CLONE_ENOSPC) };
    const checks = diagnose(f);
    const c = byId(checks, 'namespace-limits');
    assert.equal(c.status, 'fail');
    assert.match(c.detail, /user\.max_user_namespaces = 0/);
    assert.ok(c.fix?.includes('sudo sysctl -w user.max_user_namespaces=15000'), c.fix);
    assert.ok(c.fix?.includes('/etc/sysctl.d/99-cubicle.conf'), c.fix);
    assert.deepEqual(failing(checks), ['namespace-limits', 'sandbox']);
  });

  it('a tiny max_user_namespaces warns, with the same fix', () => {
    const f = healthy();
    f.sysctl.maxNamespaces.user = { ok: true, value: 10 };
    const c = byId(diagnose(f), 'namespace-limits');
    assert.equal(c.status, 'warn');
    assert.ok(c.fix?.includes('sudo sysctl -w user.max_user_namespaces=15000'), c.fix);
  });

  it('a namespace limit reached (clone ENOSPC) fails even with large limits, and the fix raises the limit', () => {
    const f = healthy();
    f.sandbox = { run: failedRun(CLONE_ENOSPC) };
    const c = byId(diagnose(f), 'namespace-limits');
    assert.equal(c.status, 'fail');
    assert.ok(c.fix?.includes('sudo sysctl -w user.max_user_namespaces=126824'), c.fix);
    assert.ok(!c.fix?.includes('=15000'), `the fix must not lower a limit of 63412:\n${c.fix}`);
    const mid = healthy();
    mid.sysctl.maxNamespaces.user = { ok: true, value: 1000 };
    mid.sandbox = { run: failedRun(CLONE_ENOSPC) };
    assert.ok(byId(diagnose(mid), 'namespace-limits').fix?.includes('sudo sysctl -w user.max_user_namespaces=15000'));
  });

  it("Docker's default seccomp profile blocks clone", () => {
    const f = healthyRoot();
    f.confinement = {
      ok: true,
      value: { dockerenv: true, containerenv: false, seccompMode: 2, seccompFilters: 1, apparmorEnabled: null, apparmorLabel: null },
    };
    f.sandbox = { run: failedRun(CLONE_EPERM) };
    f.sandboxUnprivileged = { runAs: { uid: 65534, gid: 65534 }, run: failedRun(CLONE_EPERM) };
    const checks = diagnose(f);
    const c = byId(checks, 'seccomp-filter');
    assert.equal(c.status, 'fail');
    assert.match(c.detail, /Seccomp: 2/);
    assert.ok(c.fix?.includes('docker run --security-opt seccomp=unconfined'), c.fix);
    assert.deepEqual(failing(checks), ['seccomp-filter', 'sandbox', 'sandbox-unprivileged']);
    assert.equal(byId(checks, 'userns-sysctl').status, 'ok');
  });

  it('a seccomp filter that lets the sandbox run is fine', () => {
    const f = healthy();
    f.confinement = {
      ok: true,
      value: { dockerenv: true, containerenv: false, seccompMode: 2, seccompFilters: 1, apparmorEnabled: null, apparmorLabel: null },
    };
    assert.equal(byId(diagnose(f), 'seccomp-filter').status, 'ok');
  });

  it('clone EPERM explained by the userns sysctl does not blame seccomp', () => {
    const f = healthy();
    f.sysctl.unprivilegedUsernsClone = { ok: true, value: 0 };
    f.confinement = {
      ok: true,
      value: { dockerenv: false, containerenv: false, seccompMode: 2, seccompFilters: 1, apparmorEnabled: null, apparmorLabel: null },
    };
    f.sandbox = { run: failedRun(CLONE_EPERM) };
    const checks = diagnose(f);
    assert.equal(byId(checks, 'seccomp-filter').status, 'warn');
    assert.equal(failing(checks)[0], 'userns-sysctl');
  });

  it('masked /proc in a container: a fresh proc is refused', () => {
    const f = healthy();
    f.confinement = {
      ok: true,
      value: { dockerenv: true, containerenv: false, seccompMode: 0, seccompFilters: 0, apparmorEnabled: null, apparmorLabel: null },
    };
    f.mounts = {
      ok: true,
      value: {
        rootFsType: 'overlay',
        procSubmounts: ['/proc/bus', '/proc/fs', '/proc/irq', '/proc/sys', '/proc/sysrq-trigger', '/proc/kcore'],
      },
    };
    f.sandbox = { run: failedRun(PROC_EPERM) };
    const checks = diagnose(f);
    const c = byId(checks, 'proc');
    assert.equal(c.status, 'fail');
    assert.match(c.detail, /\/proc\/bus/);
    assert.ok(c.fix?.includes('docker run --security-opt systempaths=unconfined'), c.fix);
    assert.ok(c.fix?.includes('podman run --security-opt unmask=ALL'), c.fix);
    assert.deepEqual(failing(checks), ['proc', 'sandbox']);
    assert.equal(byId(checks, 'seccomp-filter').status, 'ok');
  });

  it('default Docker (seccomp and masked /proc): both causes fail, seccomp first', () => {
    const f = healthy();
    f.confinement = {
      ok: true,
      value: { dockerenv: true, containerenv: false, seccompMode: 2, seccompFilters: 1, apparmorEnabled: null, apparmorLabel: null },
    };
    f.mounts = { ok: true, value: { rootFsType: 'overlay', procSubmounts: ['/proc/kcore', '/proc/keys'] } };
    f.sandbox = { run: failedRun(CLONE_EPERM) };
    assert.deepEqual(failing(diagnose(f)), ['seccomp-filter', 'proc', 'sandbox']);
  });

  it('docker-default AppArmor profile denying mount', () => {
    const f = healthy();
    f.confinement = {
      ok: true,
      value: {
        dockerenv: true,
        containerenv: false,
        seccompMode: 0,
        seccompFilters: 0,
        apparmorEnabled: true,
        apparmorLabel: 'docker-default (enforce)',
      },
    };
    f.sandbox = {
      run: failedRun({
        stage: 'init',
        op: 'tmpfs',
        step: 'tmpfs on / (size 16777216)',
        syscall: 'mount',
        errno: 13,
        errnoName: 'EACCES',
        message: 'tmpfs',
        hint: 'x',
      }),
    };
    const c = byId(diagnose(f), 'apparmor-profile');
    assert.equal(c.status, 'fail');
    assert.ok(c.fix?.includes('--security-opt apparmor=unconfined'), c.fix);
  });

  describe('resource limits: where memory and process limits come from', () => {
    const V2_ALL = ['cpuset', 'cpu', 'io', 'memory', 'hugetlb', 'pids', 'rdma', 'misc'];
    const ROOTLESS_V1 = 'cgroup v1 groups can only be created by root (a rootless caller has no delegated v1 hierarchy)';
    const NO_V1 =
      'no cgroup v1 memory, pids or cpuacct controller is mounted ' +
      '(on a cgroup v2 host, root and callers in a delegated subtree get v2 groups instead)';
    const NEEDS_PARENT = {
      reason:
        'no delegated cgroup v2 subtree for this caller: this process sits in the root cgroup, which only root may organize; ' +
        'no systemd user manager is reachable (no /run/user/1000/bus: no systemd user session for uid 1000)',
    };
    const USER = { uid: 1000, name: 'alice', bus: null };
    const limits = (f: HostFacts, cgroups: CgroupFacts): DoctorCheck =>
      byId(diagnose({ ...f, cgroups: { ok: true, value: cgroups } }), 'limits');
    const neverStale = (c: DoctorCheck): void => assert.doesNotMatch(`${c.detail}\n${c.fix ?? ''}`, /not supported yet/);

    it('root on a v1/hybrid host: cgroup v1 groups', () => {
      const c = byId(diagnose(healthyRoot()), 'limits');
      assert.equal(c.status, 'ok');
      assert.match(c.detail, /cgroup v1 groups/);
    });

    it('root on a pure cgroup v2 host: v2 groups, runAs excepted', () => {
      const c = limits(healthyRoot(), {
        v1: NO_V1,
        v2: '/sys/fs/cgroup/cubicle',
        v2Mount: '/sys/fs/cgroup',
        v2Controllers: V2_ALL,
        v1Controllers: [],
      });
      assert.equal(c.status, 'ok');
      assert.match(c.detail, /cgroup v2 groups under \/sys\/fs\/cgroup\/cubicle/);
      assert.match(c.detail, /runAs cannot use cgroup v2/);
    });

    it('root in a container whose cgroup v2 lacks memory: that limit falls back', () => {
      const c = limits(healthyRoot(), {
        v1: NO_V1,
        v2: '/sys/fs/cgroup/cubicle',
        v2Mount: '/sys/fs/cgroup',
        v2Controllers: ['cpu', 'io', 'pids'],
        v1Controllers: [],
      });
      assert.equal(c.status, 'warn');
      assert.match(c.detail, /no memory controller \(\/sys\/fs\/cgroup\/cgroup\.controllers: cpu io pids\)/);
      assert.match(c.fix!, /\+memory in its cgroup\.subtree_control/);
    });

    it('a rootless caller on a cgroup v2 host with no delegation: the commands that give one here', () => {
      const facts: CgroupFacts = {
        v1: ROOTLESS_V1,
        v2: NEEDS_PARENT,
        v2Mount: '/sys/fs/cgroup',
        v2Controllers: V2_ALL,
        v1Controllers: [],
        user: { ...USER, own: { path: '/sys/fs/cgroup', controllers: V2_ALL } },
      };
      const c = limits(healthy(), facts);
      assert.equal(c.status, 'warn');
      assert.match(
        c.detail,
        /^root: cgroup v2 groups under \/sys\/fs\/cgroup\/cubicle; uid 1000 \(alice\): rlimits and init's 10 ms sampling/,
      );
      assert.match(c.detail, /no systemd user manager is reachable/);
      assert.match(c.fix!, /^sudo loginctl enable-linger alice$/m);
      const g = '/sys/fs/cgroup/cubicle-1000';
      assert.ok(c.fix!.includes(`echo '+memory +pids' > ${g}/cgroup.subtree_control`), c.fix);
      assert.ok(c.fix!.includes(`echo $$ > ${g}/shell/cgroup.procs`), c.fix);
      neverStale(c);
      assert.deepEqual(failing(diagnose({ ...healthy(), cgroups: { ok: true, value: facts } })), []);
      // A systemd user manager runs, but its scope could not be had: the caller starts in one itself.
      const withBus = limits(healthy(), { ...facts, user: { ...USER, bus: '/run/user/1000/bus' } });
      assert.match(withBus.fix!, /^systemd-run --user --scope -p Delegate=yes -- YOUR-PROGRAM$/m);
      // user@.service delegates no memory controller: the drop-in that delegates it.
      const noMemory = limits(healthy(), {
        ...facts,
        user: {
          ...USER,
          own: { path: '/sys/fs/cgroup/user.slice/user-1000.slice/user@1000.service/app.slice/x.scope', controllers: ['pids'] },
        },
      });
      assert.match(noMemory.fix!, /Delegate=memory pids cpu/);
      assert.match(noMemory.fix!, /^sudo systemctl daemon-reload$/m);
    });

    it('a rootless caller in a delegated subtree, or with a systemd user manager: v2 groups, ok', () => {
      const base = { v1: ROOTLESS_V1, v2Mount: '/sys/fs/cgroup', v2Controllers: V2_ALL, v1Controllers: [], user: USER };
      const own = limits(healthy(), { ...base, v2: '/sys/fs/cgroup/user-1000/cubicle', v2Source: 'own-subtree' });
      assert.equal(own.status, 'ok');
      assert.match(
        own.detail,
        /uid 1000 \(alice\): cgroup v2 groups under \/sys\/fs\/cgroup\/user-1000\/cubicle \(the delegated subtree it sits in\)/,
      );
      const scope = limits(healthy(), { ...base, v2: '(a delegated scope from the systemd user manager)', v2Source: 'systemd-scope' });
      assert.equal(scope.status, 'ok');
      assert.match(scope.detail, /a delegated scope its systemd user manager gives each process \(asked for once\)/);
    });

    it('root on a v2 host, run by sudo for a user nothing delegates to: root is exact, the user gets the fix', () => {
      const c = limits(healthyRoot(), {
        v1: NO_V1,
        v2: '/sys/fs/cgroup/cubicle',
        v2Source: 'root',
        v2Mount: '/sys/fs/cgroup',
        v2Controllers: V2_ALL,
        v1Controllers: [],
        user: USER,
      });
      assert.equal(c.status, 'warn');
      assert.match(c.detail, /^root: cgroup v2 groups under \/sys\/fs\/cgroup\/cubicle;/);
      assert.match(
        c.detail,
        /uid 1000 \(alice\): cgroup v2 groups only from inside a delegated subtree \(no systemd user manager runs for it/,
      );
      assert.match(c.fix!, /loginctl enable-linger alice/);
    });

    it('a rootless caller on a hybrid host: memory and pids belong to v1, so a cgroupParent would not help', () => {
      const c = limits(healthy(), {
        v1: ROOTLESS_V1,
        v2: NEEDS_PARENT,
        v2Mount: '/sys/fs/cgroup/unified',
        v2Controllers: [],
        v1Controllers: ['cpuacct', 'memory', 'pids'],
      });
      assert.equal(c.status, 'warn');
      assert.match(c.fix!, /hybrid host memory and pids belong to cgroup v1, which only root can use: run as root/);
      assert.match(c.fix!, /systemd\.unified_cgroup_hierarchy=1/);
      assert.doesNotMatch(c.fix!, /systemd-run/);
      neverStale(c);
    });

    it('a kernel older than 5.7: v2 groups need CLONE_INTO_CGROUP', () => {
      const f = healthy();
      f.kernel = { ok: true, value: { release: '5.4.0-150-generic', major: 5, minor: 4 } };
      const c = limits(f, {
        v1: ROOTLESS_V1,
        v2: { reason: 'cgroup v2 groups need clone3 with CLONE_INTO_CGROUP (Linux 5.7+); this kernel is 5.4.0-150-generic' },
        v2Mount: '/sys/fs/cgroup',
        v2Controllers: V2_ALL,
        v1Controllers: [],
      });
      assert.equal(c.status, 'warn');
      assert.match(c.fix!, /need Linux 5\.7\+ .*upgrade the kernel, or run as root/);
    });

    it('no cgroup2 mounted at all', () => {
      const c = limits(healthy(), {
        v1: ROOTLESS_V1,
        v2: { reason: 'no cgroup2 hierarchy is mounted' },
        v2Mount: null,
        v2Controllers: null,
        v1Controllers: ['memory', 'pids'],
      });
      assert.equal(c.status, 'warn');
      assert.match(c.detail, /no cgroup2 hierarchy is mounted/);
      assert.match(c.fix!, /run as root for cgroup v1 groups/);
      const rootNothing = limits(healthyRoot(), {
        v1: NO_V1,
        v2: { reason: 'no cgroup2 hierarchy is mounted' },
        v2Mount: null,
        v2Controllers: null,
        v1Controllers: [],
      });
      assert.match(rootNothing.detail, /\(no cgroup v1 memory, pids or cpuacct controller is mounted; no cgroup2 hierarchy is mounted\)/);
      assert.match(rootNothing.fix!, /mount the cgroup v1 memory and pids controllers, or the cgroup2 hierarchy/);
      neverStale(rootNothing);
    });

    it('an unreadable mount table is a skip; an old fact set without cgroups too', () => {
      const f = healthy();
      f.cgroups = { ok: false, error: 'ENOENT: /proc/self/mountinfo', code: 'ENOENT' };
      assert.equal(byId(diagnose(f), 'limits').status, 'skip');
      delete f.cgroups;
      assert.equal(byId(diagnose(f), 'limits').status, 'skip');
    });
  });

  it('libseccomp missing', () => {
    const f = healthy();
    f.libseccomp = { ok: false, error: 'libseccomp.so.2 cannot be loaded: cannot open shared object file', code: 'MISSING' };
    const checks = diagnose(f);
    const c = byId(checks, 'libseccomp');
    assert.equal(c.status, 'fail');
    assert.ok(c.fix?.includes('sudo apt-get install libseccomp2'), c.fix);
    assert.ok(c.fix?.includes('sudo dnf install libseccomp'), c.fix);
    assert.deepEqual(failing(checks), ['libseccomp']);
  });

  it('the library CUBICLE_LIBSECCOMP names is missing: the fix points at the variable first', () => {
    const f = healthy();
    f.libseccompOverride = '/opt/lib/libseccomp.so.2';
    f.libseccomp = { ok: false, error: '/opt/lib/libseccomp.so.2 cannot be loaded: cannot open shared object file', code: 'MISSING' };
    const c = byId(diagnose(f), 'libseccomp');
    assert.equal(c.status, 'fail');
    assert.match(c.fix!.split('\n')[0]!, /^# CUBICLE_LIBSECCOMP=\/opt\/lib\/libseccomp\.so\.2 names the library/);
    assert.ok(c.fix?.includes('sudo apt-get install libseccomp2'), c.fix);
    const ok = healthy();
    ok.libseccompOverride = '/opt/lib/libseccomp.so.2';
    ok.libseccomp = { ok: true, value: { library: '/opt/lib/libseccomp.so.2', major: 2, minor: 5, micro: 4 } };
    assert.match(byId(diagnose(ok), 'libseccomp').detail, /named by CUBICLE_LIBSECCOMP/);
  });

  it('koffi itself broken: the fix rebuilds it', () => {
    const f = healthy();
    f.libseccomp = { ok: false, error: 'the koffi FFI module does not load: no prebuilt binary', code: 'KOFFI' };
    const c = byId(diagnose(f), 'libseccomp');
    assert.equal(c.status, 'fail');
    assert.ok(c.fix?.includes('npm rebuild koffi'), c.fix);
  });

  it('kernel older than 5.4 fails; older than 5.12 warns about mount_setattr', () => {
    const old = healthy();
    old.kernel = { ok: true, value: { release: '4.19.0-25-amd64', major: 4, minor: 19 } };
    const c = byId(diagnose(old), 'kernel');
    assert.equal(c.status, 'fail');
    assert.match(c.detail, /older than 5\.4/);
    assert.match(c.fix ?? '', /sudo (apt-get|dnf)/);
    assert.equal(failing(diagnose(old))[0], 'kernel');

    for (const [major, minor] of [
      [5, 4],
      [5, 10],
      [5, 11],
    ] as const) {
      const mid = healthy();
      mid.kernel = { ok: true, value: { release: `${major}.${minor}.0`, major, minor } };
      const w = byId(diagnose(mid), 'kernel');
      assert.equal(w.status, 'warn', `${major}.${minor}`);
      assert.match(w.detail, /mount_setattr/);
    }
    const ok = healthy();
    ok.kernel = { ok: true, value: { release: '5.12.0', major: 5, minor: 12 } };
    assert.equal(byId(diagnose(ok), 'kernel').status, 'ok');
  });

  it('a kernel without user namespaces', () => {
    const f = healthy();
    f.hostNamespaces = { ok: true, value: { mnt: 1, pid: 2, net: 3, uts: 4, ipc: 5, cgroup: 6 } };
    const c = byId(diagnose(f), 'kernel-namespaces');
    assert.equal(c.status, 'fail');
    assert.ok(c.fix?.includes('CONFIG_USER_NS=y'), c.fix);
  });

  it('an initramfs root makes pivot_root impossible', () => {
    const f = healthy();
    f.mounts = { ok: true, value: { rootFsType: 'rootfs', procSubmounts: [] } };
    f.sandbox = {
      run: failedRun({ stage: 'init', syscall: 'pivot_root', errno: 22, errnoName: 'EINVAL', message: 'entering the new root', hint: 'x' }),
    };
    const checks = diagnose(f);
    assert.equal(byId(checks, 'pivot-root').status, 'fail');
    assert.deepEqual(failing(checks), ['pivot-root', 'sandbox']);
  });

  it('a probe that failed is reported as skipped, never crashes the diagnosis', () => {
    const f = healthy();
    f.kernel = { ok: false, error: 'cannot parse the kernel release "weird"' };
    f.sysctl.unprivilegedUsernsClone = { ok: false, error: 'EACCES: permission denied', code: 'EACCES' };
    f.confinement = { ok: false, error: 'ENOENT: /proc/self/status', code: 'ENOENT' };
    f.mounts = { ok: false, error: 'ENOENT: /proc/self/mountinfo', code: 'ENOENT' };
    const checks = diagnose(f);
    for (const id of ['kernel', 'userns-sysctl', 'seccomp-filter', 'apparmor-profile', 'pivot-root']) {
      const c = byId(checks, id);
      assert.equal(c.status, 'skip', id);
      assert.match(c.detail, /could not read/);
    }
    assert.match(byId(checks, 'kernel').detail, /weird/);
  });

  it('runSandboxed throwing is a failed sandbox check with its message', () => {
    const f = healthy();
    f.sandbox = { run: { ok: false, error: 'the sandbox helper is not built (/x/cubicle-helper is missing or not executable)' } };
    const c = byId(diagnose(f), 'sandbox');
    assert.equal(c.status, 'fail');
    assert.match(c.detail, /not built/);
    assert.ok(c.fix?.includes('npm run build'), c.fix);
  });

  it('a sandbox failure carries stage, syscall, errno and the hint', () => {
    const f = healthy();
    f.sandbox = { run: failedRun(PROC_EPERM) };
    const c = byId(diagnose(f), 'sandbox');
    assert.equal(c.status, 'fail');
    assert.equal(
      c.detail,
      'sandbox setup failed (init, proc /proc): mount: EPERM proc on /proc',
      'rendered as the library and the CLI render it',
    );
    assert.equal(c.fix, PROC_EPERM.hint);
  });

  it('the rootless path cannot execute the helper', () => {
    const f = healthyRoot();
    f.sandboxUnprivileged = {
      runAs: { uid: 65534, gid: 65534 },
      run: failedRun({ stage: 'helper', message: 'spawn /root/x/cubicle-helper EACCES', hint: 'run npm install' }),
    };
    const c = byId(diagnose(f), 'sandbox-unprivileged');
    assert.equal(c.status, 'fail');
    assert.match(c.fix ?? '', /uid 65534 cannot execute/);
  });

  it('a sandbox that shares a host namespace is a failure', () => {
    const f = healthy();
    const hostUser = f.hostNamespaces.ok ? f.hostNamespaces.value.user! : 0;
    f.sandbox = {
      run: {
        ok: true,
        value: { verdict: 'ok', exitCode: 0, signal: null, namespaces: { user: hostUser, mnt: 9, pid: 10, net: 11, uts: 12, ipc: 13 } },
      },
    };
    const c = byId(diagnose(f), 'sandbox');
    assert.equal(c.status, 'fail');
    assert.match(c.detail, /shares the host's user namespace/);
  });

  it('is pure: the same facts give the same checks and the facts are untouched', () => {
    const f = healthyRoot();
    const before = JSON.stringify(f);
    assert.deepEqual(diagnose(f), diagnose(f));
    assert.equal(JSON.stringify(f), before);
  });
});
