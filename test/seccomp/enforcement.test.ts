// The filter in force: each denied syscall, argument filters, io_uring, foreign ABIs, judge kills named, audit mode.
import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { errnoName } from '../../sandbox/os-names.js';
import { loadPolicy } from '../../sandbox/policy/load.js';
import { ARCH_TOKENS, libseccomp } from '../../sandbox/seccomp/libseccomp.js';
import { forEachIdentity, probe, probeMount, skipBecause } from '../helpers/env.js';

const X64 = ARCH_TOKENS.SCMP_ARCH_X86_64!;
const nr = (name: string): number => libseccomp().resolveName(X64, name);

/** Unconditional deny rules of the default profile: name -> errno name. */
function defaultDenies(): Map<string, string> {
  const out = new Map<string, string>();
  for (const r of loadPolicy('default').seccomp!.syscalls)
    if (!r.args && r.action === 'SCMP_ACT_ERRNO') for (const n of r.names) if (nr(n) >= 0) out.set(n, errnoName(r.errnoRet ?? 1));
  return out;
}

/** Runs the probe on the host, outside any sandbox; undefined when `ok` accepts what it did, else what it did. */
function onHost(args: string[], ok: (stdout: string) => boolean): string | undefined {
  const r = spawnSync(probe(), args, { encoding: 'utf8' });
  if (r.status === 0 && ok(r.stdout)) return undefined;
  return r.signal ? `died of ${r.signal}` : `exited with ${r.status}, printing ${JSON.stringify(r.stdout)}`;
}

let i386Cache: { reason?: string; signal?: string } | undefined;
/** Whether this host runs i386 system calls (int 0x80) at all: kernels without IA32 emulation kill the caller. */
function hostI386(): { reason?: string; signal?: string } {
  if (!i386Cache) {
    const r = spawnSync(probe(), ['int80'], { encoding: 'utf8' });
    if (r.status === 0 && /^int80 returned \d+$/m.test(r.stdout)) i386Cache = {};
    else
      i386Cache = {
        reason:
          `int 0x80 fails outside any sandbox too (the probe ${r.signal ? `died of ${r.signal}` : `exited with ${r.status}`}` +
          `${r.signal === 'SIGSEGV' ? ': this kernel has IA32 emulation off' : ''}), so there is no i386 call for a filter to judge`,
        signal: r.signal ?? undefined,
      };
  }
  return i386Cache;
}

if (process.arch !== 'x64') {
  describe('seccomp enforcement', () => {
    it('needs x86_64 for its syscall numbers', function () {
      return skipBecause(this, `the probes use x86_64 syscall numbers; this is ${process.arch}`);
    });
  });
} else
  forEachIdentity((_id, run) => {
    it('default: every denied syscall is matched by the filter (audit) and fails with its errno (enforce)', async () => {
      const denies = defaultDenies();
      const names = [...denies.keys()];
      const args = ['/probe', 'each', ...names.map((n) => String(nr(n)))];
      const audit = await run(args, { mounts: probeMount(), seccompLog: true });
      const seen = new Set(audit.seccomp!.violations.map((v) => v.syscall));
      assert.deepEqual(
        names.filter((n) => !seen.has(n)),
        [],
        'calls the audit did not report',
      );
      const r = await run(args, { mounts: probeMount() });
      const lines = (r.stdout as string).trim().split('\n');
      assert.equal(lines.length, names.length);
      lines.forEach((line, i) => assert.equal(line, `${nr(names[i]!)} -1 ${denies.get(names[i]!)}`, names[i]));
      assert.deepEqual(r.seccomp!.violations, [], 'errno actions are not violations');
    });

    it('argument filters: clone/unshare flags, ioctl commands with high bits, socket families, personality', async () => {
      const checks: [string, string[], string][] = [
        ['unshare(CLONE_NEWUSER)', ['syscall', String(nr('unshare')), '0x10000000'], '-1 EPERM'],
        ['clone(CLONE_NEWUSER|SIGCHLD)', ['syscall', String(nr('clone')), '0x10000011'], '-1 EPERM'],
        ['clone3', ['syscall', String(nr('clone3')), '0', '0'], '-1 ENOSYS'],
        ['ioctl TIOCSTI', ['syscall', String(nr('ioctl')), '0', '0x5412', '0'], '-1 EPERM'],
        ['ioctl TIOCSTI with high bits set (CVE-2019-7303)', ['syscall', String(nr('ioctl')), '0', '0xdead00005412', '0'], '-1 EPERM'],
        ['ioctl TIOCLINUX', ['syscall', String(nr('ioctl')), '0', '0x10000541c', '0'], '-1 EPERM'],
        ['ioctl TCGETS (allowed; not a tty here)', ['syscall', String(nr('ioctl')), '0', '0x5401', '0'], '-1 ENOTTY'],
        ['socket AF_PACKET', ['syscall', String(nr('socket')), '17', '3', '0'], '-1 EAFNOSUPPORT'],
        ['socket AF_VSOCK', ['syscall', String(nr('socket')), '40', '1', '0'], '-1 EAFNOSUPPORT'],
        ['socket AF_NETLINK, NETLINK_AUDIT', ['syscall', String(nr('socket')), '16', '3', '9'], '-1 EPROTONOSUPPORT'],
        [
          'socket AF_VSOCK with high bits set (the kernel reads an int)',
          ['syscall', String(nr('socket')), '0x100000028', '1', '0'],
          '-1 EAFNOSUPPORT',
        ],
        ['socket AF_PACKET with high bits set', ['syscall', String(nr('socket')), '0xffffffff00000011', '3', '0'], '-1 EAFNOSUPPORT'],
        [
          'socket AF_NETLINK with high bits set, NETLINK_AUDIT',
          ['syscall', String(nr('socket')), '0x100000010', '3', '9'],
          '-1 EPROTONOSUPPORT',
        ],
        ['syscall -1 (not a foreign ABI): ENOSYS, not killed', ['syscall', '-1'], '-1 ENOSYS'],
        ['personality(ADDR_NO_RANDOMIZE)', ['syscall', String(nr('personality')), '0x0040000'], '-1 EPERM'],
        ['personality with bit 31 (not the query)', ['syscall', String(nr('personality')), '0x80400000'], '-1 EPERM'],
        ['personality above 32 bits', ['syscall', String(nr('personality')), '0x100000000'], '-1 EPERM'],
      ];
      const script = checks.map(([, a]) => `/probe ${a.join(' ')}`).join('; ');
      const r = await run(['/bin/sh', '-c', script], { mounts: probeMount() });
      const lines = (r.stdout as string).trim().split('\n');
      checks.forEach(([what, , want], i) => assert.equal(lines[i], want, what));
      const ok = await run(
        [
          '/bin/sh',
          '-c',
          `/probe syscall ${nr('socket')} 16 3 0; /probe syscall ${nr('personality')} 0xffffffff; ` +
            `/probe syscall ${nr('personality')} 0x20008; /probe syscall ${nr('socket')} 1 1 0`,
        ],
        { mounts: probeMount() },
      );
      const okLines = (ok.stdout as string).trim().split('\n');
      assert.match(okLines[0]!, /^\d+ OK$/, 'netlink route sockets are allowed');
      assert.match(okLines[1]!, /^\d+ OK$/, 'the personality query is allowed');
      assert.match(okLines[2]!, /^\d+ OK$/, 'PER_LINUX32|UNAME26 is harmless');
      assert.match(okLines[3]!, /^\d+ OK$/, 'unix sockets are allowed');
    });

    it('io_uring makes no socket the policy denies (IORING_OP_SOCKET made AF_VSOCK, netlink under permissive)', async function () {
      const host = onHost(['uring-socket', '1', '1', '0'], (out) => out === 'socket OK\n');
      if (host) {
        return skipBecause(this, `IORING_OP_SOCKET of an AF_UNIX socket outside any sandbox ${host} (io_uring off, or Linux < 5.19)`);
      }
      const families: [string, string][] = [
        ['AF_VSOCK', '40 1 0'],
        ['AF_NETLINK, NETLINK_GENERIC', '16 3 16'],
        ['AF_PACKET', '17 3 0'],
      ];
      for (const policy of ['default', 'judge', 'permissive']) {
        const script = families.map(([, a]) => `/probe syscall ${nr('socket')} ${a}; /probe uring-socket ${a}`).join('; ');
        const r = await run(['/bin/sh', '-c', script], { mounts: probeMount(), policy });
        const lines = (r.stdout as string).trim().split('\n');
        families.forEach(([what], i) => {
          assert.match(lines[2 * i]!, /^-1 E/, `${policy}: socket(${what}) is denied`);
          assert.match(lines[2 * i + 1]!, /^setup E(PERM|NOSYS)$/, `${policy}: no ring to make a ${what} socket with`);
        });
      }
    });

    it('i386 int 0x80 is killed, not allowed by omission', async function () {
      const host = hostI386();
      if (host.reason) {
        // What this host still shows: the call does not return inside either, and the crash is not called a violation.
        const r = await run(['/probe', 'int80'], { mounts: probeMount(), reject: false });
        assert.equal(r.stdout, 'int80 start\n');
        assert.equal(r.signal, host.signal, 'the sandbox dies as the host does');
        assert.notEqual(r.verdict, 'seccomp-violation');
        return skipBecause(this, `${host.reason}`);
      }
      const i386 = await run(['/probe', 'int80'], { mounts: probeMount(), reject: false });
      assert.equal(i386.stdout, 'int80 start\n');
      assert.equal(i386.signal, 'SIGSYS');
      assert.equal(i386.verdict, 'seccomp-violation');
      for (const policy of ['judge', 'permissive']) {
        const r = await run(['/probe', 'int80'], { mounts: probeMount(), reject: false, policy });
        assert.equal(r.signal, 'SIGSYS', policy);
      }
    });

    it('x32 syscalls are killed, not allowed by omission', async function () {
      // The filter sees the x32 bit before the kernel looks for an x32 table, so this holds with or without x32
      // support; on the host the call must return (ENOSYS without x32), or the SIGSYS below would prove nothing.
      const x32Args = ['syscall', String(0x40000000 + nr('getpid'))];
      const host = onHost(x32Args, (out) => /^-?\d+ \w+\n$/.test(out));
      if (host) {
        return skipBecause(this, `an x32 getpid outside any sandbox ${host}, so a kill inside would not be the filter's`);
      }
      const x32 = await run(['/probe', ...x32Args], { mounts: probeMount(), reject: false });
      assert.equal(x32.stdout, '');
      assert.equal(x32.signal, 'SIGSYS');
      assert.equal(x32.verdict, 'seccomp-violation');
      assert.deepEqual(x32.violation, { syscall: null, nr: null, arch: null });
      for (const policy of ['judge', 'permissive']) {
        const r = await run(['/probe', ...x32Args], { mounts: probeMount(), reject: false, policy });
        assert.equal(r.signal, 'SIGSYS', policy);
      }
    });

    it('judge: a syscall outside the allowlist kills the run, and the result names it', async () => {
      const r = await run(['/bin/sh', '-c', `echo before; /probe syscall ${nr('ptrace')} 0; echo after`], {
        mounts: probeMount(),
        policy: 'judge',
        reject: false,
      });
      assert.equal(r.verdict, 'seccomp-violation');
      assert.deepEqual(r.violation, { syscall: 'ptrace', nr: 101, arch: 'x86_64' });
      assert.equal(r.stdout, 'before\n', 'nothing ran after the violation');
      await assert.rejects(
        run(['/usr/bin/python3', '-c', 'import os; os.mkfifo("/tmp/f")'], { policy: 'judge' }),
        (e: Error & { code?: string; violation?: { syscall: string } }) =>
          e.code === 'ERR_SANDBOX_SECCOMP_VIOLATION' && e.violation?.syscall === 'mknodat' && /"judge" for calling mknodat/.test(e.message),
      );
      const sock = await run(['/usr/bin/python3', '-c', 'import socket\ntry:\n  socket.socket()\nexcept OSError as e: print(e.errno)'], {
        policy: 'judge',
      });
      assert.equal(sock.stdout, '13\n', 'socket() fails with EACCES under judge');
      const unix = await run(['/probe', 'syscall', String(nr('socketpair')), '1', '1', '0', '0'], {
        mounts: probeMount(),
        policy: 'judge',
      });
      assert.equal(unix.stdout, '-1 EFAULT\n', 'socketpair(AF_UNIX) passes the filter (EFAULT: no buffer was given)');
      const inet = await run(['/probe', 'syscall', String(nr('socketpair')), '2', '1', '0', '0'], {
        mounts: probeMount(),
        policy: 'judge',
        reject: false,
      });
      assert.deepEqual(
        inet.violation,
        { syscall: 'socketpair', nr: nr('socketpair'), arch: 'x86_64' },
        'socketpair of another family is a violation',
      );
    });

    it('audit mode lists what would be denied and lets the program finish', async () => {
      const r = await run(
        ['/bin/sh', '-c', `/probe syscall ${nr('ptrace')} 0xffff; /probe syscall ${nr('mknodat')} 0xffff; echo finished`],
        { mounts: probeMount(), policy: 'judge', seccompLog: true },
      );
      assert.equal(r.verdict, 'ok');
      assert.match(r.stdout as string, /finished\n$/);
      assert.deepEqual(
        r.seccomp!.violations.map((v) => v.syscall),
        ['ptrace', 'mknodat'],
      );
      assert.equal(r.seccomp!.mode, 'log');
    });
  });

describe('seccomp profile semantics', () => {
  const multiArch = {
    seccomp: {
      defaultAction: 'SCMP_ACT_KILL_PROCESS',
      architectures: ['SCMP_ARCH_X86_64', 'SCMP_ARCH_X86'],
      syscalls: [
        {
          names: [
            'read',
            'close',
            'dup',
            'brk',
            'mmap',
            'munmap',
            'mprotect',
            'arch_prctl',
            'set_tid_address',
            'set_robust_list',
            'rseq',
            'prlimit64',
            'getrandom',
            'newfstatat',
            'fstat',
            'openat',
            'pread64',
            'access',
            'getpid',
            'rt_sigreturn',
            'futex',
            'exit_group',
            'uname',
          ],
          action: 'SCMP_ACT_ALLOW',
        },
      ],
    },
  };

  it('a profile listing several architectures filters x86_64 calls by x86_64 numbers', async function () {
    if (process.arch !== 'x64') {
      return skipBecause(this, `needs x86_64 (this is ${process.arch})`);
    }
    const { runSandboxed } = await import('../../sandbox/index.js');
    // x86_64 socket (41) is i386 dup's number: it must still be killed on x86_64.
    const sock = await runSandboxed(['/probe', 'syscall', String(nr('socket')), '1', '1', '0'], {
      mounts: probeMount(),
      policy: multiArch,
      reject: false,
    });
    assert.equal(sock.verdict, 'seccomp-violation');
    assert.equal(sock.violation?.syscall, 'socket');
  });

  it('a profile listing several architectures allows an i386 call by its i386 number', async function () {
    if (process.arch !== 'x64') {
      return skipBecause(this, `needs x86_64 (this is ${process.arch})`);
    }
    const host = hostI386();
    if (host.reason) {
      return skipBecause(this, `${host.reason}`);
    }
    const { runSandboxed } = await import('../../sandbox/index.js');
    const i386 = await runSandboxed(['/probe', 'int80'], { mounts: probeMount(), policy: multiArch, reject: false });
    assert.match(i386.stdout as string, /int80 returned \d+/, 'i386 getpid is allowed when the profile lists SCMP_ARCH_X86');
  });

  it('execve, write, exit and exit_group cannot be restricted (the helper needs them)', async () => {
    const { runSandboxed } = await import('../../sandbox/index.js');
    assert.throws(
      () =>
        runSandboxed(['/bin/true'], {
          policy: { seccomp: { defaultAction: 'SCMP_ACT_ALLOW', syscalls: [{ names: ['execve'], action: 'SCMP_ACT_ERRNO' }] } },
        }),
      /execve cannot be restricted/,
    );
    assert.throws(
      () =>
        runSandboxed(['/bin/true'], {
          policy: {
            seccomp: {
              defaultAction: 'SCMP_ACT_ERRNO',
              syscalls: [{ names: ['write'], action: 'SCMP_ACT_ALLOW', args: [{ index: 0, value: 1, op: 'SCMP_CMP_EQ' }] }],
            },
          },
        }),
      /write cannot be restricted/,
    );
  });

  it("an option set to undefined does not cancel the policy's default; audit mode needs a filter", async () => {
    const { runSandboxed } = await import('../../sandbox/index.js');
    const r = await runSandboxed(['/bin/cat', '/proc/sys/kernel/hostname'], {
      policy: { extends: 'default', options: { hostname: 'pol' } },
      hostname: undefined,
    });
    assert.equal(r.stdout, 'pol\n');
    assert.throws(() => runSandboxed(['/bin/true'], { policy: 'none', seccompLog: true }), /has no seccomp filter, so seccompLog/);
  });
});

describe('without libseccomp', () => {
  it('a filter to compile fails with a clear error and the fix; shipped policies (prebuilt at build time) and none still run', () => {
    const own = { extends: 'default', seccomp: { syscalls: [{ names: ['chroot'], action: 'SCMP_ACT_ERRNO' }] } };
    const script = `import('${fileURLToPath(new URL('../../sandbox/index.js', import.meta.url))}').then(async (m) => {
      const r = await m.runSandboxed(['/bin/true'], { reject: false, policy: ${JSON.stringify(own)} });
      const n = await m.runSandboxed(['/bin/true'], { policy: 'none' });
      const d = await m.runSandboxed(['/bin/true'], { policy: 'judge' });
      console.log(JSON.stringify({ verdict: r.verdict, f: r.setupFailure, none: n.verdict, shipped: d.verdict }));
    })`;
    const out = spawnSync(process.execPath, ['-e', script], {
      encoding: 'utf8',
      env: { ...process.env, CUBICLE_LIBSECCOMP: '/nonexistent/libseccomp.so.2' },
    });
    const j = JSON.parse(out.stdout);
    assert.equal(j.verdict, 'setup-error');
    assert.equal(j.f.stage, 'seccomp');
    assert.match(j.f.message, /libseccomp cannot be loaded/);
    assert.match(j.f.hint, /apt-get install libseccomp2.*policy 'none'/);
    assert.equal(j.none, 'ok');
    assert.equal(j.shipped, 'ok');
  });
});
