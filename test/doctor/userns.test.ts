// The hint after a refused clone comes from the doctor's namespace checks: a table of hosts and what each is told.
import { strict as assert } from 'node:assert';
import { USERNS_FALLBACK_HINT, usernsFixFor, type NamespaceFacts } from '../../sandbox/doctor/diagnose.js';
import { NS_KINDS, type ConfinementFacts, type NsKind } from '../../sandbox/doctor/facts.js';
import { cloneFailure, probeNamespaceFacts, usernsFix } from '../../sandbox/doctor/userns.js';
import { toSetupFailure } from '../../sandbox/outcome/setup-failure.js';

const HELPER = '/opt/cubicle/dist/native/cubicle-helper';
const NO_CONFINEMENT: ConfinementFacts = {
  dockerenv: false,
  containerenv: false,
  seccompMode: 0,
  seccompFilters: 0,
  apparmorEnabled: null,
  apparmorLabel: null,
};

/** A mainline-kernel host where uid 1000's clone failed with `errnoName`. */
function host(errnoName: string, change: (f: NamespaceFacts) => void = () => {}): NamespaceFacts {
  const f: NamespaceFacts = {
    euid: { ok: true, value: 1000 },
    hostNamespaces: { ok: true, value: Object.fromEntries(NS_KINDS.map((k, i) => [k, 4026531830 + i])) as Record<NsKind, number> },
    sysctl: {
      unprivilegedUsernsClone: { ok: true, value: null },
      apparmorRestrictUnprivilegedUserns: { ok: true, value: null },
      maxNamespaces: Object.fromEntries(NS_KINDS.map((k) => [k, { ok: true, value: 63412 }])) as NamespaceFacts['sysctl']['maxNamespaces'],
    },
    confinement: { ok: true, value: { ...NO_CONFINEMENT } },
    helperPath: HELPER,
    sandbox: { run: { ok: true, value: { verdict: 'setup-error', exitCode: null, signal: null, setupFailure: cloneFailure(errnoName) } } },
  };
  change(f);
  return f;
}

const confined =
  (c: Partial<ConfinementFacts>) =>
  (f: NamespaceFacts): void => {
    f.confinement = { ok: true, value: { ...NO_CONFINEMENT, ...c } };
  };

interface Row {
  host: string;
  facts: NamespaceFacts;
  /** The hint's first line starts with this (the check's title and detail). */
  first: string | RegExp;
  /** Lines the fix must contain. */
  fix: string[];
}

const TABLE: Row[] = [
  {
    host: 'kernel.unprivileged_userns_clone = 0',
    facts: host('EPERM', (f) => (f.sysctl.unprivilegedUsernsClone = { ok: true, value: 0 })),
    first: 'unprivileged user namespaces: disabled: kernel.unprivileged_userns_clone = 0',
    fix: [
      'sudo sysctl -w kernel.unprivileged_userns_clone=1',
      "echo 'kernel.unprivileged_userns_clone=1' | sudo tee -a /etc/sysctl.d/99-cubicle.conf   # keep it after a reboot",
    ],
  },
  {
    host: 'the same, the caller root (the clone was a runAs one)',
    facts: host('EPERM', (f) => {
      f.euid = { ok: true, value: 0 };
      f.sysctl.unprivilegedUsernsClone = { ok: true, value: 0 };
    }),
    first: /^unprivileged user namespaces: disabled: .*runAs/,
    fix: ['sudo sysctl -w kernel.unprivileged_userns_clone=1'],
  },
  {
    host: 'Ubuntu 23.10+: AppArmor restricts unprivileged user namespaces',
    facts: host('EPERM', (f) => {
      f.sysctl.apparmorRestrictUnprivilegedUserns = { ok: true, value: 1 };
      confined({ apparmorEnabled: true, apparmorLabel: 'unconfined' })(f);
    }),
    first: 'AppArmor user-namespace restriction: on (kernel.apparmor_restrict_unprivileged_userns = 1',
    fix: [
      'sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0',
      `profile cubicle-helper ${HELPER} flags=(unconfined)`,
      'sudo apparmor_parser -r /etc/apparmor.d/cubicle-helper',
    ],
  },
  {
    host: 'user.max_user_namespaces = 0',
    facts: host('ENOSPC', (f) => (f.sysctl.maxNamespaces.user = { ok: true, value: 0 })),
    first: 'namespace limits: user.max_user_namespaces = 0',
    fix: ['sudo sysctl -w user.max_user_namespaces=15000'],
  },
  {
    host: 'large limits, but clone says ENOSPC: a limit is reached',
    facts: host('ENOSPC'),
    first: 'namespace limits: the kernel refused a new namespace with ENOSPC',
    fix: ['sudo sysctl -w user.max_user_namespaces=126824', 'lsns   # shows which namespaces are in use'],
  },
  {
    host: "Docker's default seccomp profile",
    facts: host('EPERM', confined({ dockerenv: true, seccompMode: 2, seccompFilters: 1 })),
    first: /^seccomp filter on this process: a seccomp filter is active \(Seccomp: 2, 1 filter, inside a container/,
    fix: ['docker run --security-opt seccomp=unconfined ...   # or podman run --security-opt seccomp=unconfined'],
  },
  {
    host: 'a systemd unit with a seccomp filter, outside containers',
    facts: host('EPERM', confined({ seccompMode: 2, seccompFilters: 3 })),
    first: 'seccomp filter on this process: a seccomp filter is active (Seccomp: 2, 3 filters)',
    fix: ['sudo systemctl daemon-reload'],
  },
  {
    host: 'the userns switch off and a seccomp filter: the switch first',
    facts: host('EPERM', (f) => {
      f.sysctl.unprivilegedUsernsClone = { ok: true, value: 0 };
      confined({ seccompMode: 2, seccompFilters: 1 })(f);
    }),
    first: 'unprivileged user namespaces: disabled',
    fix: ['sudo sysctl -w kernel.unprivileged_userns_clone=1'],
  },
  {
    host: 'a kernel built without user namespaces',
    facts: host('EINVAL', (f) => (f.hostNamespaces = { ok: true, value: { mnt: 1, pid: 2, net: 3, uts: 4, ipc: 5, cgroup: 6 } })),
    first: 'namespace support: this kernel was built without user namespaces',
    fix: ['CONFIG_USER_NS=y'],
  },
  {
    host: 'nothing failing, a tiny limit: the warning is the best lead',
    facts: host('EPERM', (f) => (f.sysctl.maxNamespaces.user = { ok: true, value: 10 })),
    first: 'namespace limits: user.max_user_namespaces = 10',
    fix: ['sudo sysctl -w user.max_user_namespaces=15000'],
  },
];

describe('the hint for a refused clone comes from the doctor', () => {
  for (const row of TABLE)
    it(row.host, () => {
      const hint = usernsFixFor(row.facts);
      const [first = '', ...fix] = hint.split('\n');
      if (typeof row.first === 'string') assert.ok(first.startsWith(row.first), first);
      else assert.match(first, row.first);
      for (const want of row.fix)
        assert.ok(
          fix.some((l) => l.includes(want)),
          `"${want}" is not in:\n${hint}`,
        );
    });

  it('points at the doctor when no namespace check explains the failure', () => {
    assert.equal(usernsFixFor(host('EPERM')), USERNS_FALLBACK_HINT);
    // The AppArmor switch is on, but AppArmor is not: not the cause.
    const off = host('EPERM', (f) => (f.sysctl.apparmorRestrictUnprivilegedUserns = { ok: true, value: 1 }));
    confined({ apparmorEnabled: false })(off);
    assert.equal(usernsFixFor(off), USERNS_FALLBACK_HINT);
  });

  it('unreadable facts are skipped, never thrown on', () => {
    const f = host('EPERM', (x) => {
      x.sysctl.unprivilegedUsernsClone = { ok: false, error: 'EACCES: permission denied', code: 'EACCES' };
      x.confinement = { ok: false, error: 'ENOENT', code: 'ENOENT' };
      x.hostNamespaces = { ok: false, error: 'ENOENT', code: 'ENOENT' };
      x.euid = { ok: false, error: 'no geteuid' };
    });
    assert.equal(usernsFixFor(f), USERNS_FALLBACK_HINT);
  });

  it("on this host: the supervisor's hint is the doctor's answer from this host's own facts", () => {
    for (const errno of ['EPERM', 'ENOSPC', undefined]) {
      const expected = usernsFixFor(probeNamespaceFacts(cloneFailure(errno)));
      assert.equal(usernsFix(errno), expected);
    }
    // The supervisor gathers the diagnosis (a fact of the run); the outcome makes it the refused clone's hint.
    const sf = toSetupFailure(
      { ev: 'error', stage: 'parent', syscall: 'clone', errno: 1, msg: 'creating the namespaces' },
      [],
      '/bin/true',
      usernsFix('EPERM'),
    );
    assert.equal(sf.hint, usernsFix('EPERM'));
  });
});
