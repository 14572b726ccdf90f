// Escape regressions, each named after what it reproduces; the malicious input is built inside the test.
import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdirSync, readFileSync, realpathSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { runSandboxed, SandboxOptionError } from '../../sandbox/index.js';
import { alive, forEachIdentity, IS_ROOT, pidsInPidNamespace, probe, waitFor, worldReadableTmp, skipBecause } from '../helpers/env.js';
import { CLI } from '../helpers/cli.js';

const REPO = fileURLToPath(new URL('../../..', import.meta.url));

/** A directory the sandbox's host identity can write, as a shared cache or checkout would be. */
function sharedDir(): { dir: string; cleanup: () => void } {
  const t = worldReadableTmp();
  const dir = join(t.dir, 'shared');
  mkdirSync(dir, { mode: 0o777 });
  chmodSync(dir, 0o777);
  return { dir, cleanup: t.cleanup };
}

forEachIdentity((id, run) => {
  it('inputFile is not read through a symlink the payload planted (host file disclosure)', async () => {
    const t = sharedDir();
    try {
      await run(['/bin/sh', '-c', 'ln -s /etc/hostname /job/input.txt'], { mounts: [{ type: 'bind', source: t.dir, target: '/job' }] });
      assert.throws(
        () => runSandboxed(['/bin/cat'], { inputFile: join(t.dir, 'input.txt') }),
        (e: unknown) => e instanceof SandboxOptionError && /symlink/.test(e.message),
      );
    } finally {
      t.cleanup();
    }
  });

  it('a bind source is not followed through a symlink the payload planted (host directory takeover)', async () => {
    const t = sharedDir();
    try {
      await run(['/bin/sh', '-c', 'ln -s /usr/share /job/out'], { mounts: [{ type: 'bind', source: t.dir, target: '/job' }] });
      assert.throws(
        () => runSandboxed(['/bin/true'], { mounts: [{ type: 'bind', source: join(t.dir, 'out'), target: '/out' }] }),
        (e: unknown) => e instanceof SandboxOptionError && e.code === 'ERR_SANDBOX_BIND_SOURCE' && /goes through a symlink/.test(e.message),
      );
    } finally {
      t.cleanup();
    }
  });

  it('a fifo planted at a mount point fails setup instead of hanging it', async () => {
    const t = sharedDir();
    const file = worldReadableTmp();
    try {
      writeFileSync(join(file.dir, 'key'), 'k\n', { mode: 0o644 });
      await run(['/bin/sh', '-c', 'mkfifo /job/key'], { mounts: [{ type: 'bind', source: t.dir, target: '/job' }] });
      const r = await run(['/bin/true'], {
        mounts: [
          { type: 'bind', source: t.dir, target: '/job' },
          { type: 'bind', source: join(file.dir, 'key'), target: '/job/key', readOnly: true },
        ],
        timeout: 10_000,
        reject: false,
      });
      assert.equal(r.timedOut, false);
      assert.equal(r.verdict, 'setup-error');
      assert.match(r.setupFailure!.message, /mount point \/job\/key/);
      assert.ok(['ENXIO', 'EINVAL'].includes(r.setupFailure!.errnoName!), r.setupFailure!.errnoName);
    } finally {
      t.cleanup();
      file.cleanup();
    }
  });

  it('a forged queued signal to init (si_pid 0) is not relayed to the sandbox', async () => {
    // rt_sigqueueinfo(1, SIGTERM, {si_code: SI_QUEUE, si_pid: 0}) looks like a signal from outside the namespace.
    const forge =
      'import ctypes; l=ctypes.CDLL(None, use_errno=True); b=(ctypes.c_int*32)(); b[0]=15; b[2]=-1; ' +
      'print(l.syscall(129, 1, 15, b), ctypes.get_errno())';
    const r = await run(['/bin/sh', '-c', `python3 -c '${forge}'; sleep 0.3; echo survived`]);
    assert.match(r.stdout as string, /^0 0\nsurvived\n$/, 'the forged signal was delivered to init, and changed nothing');
    assert.equal(r.verdict, 'ok');
  });

  it('init holds no capability once the payload runs, and /dev cannot be rewritten', async () => {
    const r = await run([
      '/bin/sh',
      '-c',
      'grep CapEff /proc/1/status; touch /dev/evil 2>&1 | grep -c "Read-only"; rm -f /dev/stdin 2>&1 | grep -c "Read-only"',
    ]);
    assert.equal(r.stdout, 'CapEff:\t0000000000000000\n1\n1\n');
  });

  it('SIGKILL of the helper itself takes the whole sandbox with it', async () => {
    const { spawnSandboxed } = await import('../../sandbox/index.js');
    // The payload names its own pid namespace: init is non-dumpable, so an unprivileged caller cannot read it.
    const p = spawnSandboxed(['/bin/sh', '-c', '(sleep 1000 &); readlink /proc/self/ns/pid; sleep 1000'], { reject: false, ...id.spawnAs });
    const first = await new Promise<string>((r) => p.stdout!.once('data', (d: Buffer) => r(d.toString())));
    const helperPid = p.pid!;
    const initPid = Number(readFileSync(`/proc/${helperPid}/task/${helperPid}/children`, 'utf8').trim().split(/\s+/)[0]);
    const pidns = Number(/pid:\[(\d+)\]/.exec(first)![1]);
    process.kill(helperPid, 'SIGKILL');
    const r = await p.result;
    // no exit event, but the payload had started: it died with the sandbox, which is no setup error
    assert.equal(r.verdict, 'signaled');
    assert.equal(r.signal, 'SIGKILL');
    assert.equal(r.usage, undefined, 'nothing was left to report the usage');
    assert.ok(
      await waitFor(() => !alive(initPid) && pidsInPidNamespace(pidns).length === 0, 10_000),
      'init and every payload process are gone',
    );
  });
});

describe('host-side paths a sandbox can reach', () => {
  it('--result cannot be redirected by a symlink the payload plants (arbitrary host file overwrite)', () => {
    const t = sharedDir();
    try {
      const victim = join(t.dir, '..', 'victim');
      writeFileSync(victim, 'precious\n', { mode: 0o644 });
      const result = join(t.dir, 'result.json');
      const r = spawnSync(
        process.execPath,
        [
          CLI,
          'run',
          '--bind',
          `${t.dir}:/job`,
          '--result',
          result,
          '--',
          'sh',
          '-c',
          'ln -sf /victim-does-not-matter /job/result.json; ln -sf ../victim /job/result.json',
        ],
        { encoding: 'utf8' },
      );
      assert.equal(r.status, 0, r.stderr);
      assert.equal(readFileSync(victim, 'utf8'), 'precious\n', 'the victim is untouched');
      const again = spawnSync(process.execPath, [CLI, 'run', '--result', result, '--', 'true'], { encoding: 'utf8' });
      assert.equal(again.status, 2);
      assert.match(again.stderr, /--result: .*symlink/);
      assert.equal(readFileSync(victim, 'utf8'), 'precious\n');
    } finally {
      t.cleanup();
    }
  });
});

describe('meta file forging', () => {
  it("a --meta file the payload can write ends up with cubicle's content only", () => {
    const t = sharedDir();
    try {
      const meta = join(t.dir, 'meta.txt');
      const junk = 'x'.repeat(300) + '\ntime:0.001\nstatus:OK\nverdict:ok\n';
      const r = spawnSync(
        process.execPath,
        [CLI, 'run', '--bind', `${t.dir}:/job`, '--meta', meta, '--', 'sh', '-c', `printf '%s' '${junk}' > /job/meta.txt; exit 3`],
        { encoding: 'utf8' },
      );
      assert.equal(r.status, 3);
      const text = readFileSync(meta, 'utf8');
      assert.ok(!text.includes('xxxx') && !text.includes('status:OK'), text);
      assert.match(text, /^status:RE$/m);
    } finally {
      t.cleanup();
    }
  });
});

describe('binds over cubicle itself', () => {
  it("a read-write bind containing cubicle's code is refused (helper replacement)", () => {
    assert.throws(
      () => runSandboxed(['/bin/true'], { mounts: [{ type: 'bind', source: REPO, target: '/proj' }] }),
      (e: unknown) => e instanceof SandboxOptionError && /cubicle's own code/.test(e.message),
    );
    assert.throws(
      () => runSandboxed(['/bin/true'], { mounts: [{ type: 'bind', source: join(REPO, 'dist', 'native'), target: '/n' }] }),
      /cubicle's own code/,
    );
  });

  it('a read-write bind of the policies directory, koffi or its native binding is refused (a payload replaced default.json)', () => {
    const require = createRequire(import.meta.url);
    let koffi = dirname(require.resolve('koffi'));
    while (!existsSync(join(koffi, 'package.json'))) koffi = dirname(koffi);
    const native = join(koffi, '..', '@koromix', `koffi-${process.platform}-${process.arch}`);
    const sources = [join(REPO, 'policies'), realpathSync(koffi), ...(existsSync(native) ? [realpathSync(native)] : [])];
    for (const source of sources)
      assert.throws(
        () => runSandboxed(['/bin/true'], { mounts: [{ type: 'bind', source, target: '/x' }] }),
        (e: unknown) => e instanceof SandboxOptionError && e.code === 'ERR_SANDBOX_BIND_SOURCE' && /cubicle's own code/.test(e.message),
        source,
      );
  });

  it("a read-write bind holding the per-user cache is refused before the cache exists (a payload could plant the CLI's code)", () => {
    const t = worldReadableTmp();
    const saved = process.env.XDG_CACHE_HOME;
    try {
      process.env.XDG_CACHE_HOME = join(t.dir, 'home', '.cache'); // nothing of it exists yet
      assert.throws(
        () => runSandboxed(['/bin/true'], { mounts: [{ type: 'bind', source: t.dir, target: '/home' }] }),
        (e: unknown) => e instanceof SandboxOptionError && e.code === 'ERR_SANDBOX_BIND_SOURCE' && e.message.includes(join(t.dir, 'home')),
      );
      assert.ok(!existsSync(join(t.dir, 'home')), 'nothing was created');
    } finally {
      if (saved === undefined) delete process.env.XDG_CACHE_HOME;
      else process.env.XDG_CACHE_HOME = saved;
      t.cleanup();
    }
  });

  it('a read-write bind of the libseccomp that CUBICLE_LIBSECCOMP names is refused', () => {
    const t = worldReadableTmp();
    const saved = process.env.CUBICLE_LIBSECCOMP;
    try {
      writeFileSync(join(t.dir, 'libseccomp.so.2'), '');
      process.env.CUBICLE_LIBSECCOMP = join(t.dir, 'libseccomp.so.2');
      assert.throws(
        () => runSandboxed(['/bin/true'], { policy: 'none', mounts: [{ type: 'bind', source: t.dir, target: '/x' }] }),
        (e: unknown) => e instanceof SandboxOptionError && e.code === 'ERR_SANDBOX_BIND_SOURCE',
      );
    } finally {
      if (saved === undefined) delete process.env.CUBICLE_LIBSECCOMP;
      else process.env.CUBICLE_LIBSECCOMP = saved;
      t.cleanup();
    }
  });

  it('a read-only bind of it is fine, and the helper stays unwritable', async () => {
    const r = await runSandboxed(
      ['/bin/sh', '-c', 'exec 2>&1; echo x > /proj/dist/native/cubicle-helper; mv /proj/dist/native/cubicle-helper /proj/x 2>&1; true'],
      { mounts: [{ type: 'bind', source: REPO, target: '/proj', readOnly: true }] },
    );
    assert.match(r.stdout as string, /Read-only file system[\s\S]*Read-only file system/);
  });

  it("root-owned host files stay out of reach of a root caller's sandbox even in a writable bind", async function () {
    if (!IS_ROOT) {
      return skipBecause(this, 'needs root to create root-owned files');
    }
    const t = sharedDir();
    try {
      writeFileSync(join(t.dir, 'owned-by-root'), 'root data\n', { mode: 0o644 });
      chownSync(join(t.dir, 'owned-by-root'), 0, 0);
      const r = await runSandboxed(['/bin/sh', '-c', 'exec 2>&1; echo overwrite > /job/owned-by-root; true'], {
        mounts: [{ type: 'bind', source: t.dir, target: '/job' }],
      });
      assert.match(r.stdout as string, /Permission denied/);
      assert.equal(readFileSync(join(t.dir, 'owned-by-root'), 'utf8'), 'root data\n');
    } finally {
      t.cleanup();
    }
  });
});

describe("the caller's session keyring", () => {
  /** Runs the probe's keyfind inside a sandbox under each policy, from a process whose session keyring holds a key. */
  function keyfindUnderEveryPolicy(spawnAs: object): { host?: string; out?: Record<string, string> } {
    const index = new URL('../../sandbox/index.js', import.meta.url).href;
    const script = `import(${JSON.stringify(index)}).then(async (m) => {
      const out = {};
      for (const policy of ['none', 'default', 'judge', 'permissive']) {
        // Audit mode: the filter lets keyctl through, so what is reachable is the keyring's doing, not the filter's.
        const r = await m.runSandboxed(['/probe', 'keyfind', 'cubicle-test'], {
          ...${JSON.stringify(spawnAs)}, policy, seccompLog: policy !== 'none', reject: false,
          mounts: [{ type: 'bind', source: ${JSON.stringify(probe())}, target: '/probe', readOnly: true }],
        });
        out[policy] = r.verdict + '\\n' + r.stdout;
      }
      console.log(JSON.stringify(out));
    })`;
    const r = spawnSync(probe(), ['keysession', 'cubicle-test', 'secret', process.execPath, '-e', script], { encoding: 'utf8' });
    if (r.status !== 0 || !r.stdout.startsWith('{')) return { host: `${r.status} ${r.stdout} ${r.stderr}` };
    return { out: JSON.parse(r.stdout) as Record<string, string> };
  }

  forEachIdentity((id) => {
    it("a key in the caller's session keyring is invisible inside under every policy (policy none read and overwrote it)", function () {
      this.timeout(60_000);
      const host = spawnSync(probe(), ['keysession', 'cubicle-test', 'secret', probe(), 'keyfind', 'cubicle-test'], { encoding: 'utf8' });
      if (!/^read secret$/m.test(host.stdout)) {
        return skipBecause(this, `this host has no usable session keyrings (the probe printed ${JSON.stringify(host.stdout)})`);
      }
      const { host: failed, out } = keyfindUnderEveryPolicy(id.spawnAs);
      assert.ok(out, `the keyring run failed: ${failed}`);
      for (const [policy, text] of Object.entries(out)) {
        assert.match(text, /^ok\n/, `${policy}: ${text}`);
        assert.match(text, /^session keyring;1000;1000;[0-9a-f]+;_ses$/m, `${policy}: a fresh session keyring, the sandbox user's`);
        assert.match(text, /^search ENOKEY$/m, `${policy}: the caller's key is out of reach`);
      }
    });
  });
});
