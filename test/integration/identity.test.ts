// Identity: 1000/1000 by default with named entries; single-id maps; setgroups denied; root never maps to host root.
import { strict as assert } from 'node:assert';
import { chmodSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { subidsFor } from '../../sandbox/host/subids.js';
import { defaultHostIdRange } from '../../sandbox/options/resolve.js';
import { forEachIdentity, IS_ROOT, worldReadableTmp, skipBecause } from '../helpers/env.js';

forEachIdentity((id, run) => {
  it('runs as uid/gid 1000 named in /etc/passwd and /etc/group', async () => {
    const r = await run('id; id -un; id -gn');
    assert.equal(r.stdout, 'uid=1000(sandbox) gid=1000(sandbox) groups=1000(sandbox)\nsandbox\nsandbox\n');
  });

  it('takes a configured uid/gid, 0 included', async () => {
    const r = await run('id -u; id -g; id -un', { uid: 4242, gid: 4343, username: 'judge' });
    assert.equal(r.stdout, '4242\n4343\njudge\n');
    const root = await run('id -u; id -un; grep ^Cap /proc/self/status | sort -u | cut -f2 | uniq', { uid: 0, gid: 0 });
    assert.equal(root.stdout, '0\nroot\n0000000000000000\n', 'uid 0 inside has no capabilities');
  });

  const to = id.rootless ? `host ${id.outerUid}` : "host ids of the sandbox's own";
  it(`maps the inner id to ${to} with a single-id map and setgroups denied (or no groups, on subordinate ids)`, async () => {
    const r = await run('cat /proc/self/uid_map /proc/self/gid_map /proc/self/setgroups; grep Groups /proc/self/status');
    const lines = (r.stdout as string)
      .trim()
      .split('\n')
      .map((l) => l.trim().split(/\s+/).join(' '));
    // A rootless caller with subordinate ids: newgidmap leaves setgroups allowed, and the helper drops every group.
    const subids = r.hostIds!.source === 'subids';
    assert.deepEqual(lines.slice(0, 3), [`1000 ${r.hostIds!.uid} 1`, `1000 ${r.hostIds!.gid} 1`, subids ? 'allow' : 'deny']);
    if (subids) {
      assert.equal(lines[3], 'Groups:');
      const range = subidsFor(process.geteuid!());
      assert.ok(!('reason' in range) && r.hostIds!.uid >= range.uid.start && r.hostIds!.uid < range.uid.start + range.uid.count);
    } else if (id.rootless) assert.deepEqual([r.hostIds!.uid, r.hostIds!.gid], [id.outerUid, id.outerGid]);
    else assert.ok(r.hostIds!.uid >= defaultHostIdRange().start && r.hostIds!.counters === 'own', `host uid ${r.hostIds!.uid}`);
  });

  it('files written to a rw bind belong to the mapped host id, never host root', async () => {
    const t = worldReadableTmp();
    try {
      chmodSync(t.dir, 0o777);
      const r = await run(['/bin/sh', '-c', 'echo x > /out/made-inside'], { mounts: [{ type: 'bind', source: t.dir, target: '/out' }] });
      const st = statSync(join(t.dir, 'made-inside'));
      assert.equal(st.uid, r.hostIds!.uid);
      assert.equal(st.gid, r.hostIds!.gid);
      assert.notEqual(st.uid, 0);
    } finally {
      t.cleanup();
    }
  });

  it('cannot read a host file that only host root may read, even through a bind', async function () {
    if (!IS_ROOT) {
      return skipBecause(this, 'needs root to create a root-only host file');
    }
    const t = worldReadableTmp();
    try {
      writeFileSync(join(t.dir, 'secret'), 'top secret\n', { mode: 0o600 });
      const r = await run(['/bin/cat', '/in/secret'], {
        mounts: [{ type: 'bind', source: t.dir, target: '/in', readOnly: true }],
        reject: false,
      });
      assert.equal(r.exitCode, 1);
      assert.match(r.stderr as string, /Permission denied/);
    } finally {
      t.cleanup();
    }
  });
});

describe('identity options', () => {
  it('refuses to map the sandbox to host root', function () {
    if (!IS_ROOT) {
      return skipBecause(this, 'hostUid is only accepted from root');
    }
    return import('../../sandbox/index.js').then(({ runSandboxed }) => {
      assert.throws(() => runSandboxed(['/bin/true'], { hostUid: 0 }), { code: 'ERR_SANDBOX_INVALID_OPTION', option: 'hostUid' });
    });
  });
});
