// Lifecycle: init reaps and kills leftovers, and the whole sandbox dies with its caller (even on SIGKILL).
import { strict as assert } from 'node:assert';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { alive, forEachIdentity, pidsInPidNamespace, probeMount, waitFor } from '../helpers/env.js';

const CALLER_SCRIPT = fileURLToPath(new URL('../fixtures/caller.js', import.meta.url));

forEachIdentity((id, run) => {
  it('kills leftover processes, double-forked daemons included, when the payload exits', async () => {
    const started = Date.now();
    const r = await run(['/bin/sh', '-c', '/probe daemon; (sleep 1000 &); sleep 1000 & echo started'], { mounts: probeMount() });
    assert.match(r.stdout as string, /^daemon \d+\nstarted\n$/);
    assert.equal(r.verdict, 'ok');
    assert.ok(Date.now() - started < 10_000, 'leftover children do not extend the run');
    assert.ok(r.namespaces?.pid);
    assert.deepEqual(pidsInPidNamespace(r.namespaces.pid), [], 'nothing is left in the pid namespace');
    assert.equal(alive(r.initPid!), false, 'init is gone');
  });

  it('SIGKILL of the calling Node process leaves no process behind', async function () {
    this.timeout(30_000);
    const caller = spawn(process.execPath, [CALLER_SCRIPT, JSON.stringify(id.spawnAs)], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    caller.stdout.on('data', (c: Buffer) => (out += c.toString()));
    const ready = await waitFor(() => out.includes('\n'), 15_000);
    assert.ok(ready, `the caller reported its sandbox (got ${JSON.stringify(out)})`);
    const info = JSON.parse(out.split('\n')[0]!) as { helperPid: number; initPid: number; pidns: number; daemon: number };
    assert.ok(pidsInPidNamespace(info.pidns).length >= 2, 'the sandbox is running before the kill');
    caller.kill('SIGKILL');
    const gone = await waitFor(() => pidsInPidNamespace(info.pidns).length === 0 && !alive(info.helperPid) && !alive(info.initPid), 10_000);
    assert.ok(gone, `left behind: ${pidsInPidNamespace(info.pidns).join(',')} helper=${alive(info.helperPid)} init=${alive(info.initPid)}`);
  });
});
