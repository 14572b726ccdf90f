// The payload's stdin file (inputFile, --stdin) is read-only to it, whoever owns the file on the host.
import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import { chmodSync, chownSync, closeSync, openSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { forEachIdentity, worldReadableTmp } from '../helpers/env.js';
import { CLI } from '../helpers/cli.js';

/** What a payload tries against its stdin file: make it writable, write through it, truncate it, write via fd 0. */
const REWRITE =
  'chmod 644 /proc/self/fd/0; echo 42 > /proc/self/fd/0; true > /proc/self/fd/0; echo 43 1<>/proc/self/fd/0; ' +
  'printf x >&0; cat; echo; ls -l /proc/self/fd/0 >&2';

forEachIdentity((id, run) => {
  /** A 0444 test-data file owned by the host uid the sandbox maps to (so only the file's mode protects it). */
  const testData = (dir: string): string => {
    const f = join(dir, '1.in');
    writeFileSync(f, 'test data\n');
    chmodSync(f, 0o444);
    if (process.geteuid!() === 0) chownSync(f, id.outerUid, id.outerGid);
    return f;
  };

  it('the payload cannot rewrite its inputFile through /proc/self/fd/0 (chmod 644; echo 42 > it)', async () => {
    const t = worldReadableTmp();
    try {
      const f = testData(t.dir);
      const r = await run(['/bin/sh', '-c', REWRITE], { inputFile: f, reject: false });
      assert.equal(r.stdout, 'test data\n\n', String(r.stderr));
      assert.equal(readFileSync(f, 'utf8'), 'test data\n');
      assert.equal(statSync(f).mode & 0o777, 0o444);
    } finally {
      t.cleanup();
    }
  });

  it('the payload cannot rewrite its --stdin file (the CLI as the file owner)', () => {
    const t = worldReadableTmp();
    try {
      chmodSync(t.dir, 0o777);
      const f = testData(t.dir);
      const r = spawnSync(process.execPath, [CLI, 'run', '--stdin', f, '--', 'sh', '-c', REWRITE], {
        encoding: 'utf8',
        timeout: 30_000,
        ...(id.spawnAs.runAs ?? {}),
      });
      assert.equal(r.stdout, 'test data\n\n', String(r.stderr));
      assert.equal(readFileSync(f, 'utf8'), 'test data\n');
      assert.equal(statSync(f).mode & 0o777, 0o444);
    } finally {
      t.cleanup();
    }
  });

  it("the payload cannot rewrite a file redirected to the CLI's stdin (cubicle run ... < tests/1.in)", () => {
    const t = worldReadableTmp();
    try {
      chmodSync(t.dir, 0o777);
      const f = testData(t.dir);
      const fd = openSync(f, 'r');
      try {
        const r = spawnSync(process.execPath, [CLI, 'run', '--', 'sh', '-c', REWRITE], {
          encoding: 'utf8',
          timeout: 30_000,
          stdio: [fd, 'pipe', 'pipe'],
          ...(id.spawnAs.runAs ?? {}),
        });
        assert.equal(r.stdout, 'test data\n\n', String(r.stderr));
      } finally {
        closeSync(fd);
      }
      assert.equal(readFileSync(f, 'utf8'), 'test data\n');
      assert.equal(statSync(f).mode & 0o777, 0o444);
    } finally {
      t.cleanup();
    }
  });

  it('stdin from a file stays seekable and complete (64 MiB)', async function () {
    this.timeout(60_000);
    const t = worldReadableTmp();
    try {
      const f = join(t.dir, 'big.in');
      const data = Buffer.alloc(64 << 20, 7);
      data.write('END', data.length - 3);
      writeFileSync(f, data, { mode: 0o444 });
      const started = Date.now();
      // tail -c seeks to the end of a regular file (a pipe would be read through)
      const r = await run(['/bin/sh', '-c', 'tail -c 3; wc -c < /proc/self/fd/0'], { inputFile: f });
      console.log(`      (64 MiB inputFile: run took ${Date.now() - started} ms)`);
      assert.equal(r.stdout, `END${data.length}\n`);
    } finally {
      t.cleanup();
    }
  });
});
