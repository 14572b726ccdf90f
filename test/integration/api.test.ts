// API: string vs argv, result shape, SandboxError, reject:false, timeout, cancelSignal, option errors, spawnSandboxed.
import { strict as assert } from 'node:assert';
import { existsSync } from 'node:fs';
import { runSandboxed, SandboxError, SandboxOptionError, spawnSandboxed } from '../../sandbox/index.js';
import { forEachIdentity, pidsInPidNamespace, probeMount, skipBecause } from '../helpers/env.js';

forEachIdentity((_id, run) => {
  it("a string runs via /bin/sh -c; an array is exec'd directly with argv intact", async () => {
    assert.equal((await run('echo $((6 * 7))')).stdout, '42\n');
    const r = await run(['/probe', 'argv', 'two words', '$HOME', '*', ''], { mounts: probeMount() });
    assert.equal(r.stdout, '[/probe]\n[argv]\n[two words]\n[$HOME]\n[*]\n[]\n');
  });

  it('resolves with the full result', async () => {
    const r = await run(['/bin/echo', 'hi']);
    assert.equal(r.stdout, 'hi\n');
    assert.equal(r.stderr, '');
    assert.equal(r.exitCode, 0);
    assert.equal(r.signal, null);
    assert.equal(r.verdict, 'ok');
    assert.equal(r.timedOut, false);
    assert.equal(r.isCanceled, false);
    assert.equal(r.failed, false);
    for (const k of ['wallMs', 'cpuUserMs', 'cpuSystemMs', 'maxRssBytes'] as const) assert.equal(typeof r.usage![k], 'number', k);
    assert.ok(r.usage!.maxRssBytes > 0);
    assert.ok(r.setup!.ms > 0);
  });

  it("a failed compile rejects with the compiler's complaint at the end of the message; shortMessage is the one line", async function () {
    if (!existsSync('/usr/bin/cc')) skipBecause(this, 'no C compiler at /usr/bin/cc to fail a compile with');
    await assert.rejects(run('cc -x c -o /tmp/a.out -', { input: 'int main( {\n' }), (e: unknown) => {
      assert.ok(e instanceof SandboxError);
      assert.equal(e.shortMessage, 'Command failed with exit code 1: /bin/sh -c "cc -x c -o /tmp/a.out -"');
      assert.ok(e.message.startsWith(`${e.shortMessage}\n\n`));
      assert.match(e.message, /error: /, 'the compiler says what is wrong in the message itself');
      assert.ok(e.message.endsWith(String(e.stderr).trim()));
      return true;
    });
  });

  it('rejects with a SandboxError carrying the result, unless reject: false', async () => {
    await assert.rejects(run('echo partial; exit 3'), (e: unknown) => {
      assert.ok(e instanceof SandboxError);
      assert.equal(e.code, 'ERR_SANDBOX_NONZERO_EXIT');
      assert.equal(e.exitCode, 3);
      assert.equal(e.stdout, 'partial\n');
      assert.equal(e.verdict, 'nonzero-exit');
      assert.match(e.message, /exit code 3/);
      return true;
    });
    const r = await run('exit 3', { reject: false });
    assert.equal(r.exitCode, 3);
    assert.equal(r.failed, true);
  });

  it('timeout kills the whole sandbox and says so', async () => {
    const started = Date.now();
    const r = await run(['/bin/sh', '-c', '(sleep 1000 &); sleep 1000'], { timeout: 300, reject: false });
    assert.ok(Date.now() - started < 5000);
    assert.equal(r.timedOut, true);
    assert.equal(r.verdict, 'wall-time-limit');
    assert.equal(r.signal, 'SIGKILL');
    assert.deepEqual(pidsInPidNamespace(r.namespaces!.pid!), []);
    await assert.rejects(run(['/bin/sleep', '10'], { timeout: 100 }), { code: 'ERR_SANDBOX_TIMEOUT', timedOut: true });
  });

  it('cancelSignal kills the whole sandbox, before or during the run', async () => {
    const ac = new AbortController();
    setTimeout(() => ac.abort(), 200);
    const r = await run(['/bin/sleep', '1000'], { cancelSignal: ac.signal, reject: false });
    assert.equal(r.isCanceled, true);
    assert.equal(r.verdict, 'canceled');
    await assert.rejects(run(['/bin/sleep', '1000'], { cancelSignal: AbortSignal.abort() }), {
      code: 'ERR_SANDBOX_CANCELED',
      isCanceled: true,
    });
  });

  it('a setup failure is a typed error with stage, syscall, errno and a hint', async () => {
    await assert.rejects(run(['no-such-program-xyz']), (e: unknown) => {
      assert.ok(e instanceof SandboxError);
      assert.equal(e.code, 'ERR_SANDBOX_SETUP');
      assert.equal(e.verdict, 'setup-error');
      assert.equal(e.stage, 'exec');
      assert.equal(e.syscall, 'execve');
      assert.equal(e.errnoName, 'ENOENT');
      assert.equal(e.errno, 2);
      assert.match(e.hint!, /not found inside the sandbox/);
      assert.equal(e.exitCode, null);
      return true;
    });
    const r = await run(['/bin/true'], { cwd: '/does/not/exist', reject: false });
    assert.equal(r.setupFailure?.stage, 'exec');
    assert.equal(r.setupFailure?.syscall, 'chdir');
  });

  it('spawnSandboxed streams stdin/stdout, and kill() ends the sandbox', async () => {
    const p = spawnSandboxed(['/bin/cat'], { stdin: 'pipe', ..._id.spawnAs });
    const chunks: Buffer[] = [];
    p.stdout!.on('data', (c: Buffer) => chunks.push(c));
    p.stdin!.write('line 1\n');
    await new Promise((r) => p.stdout!.once('data', r));
    p.stdin!.end('line 2\n');
    const r = await p.result;
    assert.equal(Buffer.concat(chunks).toString(), 'line 1\nline 2\n');
    assert.equal(r.verdict, 'ok');
    assert.equal(r.stdout, undefined, 'streamed output is not buffered');

    const long = spawnSandboxed(['/bin/sleep', '1000'], { reject: false, ..._id.spawnAs });
    setTimeout(() => long.kill('SIGTERM'), 200);
    const k = await long.result;
    assert.equal(k.signal, 'SIGTERM');
    assert.equal(k.verdict, 'signaled');
  });
});

describe('option validation (throws before anything is spawned)', () => {
  const bad: [string, unknown, RegExp][] = [
    ['empty command', [[]], /non-empty/],
    ['non-string argv', [['/bin/echo', 3]], /argv\[1\] must be a string/],
    ['NUL in argv', [['/bin/echo', 'a\0b']], /NUL/],
    ['unknown option', [['/bin/true'], { tiemout: 5 }], /unknown option "tiemout"/],
    ['relative cwd', [['/bin/true'], { cwd: 'tmp' }], /cwd "tmp" must be an absolute path/],
    ['negative uid', [['/bin/true'], { uid: -1 }], /uid must be an integer/],
    ['bad env value', [['/bin/true'], { env: { A: 1 } }], /env\.A must be a string/],
    ['bad size', [['/bin/true'], { tmpSize: '12 parsecs' }], /not a size/],
    ['bad timeout', [['/bin/true'], { timeout: -5 }], /timeout must be a positive number/],
    ['bad stdin', [['/bin/true'], { stdin: 'file' }], /stdin must be one of/],
    ['bad hostname', [['/bin/true'], { hostname: 'a b' }], /hostname "a b"/],
  ];
  for (const [name, args, re] of bad) {
    it(`rejects ${name}`, () => {
      assert.throws(
        () => (runSandboxed as (...a: unknown[]) => unknown)(...(args as unknown[])),
        (e: unknown) =>
          e instanceof SandboxOptionError && e instanceof TypeError && re.test(e.message) && e.code === 'ERR_SANDBOX_INVALID_OPTION',
      );
    });
  }
});
