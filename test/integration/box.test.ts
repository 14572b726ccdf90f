// Files in and out of the work directory /box: what goes in arrives exactly, owned by the sandbox's user; what
// comes out is the payload's, so only regular files with one name, within their caps, ever leave.
import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, readFileSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { runSandboxed } from '../../sandbox/index.js';
import { forEachIdentity, IS_ROOT, skipBecause, worldReadableTmp } from '../helpers/env.js';
import { CLI } from '../helpers/cli.js';

const SUM =
  '#include <stdio.h>\nint main(void) { long a, b; if (scanf("%ld %ld", &a, &b) != 2) return 3; printf("%ld\\n", a + b); return 0; }\n';

forEachIdentity((id, run) => {
  it('files go into /box exactly (text, bytes with NUL, a host file, a mode), owned by the sandbox user, /box the cwd', async () => {
    const t = worldReadableTmp();
    try {
      writeFileSync(join(t.dir, 'lib.py'), 'X = 42\n');
      chmodSync(join(t.dir, 'lib.py'), 0o644);
      const bytes = Buffer.from([0, 1, 2, 255, 0, 10]);
      const r = await run(
        ['/bin/sh', '-c', 'pwd; stat -c "%n %a %U" *; od -An -tx1 bin; sh ./run.sh; python3 -c "import lib; print(lib.X)"'],
        {
          files: {
            'a.txt': 'héllo',
            bin: bytes,
            'lib.py': { path: join(t.dir, 'lib.py') },
            'run.sh': { content: 'echo ran\n', mode: 0o750 },
          },
        },
      );
      const lines = String(r.stdout).trim().split('\n');
      assert.equal(lines[0], '/box');
      assert.deepEqual(lines.slice(1, 5).sort(), ['a.txt 644 sandbox', 'bin 644 sandbox', 'lib.py 644 sandbox', 'run.sh 750 sandbox']);
      assert.equal(lines[5]!.trim(), '00 01 02 ff 00 0a');
      assert.deepEqual(lines.slice(6), ['ran', '42']);
    } finally {
      t.cleanup();
    }
  });

  it('a judge flow, API only: compile, carry the binary to a second run, run it on an input, copy the output out', async function () {
    if (!existsSync('/usr/bin/cc')) return skipBecause(this, 'no C compiler (cc) on this host');
    const compiled = await run(['/usr/bin/cc', '-O2', '-o', 'sum', 'sum.c'], {
      files: { 'sum.c': SUM },
      copyOut: ['sum'],
      limits: { memory: '512M' },
    });
    assert.equal(compiled.verdict, 'ok', String(compiled.stderr));
    const binary = compiled.files!.sum!;
    assert.ok(binary.length > 1000 && binary.subarray(0, 4).equals(Buffer.from('\x7fELF')), 'an ELF binary came out');
    const ran = await run(['/bin/sh', '-c', '/box/sum < in.txt > out.txt'], {
      files: { sum: { content: binary, mode: 0o755 }, 'in.txt': '40 2\n' },
      copyOut: ['out.txt'],
    });
    assert.equal(ran.verdict, 'ok', String(ran.stderr));
    assert.equal(ran.files!['out.txt']!.toString(), '42\n');
    assert.deepEqual(Object.keys(ran.fileErrors!), []);
  });

  it('copy-out never follows a symlink planted to a host file (Judge0 CVE-2024-28185), nor takes fifos, links or dirs', async () => {
    const r = await run(
      [
        '/bin/sh',
        '-c',
        'ln -s /etc/passwd passwd; ln -s /proc/self/environ env; mkfifo fifo; echo a > one; ln one two; mkdir dir; echo fine > ok',
      ],
      { copyOut: ['passwd', 'env', 'fifo', 'one', 'two', 'dir', 'missing', 'ok'] },
    );
    assert.equal(r.verdict, 'ok', String(r.stderr));
    assert.deepEqual(Object.keys(r.files!), ['ok'], 'one refusal never stops the others');
    assert.equal(r.files!.ok!.toString(), 'fine\n');
    const e = r.fileErrors!;
    assert.match(e.passwd!, /symlink/);
    assert.match(e.env!, /symlink/);
    assert.match(e.fifo!, /not a regular file/, 'a fifo is refused, never opened for a blocking read');
    assert.match(e.one!, /hard link/);
    assert.match(e.two!, /hard link/);
    assert.match(e.dir!, /directory/);
    assert.match(e.missing!, /missing/);
  });

  it('copy-out caps: a file over copyOutMax, and a sparse file larger than the whole box, are too large, not read', async () => {
    const r = await run(['/bin/sh', '-c', 'head -c 5000 /dev/zero > big; head -c 100 /dev/zero > small; truncate -s 100G sparse'], {
      copyOut: ['big', 'small', 'sparse'],
      copyOutMax: 4096,
      boxSize: '1M',
    });
    assert.equal(r.verdict, 'ok', String(r.stderr));
    assert.equal(r.files!.small!.length, 100);
    assert.match(r.fileErrors!.big!, /too large/);
    assert.match(r.fileErrors!.sparse!, /too large/);
  });

  it('files come out after a time limit kill too (init copies them once everything inside has ended)', async () => {
    const r = await run(['/bin/sh', '-c', 'echo partial > out.txt; while :; do :; done'], {
      copyOut: ['out.txt'],
      limits: { cpuTime: 300 },
      reject: false,
    });
    assert.equal(r.verdict, 'cpu-time-limit');
    assert.equal(r.files!['out.txt']!.toString(), 'partial\n');
  });

  it('/box counts against the memory limit (a file written there is memory-limit, not free space)', async () => {
    const r = await run(['/bin/sh', '-c', 'head -c 200000000 /dev/zero > fill; sleep 1'], {
      copyOut: ['fill'],
      boxSize: '256M',
      limits: { memory: '64M', wallTime: 30_000 },
      reject: false,
    });
    assert.equal(r.verdict, 'memory-limit', `${r.verdict} ${String(r.stderr)}`);
  });

  it('the CLI: --file NAME=TEXT and NAME=@HOSTPATH in, --copy-out NAME:HOSTPATH out, never through a symlink', () => {
    const t = worldReadableTmp();
    try {
      chmodSync(t.dir, 0o777);
      writeFileSync(join(t.dir, 'src.txt'), 'from the host\n');
      chmodSync(join(t.dir, 'src.txt'), 0o644);
      symlinkSync('/etc/hostname', join(t.dir, 'planted'));
      const as = id.spawnAs.runAs ?? {};
      const cli = (...args: string[]) => spawnSync(process.execPath, [CLI, 'run', ...args], { encoding: 'utf8', ...as });
      const files = ['--file', 'a.txt=no newline', '--file', `b.txt=@${join(t.dir, 'src.txt')}`];
      const both = ['--copy-out', `both:${join(t.dir, 'both')}`];
      const r = cli(...files, ...both, '--copy-out', `both:${join(t.dir, 'dup')}`, '--', '/bin/true');
      assert.equal(r.status, 2, `a name given twice is a usage error: ${r.stderr}`);
      const ok = cli(
        ...files,
        ...both,
        '--copy-out',
        `both2:${join(t.dir, 'planted')}`,
        '--',
        '/bin/sh',
        '-c',
        'cat a.txt b.txt > both; cp both both2',
      );
      assert.equal(ok.status, 0, ok.stderr);
      assert.equal(readFileSync(join(t.dir, 'both'), 'utf8'), 'no newlinefrom the host\n');
      assert.match(ok.stderr, /--copy-out both2: .*symlink/, 'the planted destination symlink is refused and named');
      assert.notEqual(readFileSync('/etc/hostname', 'utf8'), 'no newlinefrom the host\n');
    } finally {
      t.cleanup();
    }
  });
});

describe('idmapped binds: a user-owned checkout in a root-run sandbox', () => {
  const checkout = (): { dir: string; cleanup: () => void } => {
    const t = worldReadableTmp();
    writeFileSync(join(t.dir, 'f.txt'), 'tracked\n');
    spawnSync('git', ['init', '-q', t.dir]);
    spawnSync('chown', ['-R', '4242:4242', t.dir]);
    return t;
  };
  for (const as of [{}, { runAs: { uid: 65534, gid: 65534 } }]) {
    const title = `is the sandbox user's, git accepts it, new files are its owner's${as.runAs ? ' (runAs)' : ''} (was "dubious ownership")`;
    it(title, async function () {
      if (!IS_ROOT) return skipBecause(this, 'only root may idmap a host filesystem');
      if (!existsSync('/usr/bin/git')) return skipBecause(this, 'no git on this host');
      const t = checkout();
      try {
        const r = await runSandboxed(['/bin/sh', '-c', 'stat -c "%U" /src/f.txt; echo made > /src/new.txt; git -C /src status --short'], {
          ...as,
          reject: false,
          mounts: [{ type: 'bind', source: t.dir, target: '/src', idmap: true }],
        });
        if (r.setupFailure?.syscall === 'mount_setattr') return skipBecause(this, `the filesystem of ${t.dir} cannot be idmapped here`);
        assert.equal(r.verdict, 'ok', `${String(r.stderr)} ${JSON.stringify(r.setupFailure)}`);
        assert.deepEqual(String(r.stdout).trim().split('\n'), ['sandbox', '?? f.txt', '?? new.txt']);
        assert.equal(statSync(join(t.dir, 'new.txt')).uid, 4242, "a file made inside belongs to the checkout's owner on the host");
      } finally {
        t.cleanup();
      }
    });
  }

  it('a payload cannot plant a setuid or setgid file through it, under any policy (others would run it as the owner)', async function () {
    if (!IS_ROOT) return skipBecause(this, 'only root may idmap a host filesystem');
    const t = checkout();
    try {
      const script = [
        'import os, stat',
        'os.chdir("/src")',
        'def tried(what, fn):',
        '  try: fn(); print(what, "allowed")',
        '  except OSError as e: print(what, e.errno)',
        'open("a", "w").close()',
        'tried("chmod", lambda: os.chmod("a", 0o4755))',
        'tried("chmod-sgid", lambda: os.chmod("a", 0o2755))',
        'tried("fchmod", lambda: os.fchmod(os.open("a", os.O_RDONLY), 0o4755))',
        'tried("create", lambda: os.open("b", os.O_CREAT | os.O_WRONLY, 0o4755))',
        'tried("mknod", lambda: os.mknod("c", 0o4755 | stat.S_IFREG))',
        'tried("plain", lambda: os.chmod("a", 0o755))',
      ].join('\n');
      for (const policy of ['default', 'none']) {
        const r = await runSandboxed(['/usr/bin/python3', '-c', script], {
          policy,
          reject: false,
          mounts: [{ type: 'bind', source: t.dir, target: '/src', idmap: true }],
        });
        if (r.setupFailure?.syscall === 'mount_setattr') return skipBecause(this, `the filesystem of ${t.dir} cannot be idmapped here`);
        assert.equal(r.verdict, 'ok', String(r.stderr));
        const refused = ['chmod 1', 'chmod-sgid 1', 'fchmod 1', 'create 1', 'mknod 1', 'plain allowed']; // 1: EPERM
        assert.deepEqual(String(r.stdout).trim().split('\n'), refused, policy);
        for (const f of ['a', 'b', 'c'])
          if (existsSync(join(t.dir, f))) assert.equal(statSync(join(t.dir, f)).mode & 0o6000, 0, `${f} under ${policy}`);
      }
    } finally {
      t.cleanup();
    }
  });

  it('is refused for a rootless caller with a clear error, and for a file', function () {
    const t = worldReadableTmp();
    try {
      const bind = (source: string) => () =>
        void runSandboxed(['/bin/true'], { mounts: [{ type: 'bind', source, target: '/src', idmap: true }] });
      if (IS_ROOT) {
        writeFileSync(join(t.dir, 'file'), 'x');
        assert.throws(bind(join(t.dir, 'file')), /needs a directory/);
        assert.throws(bind(t.dir), /belongs to host root/, "a root-owned tree never becomes the sandbox's");
      } else assert.throws(bind(t.dir), /needs a root caller/);
    } finally {
      t.cleanup();
    }
  });
});

describe('files and copyOut: bad input is refused by name before anything runs', () => {
  // Option errors are thrown synchronously, before anything runs.
  const refuses = (o: object, re: RegExp): void => {
    assert.throws(
      () => void runSandboxed(['/bin/true'], o),
      (e: Error & { code?: string }) => e.code === 'ERR_SANDBOX_INVALID_OPTION' && re.test(e.message),
    );
  };
  it('names with "/" or "..", empty or "." names, and a name given twice', () => {
    refuses({ files: { '../etc/passwd': 'x' } }, /flat name/);
    refuses({ files: { 'a/b': 'x' } }, /flat name/);
    refuses({ copyOut: ['..'] }, /flat name/);
    refuses({ copyOut: [''] }, /flat name/);
    refuses({ copyOut: ['.'] }, /flat name/);
    refuses({ copyOut: ['a', 'a'] }, /twice/);
  });
  it('a setuid mode, a host file through a symlink, files larger than boxSize, a mount on /box', () => {
    refuses({ files: { a: { content: 'x', mode: 0o4755 } } }, /no setuid/);
    refuses({ files: { a: { path: '/proc/self/root/etc/hostname' } } }, /files\["a"\]\.path/);
    refuses({ files: { a: Buffer.alloc(8192) }, boxSize: 4096 }, /boxSize/);
    refuses({ files: { a: 'x' }, mounts: [{ type: 'tmpfs', target: '/box' }] }, /work directory/);
    refuses({ files: 'a.c' }, /files must be an object/);
    refuses({ copyOutMax: 5 }, /needs copyOut/);
  });
});
