// The warm pool: a run in a sandbox made ahead is judged exactly as a cold one, each sandbox serves one run, runs
// that do not fit the pool run cold and say why, and no sandbox outlives close() or the pool's owner.
import { strict as assert } from 'node:assert';
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  createPool,
  runSandboxed,
  SandboxOptionError,
  type SandboxOptions,
  type SandboxPool,
  type SandboxResult,
} from '../../sandbox/index.js';
import { launchWarm } from '../../sandbox/pool/launch-warm.js';
import { splitPlan } from '../../sandbox/pool/split.js';
import { prepareRun } from '../../sandbox/api/prepare.js';
import { encodePlan, Op } from '../../sandbox/plan/ops.js';
import { StatusReader } from '../../sandbox/protocol/status.js';
import { alive, forEachIdentity, forEachMechanism, probeMount, waitFor, type LimitMechanism } from '../helpers/env.js';
import { planCgroup } from '../../sandbox/cgroup/index.js';

const INDEX = fileURLToPath(new URL('../../sandbox/index.js', import.meta.url));
const PTRACE = 101;

/** Host pids of this process's helpers and everything below them (the pool's sandboxes), by /proc's PPid. */
function descendants(root: number): number[] {
  const parent = new Map<number, number>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const m = /^PPid:\s+(\d+)/m.exec(readFileSync(`/proc/${name}/status`, 'utf8'));
      if (m) parent.set(Number(name), Number(m[1]));
    } catch {
      /* gone */
    }
  }
  const found: number[] = [];
  const walk = (p: number): void => {
    for (const [pid, pp] of parent)
      if (pp === p) {
        found.push(pid);
        walk(pid);
      }
  };
  walk(root);
  return found;
}

const comm = (pid: number): string => {
  try {
    return readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
  } catch {
    return '';
  }
};
const sandboxPids = (): number[] => descendants(process.pid).filter((p) => comm(p).startsWith('cubicle-'));

/** This process's run groups (named by its pid first) in the cgroup hierarchy runs get. */
function ownGroups(version: 'v1' | 'v2'): string[] {
  const planned = planCgroup({ memoryBytes: 64 << 20, pidsMax: 16 }, 'probe', { choice: version, parent: undefined, runAs: false });
  if ('reason' in planned) return [];
  const found = new Set<string>();
  for (const dir of planned.dirs)
    try {
      for (const n of readdirSync(dirname(dir))) if (n.startsWith(`${process.pid}-`)) found.add(`${dirname(dir)}/${n}`);
    } catch {
      /* no such hierarchy */
    }
  return [...found];
}

async function ready(pool: SandboxPool, n = pool.size): Promise<void> {
  assert.ok(await waitFor(() => pool.stats().ready >= n, 20_000), `the pool never had ${n} ready: ${JSON.stringify(pool.stats())}`);
}

/** What a verdict comparison looks at: the judged outcome, not timings. */
function outcome(r: SandboxResult<SandboxOptions>): unknown {
  return {
    verdict: r.verdict,
    exitCode: r.exitCode,
    signal: r.signal,
    stdout: r.stdout,
    violation: r.violation,
    files: r.files ? Object.fromEntries(Object.entries(r.files).map(([k, v]) => [k, v.toString('latin1')])) : undefined,
    fileErrors: r.fileErrors ? { ...r.fileErrors } : undefined,
    limits: r.limits,
  };
}

forEachIdentity((id) => {
  const judged = (m: LimitMechanism): SandboxOptions => ({ ...id.spawnAs, policy: 'judge', mounts: probeMount(), files: {}, ...m.opts });
  forEachMechanism(id, (m) => {
    const base = (): SandboxOptions => judged(m);
    let pool: SandboxPool;
    let memPool: SandboxPool;
    before(function () {
      if (m.skip) return;
      pool = createPool({ size: 2, options: base() });
      memPool = createPool({ size: 1, options: { ...base(), limits: { memory: '64M' } } });
    });
    after(async () => {
      await pool?.close();
      await memPool?.close();
    });

    const cases: [string, string[], SandboxOptions, string][] = [
      ['ok', ['/bin/sh', '-c', 'echo hi; cat'], { input: 'from stdin\n' }, 'ok'],
      ['nonzero exit', ['/probe', 'exit', '7'], {}, 'nonzero-exit'],
      ['cpu time limit', ['/probe', 'burn', '5000', '1'], { limits: { cpuTime: 300 } }, 'cpu-time-limit'],
      ['wall time limit', ['/bin/sleep', '5'], { limits: { wallTime: 300 } }, 'wall-time-limit'],
      [
        'output limit',
        ['/bin/sh', '-c', 'while :; do echo xxxxxxxxxxxxxxxxxxxxxxxxxxxx; done'],
        { limits: { outputLimit: 4096 } },
        'output-limit',
      ],
      ['signalled', ['/probe', 'signal', '6'], {}, 'signaled'],
      ['seccomp violation', ['/bin/sh', '-c', `echo before; /probe syscall ${PTRACE} 0; echo after`], {}, 'seccomp-violation'],
      [
        'copy-in and copy-out',
        ['/bin/sh', '-c', 'cat in.txt; od -An -tx1 bin | tr -d " \\n"; echo; cp in.txt out.txt; ln -s /etc/passwd link'],
        {
          files: { 'in.txt': 'hello\n', bin: Buffer.from([0, 255, 10]), 'run.sh': { content: 'x', mode: 0o700 } },
          copyOut: ['out.txt', 'link', 'nope'],
        },
        'ok',
      ],
    ];
    for (const [name, cmd, extra, verdict] of cases)
      it(`${name}: a pooled run is judged as a cold one (${verdict})`, async () => {
        await ready(pool, 1);
        const o: SandboxOptions = { ...base(), ...extra, reject: false };
        const cold = await runSandboxed(cmd, o);
        const hot = await pool.run(cmd, o);
        assert.equal(hot.pool, 'hit', hot.poolMiss);
        assert.equal(cold.pool, undefined);
        assert.equal(cold.verdict, verdict, `cold: ${cold.verdict} ${String(cold.stderr)}`);
        assert.deepEqual(outcome(hot), outcome(cold));
        assert.ok(hot.usage!.wallMs < 5000 && hot.usage!.cpuMs! < 6000);
      });

    it('memory limit: a pool made with the limit judges as a cold run (memory-limit)', async () => {
      await ready(memPool, 1);
      const o: SandboxOptions = { ...base(), limits: { memory: '64M' }, reject: false };
      const cold = await runSandboxed(['/probe', 'hog', '200'], o);
      const hot = await memPool.run(['/probe', 'hog', '200'], o);
      assert.equal(hot.pool, 'hit', hot.poolMiss);
      assert.equal(cold.verdict, 'memory-limit');
      assert.deepEqual(outcome(hot), outcome(cold));
    });

    it("a run with another memory limit than the pool's is still a hit, with its own tmpfs inode caps", async () => {
      for (const memory of ['300M', '32M']) {
        await ready(memPool, 1);
        const o: SandboxOptions = { ...base(), limits: { memory }, reject: false };
        const cmd = ['/bin/sh', '-c', 'stat -f -c %c /tmp /dev/shm /box; /probe hog 100'];
        const cold = await runSandboxed(cmd, o);
        const hot = await memPool.run(cmd, o);
        assert.equal(hot.pool, 'hit', hot.poolMiss);
        assert.equal(cold.verdict, memory === '32M' ? 'memory-limit' : 'ok');
        assert.deepEqual(outcome(hot), outcome(cold));
      }
    });

    if (m.cgroup)
      it("a run that misses never shares a waiting sandbox's cgroup (its process count is its own)", async () => {
        await ready(pool, 2);
        const o: SandboxOptions = { ...base(), hostname: 'other', limits: { processes: 3 }, reject: false };
        const cmd = ['/bin/sh', '-c', 'sleep 0.2 & sleep 0.2 & wait; echo done'];
        const cold = await runSandboxed(cmd, o);
        const missed = await pool.run(cmd, o);
        assert.equal(missed.pool, 'miss');
        assert.deepEqual(outcome(missed), outcome(cold));
        const hit = await pool.run(['/bin/true'], base());
        assert.equal(hit.pool, 'hit', hit.poolMiss);
        assert.equal(hit.verdict, 'ok');
      });

    if (m.cgroup)
      it("a pooled run's limits are written to the sandbox's own cgroup, which is gone after the run and after close()", async () => {
        await ready(memPool, 1);
        const r = await memPool.run(['/bin/true'], { ...base(), limits: { memory: '64M', processes: 7 } });
        assert.equal(r.pool, 'hit', r.poolMiss);
        assert.match(r.limits.memory!.mechanism, /^cgroup/);
        assert.equal(r.limits.processes!.value, 7);
        const mine = (): string[] => ownGroups(m.cgroup!);
        const p = createPool({ size: 2, maxStarting: 2, options: base() });
        await ready(p);
        assert.ok(mine().length >= 2, `groups: ${mine().join(' ')}`);
        await p.close();
        await pool.close();
        await memPool.close();
        assert.ok(await waitFor(() => mine().length === 0, 5000), `left: ${mine().join(' ')}`);
      });
  });

  const base = (): SandboxOptions => ({ ...id.spawnAs, policy: 'judge', mounts: probeMount(), files: {}, cgroups: false });
  let pool: SandboxPool;
  before(() => {
    pool = createPool({ size: 2, options: base() });
  });
  after(async () => {
    await pool?.close();
  });

  it('refills once the runs are quiet (refillIdleMs), and at once when nothing is left waiting', async () => {
    const lazy = createPool({ size: 2, maxStarting: 2, refillIdleMs: 2000, options: base() });
    const eager = createPool({ size: 1, refillIdleMs: 60_000, options: base() });
    try {
      await ready(lazy);
      await ready(eager);
      assert.equal((await lazy.run(['/bin/true'], base())).pool, 'hit');
      await new Promise((r) => setTimeout(r, 500));
      const mid = lazy.stats();
      assert.equal(mid.ready + mid.starting, 1, `no refill while runs are recent: ${JSON.stringify(mid)}`);
      await ready(lazy); // quiet for 2 s: the refill runs
      // the last waiting sandbox taken: the refill starts at once, whatever refillIdleMs says
      assert.equal((await eager.run(['/bin/true'], base())).pool, 'hit');
      await ready(eager);
    } finally {
      await lazy.close();
      await eager.close();
    }
  });

  it("the time a sandbox waited is not the run's: wall time and setup start at the command", async () => {
    await ready(pool, 1);
    await new Promise((r) => setTimeout(r, 1500));
    const r = await pool.run(['/bin/true'], base());
    assert.equal(r.pool, 'hit');
    assert.ok(r.usage!.wallMs < 1000, `wall ${r.usage!.wallMs} ms`);
    assert.ok(r.setup!.ms < 1000, `setup ${r.setup!.ms} ms`);
    assert.ok(r.usage!.cpuMs! < 500, `cpu ${r.usage!.cpuMs} ms`);
  });

  it('each sandbox serves one run: a file written in one is absent in the next, and init differs', async () => {
    const cmd = ['/bin/sh', '-c', 'ls /box /tmp; echo mark > /box/mark; echo mark > /tmp/mark'];
    await ready(pool);
    const a = await pool.run(cmd, base());
    const b = await pool.run(cmd, base());
    assert.equal(a.pool, 'hit');
    assert.equal(b.pool, 'hit');
    assert.equal(a.stdout, '/box:\n\n/tmp:\n');
    assert.equal(b.stdout, '/box:\n\n/tmp:\n');
    assert.notEqual(a.initPid, b.initPid);
    assert.notEqual(a.namespaces?.pid, b.namespaces?.pid);
  });

  it('the security state inside a pooled run is a cold run’s: no caps, no_new_privs, seccomp, only fds 0-2', async () => {
    await ready(pool, 1);
    const cmd = [
      '/bin/sh',
      '-c',
      'grep -E "^(Cap(Inh|Prm|Eff|Bnd|Amb)|NoNewPrivs|Seccomp):" /proc/self/status; /probe fds; /probe session',
    ];
    const cold = await runSandboxed(cmd, base());
    const hot = await pool.run(cmd, base());
    assert.equal(hot.pool, 'hit');
    assert.equal(hot.stdout, cold.stdout);
    assert.match(String(hot.stdout), /CapEff:\s+0+\n/);
    assert.match(String(hot.stdout), /NoNewPrivs:\s+1/);
    assert.match(String(hot.stdout), /Seccomp:\s+2/);
  });

  it('runs beyond the pool size run cold (misses, never queued), and all succeed', async () => {
    await ready(pool);
    const before = pool.stats();
    const rs = await Promise.all(Array.from({ length: 5 }, (_, i) => pool.run(['/bin/sh', '-c', `echo ${i}`], base())));
    rs.forEach((r, i) => assert.equal(r.stdout, `${i}\n`));
    const hits = rs.filter((r) => r.pool === 'hit').length;
    const misses = rs.filter((r) => r.pool === 'miss');
    assert.ok(hits >= 1 && hits <= 2, `hits ${hits}`);
    assert.equal(hits + misses.length, 5);
    for (const m of misses) assert.match(m.poolMiss!, /no waiting sandbox/);
    const after = pool.stats();
    assert.equal(after.served - before.served, 5);
    assert.equal(after.misses - before.misses, misses.length);
  });

  it('a large run plan and a large file (over a pipe buffer each) reach the sandbox whole', async () => {
    await ready(pool, 1);
    const big = Buffer.alloc(3 << 20, 'ab');
    const env = { BIG: 'x'.repeat(100_000) };
    const cmd = ['/bin/sh', '-c', 'printf %s "$BIG" | wc -c; wc -c < big; cmp big big2 && echo same'];
    const r = await pool.run(cmd, { ...base(), env, files: { big, big2: big } });
    assert.equal(r.pool, 'hit', r.poolMiss);
    assert.equal(r.stdout, `100000\n${3 << 20}\nsame\n`);
  });

  it("a run whose sandbox is not the pool's runs cold and the result says why", async () => {
    await ready(pool, 1);
    const r = await pool.run(['/bin/hostname'], { ...base(), hostname: 'elsewhere' });
    assert.equal(r.pool, 'miss');
    assert.match(r.poolMiss!, /differs from the pool's at step \d+ \(file \/etc\/hostname/);
    assert.equal(r.stdout, 'elsewhere\n');
    const s = await pool.run(['/bin/true'], { ...base(), stdout: 'inherit' });
    assert.equal(s.pool, 'miss');
    assert.match(s.poolMiss!, /inherited stdio/);
  });

  it('close() ends every waiting sandbox and leaves no process behind', async () => {
    await ready(pool); // this block's own pool refilled (it does so once the runs are quiet), so it starts none later
    const others = new Set(sandboxPids()); // the other pools' sandboxes
    const p = createPool({ size: 3, maxStarting: 3, options: base() });
    await ready(p);
    const pids = sandboxPids().filter((x) => !others.has(x));
    assert.ok(pids.length >= 6, `helpers and inits: ${pids.map((x) => `${x}:${comm(x)}`).join(' ')}`);
    await p.close();
    assert.ok(await waitFor(() => pids.every((x) => !alive(x)), 5000), `left: ${pids.filter(alive).join(' ')}`);
    assert.deepEqual(p.stats().ready, 0);
    await assert.rejects(p.run(['/bin/true'], base()), /the pool is closed/);
  });
});

describe('warm pool: its owner', () => {
  it('a pool whose owner process is SIGKILLed leaves no process behind', async function () {
    const script =
      `const { createPool } = await import(${JSON.stringify(INDEX)});` +
      `const p = createPool({ size: 2, maxStarting: 2 });` +
      `const t = setInterval(() => { if (p.stats().ready === 2) { console.log('ready'); clearInterval(t); } }, 20);` +
      `setInterval(() => {}, 1000);`;
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    try {
      const ok = await new Promise<boolean>((resolve) => {
        const t = setTimeout(() => resolve(false), 30_000);
        child.stdout.on('data', (c: Buffer) => {
          if (String(c).includes('ready')) {
            clearTimeout(t);
            resolve(true);
          }
        });
      });
      assert.ok(ok, 'the child pool never became ready');
      const pids = descendants(child.pid!);
      assert.ok(pids.filter((p) => comm(p).startsWith('cubicle-')).length >= 4, `under the owner: ${pids.map(comm).join(' ')}`);
      process.kill(child.pid!, 'SIGKILL');
      assert.ok(
        await waitFor(() => pids.every((p) => !alive(p)), 5000),
        `left: ${pids
          .filter(alive)
          .map((p) => `${p}:${comm(p)}`)
          .join(' ')}`,
      );
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
    }
    void this;
  });
});

describe('warm pool: bad input', () => {
  it('bad pool options are errors naming the option', () => {
    assert.throws(
      () => createPool({ size: 0 }),
      (e: Error) => e instanceof SandboxOptionError && /pool size must be an integer from 1/.test(e.message),
    );
    assert.throws(() => createPool({ size: 2, maxStarting: 3 }), /maxStarting must be an integer from 1 to 2/);
    assert.throws(() => createPool({ size: 2, refillIdleMs: -1 }), /refillIdleMs must be an integer from 0 to 60000/);
    assert.throws(() => createPool({ sise: 2 } as never), /unknown pool option 'sise'/);
    assert.throws(() => createPool({ options: { hostname: '' } }), SandboxOptionError);
    assert.throws(() => createPool('big' as never), /createPool takes an options object/);
  });

  it('a bad run option throws synchronously, as runSandboxed does', async () => {
    const p = createPool({ size: 1 });
    try {
      assert.throws(() => p.run(['/bin/true'], { limits: { cpuTime: -1 } }), SandboxOptionError);
    } finally {
      await p.close();
    }
  });

  /** Starts a warm helper from a prepared plan and returns its status events once it ends. */
  async function warmHelper(first: Buffer, run?: Buffer): Promise<StatusReader> {
    const w = launchWarm(first);
    const reader = new StatusReader();
    w.helper.status.on('data', (c: Buffer) => {
      reader.push(c);
      if (run && reader.events.some((e) => e.ev === 'warm')) {
        w.send(run, new Uint8Array(0), undefined);
        run = undefined;
      }
    });
    w.helper.stdout.resume();
    w.helper.stderr.resume();
    w.helper.copyOut.resume();
    w.ref();
    const t = setTimeout(() => w.helper.kill(), 10_000);
    await w.helper.done;
    clearTimeout(t);
    w.dispose();
    return reader;
  }

  it('a waiting sandbox whose control fd reaches EOF (its owner is gone) ends with all its processes', async () => {
    const { ahead } = splitPlan(prepareRun(['/bin/true']).plan);
    const w = launchWarm(encodePlan(ahead));
    const reader = new StatusReader();
    w.helper.status.on('data', (c: Buffer) => reader.push(c));
    for (const s of [w.helper.stdout, w.helper.stderr, w.helper.copyOut]) s.resume();
    w.ref();
    assert.ok(await waitFor(() => reader.events.some((e) => e.ev === 'warm'), 10_000), 'never warm');
    const warm = reader.events.find((e) => e.ev === 'warm');
    const init = warm?.ev === 'warm' ? warm.initPid : 0;
    assert.ok(init > 0 && alive(init));
    w.helper.control.destroy(); // EOF, as when the owning process dies
    const t = setTimeout(() => w.helper.kill(), 10_000);
    await w.helper.done;
    clearTimeout(t);
    w.dispose();
    assert.ok(await waitFor(() => !alive(init), 5000), `init ${init} outlived its owner`);
    assert.ok(!reader.events.some((e) => e.ev === 'ready'), 'nothing ran');
  });

  it('the helper refuses a first plan with await that holds a run op (exec)', async () => {
    const p = prepareRun(['/bin/true']);
    const { ahead } = splitPlan(p.plan);
    const bad = [...ahead.slice(0, -2), Op.exec('/bin/true'), Op.await(), Op.end()];
    const r = await warmHelper(encodePlan(bad));
    const t = r.terminal();
    assert.equal(t?.ev, 'error');
    assert.match(t.ev === 'error' ? t.msg : '', /a plan with await holds no 'exec'/);
  });

  it('the helper refuses a run plan holding an op of the first plan (bind), and one without exec', async () => {
    const p = prepareRun(['/bin/true']);
    const { ahead, run } = splitPlan(p.plan);
    for (const [plan, msg] of [
      [[Op.bind('/usr', '/host', 'rw'), ...run], /'bind' cannot be in a run plan/],
      [run.filter((o) => o.op !== 'exec'), /the plan has no exec op/],
      [[Op.fileData('/box/a', 0o644, 5, 1), ...run], /file offset 5 is not where the previous file ended \(0\)/],
    ] as const) {
      const r = await warmHelper(encodePlan(ahead), encodePlan(plan));
      const t = r.terminal();
      assert.equal(t?.ev, 'error', JSON.stringify(r.events));
      assert.match(t.ev === 'error' ? t.msg : '', msg);
      assert.equal(t.ev === 'error' ? t.stage : '', 'init');
      assert.ok(!r.events.some((e) => e.ev === 'ready'), 'nothing ran');
    }
  });
});
