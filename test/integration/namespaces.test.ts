// Namespaces: new user/mount/pid/ipc/uts/net/cgroup; /proc shows only the sandbox; only lo; hostname isolated.
import { strict as assert } from 'node:assert';
import { hostname } from 'node:os';
import { readlinkSync } from 'node:fs';
import { forEachIdentity } from '../helpers/env.js';

const hostNs = (ns: string): number => Number(/\[(\d+)\]/.exec(readlinkSync(`/proc/self/ns/${ns}`))![1]);

forEachIdentity((_id, run) => {
  it('creates every namespace anew', async () => {
    const r = await run(['/bin/true']);
    for (const ns of ['user', 'mnt', 'pid', 'net', 'uts', 'ipc']) {
      assert.ok(r.namespaces![ns], `ready event names the ${ns} namespace`);
      assert.notEqual(r.namespaces![ns], hostNs(ns), `${ns} namespace differs from the host's`);
    }
    const inside = await run(['/bin/sh', '-c', 'readlink /proc/self/ns/cgroup']);
    assert.notEqual(inside.stdout, readlinkSync('/proc/self/ns/cgroup') + '\n', 'cgroup namespace differs');
  });

  it('/proc shows only the sandbox processes, and PID 1 is init', async () => {
    const r = await run(['/bin/sh', '-c', 'cat /proc/1/comm; for p in /proc/[0-9]*; do echo ${p#/proc/}; done']);
    const [comm, ...pids] = (r.stdout as string).trim().split('\n');
    assert.equal(comm, 'cubicle-init');
    // init (1), this sh (2), and at most the short-lived children of sh.
    assert.ok(pids.includes('1') && pids.includes('2'), `pids: ${pids.join(',')}`);
    assert.ok(
      pids.every((p) => Number(p) < 10),
      `only small sandbox pids, got ${pids.join(',')}`,
    );
  });

  it('has only a loopback interface, and it is up', async () => {
    const r = await run([
      '/bin/sh',
      '-c',
      'tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d " "; cat /proc/net/if_inet6 2>/dev/null | wc -l',
    ]);
    const lines = (r.stdout as string).trim().split('\n');
    assert.deepEqual(lines.slice(0, -1), ['lo']);
    const up = await run([
      '/usr/bin/python3',
      '-c',
      'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); s.listen(); ' +
        'c=socket.create_connection(s.getsockname()); print("connected")',
    ]);
    assert.equal(up.stdout, 'connected\n', 'loopback carries traffic');
  });

  it('isolates the hostname', async () => {
    const r = await run(['/bin/sh', '-c', 'cat /proc/sys/kernel/hostname; hostname 2>/dev/null || true']);
    assert.equal((r.stdout as string).split('\n')[0], 'cubicle');
    assert.notEqual(hostname(), 'cubicle');
    const custom = await run(['/bin/cat', '/proc/sys/kernel/hostname'], { hostname: 'judge-7' });
    assert.equal(custom.stdout, 'judge-7\n');
  });
});
