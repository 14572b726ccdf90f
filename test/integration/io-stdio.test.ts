// Inherited stdio: every byte arrives whatever the caller's stdio is, and O_NONBLOCK never reaches the payload.
import { strict as assert } from 'node:assert';
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, constants, existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { identities, skipBecause, worldReadableTmp } from '../helpers/env.js';
import { CLI } from '../helpers/cli.js';

const INDEX = fileURLToPath(new URL('../../sandbox/index.js', import.meta.url));
const BYTES = 20_000_000;
/** Prints the payload's fd flags on stderr (O_NONBLOCK is 04000), after writing BYTES to stdout. */
const FLAGS = 'grep flags /proc/self/fdinfo/0 /proc/self/fdinfo/1 /proc/self/fdinfo/2 >&2';
const FLOOD = `head -c ${BYTES} /dev/zero; ${FLAGS}`;

const nonblocking = (stderr: string): string[] =>
  [...stderr.matchAll(/fdinfo\/(\d):flags:\s+([0-7]+)/g)]
    .filter((m) => (parseInt(m[2]!, 8) & constants.O_NONBLOCK) !== 0)
    .map((m) => m[1]!);

for (const id of identities())
  describe(`inherited stdio, ${id.label}`, () => {
    const as = id.spawnAs.runAs ?? {};

    it('a piped CLI stdout loses no byte to a slow reader (head got EAGAIN: 65536 bytes arrived)', function () {
      this.timeout(120_000);
      const r = spawnSync('sh', ['-c', `"${process.execPath}" "${CLI}" run -- sh -c '${FLOOD}' | (sleep 1; wc -c)`], {
        encoding: 'utf8',
        timeout: 90_000,
        ...as,
      });
      assert.doesNotMatch(r.stderr, /Resource temporarily unavailable/);
      assert.equal(r.stdout.trim(), String(BYTES));
      assert.deepEqual(nonblocking(r.stderr), [], r.stderr);
    });

    it('a CLI whose stdout is a socket loses no byte to a slow reader', async function () {
      this.timeout(120_000);
      // Node gives a child a socketpair for 'pipe'; the CLI's own Node makes its end non-blocking.
      const child = spawn(process.execPath, [CLI, 'run', '--', 'sh', '-c', FLOOD], { stdio: ['ignore', 'pipe', 'pipe'], ...as });
      let stderr = '';
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      let n = 0;
      child.stdout.pause();
      child.stdout.on('data', (d: Buffer) => (n += d.length));
      setTimeout(() => child.stdout.resume(), 1000);
      const code = await new Promise((r) => child.on('close', r));
      assert.equal(code, 0, stderr);
      assert.equal(n, BYTES);
      assert.deepEqual(nonblocking(stderr), [], stderr);
    });

    it('stdin from a non-blocking pipe reaches the payload blocking and complete (wc got EAGAIN)', function () {
      this.timeout(120_000);
      // Node's spawn makes a child's 0-2 blocking, so a small exec wrapper sets O_NONBLOCK on the CLI's stdin pipe.
      const python = '/usr/bin/python3';
      if (!existsSync(python)) {
        skipBecause(this, `no ${python} to make a non-blocking stdin with`);
      }
      const wrap =
        'import os,fcntl,sys; fcntl.fcntl(0, fcntl.F_SETFL, fcntl.fcntl(0, fcntl.F_GETFL) | os.O_NONBLOCK); ' +
        'os.execv(sys.argv[1], sys.argv[1:])';
      const r = spawnSync(
        'sh',
        [
          '-c',
          `(sleep 1; head -c 5000000 /dev/zero) | ${python} -c '${wrap}' "${process.execPath}" "${CLI}" run -- sh -c 'wc -c; ${FLAGS}'`,
        ],
        { encoding: 'utf8', timeout: 90_000, ...as },
      );
      assert.doesNotMatch(r.stderr, /Resource temporarily unavailable/);
      assert.equal(r.stdout.trim(), '5000000', r.stderr);
      assert.deepEqual(nonblocking(r.stderr), [], r.stderr);
    });

    it('the library with stdout inherit loses no byte when the caller already uses its stdout', function () {
      this.timeout(120_000);
      // console.log makes the caller's stdout pipe non-blocking before the run starts.
      const script =
        `import('${INDEX}').then(async (m) => { console.log('before'); ` +
        `const r = await m.runSandboxed(['/bin/sh', '-c', "${FLOOD}"], ` +
        `{ stdout: 'inherit', stderr: 'inherit', ...${JSON.stringify(id.spawnAs)} }); ` +
        `console.error('exit', r.exitCode); })`;
      const r = spawnSync('sh', ['-c', `"${process.execPath}" -e '${script.replace(/'/g, `'\\''`)}' | (sleep 1; wc -c)`], {
        encoding: 'utf8',
        timeout: 90_000,
      });
      assert.match(r.stderr, /exit 0/);
      assert.equal(r.stdout.trim(), String(BYTES + 'before\n'.length));
      assert.deepEqual(nonblocking(r.stderr), [], r.stderr);
    });

    it('every byte arrives when the CLI writes to a file or a terminal, or its stdout is closed', function () {
      this.timeout(120_000);
      const t = worldReadableTmp();
      try {
        chmodSync(t.dir, 0o777);
        const file = join(t.dir, 'out');
        const f = spawnSync('sh', ['-c', `"${process.execPath}" "${CLI}" run -- sh -c '${FLOOD}' > ${file}; wc -c < ${file}`], {
          encoding: 'utf8',
          ...as,
        });
        assert.equal(f.stdout.trim(), String(BYTES), f.stderr);
        const closed = spawnSync('sh', ['-c', `"${process.execPath}" "${CLI}" run -- sh -c 'echo x; echo ok >&2' >&-`], {
          encoding: 'utf8',
          ...as,
        });
        assert.equal(closed.stderr, 'ok\n');
        const script = spawnSync('script', ['--version'], { encoding: 'utf8' });
        if (script.status !== 0) {
          console.log('      (no util-linux script(1): the terminal case is not checked)');
          return;
        }
        const tty = spawnSync(
          'script',
          [
            '-qc',
            `"${process.execPath}" "${CLI}" run -- sh -c 'head -c ${BYTES} /dev/zero | wc -c; grep flags /proc/self/fdinfo/[012]'`,
            '/dev/null',
          ],
          {
            encoding: 'utf8',
            timeout: 90_000,
            stdio: ['ignore', 'pipe', 'pipe'],
          },
        );
        assert.match(tty.stdout, new RegExp(`^${BYTES}`, 'm'));
        assert.equal(tty.stdout.match(/flags/g)?.length, 3, tty.stdout);
        assert.deepEqual(nonblocking(tty.stdout), [], tty.stdout);
      } finally {
        t.cleanup();
      }
    });
  });
