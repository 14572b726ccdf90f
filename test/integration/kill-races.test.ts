// Stops that race the payload's start or end (output limit, user kill, cancel, memory limit, the helper killed
// from outside): a run that started is never a setup error, and a stopped run keeps its verdict. Each loop
// reproduced the race before the fix (the rate is in each test's comment).
import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import { chmodSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSandboxed, type SandboxResult } from '../../sandbox/index.js';
import { forEachIdentity, identities, worldReadableTmp } from '../helpers/env.js';
import { CLI } from '../helpers/cli.js';

/** Verdicts seen over a loop, e.g. { 'output-limit': 98, 'setup-error: ...': 2 }. */
function tally(results: SandboxResult[]): Record<string, number> {
  const t: Record<string, number> = {};
  for (const r of results) {
    const k = r.verdict === 'setup-error' ? `setup-error: ${r.setupFailure?.message}` : r.verdict;
    t[k] = (t[k] ?? 0) + 1;
  }
  return t;
}

const noSetupError = (t: Record<string, number>): void =>
  assert.ok(!Object.keys(t).some((k) => k.startsWith('setup-error')), `a setup error among ${JSON.stringify(t)}`);

forEachIdentity((id, run) => {
  describe('kill races', function () {
    this.timeout(180_000);

    // Before: 9 of 100 were setup-error (the helper died of SIGPIPE writing the kill to an init that had exited).
    it('an output limit hit as the payload exits is output-limit, never a setup error (100 runs)', async () => {
      const results: SandboxResult[] = [];
      for (let i = 0; i < 100; i++) results.push(await run(['/bin/echo', 'hello'], { reject: false, limits: { outputLimit: 1 } }));
      const t = tally(results);
      noSetupError(t);
      assert.deepEqual(Object.keys(t), ['output-limit'], JSON.stringify(t));
      for (const r of results) {
        assert.equal(r.stdout, 'h');
        assert.ok(r.usage, 'usage is kept');
      }
    });

    // Before: about half were setup-error ("init was killed by signal 9 before the payload started").
    it('a kill at any moment after spawn is signaled or ok, never a setup error (60 runs)', async () => {
      const results: SandboxResult[] = [];
      for (let i = 0; i < 60; i++) {
        const p = spawnSandboxed(['/bin/true'], { reject: false, ...id.spawnAs });
        const signal = i % 3 === 2 ? 'SIGTERM' : 'SIGKILL';
        setTimeout(() => p.kill(signal), (i % 20) * 0.5);
        results.push(await p.result);
      }
      const t = tally(results);
      noSetupError(t);
      for (const r of results) {
        assert.ok(r.verdict === 'signaled' || r.verdict === 'ok', JSON.stringify(t));
        assert.ok(r.usage, 'usage is kept');
        if (r.verdict === 'signaled') assert.ok(r.signal === 'SIGKILL' || r.signal === 'SIGTERM', String(r.signal));
      }
    });

    it('a cancel at any moment after spawn is canceled (40 runs)', async () => {
      const results: SandboxResult[] = [];
      for (let i = 0; i < 40; i++) {
        const ac = new AbortController();
        setTimeout(() => ac.abort(), (i % 20) * 0.5);
        results.push(await run(['/bin/sleep', '5'], { reject: false, cancelSignal: ac.signal }));
      }
      const t = tally(results);
      assert.deepEqual(Object.keys(t), ['canceled'], JSON.stringify(t));
    });

    it('a memory limit hit right at the start is memory-limit, never a setup error (30 runs)', async () => {
      const results: SandboxResult[] = [];
      for (let i = 0; i < 30; i++)
        results.push(await run(['/bin/sh', '-c', 'exec tail /dev/zero'], { reject: false, limits: { memory: '2M' } }));
      const t = tally(results);
      noSetupError(t);
      assert.deepEqual(Object.keys(t), ['memory-limit'], JSON.stringify(t));
    });

    // Before: setup-error "the helper ended (SIGKILL/SIGTERM) without reporting a result".
    for (const sig of ['SIGTERM', 'SIGKILL'] as const)
      it(`the helper killed from outside (${sig}) after the payload started is signaled SIGKILL, not a setup error`, async () => {
        const p = spawnSandboxed(['/bin/sleep', '10'], { reject: false, ...id.spawnAs });
        await new Promise((r) => setTimeout(r, 500));
        process.kill(p.pid!, sig);
        const r = await p.result;
        assert.equal(r.verdict, 'signaled');
        assert.equal(r.signal, 'SIGKILL');
        assert.equal(r.setupFailure, undefined);
        // SIGTERM reaches stage 0, which stops the sandbox and still reports; SIGKILL leaves nothing to report
        if (sig === 'SIGTERM') assert.ok(r.usage && r.usage.wallMs > 0);
      });
  });
});

for (const id of identities())
  describe(`kill races through the CLI, ${id.label}`, function () {
    this.timeout(180_000);
    it('`run --json --output-limit 1 -- /bin/echo hello` exits 0 with output-limit every time, meta never XX (40 runs)', () => {
      const { dir, cleanup } = worldReadableTmp();
      chmodSync(dir, 0o777); // the rootless CLI writes its meta files here
      try {
        const seen: Record<string, number> = {};
        for (let i = 0; i < 40; i++) {
          const meta = join(dir, `meta-${i}`);
          const r = spawnSync(process.execPath, [CLI, 'run', '--json', '--meta', meta, '--output-limit', '1', '--', '/bin/echo', 'hello'], {
            encoding: 'utf8',
            timeout: 30_000,
            ...(id.spawnAs.runAs ?? {}),
          });
          const verdict = r.status === 0 ? (JSON.parse(r.stdout) as { verdict: string }).verdict : `exit ${r.status}: ${r.stderr}`;
          seen[verdict] = (seen[verdict] ?? 0) + 1;
          assert.doesNotMatch(readFileSync(meta, 'utf8'), /status:XX/);
        }
        assert.deepEqual(seen, { 'output-limit': 40 });
      } finally {
        cleanup();
      }
    });
  });
