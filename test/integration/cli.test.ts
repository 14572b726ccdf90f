// The CLI: stdio passthrough, exit codes (payload's, 128+N, 124, 125), --json, --result, binds and flags.
import { strict as assert } from 'node:assert';
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, closeSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { identities, worldReadableTmp } from '../helpers/env.js';
import { CLI } from '../helpers/cli.js';

for (const id of identities())
  describe(`cubicle CLI, ${id.label}`, () => {
    // The rootless variant runs the CLI itself as the unprivileged user.
    const cubicle = (args: string[], input?: string) =>
      spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', input: input ?? '', timeout: 30_000, ...(id.spawnAs.runAs ?? {}) });

    it('runs a command with stdio passed through and its exit code', () => {
      const r = cubicle(['run', '--', 'sh', '-c', 'cat; echo to-err >&2; exit 7'], 'piped in\n');
      assert.equal(r.stdout, 'piped in\n');
      assert.equal(r.stderr, 'to-err\n');
      assert.equal(r.status, 7);
    });

    it('exits 128+N for death by signal N, 124 on timeout, 125 for a setup error, 2 for a bad flag', () => {
      assert.equal(cubicle(['run', '--', 'sh', '-c', 'kill -SEGV $$']).status, 139);
      const t = cubicle(['run', '--timeout', '0.2', '--', 'sleep', '10']);
      assert.equal(t.status, 124);
      assert.match(t.stderr, /wall-time-limit/);
      const s = cubicle(['run', '--', 'no-such-program-xyz']);
      assert.equal(s.status, 125);
      assert.match(s.stderr, /execve: ENOENT/);
      assert.match(s.stderr, /hint: /);
      const b = cubicle(['run', '--bind', '/no/such/dir:/x', '--', 'true']);
      assert.equal(b.status, 2, 'a bind source that does not exist is a usage error');
      assert.match(b.stderr, /\/no\/such\/dir/);
    });

    it('--json prints exactly one JSON object and exits 0 for a failing payload', () => {
      const r = cubicle(['run', '--json', '--', 'sh', '-c', 'printf "a\\0b"; echo e >&2; exit 3']);
      assert.equal(r.status, 0);
      const lines = r.stdout.trim().split('\n');
      assert.equal(lines.length, 1);
      const j = JSON.parse(lines[0]!);
      assert.equal(j.stdout, 'a\u0000b');
      assert.equal(j.stderr, 'e\n');
      assert.equal(j.exitCode, 3);
      assert.equal(j.verdict, 'nonzero-exit');
      assert.equal(typeof j.usage.cpuUserMs, 'number');
      const bad = cubicle(['run', '--json', '--', 'no-such-program-xyz']);
      assert.equal(bad.status, 125);
      assert.equal(JSON.parse(bad.stdout).verdict, 'setup-error');
    });

    it('--result writes the result object while stdio passes through', () => {
      const t = worldReadableTmp();
      try {
        chmodSync(t.dir, 0o777);
        const file = join(t.dir, 'result.json');
        const r = cubicle(['run', '--result', file, '--', 'sh', '-c', 'echo visible; exit 4']);
        assert.equal(r.stdout, 'visible\n');
        assert.equal(r.status, 4);
        const j = JSON.parse(readFileSync(file, 'utf8'));
        assert.equal(j.exitCode, 4);
        assert.equal(j.stdout, undefined, 'output went to the terminal, not the file');
      } finally {
        t.cleanup();
      }
    });

    it('applies --bind, --ro-bind, --tmpfs, --env, --cwd, --hostname, --uid, --gid', () => {
      const t = worldReadableTmp();
      try {
        chmodSync(t.dir, 0o777);
        writeFileSync(join(t.dir, 'in'), 'data\n', { mode: 0o644 });
        const r = cubicle([
          'run',
          '--ro-bind',
          `${t.dir}:/in`,
          '--bind',
          `${t.dir}:/out`,
          '--tmpfs',
          '/scratch:1M',
          '--env',
          'A=b=c',
          '--cwd',
          '/scratch',
          '--hostname',
          'box',
          '--uid',
          '2000',
          '--gid',
          '3000',
          '--',
          'sh',
          '-c',
          'cat /in/in; echo w > /out/w; touch /in/x 2>/dev/null || echo ro; echo $A; pwd; hostname; id -u; id -g',
        ]);
        assert.equal(r.stderr, '');
        assert.equal(r.stdout, 'data\nro\nb=c\n/scratch\nbox\n2000\n3000\n');
        assert.equal(readFileSync(join(t.dir, 'w'), 'utf8'), 'w\n');
      } finally {
        t.cleanup();
      }
    });

    it('--tmp-size, --shm-size and --root-size size the tmpfs mounts (regression: only the API could size them)', () => {
      const r = cubicle([
        'run',
        '--tmp-size',
        '300M',
        '--shm-size',
        '5M',
        '--root-size',
        '20M',
        '--',
        'sh',
        '-c',
        'for m in /tmp /dev/shm /; do df -k "$m" | tail -n 1; done',
      ]);
      assert.equal(r.status, 0, r.stderr);
      const kib = r.stdout
        .trim()
        .split('\n')
        .map((l) => Number(l.split(/\s+/)[1]));
      assert.deepEqual(kib, [300 * 1024, 5 * 1024, 20 * 1024], r.stdout);
    });

    it('reports usage errors with exit 2 and names the problem', () => {
      const r = cubicle(['run', '--frobnicate', '--', 'true']);
      assert.equal(r.status, 2);
      assert.match(r.stderr, /frobnicate/);
      assert.equal(cubicle(['run', '--env', 'NOEQUALS', '--', 'true']).status, 2);
    });

    it('usage errors exit 2 naming the flag, not the API option (regression: --memory 12Q exited 125 naming limits.memory)', () => {
      for (const [args, re] of [
        [['--memory', '12Q'], /^cubicle: --memory "12Q" is not a size/],
        [['--timeout', 'abc'], /^cubicle: --timeout "abc" is not a duration/],
        [['--cwd', 'rel'], /^cubicle: --cwd "rel" must be an absolute path/],
        [['--hostname', 'a/b'], /^cubicle: --hostname "a\/b"/],
        [['--processes', 'x'], /^cubicle: --processes must be a non-negative integer/],
        [['--tmeout', '1'], /^cubicle: unknown option --tmeout; did you mean --timeout\?/],
        [['--memroy=1M'], /^cubicle: unknown option --memroy; did you mean --memory\?/],
        // regression: an image that does not exist exited 125 as if the sandbox had failed
        [['--rootfs', 'no-such-image-anywhere'], /^cubicle: --rootfs: /],
        [['--writable'], /^cubicle: --writable needs rootfs/],
        [['--tmp-size', 'big'], /^cubicle: --tmp-size "big" is not a size/],
        [['--root-size', '-1'], /^cubicle: --root-size /],
      ] as const) {
        const r = cubicle(['run', ...args, '--', 'true']);
        assert.equal(r.status, 2, `${args.join(' ')}: ${r.stderr}`);
        assert.match(r.stderr, re);
        assert.doesNotMatch(r.stderr, /limits\.|\n\s+at /);
      }
      assert.match(cubicle(['rnu']).stderr, /did you mean run\?/);
      assert.equal(cubicle(['rnu']).status, 2);
    });

    it('--version and --help for every command', () => {
      const v = cubicle(['--version']);
      assert.equal(v.status, 0);
      assert.match(v.stdout, /^cubicle \d+\.\d+\.\d+/);
      for (const cmd of ['run', 'plan', 'policy', 'doctor', 'isolate', 'serve', 'worker']) {
        const h = cubicle([cmd, '--help']);
        assert.equal(h.status, 0, `${cmd}: ${h.stderr}`);
        assert.match(h.stdout, new RegExp(`^Usage: cubicle ${cmd}`), cmd);
      }
    });

    it('--stdin, --stdout and --stderr accept /dev/null', () => {
      const r = cubicle(
        ['run', '--stdin', '/dev/null', '--stdout', '/dev/null', '--', 'sh', '-c', 'cat; echo gone; echo kept >&2'],
        'not read',
      );
      assert.equal(r.status, 0, r.stderr);
      assert.equal(r.stdout, '');
      assert.equal(r.stderr, 'kept\n');
      const e = cubicle(['run', '--stderr', '/dev/null', '--output-limit', '1M', '--', 'sh', '-c', 'echo out; echo err >&2']);
      assert.equal(e.stdout, 'out\n');
      assert.equal(e.stderr, '');
    });

    it('runs ./a relative to --cwd inside, as execve would (regression: "path \'./a\' must be absolute")', () => {
      const t = worldReadableTmp();
      try {
        writeFileSync(join(t.dir, 'a'), '#!/bin/sh\necho "ran $0 in $(pwd)"\n', { mode: 0o755 });
        mkdirSync(join(t.dir, 'sub'));
        const r = cubicle(['run', '--ro-bind', `${t.dir}:/box`, '--cwd', '/box', '--', './a']);
        assert.equal(r.status, 0, r.stderr);
        assert.equal(r.stdout, 'ran ./a in /box\n');
        const up = cubicle(['run', '--ro-bind', `${t.dir}:/box`, '--cwd', '/box/sub', '--', '../a']);
        assert.equal(up.stdout, 'ran ../a in /box/sub\n');
      } finally {
        t.cleanup();
      }
    });

    it('limit flags, --meta (isolate format), --stdin/--stdout/--stderr files', () => {
      const t = worldReadableTmp();
      try {
        chmodSync(t.dir, 0o777);
        const meta = join(t.dir, 'meta.txt');
        const r = cubicle([
          'run',
          '--time',
          '0.3',
          '--memory',
          '128M',
          '--processes',
          '20',
          '--meta',
          meta,
          '--',
          'sh',
          '-c',
          'while :; do :; done',
        ]);
        assert.equal(r.status, 124, 'time limits exit like --timeout');
        assert.match(r.stderr, /cpu-time-limit/);
        const fields = Object.fromEntries(
          readFileSync(meta, 'utf8')
            .trim()
            .split('\n')
            .map((l) => [l.slice(0, l.indexOf(':')), l.slice(l.indexOf(':') + 1)]),
        );
        assert.equal(fields.status, 'TO');
        assert.equal(fields.killed, '1');
        assert.equal(fields.exitsig, '9');
        assert.ok(Number(fields.time) >= 0.3 && Number(fields.time) < 1, fields.time);
        assert.ok(Number(fields['time-wall']) > 0);
        assert.ok(Number(fields['max-rss']) > 0);
        assert.equal(fields.message, 'Time limit exceeded');
        const ok = cubicle(['run', '--meta', meta, '--', 'sh', '-c', 'exit 3']);
        assert.equal(ok.status, 3);
        assert.match(readFileSync(meta, 'utf8'), /^exitcode:3$/m);
        assert.match(readFileSync(meta, 'utf8'), /^status:RE$/m);
        writeFileSync(join(t.dir, 'in.txt'), 'from the file\n', { mode: 0o644 });
        const io = cubicle([
          'run',
          '--stdin',
          join(t.dir, 'in.txt'),
          '--stdout',
          join(t.dir, 'out.txt'),
          '--stderr',
          join(t.dir, 'err.txt'),
          '--',
          'sh',
          '-c',
          'cat; echo oops >&2',
        ]);
        assert.equal(io.status, 0);
        assert.equal(io.stdout, '');
        assert.equal(readFileSync(join(t.dir, 'out.txt'), 'utf8'), 'from the file\n');
        assert.equal(readFileSync(join(t.dir, 'err.txt'), 'utf8'), 'oops\n');
        const flood = cubicle(['run', '--output-limit', '64K', '--stdout', join(t.dir, 'out.txt'), '--', 'yes']);
        assert.match(flood.stderr, /output-limit/);
        assert.equal(readFileSync(join(t.dir, 'out.txt')).length, 64 << 10);
        const json = JSON.parse(cubicle(['run', '--json', '--memory', '64M', '--', 'true']).stdout);
        assert.equal(json.limits.memory.value, 64 << 20);
        assert.equal(typeof json.usage.peakMemoryBytes, 'number');
      } finally {
        t.cleanup();
      }
    });

    it('plan prints the resolved setup steps without running anything', () => {
      const r = cubicle(['plan', '--tmpfs', '/scratch:1M', '--', 'echo', 'hi']);
      assert.equal(r.status, 0);
      assert.match(r.stdout, /^userns "1000" "1000"/m);
      assert.match(r.stdout, /^tmpfs "\/scratch" "1048576"/m);
      assert.match(r.stdout, /^exec "echo"$/m);
    });
  });

describe('cubicle run --json into a reader that goes away', () => {
  it('prints no stack trace on EPIPE (| head -c 1500) and still writes the meta file', async function () {
    this.timeout(60_000);
    const dir = mkdtempSync(join(tmpdir(), 'cubicle-epipe-'));
    try {
      const meta = join(dir, 'meta');
      const child = spawn(process.execPath, [CLI, 'run', '--json', '--meta', meta, '--', 'head', '-c', '5000000', '/dev/zero'], {
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let stderr = '';
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      child.stdout.once('data', () => child.stdout.destroy()); // the reader leaves after its first piece
      const code = await new Promise<number | null>((resolve) => child.on('close', (c) => resolve(c)));
      assert.doesNotMatch(stderr, /\n\s+at |Error:/, stderr);
      assert.equal(code, 0);
      assert.match(readFileSync(meta, 'utf8'), /^verdict:ok$/m);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('what a cubicle run loads', () => {
  it('runs from the bundle and loads no package, node:net or node:stream (what the run does not need stays unloaded)', () => {
    // The bin run in-process after a hook that records every require and Node's own module list at exit.
    const script = `
      const Module = require('node:module');
      const load = Module._load;
      const required = new Set();
      Module._load = function (request) { required.add(request); return load.apply(this, arguments); };
      process.on('exit', () => {
        const loaded = { required: [...required], builtins: process.moduleLoadList };
        require('node:fs').writeSync(2, '\\nLOADED ' + JSON.stringify(loaded) + '\\n');
      });
      process.argv = [process.execPath, ${JSON.stringify(CLI)}, 'run', '--', 'sh', '-c', 'echo ran; echo and >&2'];
      require(${JSON.stringify(CLI)});`;
    // Output into files, as an isolate-style judge redirects it (a socketpair, as Node's 'pipe' gives, is copied
    // through this process, with streams).
    const dir = mkdtempSync(join(tmpdir(), 'cubicle-loads-'));
    let stdout: string, stderr: string, status: number | null;
    try {
      const out = openSync(join(dir, 'out'), 'w');
      const err = openSync(join(dir, 'err'), 'w');
      status = spawnSync(process.execPath, ['-e', script], { stdio: ['ignore', out, err], timeout: 30_000 }).status;
      closeSync(out);
      closeSync(err);
      stdout = readFileSync(join(dir, 'out'), 'utf8');
      stderr = readFileSync(join(dir, 'err'), 'utf8');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    assert.equal(status, 0, stderr);
    assert.equal(stdout, 'ran\n');
    const line = stderr.split('\n').find((l) => l.startsWith('LOADED '));
    assert.ok(line, stderr);
    assert.match(stderr, /^and$/m);
    const { required, builtins } = JSON.parse(line.slice('LOADED '.length)) as { required: string[]; builtins: string[] };
    assert.ok(builtins.includes('NativeModule vm'), 'the bundle ran (main.cjs runs it through node:vm)');
    const packages = required.filter((r) => !r.startsWith('node:') && !r.startsWith('/') && !r.startsWith('.'));
    assert.deepEqual(packages, [], 'no package is required by a plain run (koffi binding is loaded directly)');
    for (const m of ['NativeModule net', 'NativeModule stream', 'NativeModule child_process', 'NativeModule crypto'])
      assert.ok(!builtins.includes(m), `${m} was loaded`);
  });
});
