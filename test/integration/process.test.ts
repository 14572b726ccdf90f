// Process: no capabilities, NoNewPrivs, new session, only fds 0-2, clean environment, cwd, init unreachable.
import { strict as assert } from 'node:assert';
import { forEachIdentity, probeMount } from '../helpers/env.js';

forEachIdentity((_id, run) => {
  it('every capability set is 0 and NoNewPrivs is 1', async () => {
    const r = await run(['/bin/sh', '-c', 'grep -E "^(Cap|NoNewPrivs)" /proc/self/status']);
    const fields = Object.fromEntries(
      (r.stdout as string)
        .trim()
        .split('\n')
        .map((l) => l.split(/:\s+/)),
    );
    assert.deepEqual(fields, {
      CapInh: '0000000000000000',
      CapPrm: '0000000000000000',
      CapEff: '0000000000000000',
      CapBnd: '0000000000000000',
      CapAmb: '0000000000000000',
      NoNewPrivs: '1',
    });
  });

  it('only fds 0-2 exist inside', async () => {
    const r = await run(['/probe', 'fds'], { mounts: probeMount() });
    assert.equal(r.stdout, '0 1 2 \n');
  });

  it('runs in a new session without a controlling terminal', async () => {
    const r = await run(['/probe', 'session'], { mounts: probeMount() });
    const m = /^sid=(\d+) pid=(\d+) pgid=(\d+) tty_nr=(-?\d+)$/.exec((r.stdout as string).trim());
    assert.ok(m, r.stdout as string);
    assert.equal(m[1], m[2], 'session leader');
    assert.equal(m[4], '0', 'no controlling terminal');
  });

  it('the environment holds only what the caller passed, plus PATH and HOME', async () => {
    process.env.CUBICLE_TEST_LEAK = 'host-value';
    try {
      const r = await run(['/usr/bin/env'], { env: { GREETING: 'hi there', EMPTY: '' } });
      assert.deepEqual((r.stdout as string).trim().split('\n').sort(), [
        'EMPTY=',
        'GREETING=hi there',
        'HOME=/tmp',
        'PATH=/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin',
      ]);
      const custom = await run(['/usr/bin/env'], { env: { PATH: '/usr/bin', HOME: '/home/x' } });
      assert.deepEqual((custom.stdout as string).trim().split('\n').sort(), ['HOME=/home/x', 'PATH=/usr/bin']);
    } finally {
      delete process.env.CUBICLE_TEST_LEAK;
    }
  });

  it('starts in the requested cwd (default /tmp)', async () => {
    assert.equal((await run(['/bin/pwd'])).stdout, '/tmp\n');
    assert.equal((await run(['/bin/pwd'], { cwd: '/usr/share' })).stdout, '/usr/share\n');
  });

  it('the payload can neither ptrace init nor open /proc/1/exe or /proc/1/mem', async () => {
    const r = await run(
      [
        '/bin/sh',
        '-c',
        '/probe ptrace 1; /probe open /proc/1/exe r; /probe open /proc/1/exe w; /probe open /proc/1/mem r; /probe open /proc/1/mem rw; ' +
          'ls -l /proc/1/exe 2>&1 | grep -c "Permission denied"; cat /proc/1/environ 2>&1 | grep -c "Permission denied"',
      ],
      { mounts: probeMount() },
    );
    assert.equal(r.stdout, 'attach EPERM\nopen EACCES\nopen EACCES\nopen EACCES\nopen EACCES\n1\n1\n');
  });

  it('the payload cannot signal init', async () => {
    const r = await run(['/bin/sh', '-c', 'kill -9 1; kill -TERM 1; sleep 0.1; cat /proc/1/comm']);
    assert.equal(r.stdout, 'cubicle-init\n');
    assert.equal(r.verdict, 'ok');
  });
});
