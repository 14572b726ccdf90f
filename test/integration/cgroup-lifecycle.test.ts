// The supervisor owns the run's cgroup: made right before the helper starts, removed when it ends, whatever
// happened; a group the host refuses is a setup error that names the syscall, the path and the fix.
import { strict as assert } from 'node:assert';
import { existsSync, readFileSync } from 'node:fs';
import { prepareRun } from '../../sandbox/api/prepare.js';
import { planCgroup } from '../../sandbox/cgroup/index.js';
import { judge } from '../../sandbox/outcome/judge.js';
import { supervise } from '../../sandbox/supervisor/supervisor.js';
import { waitFor, skipBecause } from '../helpers/env.js';

describe("the run's cgroup lifecycle (whichever version this host gives the caller)", () => {
  before(function () {
    const planned = planCgroup({ memoryBytes: 64 << 20 }, 'probe', { choice: true, parent: undefined, runAs: false });
    const reason =
      'reason' in planned ? planned.reason : planned.memoryDir ? undefined : `the ${planned.version} group here has no memory controller`;
    if (reason) {
      return skipBecause(this, `${reason}`);
    }
  });

  it('exists while the payload runs and is gone after', async () => {
    const p = prepareRun(['/bin/sleep', '1'], { limits: { memory: '64M', processes: 20 } });
    const dirs = p.limits.cgroup!.dirs;
    const s = supervise(p.supervise, true);
    for (const dir of dirs) assert.equal(existsSync(dir), true, `${dir} exists once the run started`);
    // The sandbox has its own cgroup namespace (its /proc/self/cgroup says "/"): look from the host side.
    const memoryProcs = `${p.limits.cgroup!.memoryDir!}/cgroup.procs`;
    assert.ok(
      await waitFor(() => existsSync(memoryProcs) && readFileSync(memoryProcs, 'utf8').trim() !== '', 5000),
      "the sandbox's processes are in the group",
    );
    const r = judge(await s.record, p.judge);
    assert.equal(r.verdict, 'ok');
    assert.ok(r.limits.memory!.readBack! > 0, 'the limit was read back');
    for (const dir of dirs) assert.equal(existsSync(dir), false, `${dir} is removed`);
  });

  it('a group the host refuses is a setup error (stage, syscall, errno, hint) and nothing is left', async () => {
    const p = prepareRun(['/bin/true'], { limits: { memory: '64M' } });
    const plan = p.limits.cgroup!;
    plan.writes.push({ file: `${plan.dirs[0]}/no.such.control.file`, value: 1 }); // the kernel refuses it
    const r = judge(await supervise(p.supervise, true).record, p.judge);
    assert.equal(r.verdict, 'setup-error');
    const f = r.setupFailure!;
    assert.deepEqual([f.stage, f.syscall], ['cgroup', 'write']);
    assert.ok(f.errnoName, 'the errno is named');
    assert.match(f.message, /no\.such\.control\.file/);
    assert.ok(f.hint.length > 10);
    assert.equal(r.helperPid, undefined, 'the helper never started');
    for (const dir of plan.dirs) assert.equal(existsSync(dir), false, `${dir} is removed after the failure`);
  });
});
