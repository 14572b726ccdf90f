// Host-side paths the caller names are never resolved through a symlink, in any component, and a fifo where a
// regular file is expected is refused at once instead of hanging.
import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { runSandboxed, SandboxOptionError } from '../../sandbox/index.js';
import { openRegularForRead, walkForTest } from '../../sandbox/safe-open.js';
import { forEachIdentity, worldReadableTmp } from '../helpers/env.js';
import { CLI } from '../helpers/cli.js';

forEachIdentity((id, run) => {
  const cubicle = (args: string[]) =>
    spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 20_000, ...(id.spawnAs.runAs ?? {}) });

  it('--stdout/--stderr/--result/--meta/--stdin and inputFile refuse a symlink a payload planted in a parent directory', async () => {
    const t = worldReadableTmp();
    try {
      const shared = join(t.dir, 'shared');
      const secret = join(t.dir, 'secret'); // a directory the sandbox cannot reach
      mkdirSync(shared, { mode: 0o777 });
      chmodSync(shared, 0o777);
      mkdirSync(secret, { mode: 0o777 });
      chmodSync(secret, 0o777);
      writeFileSync(join(secret, 'in'), 'secret\n', { mode: 0o644 });
      // An earlier run with the shared directory bound plants the link (its target is a host path).
      await run(['/bin/sh', '-c', `ln -s ${secret} /job/d`], { mounts: [{ type: 'bind', source: shared, target: '/job' }] });
      const via = join(shared, 'd');
      for (const flag of ['--stdout', '--stderr', '--result', '--meta']) {
        const r = cubicle(['run', flag, join(via, 'out'), '--', 'sh', '-c', 'echo planted; echo planted >&2']);
        assert.notEqual(r.status, 0, `${flag}: ${r.stderr}`);
        assert.match(r.stderr, /symlink/, flag);
      }
      assert.deepEqual(readdirSync(secret), ['in'], 'nothing was written through the link');
      const s = cubicle(['run', '--stdin', join(via, 'in'), '--', 'cat']);
      assert.notEqual(s.status, 0);
      assert.doesNotMatch(s.stdout, /secret/);
      assert.throws(
        () => runSandboxed(['/bin/cat'], { inputFile: join(via, 'in'), ...id.spawnAs }),
        (e: unknown) => e instanceof SandboxOptionError && /symlink/.test(e.message),
      );
    } finally {
      t.cleanup();
    }
  });

  it('a fifo given as --stdin, --stdout or --policy is refused instead of hanging', () => {
    const t = worldReadableTmp();
    try {
      chmodSync(t.dir, 0o777);
      const fifo = join(t.dir, 'f');
      spawnSync('mkfifo', ['-m', '0666', fifo]);
      for (const args of [
        ['--stdin', fifo],
        ['--stdout', fifo],
        ['--result', fifo],
        ['--policy', fifo],
      ]) {
        const r = cubicle(['run', ...args, '--', 'true']);
        assert.equal(r.error, undefined, `${args[0]} hung`);
        assert.ok(r.status === 2 || r.status === 125, `${args[0]}: ${r.status} ${r.stderr}`);
        assert.match(r.stderr, /fifo|not a regular file/, args[0]);
      }
    } finally {
      t.cleanup();
    }
  });
});

describe('safe-open without openat2 (the component walk)', () => {
  it('refuses a symlink in a parent directory and opens real paths', () => {
    const t = worldReadableTmp();
    try {
      mkdirSync(join(t.dir, 'real'));
      writeFileSync(join(t.dir, 'real', 'f'), 'x');
      spawnSync('ln', ['-s', 'real', join(t.dir, 'link')]);
      assert.ok(walkForTest(join(t.dir, 'real', 'f')) >= 0);
      assert.throws(() => walkForTest(join(t.dir, 'link', 'f')), /ENOTDIR|ELOOP/);
      assert.throws(() => walkForTest(join(t.dir, 'real', 'missing')), /ENOENT/);
      assert.throws(() => openRegularForRead(join(t.dir, 'link', 'f')), /symlink/);
    } finally {
      t.cleanup();
    }
  });
});
