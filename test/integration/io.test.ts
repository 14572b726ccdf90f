// I/O: stdin from string, Buffer, stream, file, inherit; stdout/stderr captured separately, completely, binary-safe.
import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { forEachIdentity, worldReadableTmp } from '../helpers/env.js';

forEachIdentity((id, run) => {
  it('stdin from a string, a Buffer with NUL bytes, a stream and a file', async () => {
    assert.equal((await run(['/bin/cat'], { input: 'héllo\n' })).stdout, 'héllo\n');
    const bin = Buffer.from([0, 1, 2, 0, 255, 10, 0]);
    const r = await run(['/bin/cat'], { input: bin, encoding: 'buffer' });
    assert.ok(Buffer.isBuffer(r.stdout));
    assert.deepEqual(r.stdout, bin);
    assert.equal((await run(['/bin/cat'], { input: Readable.from(['a', 'b', 'c']) })).stdout, 'abc');
    const t = worldReadableTmp();
    try {
      writeFileSync(join(t.dir, 'in'), 'from a file\n', { mode: 0o644 });
      assert.equal((await run(['/bin/cat'], { inputFile: join(t.dir, 'in') })).stdout, 'from a file\n');
    } finally {
      t.cleanup();
    }
    assert.equal((await run(['/bin/cat'])).stdout, '', 'default stdin is empty');
  });

  it('round-trips 50 MiB of random binary through stdin and stdout, with 50 MiB on stderr at once', async function () {
    this.timeout(120_000);
    const data = randomBytes(50 << 20);
    data[0] = 0;
    data[data.length - 1] = 0;
    const r = await run(['/bin/sh', '-c', 'head -c 52428800 /dev/zero >&2 & cat; wait'], { input: data, encoding: 'buffer' });
    assert.equal((r.stdout as Buffer).length, data.length);
    assert.ok((r.stdout as Buffer).equals(data), 'stdout is byte-identical to stdin');
    assert.equal((r.stderr as Buffer).length, 50 << 20);
    assert.ok(
      (r.stderr as Buffer).every((b) => b === 0),
      'stderr holds exactly the NUL bytes written',
    );
  });

  it('/dev/stdout and /dev/stderr can be opened again by the payload (root: its own host uid got EACCES on 0600 pipes)', async () => {
    const r = await run(['/bin/sh', '-c', 'echo out > /dev/stdout && echo err > /dev/stderr && cat /dev/stdin > /dev/stdout'], {
      input: 'in\n',
    });
    assert.equal(r.stdout, 'out\nin\n', String(r.stderr));
    assert.equal(r.stderr, 'err\n');
  });

  it('keeps stdout and stderr apart', async () => {
    const r = await run('echo out; echo err >&2; echo out2');
    assert.equal(r.stdout, 'out\nout2\n');
    assert.equal(r.stderr, 'err\n');
  });

  it('inherits stdin when asked (the CLI path)', () => {
    // A child Node process inherits a pipe as its stdin; the sandbox must read it through.
    const script =
      `import('${fileURLToPath(new URL('../../sandbox/index.js', import.meta.url))}').then(async (m) => { ` +
      `const r = await m.runSandboxed(['/bin/cat'], { stdin: 'inherit', ...${JSON.stringify(id.spawnAs)} }); ` +
      'process.stdout.write(r.stdout); })';
    const out = spawnSync(process.execPath, ['-e', script], { input: 'through the caller\n', encoding: 'utf8' });
    assert.equal(out.stderr, '');
    assert.equal(out.stdout, 'through the caller\n');
  });
});
