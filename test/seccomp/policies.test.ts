// Policies as data: names, paths and objects; extends and precedence; validation errors; compile cache; golden text.
import { strict as assert } from 'node:assert';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { runSandboxed, SandboxOptionError } from '../../sandbox/index.js';
import { listPolicies, loadPolicy, POLICY_DIR } from '../../sandbox/policy/load.js';
import { compileProfile, profileToText } from '../../sandbox/seccomp/compile.js';
import { worldReadableTmp } from '../helpers/env.js';

const GOLDEN = fileURLToPath(new URL('../../../test/golden/', import.meta.url));

describe('policies', () => {
  it('lists the shipped policies with descriptions', () => {
    const names = listPolicies().map((p) => p.name);
    assert.deepEqual(names, ['ci', 'default', 'judge', 'none', 'permissive']);
    assert.ok(listPolicies().every((p) => p.description.length > 20));
  });

  it('every shipped policy loads, validates and compiles', () => {
    for (const { name } of listPolicies()) {
      const p = loadPolicy(name);
      if (name === 'none') assert.equal(p.seccomp, null);
      else {
        const c = compileProfile(p.seccomp!, 'enforce');
        assert.ok(c.bpf.length > 0 && c.bpf.length % 8 === 0);
        assert.deepEqual(
          c.unknownSyscalls.filter(
            (n) =>
              ![
                'umount',
                'stime',
                'create_module',
                'get_kernel_syms',
                'query_module',
                'nfsservctl',
                'uselib',
                'vm86',
                'vm86old',
                '_sysctl',
                'futimesat',
                'time',
                'sysfs',
                'ustat',
              ].includes(n),
          ),
          [],
          `${name}: syscalls unknown to libseccomp`,
        );
      }
    }
  });

  it("extends merges: a syscall the child names replaces the parent's rules for it", () => {
    const parent = loadPolicy('default');
    const child = loadPolicy('permissive');
    assert.deepEqual(child.chain, ['permissive', 'default']);
    const rulesFor = (p: typeof parent, n: string) => p.seccomp!.syscalls.filter((r) => r.names.includes(n));
    assert.ok(rulesFor(parent, 'ptrace').every((r) => r.action === 'SCMP_ACT_ERRNO'));
    assert.deepEqual(
      rulesFor(child, 'ptrace').map((r) => r.action),
      ['SCMP_ACT_ALLOW'],
    );
    assert.equal(rulesFor(child, 'personality').length, 1, 'the 61 parent personality rules are replaced');
    assert.deepEqual(rulesFor(child, 'keyctl'), rulesFor(parent, 'keyctl'), 'the rest is inherited');
  });

  it('a policy file can extend a shipped policy, set option defaults, and a call overrides them', async () => {
    const t = worldReadableTmp();
    try {
      const file = join(t.dir, 'mine.json');
      writeFileSync(file, JSON.stringify({ extends: 'judge', options: { hostname: 'from-policy', env: { A: 'policy', B: 'policy' } } }));
      const r = await runSandboxed(['/bin/sh', '-c', 'echo $(cat /proc/sys/kernel/hostname) $A $B'], { policy: file, env: { B: 'call' } });
      assert.equal(r.stdout, 'from-policy policy call\n');
      assert.equal(r.seccomp?.policy, file);
      const over = await runSandboxed(['/bin/cat', '/proc/sys/kernel/hostname'], { policy: file, hostname: 'from-call' });
      assert.equal(over.stdout, 'from-call\n');
      writeFileSync(file, JSON.stringify({ extends: 'judge', options: { hostname: 'changed-policy', env: { A: 'policy', B: 'policy' } } }));
      const changed = await runSandboxed(['/bin/cat', '/proc/sys/kernel/hostname'], { policy: file });
      assert.equal(changed.stdout, 'changed-policy\n', 'a changed policy file is read again');
      writeFileSync(file, JSON.stringify({ extends: 'judge', options: { limits: { cpuTime: '0.2s', memory: '64M' } } }));
      const limited = await runSandboxed(['/bin/sh', '-c', 'while :; do :; done'], {
        policy: file,
        limits: { memory: '128M' },
        reject: false,
      });
      assert.equal(limited.verdict, 'cpu-time-limit', "the policy's cpuTime applies");
      assert.equal(limited.limits.memory!.value, 128 << 20, "the call's memory limit wins, limit by limit");
      const obj = await runSandboxed(['/bin/cat', '/proc/sys/kernel/hostname'], {
        policy: { extends: 'none', options: { hostname: 'obj' } },
      });
      assert.equal(obj.stdout, 'obj\n');
      assert.equal(obj.seccomp, undefined, 'extends none: no filter');
    } finally {
      t.cleanup();
    }
  });

  it('bad policies are refused before anything runs, naming the file and field', () => {
    const t = worldReadableTmp();
    try {
      const write = (name: string, v: unknown) => {
        const f = join(t.dir, name);
        writeFileSync(f, typeof v === 'string' ? v : JSON.stringify(v));
        return f;
      };
      const cases: [string, RegExp][] = [
        [
          write('typo.json', { seccomp: { defaultAction: 'SCMP_ACT_ALLOW', syscalls: [], defualt: 1 } }),
          /seccomp\.defualt: is not a known field/,
        ],
        [write('action.json', { seccomp: { defaultAction: 'ALLOW', syscalls: [] } }), /seccomp\.defaultAction: must be one of/],
        [
          write('arg.json', {
            seccomp: {
              defaultAction: 'SCMP_ACT_ALLOW',
              syscalls: [{ names: ['ioctl'], action: 'SCMP_ACT_ERRNO', args: [{ index: 7, value: 1, op: 'SCMP_CMP_EQ' }] }],
            },
          }),
          /syscalls\[0\]\.args\[0\]\.index: must be 0-5/,
        ],
        [write('json.json', '{ "secret-content-here'), /is not valid JSON( \(at position \d+\))?$/],
        [write('opt.json', { options: { mounts: [] } }), /options\.mounts cannot be set by a policy/],
        [
          write('shadow.json', {
            seccomp: {
              defaultAction: 'SCMP_ACT_ERRNO',
              syscalls: [
                { names: ['ioctl'], action: 'SCMP_ACT_ALLOW' },
                { names: ['ioctl'], action: 'SCMP_ACT_KILL', args: [{ index: 1, value: 21522, op: 'SCMP_CMP_EQ' }] },
              ],
            },
          }),
          /would be ignored: another rule gives ioctl SCMP_ACT_ALLOW unconditionally/,
        ],
        [write('a.json', { extends: './b.json' }), /extends cycle/],
        [join(t.dir, 'missing.json'), /not found/],
        ['no-such-policy', /not found .*shipped policies: ci, default, judge, none, permissive/],
      ];
      write('b.json', { extends: './a.json' });
      for (const [spec, re] of cases) {
        assert.throws(
          () => runSandboxed(['/bin/true'], { policy: spec }),
          (e: unknown) => e instanceof SandboxOptionError && e.code === 'ERR_SANDBOX_POLICY' && re.test(e.message),
          `${spec} should fail with ${re}`,
        );
      }
    } finally {
      t.cleanup();
    }
  });

  it('no shipped policy that restricts anything allows io_uring, whose operations bypass the filter', () => {
    for (const { name } of listPolicies()) {
      const p = loadPolicy(name).seccomp;
      if (!p) continue;
      const restricts = p.defaultAction !== 'SCMP_ACT_ALLOW' || p.syscalls.some((r) => r.action !== 'SCMP_ACT_ALLOW');
      if (!restricts) continue;
      const rules = p.syscalls.filter((r) => r.names.includes('io_uring_setup'));
      const allowed = rules.length ? rules.some((r) => r.action === 'SCMP_ACT_ALLOW') : p.defaultAction === 'SCMP_ACT_ALLOW';
      assert.equal(allowed, false, `${name} allows io_uring_setup`);
    }
  });

  it('compiled filters are cached by content hash', () => {
    const p = loadPolicy('judge').seccomp!;
    const a = compileProfile(p, 'enforce');
    const b = compileProfile(JSON.parse(JSON.stringify(p)), 'enforce');
    assert.equal(b.cached, true);
    assert.equal(a.hash, b.hash);
    assert.ok(a.bpf.equals(b.bpf));
    const log = compileProfile(p, 'log');
    assert.notEqual(log.hash, a.hash, 'the mode is part of the key');
  });

  it('golden text exports of the shipped profiles are current (UPDATE_GOLDEN=1 rewrites them)', () => {
    for (const { name } of listPolicies()) {
      const p = loadPolicy(name);
      if (!p.seccomp) continue;
      const text = profileToText(p.seccomp);
      const file = join(GOLDEN, `${name}.pfc`);
      if (process.env.UPDATE_GOLDEN === '1' || !existsSync(file)) {
        if (process.env.CI && !existsSync(file)) assert.fail(`missing golden file ${file}`);
        writeFileSync(file, text);
      }
      assert.equal(text, readFileSync(file, 'utf8'), `${name}: the compiled filter changed; review it and rerun with UPDATE_GOLDEN=1`);
    }
    assert.ok(existsSync(join(POLICY_DIR, 'policy.schema.json')));
  });
});
