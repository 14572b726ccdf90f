// cgroup v2 planning reads the hierarchy without changing it, and predicts which controllers a run's group
// can get; a fake hierarchy in a temp directory stands in for /sys/fs/cgroup.
import { strict as assert } from 'node:assert';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
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
