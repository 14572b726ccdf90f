// cgroup v2 planning reads the hierarchy without changing it, and predicts which controllers a run's group
// can get; a fake hierarchy in a temp directory stands in for /sys/fs/cgroup.
import { strict as assert } from 'node:assert';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { findOwnSubtree, ownCgroup, userManagerBus } from '../../sandbox/cgroup/delegation.js';
import { planV2 } from '../../sandbox/cgroup/v2.js';

function tree(layout: Record<string, Record<string, string>>): string {
  const root = mkdtempSync(join(tmpdir(), 'cubicle-cgroupfs-'));
  for (const [dir, files] of Object.entries(layout)) {
    mkdirSync(join(root, dir), { recursive: true });
    for (const [name, text] of Object.entries(files)) writeFileSync(join(root, dir, name), text);
  }
  return root;
}

describe('cgroup v2 planning', () => {
  const roots: string[] = [];
  after(() => roots.forEach((r) => rmSync(r, { recursive: true, force: true })));
  const limits = { memoryBytes: 64 << 20, pidsMax: 20 };

  it("plans memory.max, pids.max and the helper's files under the base, and touches nothing", () => {
    const root = tree({ '.': { 'cgroup.controllers': 'cpu memory pids', 'cgroup.subtree_control': 'memory pids' } });
    roots.push(root);
    const plan = planV2(limits, join(root, 'cubicle'), '1-1-x', root);
    assert.deepEqual(plan.dirs, [join(root, 'cubicle', '1-1-x')]);
    assert.deepEqual(plan.enable, { dirs: [root, join(root, 'cubicle')], controllers: ['memory', 'pids'] });
    assert.deepEqual(
      plan.writes.map((w) => [w.file.slice(root.length), w.value]),
      [
        ['/cubicle/1-1-x/memory.max', 64 << 20],
        ['/cubicle/1-1-x/memory.swap.max', 0],
        ['/cubicle/1-1-x/memory.oom.group', 1],
        ['/cubicle/1-1-x/pids.max', 20],
      ],
    );
    assert.equal(plan.helper.into, plan.dirs[0]);
    assert.equal(plan.helper.eventsFile, `${plan.dirs[0]}/memory.events`);
    assert.equal(plan.memoryDir, plan.dirs[0]);
    assert.equal(plan.pidsDir, plan.dirs[0]);
  });

  it('a controller the hierarchy lacks, or one a group with processes would have to delegate, is not planned', () => {
    const root = tree({
      '.': { 'cgroup.controllers': 'memory pids', 'cgroup.subtree_control': 'memory pids' },
      user: { 'cgroup.controllers': 'memory pids', 'cgroup.subtree_control': 'memory', 'cgroup.procs': '4242\n' },
    });
    roots.push(root);
    const plan = planV2(limits, join(root, 'user'), '1-1-x', root);
    assert.equal(plan.memoryDir, plan.dirs[0], 'memory is delegated already');
    assert.equal(plan.pidsDir, undefined, 'pids would need a group with a process to delegate (EBUSY): sampling instead');
    assert.deepEqual(plan.enable.controllers, ['memory']);
    const bare = tree({ '.': { 'cgroup.controllers': 'cpu', 'cgroup.subtree_control': '' } });
    roots.push(bare);
    const none = planV2(limits, join(bare, 'cubicle'), '1-1-x', bare);
    assert.deepEqual([none.memoryDir, none.pidsDir, none.writes.length], [undefined, undefined, 0]);
  });
});

describe('finding the delegated cgroup v2 subtree a caller sits in', () => {
  const roots: string[] = [];
  after(() => roots.forEach((r) => rmSync(r, { recursive: true, force: true })));
  const both = { 'cgroup.controllers': 'memory pids', 'cgroup.subtree_control': 'memory pids' };

  it('alone in its group: a leaf for the caller, run groups beside it', () => {
    const root = tree({
      '.': both,
      scope: { 'cgroup.controllers': 'memory pids', 'cgroup.subtree_control': '', 'cgroup.procs': '4242\n' },
    });
    roots.push(root);
    const d = findOwnSubtree(root, join(root, 'scope'), 4242);
    assert.deepEqual(d, { source: 'own-subtree', group: join(root, 'scope'), moveSelfInto: join(root, 'scope', 'caller-4242') });
    const plan = planV2(
      { memoryBytes: 64 << 20, pidsMax: 20 },
      join(root, 'scope', 'cubicle'),
      '1-1-x',
      root,
      join(root, 'scope', 'caller-4242'),
    );
    assert.deepEqual(plan.enable.controllers, ['memory', 'pids'], 'the group hands controllers down once the caller left it');
    assert.equal(plan.moveSelfInto, join(root, 'scope', 'caller-4242'));
  });

  it('sharing its group with other processes: run groups go beside that group, under its writable parent', () => {
    const root = tree({
      '.': both,
      'user-1': { ...both, 'cgroup.procs': '' },
      'user-1/session': { 'cgroup.controllers': 'memory pids', 'cgroup.subtree_control': '', 'cgroup.procs': '1\n4242\n' },
    });
    roots.push(root);
    assert.deepEqual(findOwnSubtree(root, join(root, 'user-1', 'session'), 4242), { source: 'own-subtree', group: join(root, 'user-1') });
  });

  it('the root cgroup, or a group without the controllers, is no delegated subtree (and says why)', () => {
    const root = tree({ '.': both, bare: { 'cgroup.controllers': 'cpu', 'cgroup.subtree_control': '', 'cgroup.procs': '1\n4242\n' } });
    roots.push(root);
    assert.match((findOwnSubtree(root, root, 4242) as { reason: string }).reason, /root cgroup/);
    assert.match((findOwnSubtree(root, join(root, 'bare'), 4242) as { reason: string }).reason, /no memory or pids controller/);
  });

  it('reads its own group from /proc/self/cgroup (the v2 line)', () => {
    assert.equal(ownCgroup('/sys/fs/cgroup', '1:name=systemd:/x\n0::/user.slice/app.scope\n'), '/sys/fs/cgroup/user.slice/app.scope');
    assert.equal(ownCgroup('/sys/fs/cgroup', '0::/\n'), '/sys/fs/cgroup');
    assert.equal(ownCgroup('/sys/fs/cgroup', '4:memory:/x\n'), undefined);
  });

  it('no systemd user manager: the reason names the missing bus', () => {
    const r = userManagerBus({ XDG_RUNTIME_DIR: '/nonexistent-runtime-dir', PATH: '/usr/bin' }, 4242);
    assert.deepEqual(r, {
      reason: 'no systemd user manager is reachable (no /nonexistent-runtime-dir/bus: no systemd user session for uid 4242)',
    });
  });
});
