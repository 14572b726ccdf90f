// Limits, verdicts and accounting, for each mechanism the host has: cgroup v1 (root) and rlimits + sampling.
import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { runSandboxed, SandboxOptionError, type SandboxOptions } from '../../sandbox/index.js';
import { cgroup2Mount, cgroupV1Available, cgroupV2Base } from '../../sandbox/cgroup/index.js';
import { forEachIdentity, forEachMechanism, IS_ROOT, probe, probeMount, ROOTLESS_ID, skipBecause } from '../helpers/env.js';

/** CPU of this process's reaped descendants (cutime + cstime, in USER_HZ = 100 ticks a second on every Linux Node runs on). */
function reapedCpuMs(): number {
  const stat = readFileSync('/proc/self/stat', 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[13]) + Number(f[14])) * 10;
}

/** Children that burn 5 ms of CPU each for 4 s, auto-reaped (SIGCHLD ignored): only a CPU cgroup counts them. */
const AUTO_REAPED_BURNER = [
  'import os, signal, time',
  'signal.signal(signal.SIGCHLD, signal.SIG_IGN)',
  'end = time.time() + 4',
  'while time.time() < end:',
  '  if os.fork() == 0:',
  '    t = time.process_time()',
  '    while time.process_time() - t < 0.005: pass',
  '    os._exit(0)',
  '  time.sleep(0.006)',
].join('\n');

const within = (actual: number, expected: number, rel: number, abs: number): boolean =>
  Math.abs(actual - expected) <= Math.max(expected * rel, abs);

forEachIdentity((id, run) => {
  forEachMechanism(id, (m) => {
    const go = (cmd: string[], o: SandboxOptions = {}) =>
      run(cmd, { ...m.opts, reject: false, ...o, mounts: [...(probeMount() ?? []), ...(o.mounts ?? [])] });

    it('a fork bomb is held at exactly its cap, spins there until a time limit, and is process-limit', async () => {
      // A bomb that keeps forking (every process retries forever), as real ones do.
      const r = await go(['/usr/bin/python3', '-c', 'import os\nwhile True:\n  try: os.fork()\n  except OSError: pass'], {
        limits: { processes: 30, wallTime: 2000 },
      });
      assert.equal(r.verdict, 'process-limit', 'a refused fork came before the wall limit that stopped it');
      assert.ok(r.usage!.peakProcesses! <= 30, `peak ${r.usage!.peakProcesses} (the kernel holds it at 30)`);
      const t = Date.now();
      assert.equal(spawnSync('/bin/true').status, 0);
      assert.ok(Date.now() - t < 2000, 'the host still spawns processes');
      assert.match(r.limits.processes!.mechanism, m.cgroup ? new RegExp(`cgroup-${m.cgroup}`) : /rlimit/);
    });

    it('a memory bomb gives memory-limit; memory counts tmpfs and shm pages', async () => {
      const r = await go(['/usr/bin/python3', '-c', 'x = [b"a" * (1 << 20) for _ in range(400)]'], { limits: { memory: '96M' } });
      assert.equal(r.verdict, 'memory-limit');
      assert.equal(r.limits.memory!.mechanism, m.cgroup ? `cgroup-${m.cgroup}` : 'sampling');
      assert.match(await go(['/bin/true'], { limits: { memory: '96M' } }).then(() => 'ok'), /ok/);
      const shm = await go(['/bin/sh', '-c', 'head -c 150000000 /dev/zero > /dev/shm/fill; sleep 1'], {
        limits: { memory: '64M' },
        shmSize: '256M',
      });
      assert.equal(shm.verdict, 'memory-limit', 'shm pages are sandbox memory');
    });

    it('an infinite loop gives cpu-time-limit; a multi-threaded burner is summed over threads', async () => {
      const loop = await go(['/bin/sh', '-c', 'while :; do :; done'], { limits: { cpuTime: '0.4s' } });
      assert.equal(loop.verdict, 'cpu-time-limit');
      assert.ok(loop.usage!.cpuMs >= 400 && loop.usage!.cpuMs < 700, `cpu ${loop.usage!.cpuMs}`);
      // Four threads burn 400 ms of CPU each: only their sum (1.6 s) passes the 0.6 s limit, so the verdict alone
      // shows the threads are summed, however busy the machine is (no comparison with wall time).
      const threads = await go(['/probe', 'burn', '400', '4'], { limits: { cpuTime: '0.6s' } });
      assert.equal(threads.verdict, 'cpu-time-limit', 'the CPU of several threads is summed');
      assert.ok(threads.usage!.cpuMs >= 600, `cpu ${threads.usage!.cpuMs}`);
      const one = await go(['/probe', 'burn', '400', '1'], { limits: { cpuTime: '0.6s' } });
      assert.equal(one.verdict, 'ok', 'one thread of 400 ms stays under the limit');
    });

    it('a sleeper gives wall-time-limit', async () => {
      const r = await go(['/bin/sleep', '10'], { limits: { wallTime: 300 } });
      assert.equal(r.verdict, 'wall-time-limit');
      assert.equal(r.timedOut, true);
      assert.ok(r.usage!.wallMs >= 300 && r.usage!.wallMs < 2000, `wall ${r.usage!.wallMs}`);
    });

    it('extra time: killed only after limit + grace, and the true time is reported', async () => {
      const r = await go(['/probe', 'burn', '500', '1'], { limits: { cpuTime: 200, extraTime: 2000 } });
      assert.equal(r.stdout, 'burned 1 x 500 ms\n', 'it ran to the end within the grace');
      assert.equal(r.verdict, 'cpu-time-limit', 'but over the limit is over the limit');
      assert.ok(within(r.usage!.cpuMs, 500, 0.05, 20), `cpu ${r.usage!.cpuMs}`);
    });

    it('an output flood gives output-limit, with host memory bounded by the limit', async () => {
      const r = await go(['/usr/bin/yes'], { limits: { outputLimit: '2M' }, encoding: 'buffer' });
      assert.equal(r.verdict, 'output-limit');
      assert.equal((r.stdout as Buffer).length, 2 << 20, 'exactly the limit is kept');
    });

    it('a file larger than fsize gives file-size-limit', async () => {
      // exec: head itself is the payload (python would ignore SIGXFSZ and see EFBIG instead)
      const r = await go(['/bin/sh', '-c', 'exec head -c 3000000 /dev/zero > /tmp/big'], { limits: { fileSize: '1M' } });
      assert.equal(r.verdict, 'file-size-limit');
      assert.equal(r.signal, 'SIGXFSZ');
    });

    it('open files and stack are per-process rlimits, read back inside', async () => {
      const r = await go(['/bin/sh', '-c', 'ulimit -n; ulimit -s'], { limits: { openFiles: 64, stack: '4M' } });
      assert.equal(r.stdout, '64\n4096\n');
      assert.equal(r.limits.openFiles!.mechanism, 'rlimit');
    });

    it('filling /tmp gives ENOSPC inside and leaves the host untouched', async () => {
      const before = readdirSync(tmpdir()).length;
      const r = await go(
        ['/bin/sh', '-c', 'head -c 50000000 /dev/zero > /tmp/fill 2>/dev/null; echo rc=$?; ls -l /tmp/fill | cut -d" " -f5'],
        { tmpSize: '8M' },
      );
      assert.equal(r.stdout, `rc=1\n${8 << 20}\n`);
      assert.ok(Math.abs(readdirSync(tmpdir()).length - before) <= 2, 'nothing was written to the host /tmp');
    });

    it('leftover children do not extend a limited run', async () => {
      const t = Date.now();
      const r = await go(['/bin/sh', '-c', '(sleep 100 &); echo done'], {
        limits: { cpuTime: 5000, wallTime: 20_000, memory: '256M', processes: 50 },
      });
      const four = await go(['/probe', 'burn', '50', '5'], { limits: { processes: 5 } });
      assert.equal(four.verdict, 'ok', 'five threads with a limit of five tasks');
      assert.equal(r.verdict, 'ok');
      assert.ok(Date.now() - t < 5000);
    });

    it('CPU of children nobody waits for (SIGCHLD ignored) counts with a CPU cgroup', async function () {
      if (!m.cgroup) skipBecause(this, 'without a CPU cgroup, children auto-reaped under SIG_IGN leave no CPU record (a documented gap)');
      const r = await go(['/usr/bin/python3', '-c', AUTO_REAPED_BURNER], { limits: { cpuTime: 1000, wallTime: 20_000 } });
      assert.equal(r.verdict, 'cpu-time-limit');
    });

    it("init's own sampling is not charged to the payload", async () => {
      // The same 150 sleeping processes live 0.2 s, then 3 s. init samples every one of them about every 10 ms
      // (paced to at most ~10% of a CPU), so the longer run costs init more CPU: that shows in what the helper's
      // process tree used (reaped by this process), and must not show in the payload's CPU.
      // Measured on a 2-core VM, as root and as uid 65534, cgroup v1 and rlimits, 64 pairs of runs at load 3-5,
      // some with 3 extra CPU hogs: the payload used 21-44 ms in either run (long minus short: -10 to +13 ms);
      // the tree's CPU grew by 160-330 ms (least under the hogs: init then wakes less often). With init's CPU
      // deliberately left in the payload's figure, the payload grew by ~250 ms and this test failed.
      // The sleepers are CLONE_VM children (no page tables to copy): 150 of them cost ~30 ms to start, where
      // 150 fork+exec'd sleep(1)s cost 1.0-1.3 s here, varying from run to run by as much as the charge sought.
      probe(); // compiled first: the compiler's CPU is not the sandbox's
      const sleepers = async (ms: number) => {
        const before = reapedCpuMs();
        const r = await go(['/probe', 'sleepers', '150', String(ms)], { limits: { cpuTime: 3000, processes: 400, wallTime: 20_000 } });
        assert.equal(r.verdict, 'ok');
        assert.equal(r.stdout, 'sleepers 150\n');
        return { r, payload: r.usage!.cpuMs, tree: reapedCpuMs() - before };
      };
      const short = await sleepers(200);
      const long = await sleepers(3000);
      assert.ok(long.r.usage!.peakProcesses! > 150, `init sampled while the sleepers lived (peak ${long.r.usage!.peakProcesses})`);
      const sampling = long.tree - short.tree;
      const charged = long.payload - short.payload;
      // A full charge would be about `sampling`; 50 ms absorbs the payload's own variation (13 ms at most here).
      assert.ok(
        charged < Math.max(50, sampling / 2),
        `the payload used ${short.payload.toFixed(0)} ms living 0.2 s and ${long.payload.toFixed(0)} ms living 3 s, ` +
          `while the sandbox's processes used ${sampling} ms more`,
      );
    });

    it('many processes holding memory cannot make init enforce the wall limit late', async () => {
      const script = [
        'import os, time',
        'for _ in range(100):',
        '  if os.fork() == 0:',
        '    x = bytearray(b"a" * (2 << 20))',
        '    time.sleep(60)',
        '    os._exit(0)',
        'while True: pass',
      ].join('\n');
      const t = Date.now();
      const r = await go(['/usr/bin/python3', '-c', script], { limits: { wallTime: 2000, memory: '1G', processes: 200 } });
      assert.equal(r.verdict, 'wall-time-limit');
      assert.ok(r.usage!.wallMs < 2400, `killed at ${r.usage!.wallMs} ms for a 2000 ms limit`);
      assert.ok(Date.now() - t < 5000);
    });

    it('usage survives a kill by the supervisor (output limit)', async () => {
      const r = await go(['/bin/sh', '-c', '/probe burn 200 1 >/dev/null; yes'], { limits: { outputLimit: '1M' } });
      assert.equal(r.verdict, 'output-limit');
      assert.ok(r.usage!.cpuMs >= 190, `cpu ${r.usage!.cpuMs}`);
    });

    it('memory hidden from smaps (non-dumpable) or held in SysV shm still counts', async () => {
      const hide = await go(
        [
          '/usr/bin/python3',
          '-c',
          'import ctypes, time\nctypes.CDLL(None).prctl(4, 0, 0, 0, 0)\nx = bytearray(b"a" * (150 << 20))\ntime.sleep(1)',
        ],
        { limits: { memory: '64M' } },
      );
      assert.equal(hide.verdict, 'memory-limit', 'PR_SET_DUMPABLE 0 does not hide memory');
      const shm = await go(
        [
          '/usr/bin/python3',
          '-c',
          [
            'import ctypes, time',
            'l = ctypes.CDLL(None, use_errno=True)',
            'l.shmat.restype = ctypes.c_void_p',
            'id = l.shmget(0, 150 << 20, 0o1600)',
            'p = l.shmat(id, None, 0)',
            'ctypes.memset(p, 1, 150 << 20)',
            'l.shmdt(ctypes.c_void_p(p))',
            'time.sleep(1)',
          ].join('\n'),
        ],
        { limits: { memory: '64M' } },
      );
      assert.equal(shm.verdict, 'memory-limit', 'detached SysV shm counts');
    });

    it('accuracy: CPU within 5% (or 20 ms) of a calibrated burner, single- and multi-threaded', async () => {
      for (const [ms, threads] of [
        [300, 1],
        [200, 3],
      ] as const) {
        const r = await go(['/probe', 'burn', String(ms), String(threads)], { limits: { cpuTime: 10_000 } });
        assert.equal(r.verdict, 'ok');
        assert.ok(within(r.usage!.cpuMs, ms * threads, 0.05, 20), `${threads} x ${ms} ms burned, measured ${r.usage!.cpuMs} ms`);
      }
    });

    it('accuracy: peak memory within 10% of a touched allocation, also split across child processes', async () => {
      for (const args of [['64'], ['64', '4']]) {
        const r = await go(['/probe', 'hog', ...args], { limits: { memory: '1G' } });
        assert.equal(r.verdict, 'ok');
        assert.ok(within(r.usage!.peakMemoryBytes!, 64 << 20, 0.1, 0), `hog ${args.join(' ')}: peak ${r.usage!.peakMemoryBytes}`);
      }
      const split = await go(['/probe', 'hog', '64', '4'], { limits: { memory: '1G' } });
      assert.ok(split.usage!.maxRssBytes < 32 << 20, 'no single process held it all');
    });
  });

  it("caps per-user kernel counters inside the sandbox's user namespace", async () => {
    const r = await run(
      [
        '/usr/bin/python3',
        '-c',
        [
          'import ctypes, os',
          'print(open("/proc/sys/user/max_inotify_instances").read().strip(), open("/proc/sys/user/max_user_namespaces").read().strip())',
          'libc = ctypes.CDLL(None, use_errno=True)',
          'fds = []',
          'while len(fds) < 1000:',
          '  fd = libc.inotify_init()',
          '  if fd < 0: break',
          '  fds.append(fd)',
          'print(len(fds), os.strerror(ctypes.get_errno()))',
        ].join('\n'),
      ],
      { policy: 'none', limits: { openFiles: 4096 } },
    );
    const inotify = Math.min(128, Math.floor(Number(readFileSync('/proc/sys/user/max_inotify_instances', 'utf8')) / 2)); // half the host's
    assert.equal(r.stdout, `${inotify} 16\n${inotify} Too many open files\n`);
  });
});

describe('cgroup v2', () => {
  const base = cgroupV2Base(undefined);
  const v2Controllers = (): string[] => {
    const mnt = cgroup2Mount();
    try {
      return mnt ? readFileSync(`${mnt}/cgroup.controllers`, 'utf8').trim().split(/\s+/) : [];
    } catch {
      return [];
    }
  };

  it("init is cloned into the run's group (CLONE_INTO_CGROUP), and CPU is judged from cpu.stat", async function () {
    if (typeof base !== 'string') {
      return skipBecause(this, `${base.reason}`);
    }
    const r = await runSandboxed(['/usr/bin/python3', '-c', AUTO_REAPED_BURNER], {
      cgroups: 'v2',
      limits: { cpuTime: 1000, wallTime: 20_000 },
      reject: false,
    });
    assert.equal(r.limits.cpuTime!.mechanism, 'cgroup-v2+sampling');
    assert.equal(r.verdict, 'cpu-time-limit', 'auto-reaped children are counted by the group');
    const inside = await runSandboxed(['/bin/cat', '/proc/self/cgroup'], { cgroups: 'v2', limits: { cpuTime: 5000 } });
    assert.match(inside.stdout as string, /^0::\/$/m, "the cgroup namespace shows the run's group as its root");
    assert.deepEqual(
      readdirSync(base).filter((n) => /^\d+-/.test(n) && n.startsWith(`${process.pid}-`)),
      [],
      "the run's group was removed",
    );
  });

  it('memory and process limits use the v2 controllers when the hierarchy has them', async function () {
    const have = v2Controllers();
    if (typeof base !== 'string' || !have.includes('memory') || !have.includes('pids')) {
      return skipBecause(
        this,
        typeof base !== 'string'
          ? base.reason
          : 'the cgroup v2 hierarchy has no memory/pids controllers here ' +
              `(they are bound to v1 hierarchies: ${have.join(' ') || 'none'})`,
      );
    }
    const mem = await runSandboxed(['/usr/bin/python3', '-c', 'x = [b"a" * (1 << 20) for _ in range(400)]'], {
      cgroups: 'v2',
      limits: { memory: '96M' },
      reject: false,
    });
    assert.equal(mem.limits.memory!.mechanism, 'cgroup-v2');
    assert.equal(mem.verdict, 'memory-limit');
    // A bomb that keeps forking until the wall limit stops it: a refused fork came first, so process-limit.
    const bomb = await runSandboxed(['/usr/bin/python3', '-c', 'import os\nwhile True:\n  try: os.fork()\n  except OSError: pass'], {
      cgroups: 'v2',
      limits: { processes: 30, wallTime: 2000 },
      reject: false,
    });
    assert.equal(bomb.limits.processes!.mechanism, 'cgroup-v2+sampling');
    assert.equal(bomb.verdict, 'process-limit');
    assert.ok(bomb.usage!.peakProcesses! <= 30, `peak ${bomb.usage!.peakProcesses} (pids.max holds it at 30)`);
  });

  it('runAs cannot use v2 (no write access up to the common ancestor); it falls back, or strict refuses', async function () {
    if (typeof base !== 'string' || !IS_ROOT) {
      return skipBecause(this, 'needs root and a cgroup2 hierarchy');
    }
    const r = await runSandboxed(['/bin/true'], { cgroups: 'v2', runAs: ROOTLESS_ID, limits: { cpuTime: 1000 } });
    assert.equal(r.limits.cpuTime!.mechanism, 'rlimit+sampling');
    assert.throws(
      () => runSandboxed(['/bin/true'], { cgroups: 'v2', runAs: ROOTLESS_ID, limits: { memory: '64M' }, strictLimits: true }),
      /strict limits need cgroups/,
    );
  });
});

describe('limit options', () => {
  it('strict limits fail closed when cgroups cannot be used', () => {
    assert.throws(
      () => runSandboxed(['/bin/true'], { limits: { memory: '64M' }, strictLimits: true, cgroups: false }),
      /strictLimits needs cgroups/,
    );
    if (cgroupV1Available() !== true)
      assert.throws(
        () => runSandboxed(['/bin/true'], { limits: { memory: '64M' }, strictLimits: true }),
        (e: unknown) => e instanceof SandboxOptionError && /strict limits need cgroups/.test(e.message),
      );
  });

  it('bad limits are refused with the option named', () => {
    assert.throws(() => runSandboxed(['/bin/true'], { limits: { memory: 'lots' } }), /limits\.memory "lots" is not a size/);
    assert.throws(() => runSandboxed(['/bin/true'], { limits: { cpuTime: -1 } }), /limits\.cpuTime must be a positive number/);
    assert.throws(() => runSandboxed(['/bin/true'], { limits: { processes: 0 } }), /limits\.processes must be an integer/);
    assert.throws(() => runSandboxed(['/bin/true'], { limits: { cpuTme: 1 } as never }), /unknown limit "cpuTme"/);
    assert.throws(() => runSandboxed(['/bin/true'], { timeout: 100, limits: { wallTime: 100 } }), /either timeout or limits\.wallTime/);
  });

  it('the result names each limit with its value and mechanism', async () => {
    const r = await runSandboxed(['/bin/true'], { limits: { cpuTime: '1.5s', memory: '128M', fileSize: '1M', outputLimit: '1K' } });
    assert.deepEqual(
      Object.keys(r.limits).sort(),
      ['cpuTime', 'fileSize', 'memory', 'openFiles', 'outputLimit', 'processes'],
      'processes and openFiles: the default caps',
    );
    assert.ok(r.limits.openFiles!.value <= 1024 && r.limits.openFiles!.value > 0, `open files ${r.limits.openFiles!.value}`);
    assert.equal(r.limits.cpuTime!.value, 1500);
    assert.equal(r.limits.memory!.value, 128 << 20);
    assert.equal(r.limits.outputLimit!.mechanism, 'supervisor');
    if (r.limits.memory!.mechanism === 'cgroup-v1') assert.equal(r.limits.memory!.readBack, 128 << 20, 'the cgroup value was read back');
  });
});
