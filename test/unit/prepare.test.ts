// Planning is pure: prepareRun and `cubicle plan` create nothing on the host, cgroups included.
import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { prepareRun } from '../../sandbox/api/prepare.js';
import { planCgroup } from '../../sandbox/cgroup/index.js';
import { skipBecause } from '../helpers/env.js';
import { CLI } from '../helpers/cli.js';

describe('planning has no side effects', () => {
  before(function () {
    const planned = planCgroup({ memoryBytes: 64 << 20 }, 'probe', { choice: true, parent: undefined, runAs: false });
    if ('reason' in planned) {
      return skipBecause(this, `${planned.reason} (the plan would hold no cgroup to leave behind)`);
    }
  });

  it('prepareRun with memory and process limits plans cgroups but creates none', () => {
    const p = prepareRun(['/bin/true'], { limits: { memory: '64M', processes: 10, cpuTime: 1000 } });
    const cg = p.limits.cgroup!;
    assert.ok(cg.dirs.length >= 1, 'a group is planned');
    for (const dir of cg.dirs) assert.equal(existsSync(dir), false, `${dir} was created by planning`);
    assert.ok(
      p.plan.some((op) => op.op === 'cgroup-join' || op.op === 'cgroup-into'),
      'the helper is told to use it',
    );
    assert.match(p.limits.applied.memory!.mechanism, /^cgroup-v[12]$/);
  });

  it('cubicle plan prints the cgroup steps and leaves no directory behind', () => {
    const out = execFileSync(process.execPath, [CLI, 'plan', '--memory', '64M', '--processes', '10', '--', '/bin/true'], {
      encoding: 'utf8',
    });
    const dirs = [...out.matchAll(/^cgroup-(?:join|into) "([^"]+)"$/gm)].map((m) => m[1]!);
    assert.ok(dirs.length >= 1, out);
    for (const dir of dirs) assert.equal(existsSync(dir), false, `${dir} was left behind by cubicle plan`);
  });
});
