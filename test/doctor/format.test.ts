// formatDoctor's text and doctorExitCode.
import { strict as assert } from 'node:assert';
import type { DoctorCheck } from '../../sandbox/doctor/diagnose.js';
import { doctorExitCode, formatDoctor } from '../../sandbox/doctor/format.js';

const checks: DoctorCheck[] = [
  { id: 'a', title: 'unprivileged user namespaces', status: 'ok', detail: 'enabled' },
  {
    id: 'b',
    title: 'namespace limits',
    status: 'warn',
    detail: 'user.max_user_namespaces = 10',
    fix: 'sudo sysctl -w user.max_user_namespaces=15000',
  },
  {
    id: 'c',
    title: 'fresh /proc',
    status: 'fail',
    detail: 'refused',
    fix: 'docker run --security-opt systempaths=unconfined ...\npodman run --security-opt unmask=ALL ...',
  },
  { id: 'd', title: 'sandbox as an unprivileged user', status: 'skip', detail: 'not root' },
];

describe('doctor formatDoctor()', () => {
  it('prints one marked line per check, indented fix lines, and a summary last', () => {
    const lines = formatDoctor(checks).split('\n');
    assert.deepEqual(lines, [
      '✔ unprivileged user namespaces: enabled',
      '⚠ namespace limits: user.max_user_namespaces = 10',
      '    fix: sudo sysctl -w user.max_user_namespaces=15000',
      '✘ fresh /proc: refused',
      '    fix: docker run --security-opt systempaths=unconfined ...',
      '         podman run --security-opt unmask=ALL ...',
      '– sandbox as an unprivileged user: not root',
      '1 ok, 1 warning, 1 failed, 1 skipped: cubicle cannot run here as is; start with "fresh /proc"',
    ]);
  });

  it('says the host is fine when nothing failed', () => {
    const text = formatDoctor([checks[0]!, checks[1]!]);
    assert.match(text.split('\n').at(-1)!, /^1 ok, 1 warning, 0 failed: cubicle can run sandboxes on this host$/);
  });
});

describe('doctor doctorExitCode()', () => {
  it('is 1 when any check failed, 0 for ok, warn and skip', () => {
    assert.equal(doctorExitCode(checks), 1);
    assert.equal(doctorExitCode(checks.filter((c) => c.status !== 'fail')), 0);
    assert.equal(doctorExitCode([]), 0);
  });
});
