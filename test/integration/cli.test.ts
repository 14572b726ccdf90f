// The CLI: stdio passthrough, exit codes (payload's, 128+N, 124, 125), --json, --result, binds and flags.
import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import { chmodSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { identities, worldReadableTmp } from '../helpers/env.js';

const CLI = fileURLToPath(new URL('../../sandbox/cli/main.js', import.meta.url));

for (const id of identities()) describe(`cubicle CLI, ${id.label}`, () => {
  // The rootless variant runs the CLI itself as the unprivileged user.
  const cubicle = (args: string[], input?: string) => spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', input: input ?? '', timeout: 30_000, ...(id.spawnAs.runAs ?? {}) });

  it('runs a command with stdio passed through and its exit code', () => {
    const r = cubicle(['run', '--', 'sh', '-c', 'cat; echo to-err >&2; exit 7'], 'piped in\n');
    assert.equal(r.stdout, 'piped in\n');
    assert.equal(r.stderr, 'to-err\n');
    assert.equal(r.status, 7);
  });

  it('exits 128+N for death by signal N, 124 on timeout, 125 for a setup error', () => {
    assert.equal(cubicle(['run', '--', 'sh', '-c', 'kill -SEGV $$']).status, 139);
    const t = cubicle(['run', '--timeout', '0.2', '--', 'sleep', '10']);
    assert.equal(t.status, 124);
    assert.match(t.stderr, /wall-time-limit/);
    const s = cubicle(['run', '--', 'no-such-program-xyz']);
    assert.equal(s.status, 125);
    assert.match(s.stderr, /execve: ENOENT/);
    assert.match(s.stderr, /hint: /);
    const b = cubicle(['run', '--bind', '/no/such/dir:/x', '--', 'true']);
    assert.equal(b.status, 125);
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
      const r = cubicle(['run', '--ro-bind', `${t.dir}:/in`, '--bind', `${t.dir}:/out`, '--tmpfs', '/scratch:1M', '--env', 'A=b=c', '--cwd', '/scratch', '--hostname', 'box', '--uid', '2000', '--gid', '3000', '--', 'sh', '-c', 'cat /in/in; echo w > /out/w; touch /in/x 2>/dev/null || echo ro; echo $A; pwd; hostname; id -u; id -g']);
      assert.equal(r.stderr, '');
      assert.equal(r.stdout, 'data\nro\nb=c\n/scratch\nbox\n2000\n3000\n');
      assert.equal(readFileSync(join(t.dir, 'w'), 'utf8'), 'w\n');
    } finally {
      t.cleanup();
    }
  });

  it('reports usage errors with exit 2 and names the problem', () => {
    const r = cubicle(['run', '--frobnicate', '--', 'true']);
    assert.equal(r.status, 2);
    assert.match(r.stderr, /frobnicate/);
    assert.equal(cubicle(['run', '--env', 'NOEQUALS', '--', 'true']).status, 2);
  });

  it('plan prints the resolved setup steps without running anything', () => {
    const r = cubicle(['plan', '--tmpfs', '/scratch:1M', '--', 'echo', 'hi']);
    assert.equal(r.status, 0);
    assert.match(r.stdout, /^userns "1000" "1000"/m);
    assert.match(r.stdout, /^tmpfs "\/scratch" "1048576"/m);
    assert.match(r.stdout, /^exec "echo"$/m);
  });
});
