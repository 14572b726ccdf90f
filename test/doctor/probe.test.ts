// The probes' parsing and their never-throw contract, on this machine's real files.
import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import { readFileSync, statSync } from 'node:fs';
import { release } from 'node:os';
import {
  attempt,
  parseKernelRelease,
  mountFacts,
  probeCgroups,
  probeConfinement,
  probeHostNamespaces,
  probeKernel,
  probeLibseccomp,
  probeSysctl,
  statusField,
} from '../../sandbox/doctor/probe.js';
import type { Fact } from '../../sandbox/doctor/facts.js';
import { cgroup2MountPoint, cgroupV1Controllers, parseMountinfo } from '../../sandbox/host/mountinfo.js';
import { cgroupV1Available, cgroupV2Base } from '../../sandbox/cgroup/index.js';

const MISSING_LIBRARY = '/nonexistent/libcubicle-missing.so.2';

describe('doctor probes', () => {
  it('parses kernel releases', () => {
    assert.deepEqual(parseKernelRelease('6.8.0-45-generic'), { release: '6.8.0-45-generic', major: 6, minor: 8 });
    assert.deepEqual(parseKernelRelease('5.15.90.1-microsoft-standard-WSL2'), {
      release: '5.15.90.1-microsoft-standard-WSL2',
      major: 5,
      minor: 15,
    });
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
    assert.deepEqual(
      attempt(() => 7),
      { ok: true, value: 7 },
    );
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

  it('loads libseccomp as policies do: a missing CUBICLE_LIBSECCOMP is a fact, not a throw', () => {
    // The loader keeps its first result for the whole process, so the override is tried in a fresh one.
    const probe = new URL('../../sandbox/doctor/probe.js', import.meta.url).href;
    const script =
      `const { probeLibseccomp } = await import(${JSON.stringify(probe)}); ` + 'process.stdout.write(JSON.stringify(probeLibseccomp()));';
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], {
      env: { ...process.env, CUBICLE_LIBSECCOMP: MISSING_LIBRARY },
      encoding: 'utf8',
      timeout: 30_000,
    });
    assert.equal(r.status, 0, r.stderr);
    const f = JSON.parse(r.stdout) as Fact<unknown>;
    assert.equal(f.ok, false);
    assert.equal(!f.ok && f.code, 'MISSING');
    assert.ok(!f.ok && f.error.startsWith(`${MISSING_LIBRARY} cannot be loaded: `), JSON.stringify(f));
  });

  it('loads the real libseccomp and reads a sane version', () => {
    const f = probeLibseccomp();
    assert.ok(f.ok, f.ok ? '' : f.error);
    assert.equal(f.value.major, 2, 'libseccomp.so.2 is major version 2');
    assert.ok(Number.isInteger(f.value.minor) && Number.isInteger(f.value.micro));
  });

  it('reads the cgroup choices from the limits code and the mounts behind them from the one mountinfo parser', () => {
    const f = probeCgroups();
    assert.ok(f.ok, f.ok ? '' : f.error);
    const table = parseMountinfo(readFileSync('/proc/self/mountinfo', 'utf8'));
    assert.equal(f.value.v1, cgroupV1Available());
    assert.deepEqual(f.value.v2, cgroupV2Base(undefined));
    assert.equal(f.value.v2Mount, cgroup2MountPoint(table));
    assert.deepEqual(f.value.v1Controllers, [...cgroupV1Controllers(table, ['memory', 'pids', 'cpuacct']).keys()].sort());
    if (f.value.v2Mount !== null && f.value.v2Controllers !== null)
      assert.deepEqual(
        f.value.v2Controllers,
        readFileSync(`${f.value.v2Mount}/cgroup.controllers`, 'utf8').trim().split(/\s+/).filter(Boolean),
      );
  });
});
