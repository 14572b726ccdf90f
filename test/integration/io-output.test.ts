// Captured output is bounded (maxBuffer): a flood ends as a clean output-limit result, never a crashed caller.
import { strict as assert } from 'node:assert';
import { spawn } from 'node:child_process';
import { runSandboxed, SandboxOptionError } from '../../sandbox/index.js';
import { forEachIdentity } from '../helpers/env.js';
import { CLI } from '../helpers/cli.js';

forEachIdentity((id, run) => {
  it('600M of captured output is a clean output-limit with the first 100 MiB kept (it threw ERR_STRING_TOO_LONG)', async function () {
    this.timeout(120_000);
    const r = await run(['head', '-c', '600M', '/dev/zero'], { reject: false });
    assert.equal(r.verdict, 'output-limit');
    assert.equal((r.stdout as string).length, 100 << 20);
    assert.deepEqual(r.limits.outputLimit, { value: 100 << 20, unit: 'bytes', mechanism: 'maxBuffer' });
    const small = await run('head -c 100000 /dev/zero; echo done >&2', { maxBuffer: '64K', encoding: 'buffer', reject: false });
    assert.equal(small.verdict, 'output-limit');
    assert.equal((small.stdout as Buffer).length, 64 << 10);
    const outputLimitWins = await run(['head', '-c', '1M', '/dev/zero'], {
      maxBuffer: '64K',
      limits: { outputLimit: '8K' },
      reject: false,
    });
    assert.deepEqual([outputLimitWins.verdict, (outputLimitWins.stdout as string).length], ['output-limit', 8192]);
    assert.equal(outputLimitWins.limits.outputLimit?.mechanism, 'supervisor');
  });

  it('cubicle run --json with 600M of output prints one complete JSON object (the caller crashed)', async function () {
    this.timeout(120_000);
    const child = spawn(process.execPath, [CLI, 'run', '--json', '--', 'head', '-c', '600M', '/dev/zero'], {
      stdio: ['ignore', 'pipe', 'pipe'],
      ...(id.spawnAs.runAs ?? {}),
    });
    let n = 0;
    let head = '';
    let tail = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => {
      n += d.length;
      if (head.length < 200) head += d.toString('latin1', 0, 200);
      tail = (tail + d.toString('latin1')).slice(-4096);
    });
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const code = await new Promise((r) => child.on('close', r));
    assert.equal(code, 0, stderr);
    assert.match(head, /^\{"command":\["head","-c","600M","\/dev\/zero"\],"verdict":"output-limit"/);
    assert.ok(n > 6 * (100 << 20), `printed ${n} bytes`);
    const rest = JSON.parse('{' + tail.slice(tail.indexOf('","stderr":') + 2));
    assert.equal(rest.limits.outputLimit.mechanism, 'maxBuffer');
    assert.ok(tail.endsWith('}\n'));
  });

  it('output the CLI has not yet written when the run ends is written whole (it may end without waiting for it)', async function () {
    this.timeout(60_000);
    // The reader starts only after the run has ended: the CLI's writes (the --json result; the copy an output limit
    // makes) are still pending then, and the CLI ends without Node's usual teardown only when nothing is.
    const size = 3 << 20;
    for (const flags of [['--json'], ['--output-limit', '10M']]) {
      const child = spawn(process.execPath, [CLI, 'run', ...flags, '--', 'sh', '-c', `head -c ${size} /dev/zero | tr '\\0' a`], {
        stdio: ['ignore', 'pipe', 'pipe'],
        ...(id.spawnAs.runAs ?? {}),
      });
      child.stdout.pause();
      let stderr = '';
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      await new Promise((r) => setTimeout(r, 1500)); // the sandbox is over well before this
      const chunks: Buffer[] = [];
      child.stdout.on('data', (d: Buffer) => chunks.push(d));
      child.stdout.resume();
      const code = await new Promise((r) => child.on('close', r));
      assert.equal(code, 0, stderr);
      const out = Buffer.concat(chunks).toString('latin1');
      if (flags[0] === '--json') assert.equal((JSON.parse(out) as { stdout: string }).stdout, 'a'.repeat(size));
      else assert.equal(out, 'a'.repeat(size));
    }
  });

  it('maxBuffer is refused beyond what one string or Buffer holds', () => {
    assert.throws(
      () => runSandboxed(['true'], { maxBuffer: '1G', ...id.spawnAs }),
      (e: unknown) => e instanceof SandboxOptionError && e.option === 'maxBuffer',
    );
  });
});
