// Exit codes and signals are reported exactly, with the right verdict.
import { strict as assert } from 'node:assert';
import { forEachIdentity, probeMount } from '../helpers/env.js';

forEachIdentity((_id, run) => {
  it('reports exit codes 0-255', async () => {
    for (const code of [0, 1, 42, 127, 255]) {
      const r = await run(['/probe', 'exit', String(code)], { mounts: probeMount(), reject: false });
      assert.equal(r.exitCode, code);
      assert.equal(r.signal, null);
      assert.equal(r.verdict, code === 0 ? 'ok' : 'nonzero-exit');
    }
  });

  it('reports death by signal', async () => {
    for (const [num, name] of [
      [9, 'SIGKILL'],
      [11, 'SIGSEGV'],
      [15, 'SIGTERM'],
      [6, 'SIGABRT'],
    ] as const) {
      const r = await run(['/probe', 'signal', String(num)], { mounts: probeMount(), reject: false });
      assert.equal(r.exitCode, null);
      assert.equal(r.signal, name);
      assert.equal(r.verdict, 'signaled');
    }
  });

  it('reports usage from wait4', async () => {
    const r = await run(['/usr/bin/python3', '-c', 'x = bytearray(32 << 20); sum(range(3_000_000))']);
    assert.ok(r.usage!.cpuUserMs > 10, `cpu user ${r.usage!.cpuUserMs}`);
    assert.ok(r.usage!.maxRssBytes > 32 << 20, `max rss ${r.usage!.maxRssBytes}`);
    assert.ok(r.usage!.wallMs > 0 && r.usage!.wallMs < 60_000);
    assert.equal(r.usage!.cpuMs, r.usage!.cpuUserMs + r.usage!.cpuSystemMs);
  });
});
