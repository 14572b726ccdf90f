// The probes' parsing and their never-throw contract, on this machine's real files.
import { strict as assert } from 'node:assert';
import { readFileSync, statSync } from 'node:fs';
import { release } from 'node:os';
import {
  attempt,
  parseKernelRelease,
  mountFacts,
  probeConfinement,
  probeHostNamespaces,
  probeKernel,
  probeLibseccomp,
  probeSysctl,
  statusField,
} from '../../sandbox/doctor/probe.js';
import { parseMountinfo } from '../../sandbox/host/mountinfo.js';

describe('doctor probes', () => {
  it('parses kernel releases', () => {
    assert.deepEqual(parseKernelRelease('6.8.0-45-generic'), { release: '6.8.0-45-generic', major: 6, minor: 8 });
    assert.deepEqual(parseKernelRelease('5.15.90.1-microsoft-standard-WSL2'), { release: '5.15.90.1-microsoft-standard-WSL2', major: 5, minor: 15 });
    assert.throws(() => parseKernelRelease('weird'), /cannot parse/);
    const k = probeKernel();
    assert.ok(k.ok);
    assert.equal(k.value.release, release());
  });

  it('records a throwing probe as an error fact', () => {
    const f = attempt((): number => {
      throw Object.assign(new Error('boom'), { code: 'EBOOM' });
    });
    assert.deepEqual(f, { ok: false, error: 'boom', code: 'EBOOM' });
    assert.deepEqual(attempt(() => 7), { ok: true, value: 7 });
  });

  it('reads sysctls: absent is null, non-numeric is an error fact', () => {
    assert.deepEqual(probeSysctl('/proc/sys/kernel/no_such_cubicle_sysctl'), { ok: true, value: null });
    const pidMax = probeSysctl('/proc/sys/kernel/pid_max');
    assert.deepEqual(pidMax, { ok: true, value: Number(readFileSync('/proc/sys/kernel/pid_max', 'utf8').trim()) });
    const bad = probeSysctl('/proc/self/status');
    assert.equal(bad.ok, false);
  });

  it('reads Seccomp: from /proc/self/status', () => {
    assert.equal(statusField('Name:\tnode\nSeccomp:\t2\nSeccomp_filters:\t1\n', 'Seccomp'), 2);
    assert.equal(statusField('Name:\tnode\nSeccomp:\t2\nSeccomp_filters:\t1\n', 'Seccomp_filters'), 1);
    assert.equal(statusField('Name:\tnode\n', 'Seccomp'), null);
    const c = probeConfinement();
    assert.ok(c.ok, c.ok ? '' : c.error);
    assert.equal(c.value.seccompMode, statusField(readFileSync('/proc/self/status', 'utf8'), 'Seccomp'));
  });

  it('finds the root filesystem and the mounts that mask /proc', () => {
    const docker = [
      '600 500 0:50 / / rw,relatime master:1 - overlay overlay rw,lowerdir=/x',
      '601 600 0:52 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw',
      '602 601 0:52 /bus /proc/bus ro,nosuid,nodev,noexec,relatime - proc proc rw',
      '603 601 0:53 /null /proc/kcore rw,nosuid - tmpfs tmpfs rw,size=65536k,mode=755',
      '604 601 0:54 / /proc/sys/fs/binfmt_misc rw,relatime - binfmt_misc binfmt_misc rw',
      '605 600 0:55 / /my\\040dir rw - tmpfs tmpfs rw',
      '',
    ].join('\n');
    assert.deepEqual(mountFacts(parseMountinfo(docker)), { rootFsType: 'overlay', procSubmounts: ['/proc/bus', '/proc/kcore'] });
    assert.deepEqual(mountFacts(parseMountinfo('1 1 0:1 / / rw - rootfs rootfs rw\n')), { rootFsType: 'rootfs', procSubmounts: [] });
  });

  it('lists the namespaces of this kernel by inode', () => {
    const ns = probeHostNamespaces();
    assert.ok(ns.ok);
    assert.equal(ns.value.user, statSync('/proc/self/ns/user').ino);
    assert.equal(ns.value.mnt, statSync('/proc/self/ns/mnt').ino);
  });

  it('reports a missing library as a fact, not a throw', async () => {
    const f = await probeLibseccomp('libcubicle-no-such-library.so.9');
    assert.equal(f.ok, false);
    assert.equal(!f.ok && f.code, 'MISSING');
  });

  it('loads the real libseccomp and reads a sane version', async () => {
    const f = await probeLibseccomp();
    assert.ok(f.ok, f.ok ? '' : f.error);
    assert.equal(f.value.major, 2, 'libseccomp.so.2 is major version 2');
    assert.ok(Number.isInteger(f.value.minor) && Number.isInteger(f.value.micro));
  });
});
