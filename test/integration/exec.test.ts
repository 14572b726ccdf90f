// exec: a command run inside a running named sandbox, as its payload runs: its namespaces, root, cwd and
// environment, its limits. Also the seeds this feature grew from (a tmpfs only one sandbox sees; /proc inside
// shows the sandbox's PID 1; namespace ids as /proc/PID/ns shows them on the host).
import { strict as assert } from 'node:assert';
import { existsSync, readFileSync, readlinkSync, writeFileSync } from 'node:fs';
import { entryPath, type SandboxEntry } from '../../sandbox/host/registry.js';
import { execInSandbox, listSandboxes, spawnSandboxed, type SandboxOptions } from '../../sandbox/index.js';
import { forEachIdentity, IS_ROOT, probeMount, skipBecause } from '../helpers/env.js';
import { namedSandboxes, uniqueName, untilGone } from '../helpers/live.js';

const NS = ['user', 'mnt', 'pid', 'net', 'uts', 'ipc', 'cgroup'];

forEachIdentity((id) => {
  /** A named sandbox whose payload waits (sleep) until the test ends it. */
  const start = namedSandboxes(id, 'exec');

  it("exits with the command's code, with its output, in the payload's cwd and environment by default", async () => {
    const { name } = await start({ cwd: '/usr', env: { GREETING: 'from-run' } });
    const r = await execInSandbox(name, ['sh', '-c', 'pwd; echo "$GREETING"; echo oops >&2; exit 9'], { reject: false });
    assert.equal(r.exitCode, 9);
    assert.equal(r.stdout, '/usr\nfrom-run\n');
    assert.equal(r.stderr, 'oops\n');
    assert.equal(r.verdict, 'nonzero-exit');
    const own = await execInSandbox(name, 'pwd; echo "$GREETING $EXTRA"', { cwd: '/etc', env: { EXTRA: 'added' } });
    assert.equal(own.stdout, '/etc\nfrom-run added\n');
    const fed = await execInSandbox(name, ['cat'], { input: 'stdin reaches it\n' });
    assert.equal(fed.stdout, 'stdin reaches it\n');
  });

  it("the command sees the sandbox's root and hostname, and runs as the payload's ids", async () => {
    const { name, proc } = await start({ hostname: 'livebox', uid: 4321, gid: 4322 });
    const r = await proc.exec([
      'sh',
      '-c',
      'hostname; id -u; id -g; cat /etc/hostname; test -e /home && echo host-root || echo sandbox-root',
    ]);
    assert.equal(r.stdout, 'livebox\n4321\n4322\nlivebox\nsandbox-root\n');
    assert.equal((await execInSandbox(name, ['true'])).exitCode, 0);
  });

  it('seed: a tmpfs mounted inside one sandbox is seen by exec into it, and neither by the host nor by another sandbox', async () => {
    // The payload cannot mount (no capabilities, and the policy's filter denies mount): the sandbox's own init mounts
    // the tmpfs in the sandbox's mount namespace, and the payload writes into it.
    const a = await start({ mounts: [{ type: 'tmpfs', target: '/scratch', size: '1M' }] }, [
      'sh',
      '-c',
      'echo only-in-a > /scratch/marker && sleep 120',
    ]);
    const b = await start({ mounts: [{ type: 'tmpfs', target: '/scratch', size: '1M' }] });
    let seen = '';
    for (let i = 0; i < 50 && seen !== 'only-in-a\n'; i++)
      seen = (await execInSandbox(a.name, ['sh', '-c', 'cat /scratch/marker 2>/dev/null || true'])).stdout as string;
    assert.equal(seen, 'only-in-a\n');
    const mountA = await execInSandbox(a.name, ['sh', '-c', 'grep " /scratch " /proc/self/mountinfo | grep -c tmpfs']);
    assert.equal(mountA.stdout, '1\n');
    const inB = await execInSandbox(b.name, ['sh', '-c', 'ls -A /scratch; echo end'], { reject: false });
    assert.equal(inB.stdout, 'end\n', 'the other sandbox has its own, empty /scratch');
    assert.ok(!existsSync('/scratch/marker'), 'the host has no such file');
    assert.ok(!/ \/scratch /.test(readFileSync('/proc/self/mountinfo', 'utf8')), "the host's mount table has no /scratch");
    const list = await listSandboxes();
    const [la, lb] = [a.name, b.name].map((n) => list.find((s) => s.name === n)!);
    assert.notEqual(la!.namespaces.mnt, lb!.namespaces.mnt);
  });

  it("seed: /proc inside exec shows the sandbox's processes with its PID 1", async () => {
    const { name } = await start({}, ['sh', '-c', 'exec sleep 120']);
    const r = await execInSandbox(name, ['sh', '-c', 'cat /proc/1/comm; cat /proc/2/cmdline | tr "\\0" " "; echo; echo $$']);
    const [init, payload, self] = (r.stdout as string).trim().split('\n');
    assert.equal(init, 'cubicle-init');
    assert.equal(payload!.trim(), 'sleep 120');
    assert.ok(Number(self) > 2, `the command's pid inside is ${self}`);
  });

  it('seed: the namespace ids ps and inspect give are what /proc/PID/ns says, inside and on the host', async () => {
    const { name } = await start();
    const live = (await listSandboxes()).find((s) => s.name === name)!;
    assert.deepEqual(Object.keys(live.namespaces).sort(), [...NS].sort());
    const r = await execInSandbox(name, ['sh', '-c', `for n in ${NS.join(' ')}; do readlink /proc/self/ns/$n; done`]);
    assert.deepEqual(
      (r.stdout as string).trim().split('\n'),
      NS.map((n) => `${n}:[${live.namespaces[n]}]`),
    );
    // On the host: init's links (root may read them; it is non-dumpable to anyone else).
    if (IS_ROOT) for (const n of NS) assert.equal(readlinkSync(`/proc/${live.pid}/ns/${n}`), `${n}:[${live.namespaces[n]}]`);
  });

  it("ps counts a command exec'd in among the sandbox's processes while it runs", async function () {
    if (!IS_ROOT)
      return skipBecause(
        this,
        "an unprivileged caller reads the pid namespace link of a sandbox's process only where it may ptrace it (not with subordinate ids)",
      );
    const { name } = await start();
    const running = execInSandbox(name, ['sleep', '3']);
    let count = 0;
    for (let i = 0; i < 100 && count < 3; i++) {
      count = (await listSandboxes()).find((s) => s.name === name)!.usage.processes;
      await new Promise((res) => setTimeout(res, 30));
    }
    assert.equal(count, 3, "init, the payload and the exec'd command");
    await running;
  });

  it("counts against the sandbox's CPU-time limit: a command that burns CPU ends the whole sandbox", async function () {
    this.timeout(60_000);
    const { name, proc } = await start({ limits: { cpuTime: '1s' }, mounts: probeMount() });
    const r = await execInSandbox(name, ['/probe', 'burn', '20000', '1'], { reject: false });
    assert.notEqual(r.exitCode, 0, 'the command was killed with the sandbox');
    const run = await proc.result;
    assert.equal(run.verdict, 'cpu-time-limit');
    assert.ok(await untilGone(name), 'the sandbox left the registry');
  });

  it("counts against the sandbox's process limit", async function () {
    this.timeout(60_000);
    const { name, proc } = await start({ limits: { processes: 12 } });
    const r = await execInSandbox(
      name,
      ['sh', '-c', 'for i in $(seq 40); do sleep 5 & done 2>/dev/null; sleep 1; ls -d /proc/[0-9]* | wc -l'],
      {
        reject: false,
      },
    );
    const run = await Promise.race([proc.result, new Promise((res) => setTimeout(() => res(undefined), 1500))]);
    // Either the forks past the limit failed (a cgroup's pids.max) or init's sampler stopped the sandbox.
    const stopped = (run as { verdict?: string } | undefined)?.verdict === 'process-limit';
    assert.ok(stopped || Number(String(r.stdout).trim()) <= 12, `processes seen: ${String(r.stdout).trim()}, run: ${JSON.stringify(run)}`);
  });

  it("exec's own timeout ends the command, not the sandbox", async () => {
    const { name } = await start();
    const r = await execInSandbox(name, ['sleep', '30'], { timeout: 300, reject: false });
    assert.equal(r.verdict, 'wall-time-limit');
    assert.equal(r.timedOut, true);
    assert.ok(r.usage!.wallMs < 10_000);
    assert.equal((await execInSandbox(name, ['echo', 'still here'])).stdout, 'still here\n');
  });

  it('a command exec cannot start fails like a run does (setup error, nothing left running)', async () => {
    const { name } = await start();
    const r = await execInSandbox(name, ['no-such-program-xyz'], { reject: false });
    assert.equal(r.verdict, 'setup-error');
    assert.match(String(r.setupFailure?.message), /no-such-program-xyz/);
    assert.equal(r.setupFailure?.errnoName, 'ENOENT');
    assert.equal((await execInSandbox(name, ['true'])).exitCode, 0, 'the sandbox still runs');
  });
});

describe('exec: bad input', () => {
  it('an unknown name, a bad name and an unnamed sandbox each give a clear error', async () => {
    await assert.rejects(execInSandbox('no-such-sandbox-xyz', ['true']), /no sandbox named "no-such-sandbox-xyz" is running/);
    await assert.rejects(execInSandbox('../etc', ['true']), /sandbox name "\.\.\/etc" must be/);
    const p = spawnSandboxed(['sleep', '5'], { reject: false, stdout: 'ignore' });
    await assert.rejects(p.exec(['true']), /exec needs a named sandbox/);
    p.kill('SIGKILL');
    await p.result;
  });

  it('a registry entry whose payload ops were tampered with is refused, not passed to the helper', async () => {
    const name = uniqueName('tamper');
    const p = spawnSandboxed<SandboxOptions>(['sleep', '30'], { name, reject: false, stdout: 'ignore' });
    try {
      await p.exec(['true']);
      const entry = JSON.parse(readFileSync(entryPath(name), 'utf8')) as SandboxEntry;
      entry.join.ops.push({ op: 'bind', args: ['/', '/host', 'rw'] });
      writeFileSync(entryPath(name), JSON.stringify(entry));
      await assert.rejects(
        execInSandbox(name, ['true']),
        new RegExp(`the registry entry of "${name}" holds an op exec does not take \\(bind\\)`),
      );
    } finally {
      p.kill('SIGKILL');
      await p.result;
    }
  });
});
