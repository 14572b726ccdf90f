// exec is no way out: the command starts with the payload's restrictions (capability sets, NoNewPrivs, the same
// seccomp filter, only fds 0-2), cannot ptrace, open or signal init, cannot reach another sandbox, and nobody but
// the sandbox's owner can enter it (registry per user, the join socket in a 0700 directory, SO_PEERCRED).
import { strict as assert } from 'node:assert';
import { connect } from 'node:net';
import { spawnSync } from 'node:child_process';
import { execInSandbox, spawnSandboxed, type SandboxOptions } from '../../sandbox/index.js';
import { findSandbox, socketPath } from '../../sandbox/host/registry.js';
import { alive, forEachIdentity, IS_ROOT, probeMount, ROOTLESS_ID, skipBecause } from '../helpers/env.js';
import { cubicle, namedSandboxes, uniqueName } from '../helpers/live.js';

type Proc = ReturnType<typeof spawnSandboxed<SandboxOptions>>;

const statusFields = (text: string): Record<string, string> =>
  Object.fromEntries(
    text
      .trim()
      .split('\n')
      .map((l) => l.split(/:\s+/) as [string, string]),
  );
const STATUS = 'grep -E "^(Cap|NoNewPrivs|Seccomp)" /proc/self/status; id';

forEachIdentity((id) => {
  const start = namedSandboxes(id, 'esc', 'pipe');

  it("an exec'd process has the payload's capability sets, NoNewPrivs, seccomp mode and filters, and ids", async () => {
    const { name, proc } = await start({}, ['sh', '-c', `${STATUS}; sleep 120`]);
    let payload = '';
    proc.stdout!.on('data', (d: Buffer) => (payload += d.toString()));
    const r = await execInSandbox(name, ['sh', '-c', STATUS]);
    for (let i = 0; i < 100 && !payload.includes('uid='); i++) await new Promise((res) => setTimeout(res, 20));
    const mine = statusFields(r.stdout as string);
    assert.deepEqual(mine, statusFields(payload));
    for (const k of ['CapInh', 'CapPrm', 'CapEff', 'CapBnd', 'CapAmb']) assert.equal(mine[k], '0000000000000000', k);
    assert.equal(mine.NoNewPrivs, '1');
    assert.equal(mine.Seccomp, '2');
    // The same host ids as the payload's, never the caller's root.
    const map = ((await execInSandbox(name, ['cat', '/proc/self/uid_map'])).stdout as string).trim().split(/\s+/);
    assert.equal(Number(map[1]), findSandbox(name)!.hostIds.uid);
    assert.notEqual(Number(map[1]), 0);
  });

  it("the same seccomp policy holds: a call the payload's filter denies is denied to exec too", async () => {
    const { name } = await start({ mounts: probeMount() });
    // keyctl(2) and mount(2) are denied with EPERM by the default policy
    const r = await execInSandbox(name, ['sh', '-c', '/probe syscall 250 0; /probe syscall 165 0 0 0 0 0']);
    assert.equal(r.stdout, '-1 EPERM\n-1 EPERM\n');
  });

  it("under a killing policy (judge), a forbidden call ends the exec'd command with seccomp-violation, not the sandbox", async () => {
    const { name } = await start({ policy: 'judge' });
    const r = await execInSandbox(name, ['sh', '-c', 'echo before; unshare -U true; echo after'], { reject: false });
    assert.equal(r.verdict, 'seccomp-violation');
    assert.equal(r.violation?.syscall, 'unshare');
    assert.equal(r.stdout, 'before\n');
    assert.equal((await execInSandbox(name, ['echo', 'alive'])).stdout, 'alive\n');
  });

  it("an exec'd process, and a named sandbox's payload, hold only fds 0-2 (no namespace fd, no join socket)", async () => {
    const { name, proc } = await start({ mounts: probeMount() }, ['sh', '-c', '/probe fds; sleep 120']);
    let payload = '';
    proc.stdout!.on('data', (d: Buffer) => (payload += d.toString()));
    assert.equal((await execInSandbox(name, ['/probe', 'fds'])).stdout, '0 1 2 \n');
    for (let i = 0; i < 100 && !payload.includes('\n'); i++) await new Promise((res) => setTimeout(res, 20));
    assert.equal(payload, '0 1 2 \n');
  });

  it("an exec'd process can neither ptrace init nor open /proc/1/exe or /proc/1/mem, nor signal it", async () => {
    const { name } = await start({ mounts: probeMount(), policy: 'permissive' });
    const r = await execInSandbox(name, [
      '/bin/sh',
      '-c',
      '/probe ptrace 1; /probe open /proc/1/exe r; /probe open /proc/1/exe w; /probe open /proc/1/mem r; /probe open /proc/1/mem rw; ' +
        'kill -9 1; kill -TERM 1; sleep 0.1; cat /proc/1/comm',
    ]);
    assert.equal(r.stdout, 'attach EPERM\nopen EACCES\nopen EACCES\nopen EACCES\nopen EACCES\ncubicle-init\n');
    assert.equal((await execInSandbox(name, ['true'])).exitCode, 0, 'the sandbox still runs');
  });

  it("an exec'd process cannot see or signal another sandbox's processes", async () => {
    const a = await start();
    const b = await start({}, ['sh', '-c', 'exec sleep 123']);
    const bInit = findSandbox(b.name)!.init!.pid;
    const r = await execInSandbox(
      a.name,
      ['sh', '-c', 'cat /proc/[0-9]*/cmdline 2>/dev/null | tr "\\0" " " | grep -c "sleep 12[3]"; kill -9 -1; true'],
      {
        reject: false,
      },
    );
    assert.equal(r.stdout, '0\n');
    assert.ok(alive(bInit), "the other sandbox's init still runs");
    assert.equal((await execInSandbox(b.name, ['cat', '/proc/2/cmdline'])).stdout, 'sleep\x00123\x00');
  });
});

describe('another user cannot enter a sandbox that is not theirs', function () {
  this.timeout(60_000);
  let proc: Proc | undefined;
  let name = '';
  before(async function () {
    if (!IS_ROOT) return skipBecause(this, 'needs root to act as a second user (uid 65534)');
    name = uniqueName('mine');
    proc = spawnSandboxed<SandboxOptions>(['sleep', '120'], {
      name,
      reject: false,
      stdout: 'ignore',
      stderr: 'ignore',
      runAs: ROOTLESS_ID,
    });
    await proc.exec(['true']);
  });
  after(async () => {
    proc?.kill('SIGKILL');
    await proc?.result;
  });

  it("another user's cubicle exec, ps and stop do not find it", async () => {
    const other = { uid: 65533, gid: 65533 };
    const e = await cubicle(['exec', name, '--', 'true'], { as: other });
    assert.equal(e.status, 125);
    assert.match(e.stderr, new RegExp(`no sandbox named "${name}" is running for this user`));
    assert.equal((await cubicle(['ps', '--json'], { as: other })).stdout.trim(), '[]');
    assert.equal((await cubicle(['stop', name], { as: other })).status, 125);
    assert.ok(findSandbox(name), 'still running');
  });

  it('another user cannot open the join socket, nor enter the namespaces with nsenter', () => {
    const sock = socketPath(name);
    const py = spawnSync(
      'setpriv',
      ['--reuid=65533', '--regid=65533', '--clear-groups', 'sh', '-c', `test -e ${sock} && echo visible || echo hidden`],
      {
        encoding: 'utf8',
      },
    );
    assert.equal(py.stdout, 'hidden\n', 'the registry directory is 0700');
    const init = findSandbox(name)!.init!.pid;
    const ns = spawnSync(
      'setpriv',
      ['--reuid=65533', '--regid=65533', '--clear-groups', 'nsenter', '-t', String(init), '-U', '-m', 'true'],
      {
        encoding: 'utf8',
      },
    );
    assert.notEqual(ns.status, 0, 'nsenter into a non-dumpable init of another uid is refused');
  });

  it("the helper gives the namespaces only to its owner's uid (SO_PEERCRED), whatever reaches the socket", async function () {
    // A sandbox of uid 65534 (its registry in 65534's directory); root, which may open any path, is not its owner.
    const other = uniqueName('theirs');
    const started = await cubicle(['run', '--name', other, '--detach', '--', 'sleep', '60'], { as: ROOTLESS_ID });
    assert.equal(started.status, 0, started.stderr);
    try {
      const sock = `/tmp/cubicle-run-${ROOTLESS_ID.uid}/sandboxes/${other}.sock`;
      const reply = await new Promise<{ bytes: number; error?: string }>((resolve) => {
        let bytes = 0;
        const s = connect(sock);
        s.on('connect', () => s.write('j'));
        s.on('data', (d: Buffer) => (bytes += d.length));
        s.on('close', () => resolve({ bytes }));
        s.on('error', (e) => resolve({ bytes, error: e.message }));
      });
      assert.equal(reply.bytes, 0, 'nothing was sent to a process of another uid');
      await new Promise<void>((resolve) => {
        const s = connect(sock);
        s.on('connect', () => s.end('k'));
        s.on('close', () => resolve());
        s.on('error', () => resolve());
      });
      await new Promise((res) => setTimeout(res, 300));
      const ps = await cubicle(['ps', '--json'], { as: ROOTLESS_ID });
      assert.ok(
        (JSON.parse(ps.stdout) as { name: string }[]).some((s) => s.name === other),
        'a kill request of another uid is ignored',
      );
    } finally {
      await cubicle(['stop', other], { as: ROOTLESS_ID });
    }
  });
});
