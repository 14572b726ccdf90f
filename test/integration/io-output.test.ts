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

  it('maxBuffer is refused beyond what one string or Buffer holds', () => {
    assert.throws(
      () => runSandboxed(['true'], { maxBuffer: '1G', ...id.spawnAs }),
      (e: unknown) => e instanceof SandboxOptionError && e.option === 'maxBuffer',
    );
  });
});
