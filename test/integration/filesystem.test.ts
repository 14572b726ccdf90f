// Filesystem: fresh tmpfs root, read-only default view, nothing of the host beyond binds, /proc, /dev, /tmp, binds.
import { strict as assert } from 'node:assert';
import { chmodSync, existsSync, lstatSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { runSandboxed, SandboxOptionError } from '../../sandbox/index.js';
import { forEachIdentity, worldReadableTmp, skipBecause } from '../helpers/env.js';

forEachIdentity((_id, run) => {
  it('a host file created by the test is not visible inside', async () => {
    const marker = `cubicle-marker-${process.pid}-${Date.now()}`;
    const t = worldReadableTmp();
    // A marker at the host's root too, when this user may write there (root may; an ordinary user may not).
    const paths = [join(t.dir, marker), `/tmp/${marker}`, ...(process.geteuid!() === 0 ? [`/${marker}`] : [])];
    try {
      for (const p of paths) writeFileSync(p, 'host secret\n', { mode: 0o644 });
      const r = await run([
        '/bin/sh',
        '-c',
        `for p in ${paths.join(' ')}; do test -e "$p" && echo "visible $p"; done; ` +
          `ls -A /tmp; find / -xdev -name '${marker}' 2>/dev/null; echo done`,
      ]);
      assert.equal(r.stdout, 'done\n');
    } finally {
      for (const p of paths) rmSync(p, { force: true });
      t.cleanup();
    }
  });

  it('shows no host state: no /home, /root, shadow files, /sys, or old root', async () => {
    const r = await run([
      '/bin/sh',
      '-c',
      'for p in /home /root /etc/shadow /etc/gshadow /sys /oldroot /newroot /etc/ssl/private /run /var; ' +
        'do test -e $p && echo "present $p"; done; ls /',
    ]);
    const hostTop = ['bin', 'sbin', 'lib', 'lib32', 'lib64', 'libx32'].filter((d) => existsSync(`/${d}`));
    const expected = [...hostTop, 'dev', 'etc', 'proc', 'tmp', 'usr'].sort();
    assert.equal(r.stdout, expected.join('\n') + '\n');
  });

  it('the root and /usr are read-only, nosuid and nodev; /tmp is writable and size-limited', async () => {
    const r = await run(
      [
        '/bin/sh',
        '-c',
        'touch /x 2>&1; touch /usr/x 2>&1; echo ok > /tmp/ok && cat /tmp/ok; head -c 300000 /dev/zero 2>&1 >/tmp/big; echo rc=$?; ' +
          'grep -E "^[0-9]+ [0-9]+ [0-9:]+ [^ ]+ (/|/usr|/tmp) " /proc/self/mountinfo',
      ],
      { tmpSize: 128 << 10 },
    );
    const out = r.stdout as string;
    assert.match(out, /touch: cannot touch '\/x': Read-only file system/);
    assert.match(out, /touch: cannot touch '\/usr\/x': Read-only file system/);
    assert.match(out, /^ok$/m);
    assert.match(out, /No space left on device\nrc=1/);
    const mounts = new Map(
      out
        .split('\n')
        .filter((l) => l.includes(' - '))
        .map((l) => [l.split(' ')[4]!, l.split(' ')[5]!]),
    );
    assert.deepEqual([...mounts.keys()].sort(), ['/', '/tmp', '/usr']);
    for (const [point, opts] of mounts) {
      assert.match(opts, /nosuid/, point);
      assert.match(opts, /nodev/, point);
      assert.match(opts, point === '/tmp' ? /^rw/ : /^ro/, point);
    }
  });

  it('has a minimal /dev: null, zero, full, random, urandom, shm, fd links', async () => {
    const r = await run([
      '/bin/sh',
      '-c',
      'ls -A /dev | tr "\\n" " "; echo; echo hi > /dev/null && echo null-ok; head -c 4 /dev/zero | od -An -tx1; ' +
        'head -c 8 /dev/urandom | wc -c; echo x > /dev/full 2>/dev/null || echo full-enospc; ' +
        'echo shm > /dev/shm/s && cat /dev/shm/s; readlink /dev/fd /dev/stdin',
    ]);
    assert.equal(
      r.stdout,
      'fd full null random shm stderr stdin stdout urandom zero \n' +
        'null-ok\n 00 00 00 00\n8\nfull-enospc\nshm\n/proc/self/fd\n/proc/self/fd/0\n',
    );
  });

  it('programs run: dynamic binaries, python3, java alternatives, certificates', async () => {
    const r = await run(['/usr/bin/python3', '-c', 'import ssl, json, sqlite3; print(json.dumps({"ok": True}))']);
    assert.equal(r.stdout, '{"ok": true}\n');
  });

  it('binds read-write, read-only, and tmpfs with a size', async () => {
    const rw = worldReadableTmp();
    const ro = worldReadableTmp();
    try {
      chmodSync(rw.dir, 0o777);
      writeFileSync(join(ro.dir, 'in.txt'), 'from host\n', { mode: 0o644 });
      const r = await run(
        [
          '/bin/sh',
          '-c',
          'cat /src/in.txt; echo out > /job/out.txt; echo bad > /src/x 2>&1 || echo ro-refused; ' +
            'echo t > /scratch/t && cat /scratch/t; head -c 200000 /dev/zero > /scratch/big 2>/dev/null || echo scratch-full',
        ],
        {
          mounts: [
            { type: 'bind', source: ro.dir, target: '/src', readOnly: true },
            { type: 'bind', source: rw.dir, target: '/job' },
            { type: 'tmpfs', target: '/scratch', size: '64K' },
          ],
        },
      );
      assert.equal(r.stdout, 'from host\nro-refused\nt\nscratch-full\n');
      assert.equal(readFileSync(join(rw.dir, 'out.txt'), 'utf8'), 'out\n');
    } finally {
      rw.cleanup();
      ro.cleanup();
    }
  });
});

describe('bind validation', () => {
  it('a missing bind source is an error naming the path, thrown before anything runs', () => {
    const missing = `/nonexistent-${process.pid}/data`;
    assert.throws(
      () => runSandboxed(['/bin/true'], { mounts: [{ type: 'bind', source: missing, target: '/data' }] }),
      (e: unknown) =>
        e instanceof SandboxOptionError &&
        e.code === 'ERR_SANDBOX_BIND_SOURCE' &&
        e.message.includes(missing) &&
        e.option === 'mounts[0].source',
    );
  });

  it('relative paths are refused with the path named', () => {
    assert.throws(
      () => runSandboxed(['/bin/true'], { mounts: [{ type: 'bind', source: 'relative/dir', target: '/x' }] }),
      /bind source "relative\/dir" is a relative path/,
    );
    assert.throws(
      () => runSandboxed(['/bin/true'], { mounts: [{ type: 'bind', source: '/usr', target: 'usr2' }] }),
      /mounts\[0\]\.target "usr2" must be an absolute path/,
    );
    assert.throws(() => runSandboxed(['/bin/true'], { mounts: [{ type: 'tmpfs', target: '/a/../b' }] }), /must not contain '\.\.'/);
  });

  it('a target through a symlink inside the sandbox fails setup with a hint', async function () {
    if (!lstatSync('/bin').isSymbolicLink()) {
      return skipBecause(this, 'this host is not merged-/usr, so /bin is no symlink');
    }
    const r = await runSandboxed(['/bin/true'], { mounts: [{ type: 'tmpfs', target: '/bin/sub' }], reject: false });
    assert.equal(r.verdict, 'setup-error');
    assert.equal(r.setupFailure?.stage, 'init');
    assert.equal(r.setupFailure?.errnoName, 'ELOOP');
    assert.match(r.setupFailure!.hint, /real path/);
  });
});
