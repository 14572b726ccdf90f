// Named sandboxes from the command line and the library: the registry (names, stale entries, per user), ps and
// inspect, run --detach with its detached supervisor, stop, wait, and what a crashed supervisor leaves.
import { strict as assert } from 'node:assert';
import { chownSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { listSandboxes, spawnSandboxed, SandboxOptionError, type SandboxOptions } from '../../sandbox/index.js';
import { entryPath, findSandbox, processStart, type SandboxEntry } from '../../sandbox/host/registry.js';
import { alive, IS_ROOT, ROOTLESS_ID, skipBecause, waitFor } from '../helpers/env.js';
import { cubicle, uniqueName, untilGone, untilListed } from '../helpers/live.js';

const PINNED = ['name', 'pid', 'helperPid', 'state', 'startedAt', 'namespaces', 'usage'];

describe('named sandboxes (library)', function () {
  this.timeout(60_000);

  it('listSandboxes() lists a named sandbox with its pids, state, namespaces and live usage, until it ends', async () => {
    const name = uniqueName('lib');
    const proc = spawnSandboxed<SandboxOptions>(['sh', '-c', 'head -c 20000000 /dev/zero | tail -c 1 >/dev/null; sleep 30'], {
      name,
      reject: false,
      stdout: 'ignore',
    });
    try {
      assert.ok(await untilListed(name));
      const s = (await listSandboxes()).find((x) => x.name === name)!;
      for (const k of PINNED) assert.ok(k in s, k);
      assert.equal(s.state, 'running');
      assert.ok(alive(s.pid) && alive(s.helperPid));
      assert.equal(s.helperPid, proc.pid);
      assert.ok(Date.parse(s.startedAt) <= Date.now());
      assert.deepEqual(Object.keys(s.namespaces).sort(), ['cgroup', 'ipc', 'mnt', 'net', 'pid', 'user', 'uts']);
      assert.equal(typeof s.usage.cpuMs, 'number');
      assert.ok(s.usage.memoryBytes > 0, 'current memory of its processes');
      assert.ok(s.usage.processes >= 2, 'init and the payload at least');
    } finally {
      proc.kill('SIGKILL');
      await proc.result;
    }
    assert.ok(await untilGone(name, 5000), 'the entry is removed when the sandbox ends');
  });

  it('a bad name throws before anything runs; a taken name is refused while its sandbox runs, and free again after', async () => {
    assert.throws(() => spawnSandboxed(['true'], { name: 'no/slash' }), SandboxOptionError);
    assert.throws(() => spawnSandboxed(['true'], { name: '' }), /must be 1-63 (of )?letters/);
    const name = uniqueName('taken');
    const first = spawnSandboxed<SandboxOptions>(['sleep', '30'], { name, reject: false });
    try {
      assert.ok(await untilListed(name));
      assert.throws(() => spawnSandboxed(['true'], { name }), new RegExp(`a sandbox named "${name}" is already running`));
    } finally {
      first.kill('SIGKILL');
      await first.result;
    }
    const again = await spawnSandboxed<SandboxOptions>(['true'], { name, reject: false }).result;
    assert.equal(again.exitCode, 0);
  });

  it('an entry whose processes are gone (or whose pid now names another process) is never listed, and is removed', async () => {
    const name = uniqueName('stale');
    const proc = spawnSandboxed<SandboxOptions>(['sleep', '30'], { name, reject: false });
    assert.ok(await untilListed(name));
    const entry = JSON.parse(readFileSync(entryPath(name), 'utf8')) as SandboxEntry;
    proc.kill('SIGKILL');
    await proc.result;
    // As a crashed supervisor would leave it: init's pid reused by a live process (this one), started at another time.
    const lie: SandboxEntry = {
      ...entry,
      init: { pid: process.pid, start: processStart(process.pid)! + 1 },
      helper: { pid: process.pid, start: 1 },
    };
    writeFileSync(entryPath(name), JSON.stringify(lie));
    assert.equal(findSandbox(name), undefined);
    assert.ok(!(await listSandboxes()).some((s) => s.name === name));
    assert.throws(() => readFileSync(entryPath(name)), /ENOENT/);
  });
});

const callers = [
  { label: IS_ROOT ? 'as root' : `as uid ${process.geteuid!()}`, as: undefined as { uid: number; gid: number } | undefined },
];
if (IS_ROOT) callers.push({ label: `as the unprivileged uid ${ROOTLESS_ID.uid}`, as: ROOTLESS_ID });

for (const caller of callers)
  describe(`named sandboxes (CLI), ${caller.label}`, function () {
    this.timeout(90_000);
    const cli = (args: string[], input?: string) => cubicle(args, { as: caller.as, ...(input !== undefined ? { input } : {}) });
    const psJson = async (): Promise<Record<string, unknown>[]> =>
      JSON.parse((await cli(['ps', '--json'])).stdout) as Record<string, unknown>[];

    it('run --detach returns once the payload runs; ps, inspect and exec see it; wait prints the result as run --json does', async () => {
      const name = uniqueName('det');
      const t0 = Date.now();
      // The payload waits until an exec'd command creates /tmp/go (the sandbox's own /tmp).
      const payload = 'echo started; while [ ! -e /tmp/go ]; do sleep 0.05; done; echo done; exit 3';
      const r = await cli(['run', '--name', name, '--detach', '--', 'sh', '-c', payload]);
      assert.equal(r.status, 0, r.stderr);
      assert.ok(Date.now() - t0 < 20_000);
      const listed = (await psJson()).find((s) => s.name === name)!;
      assert.ok(listed, 'ps lists it');
      for (const k of PINNED) assert.ok(k in listed, k);
      assert.equal(listed.state, 'running');
      assert.equal(typeof (listed.usage as { cpuMs: unknown }).cpuMs, 'number');
      const table = await cli(['ps']);
      assert.match(table.stdout, new RegExp(`^${name}\\s+${listed.pid as number}\\s+`, 'm'));
      const ins = await cli(['inspect', name]);
      assert.equal(ins.status, 0);
      for (const [k, ino] of Object.entries(listed.namespaces as Record<string, number>))
        assert.ok(ins.stdout.includes(`${k}:[${ino}]`), k);
      assert.match(ins.stdout, /processes\s+1024 count \(rlimit/);
      const ex = await cli(['exec', name, '--env', 'X=1', '--', 'sh', '-c', 'cat; echo "x=$X"; exit 5'], 'from stdin\n');
      assert.equal(ex.status, 5);
      assert.equal(ex.stdout, 'from stdin\nx=1\n');
      assert.equal((await cli(['exec', name, '--', 'touch', '/tmp/go'])).status, 0);
      const w = await cli(['wait', name]);
      assert.equal(w.status, 0, w.stderr);
      const result = JSON.parse(w.stdout) as { exitCode: number; stdout: string; verdict: string };
      assert.equal(result.exitCode, 3);
      assert.equal(result.stdout, 'started\ndone\n');
      assert.ok(!(await psJson()).some((s) => s.name === name), 'gone from ps');
      assert.equal((await cli(['wait', name])).status, 0, 'wait again prints the same result');
    });

    it('the detached supervisor keeps enforcing the limits after the CLI returned', async () => {
      const name = uniqueName('lim');
      assert.equal((await cli(['run', '--name', name, '--detach', '--time', '0.5', '--', 'sh', '-c', 'while :; do :; done'])).status, 0);
      const w = await cli(['wait', name]);
      assert.equal((JSON.parse(w.stdout) as { verdict: string }).verdict, 'cpu-time-limit');
    });

    it('stop ends a sandbox: SIGTERM first, SIGKILL after the grace when the payload ignores it', async () => {
      const polite = uniqueName('term');
      await cli(['run', '--name', polite, '--detach', '--', 'sh', '-c', 'trap "echo got-term; exit 0" TERM; while :; do sleep 0.1; done']);
      const s = await cli(['stop', polite]);
      assert.equal(s.status, 0, s.stderr);
      const wp = JSON.parse((await cli(['wait', polite])).stdout) as { stdout: string; exitCode: number };
      assert.equal(wp.stdout, 'got-term\n');
      assert.equal(wp.exitCode, 0);

      const stubborn = uniqueName('kill');
      await cli(['run', '--name', stubborn, '--detach', '--', 'sh', '-c', 'trap "" TERM; while :; do sleep 0.1; done']);
      const t0 = Date.now();
      assert.equal((await cli(['stop', stubborn])).status, 0);
      assert.ok(Date.now() - t0 >= 1500, 'the grace (forceKillAfterDelay, 2 s) was given');
      const ws = JSON.parse((await cli(['wait', stubborn])).stdout) as { signal: string | null; exitCode: number | null };
      assert.equal(ws.signal, 'SIGKILL');
    });

    it('a sandbox whose supervisor is killed dies with it and leaves no entry that lies; wait says so', async () => {
      const name = uniqueName('crash');
      assert.equal((await cli(['run', '--name', name, '--detach', '--', 'sleep', '60'])).status, 0);
      const listed = (await psJson()).find((s) => s.name === name)!;
      const dir = caller.as ? `/tmp/cubicle-run-${caller.as.uid}/sandboxes` : entryPath(name).replace(/\/[^/]+$/, '');
      const entry = JSON.parse(readFileSync(`${dir}/${name}.json`, 'utf8')) as SandboxEntry;
      process.kill(entry.supervisor.pid, 'SIGKILL');
      assert.ok(await waitFor(() => !alive(listed.pid as number), 10_000), 'init died with its supervisor');
      assert.ok(!(await psJson()).some((s) => s.name === name));
      const w = await cli(['wait', name]);
      assert.equal(w.status, 125);
      assert.match(w.stderr, /ended without a recorded result|none left a result/);
    });

    it('bad names and unknown sandboxes give clear errors with the usual exit codes', async () => {
      const bad = await cli(['run', '--name', '../x', '--', 'true']);
      assert.equal(bad.status, 2);
      assert.match(bad.stderr, /--name "\.\.\/x" must be 1-63 (of )?letters/);
      const noName = await cli(['run', '--detach', '--', 'true']);
      assert.equal(noName.status, 2);
      assert.match(noName.stderr, /--detach needs --name/);
      for (const cmd of ['exec', 'stop', 'inspect']) {
        const r = await cli(cmd === 'exec' ? [cmd, 'nope-xyz', '--', 'true'] : [cmd, 'nope-xyz']);
        assert.notEqual(r.status, 0, cmd);
        assert.match(r.stderr, /no sandbox named "nope-xyz" is running/, cmd);
      }
      const usage = [await cli(['exec', 'x']), await cli(['ps', 'extra']), await cli(['stop']), await cli(['wait', 'a', 'b'])];
      for (const u of usage) assert.equal(u.status, 2, u.stderr);
      assert.match(usage[0]!.stderr, /usage: cubicle exec NAME/);
      const name = uniqueName('dup');
      await cli(['run', '--name', name, '--detach', '--', 'sleep', '30']);
      const dup = await cli(['run', '--name', name, '--', 'true']);
      assert.equal(dup.status, 125);
      assert.match(dup.stderr, new RegExp(`a sandbox named "${name}" is already running`));
      await cli(['stop', name]);
    });
  });

describe("named sandboxes: a runtime directory that is not the caller's own", function () {
  this.timeout(60_000);
  const victim = { uid: 65530, gid: 65530 };
  const squatted = `/tmp/cubicle-run-${victim.uid}`;
  before(function () {
    if (!IS_ROOT) return skipBecause(this, 'needs root to make another user squat the runtime directory');
    rmSync(squatted, { recursive: true, force: true });
    mkdirSync(squatted, { mode: 0o755 });
    chownSync(squatted, 65529, 65529);
  });
  after(() => rmSync(squatted, { recursive: true, force: true }));

  it('a squatted runtime directory gives a clear error with the fix for run --name, ps and exec, never a stack trace', async () => {
    for (const args of [['run', '--name', 'x', '--', 'true'], ['ps'], ['exec', 'x', '--', 'true']]) {
      const r = await cubicle(args, { as: victim });
      assert.equal(r.status, 125, args.join(' '));
      assert.match(r.stderr, new RegExp(`runtime directory ${squatted}/sandboxes cannot be used: ${squatted} is owned by uid 65529`));
      assert.match(r.stderr, /Hint: remove it/);
      assert.doesNotMatch(r.stderr, /\n\s+at /);
    }
  });
});
