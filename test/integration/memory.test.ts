// Memory a payload can hold outside its processes' own pages (memfds, SysV IPC, tmpfs inodes), /proc/sys, and
// one definition of peak memory, for each mechanism: cgroup v1 (root) and rlimits + sampling.
import { strict as assert } from 'node:assert';
import { type SandboxOptions } from '../../sandbox/index.js';
import { execFileSync } from 'node:child_process';
import { chmodSync, existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { forEachIdentity, forEachMechanism, limitMechanisms, skipBecause, worldReadableTmp } from '../helpers/env.js';

const PY = '/usr/bin/python3';

// 2 GiB written into a memfd that is never mapped, 1 MiB at a time (the kill comes long before).
const MEMFD = 'import os\nfd = os.memfd_create("x")\nc = b"a" * (1 << 20)\nfor i in range(2048): os.write(fd, c)';
// Every SysV message queue filled (8 KiB messages, without waiting).
const MSGQ =
  'import ctypes\nl = ctypes.CDLL(None)\nb = ctypes.create_string_buffer(8 + 8192)\nctypes.memset(b, 1, 8)\n' +
  'for q in range(32000):\n  i = l.msgget(0, 0o1600)\n  if i < 0: break\n  while l.msgsnd(i, b, 8192, 0o4000) == 0: pass\n' +
  'import time\ntime.sleep(1)'; // held, so a sample sees them however busy the host is

forEachIdentity((id, run) => {
  forEachMechanism(id, (m) => {
    const go = (cmd: string[], o: SandboxOptions = {}) => run(cmd, { ...m.opts, reject: false, ...o });
    const bomb = { memory: '64M', wallTime: 30_000 };

    it('a memfd written with write() and never mapped is memory-limit, not ok', async () => {
      const r = await go([PY, '-c', MEMFD], { limits: bomb });
      assert.equal(r.verdict, 'memory-limit', `${r.verdict} ${String(r.stderr)}`);
      assert.ok(r.usage!.peakMemoryBytes! >= 64 << 20);
    });

    // 512 MiB of shared anonymous memory, touched and held; non-dumpable, init can only read its status.
    const sharedAnon = (nonDumpable: boolean): string =>
      [
        'import ctypes, mmap, time',
        ...(nonDumpable ? ['ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)'] : []),
        'm = mmap.mmap(-1, 512 << 20, flags=mmap.MAP_SHARED)',
        'for i in range(0, 512 << 20, 4096): m[i] = 1',
        'time.sleep(1)',
      ].join('\n');
    for (const [nonDumpable, title] of [
      [true, 'shared anonymous memory held by a non-dumpable process is memory-limit, not ok (statm hid it)'],
      [false, 'shared anonymous memory held by an ordinary process is memory-limit, not ok (smaps has no Pss_Shmem per mapping)'],
    ] as const)
      it(title, async () => {
        const r = await go([PY, '-c', sharedAnon(nonDumpable)], { limits: bomb });
        assert.equal(r.verdict, 'memory-limit', `${r.verdict} ${String(r.stderr)}`);
      });

    it("the sealed copy of a 100 MiB inputFile is the caller's memory, not the payload's", async () => {
      const t = worldReadableTmp();
      try {
        const f = join(t.dir, 'big.in');
        writeFileSync(f, Buffer.alloc(100 << 20, 1));
        chmodSync(f, 0o644);
        const r = await go(['/bin/sh', '-c', 'sleep 0.3; wc -c'], { limits: bomb, inputFile: f });
        assert.equal(r.verdict, 'ok', `${r.verdict} peak ${r.usage?.peakMemoryBytes}`);
        assert.equal(r.stdout, `${100 << 20}\n`);
      } finally {
        t.cleanup();
      }
    });

    // Only cgroup v1 has a memory group of the payload's own (v2 kills the whole group; sampling has none).
    if (m.cgroup === 'v1')
      it('cgroup v1: only the payload is in the memory-limited group (an OOM kill once took the helper, and the usage)', async () => {
        const r = await go(['/bin/sh', '-c', 'grep :memory: /proc/self/cgroup /proc/1/cgroup'], { limits: bomb });
        assert.equal(r.verdict, 'ok', String(r.stderr));
        const lines = String(r.stdout).trim().split('\n');
        assert.match(lines[0] ?? '', /^\/proc\/self\/cgroup:\d+:memory:\/payload$/, 'the payload in the limited child group');
        assert.match(lines[1] ?? '', /^\/proc\/1\/cgroup:\d+:memory:\/$/, "init in the run's group (its cgroup namespace's root)");
      });

    it('SysV message queues filled to the kernel defaults are memory-limit, not ok', async () => {
      const r = await go([PY, '-c', MSGQ], { limits: bomb });
      assert.equal(r.verdict, 'memory-limit', `${r.verdict} ${String(r.stderr)}`);
    });

    it('empty files on /tmp are capped by the tmpfs inode count, not by host kernel memory', async () => {
      const r = await go(['/bin/sh', '-c', 'cd /tmp; i=0; while [ $i -lt 100000 ]; do true > f$i || break; i=$((i+1)); done; echo $i'], {
        limits: bomb,
      });
      const made = Number(String(r.stdout).trim());
      assert.ok(made > 1000 && made <= 4096, `${made} files`);
    });

    it('one allocation larger than the limit is memory-limit, not nonzero-exit (MemoryError under RLIMIT_DATA)', async () => {
      const r = await go([PY, '-c', 'x = bytearray(300 << 20)'], { limits: bomb });
      assert.equal(r.verdict, 'memory-limit', `${r.verdict} ${String(r.stderr)}`);
    });

    it('a C++ vector larger than the limit is memory-limit, not SIGABRT (bad_alloc under RLIMIT_DATA)', async function () {
      if (!existsSync('/usr/bin/g++')) skipBecause(this, 'no g++ on this host to build the C++ program');
      const t = worldReadableTmp();
      try {
        writeFileSync(join(t.dir, 'big.cc'), '#include <vector>\nint main() { std::vector<char> v(300u << 20); return v[4096]; }\n');
        execFileSync('/usr/bin/g++', ['-O1', '-o', join(t.dir, 'big'), join(t.dir, 'big.cc')]);
        chmodSync(join(t.dir, 'big'), 0o755);
        const r = await go(['/job/big'], { limits: bomb, mounts: [{ type: 'bind', source: t.dir, target: '/job' }] });
        assert.equal(r.verdict, 'memory-limit', `${r.verdict} ${r.signal} ${String(r.stderr)}`);
      } finally {
        t.cleanup();
      }
    });

    it('Java with default flags, and with -Xss64m, starts under 256M (RLIMIT_DATA stopped the JVM reserving)', async function () {
      if (!existsSync('/usr/bin/java')) skipBecause(this, 'no java on this host');
      for (const flags of [[], ['-Xss64m']]) {
        const r = await go(['/usr/bin/java', ...flags, '-version'], { limits: { memory: '256M', wallTime: 60_000 } });
        assert.equal(r.verdict, 'ok', `java ${flags.join(' ')}: ${r.verdict} ${String(r.stderr)}`);
        assert.match(String(r.stderr), /version/);
      }
    });

    it('a mapped memfd, tmpfs file and SysV segment count once (sampling counted each twice: false memory-limit)', async () => {
      const script = [
        'import ctypes, mmap, os, time',
        'l = ctypes.CDLL(None, use_errno=True)',
        'N = 30 << 20',
        'fd = os.memfd_create("x"); os.ftruncate(fd, N); a = mmap.mmap(fd, N)',
        'g = os.open("/tmp/f", os.O_RDWR | os.O_CREAT); os.ftruncate(g, N); b = mmap.mmap(g, N)',
        'for m in (a, b):',
        '  for i in range(0, N, 4096): m[i] = 1',
        'l.shmat.restype = ctypes.c_void_p',
        'p = l.shmat(ctypes.c_int(l.shmget(0, N, 0o1600)), None, 0)',
        'ctypes.memset(ctypes.c_void_p(p), 1, N)',
        'time.sleep(0.5)',
      ].join('\n');
      const r = await go([PY, '-c', script], { limits: { memory: '128M', wallTime: 30_000 } });
      assert.equal(r.verdict, 'ok', `${r.verdict} peak ${r.usage?.peakMemoryBytes} ${String(r.stderr)}`);
      const peak = r.usage!.peakMemoryBytes!;
      assert.ok(peak >= 90 << 20 && peak < 120 << 20, `peak ${peak}: 3 x 30 MiB and python, each once`);
    });

    it('/proc/sys is read-only inside, even to uid 0 (the IPC namespace limits cannot be raised)', async () => {
      const r = await go(['/bin/sh', '-c', 'echo 99999999 > /proc/sys/kernel/msgmnb; cat /proc/sys/kernel/msgmnb'], { uid: 0, gid: 0 });
      assert.match(String(r.stderr), /Read-only file system/);
      assert.equal(String(r.stdout).trim(), '16384');
    });

    it('Node A+B under 32M: ok, and the peak is within the limit and not the mapped file pages of node', async () => {
      const r = await go(['/usr/bin/node', '-e', 'setTimeout(() => {}, 200)'], { limits: { memory: '32M' } });
      assert.equal(r.verdict, 'ok');
      const peak = r.usage!.peakMemoryBytes!;
      assert.ok(peak > 2 << 20 && peak <= 32 << 20, `peak ${peak}`);
      assert.ok(peak < r.usage!.maxRssBytes, "maxRss counts node's mapped binary; the peak does not");
    });
  });

  it('the same program reports the same peak (±5%) with a memory cgroup and with sampling', async function () {
    const withCgroup = limitMechanisms(id)[0]!;
    if (withCgroup.skip) skipBecause(this, withCgroup.skip);
    const prog = ['/usr/bin/node', '-e', 'const a = Buffer.alloc(40 << 20, 1); setTimeout(() => a, 400)'];
    const [cg, smp] = [await run(prog, { limits: { memory: '128M' } }), await run(prog, { limits: { memory: '128M' }, cgroups: false })];
    assert.equal(cg.limits.memory!.mechanism, `cgroup-${withCgroup.cgroup!}`);
    const a = cg.usage!.peakMemoryBytes!,
      b = smp.usage!.peakMemoryBytes!;
    assert.ok(Math.abs(a - b) <= 0.05 * a, `cgroup ${a} vs sampling ${b}`);
  });
});
