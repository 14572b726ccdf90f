// The real doctor on this machine: real probes, real sandbox runs.
import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import { release } from 'node:os';
import { CLI } from '../helpers/cli.js';
import { runDoctor } from '../../sandbox/cli/doctor-probes.js';
import { doctorExitCode, formatDoctor, type DoctorCheck } from '../../sandbox/doctor/index.js';

describe('cubicle doctor on this host', function () {
  this.timeout(60_000);
  let checks: DoctorCheck[];
  before(async () => {
    checks = await runDoctor();
  });

  const byId = (id: string): DoctorCheck => {
    const c = checks.find((x) => x.id === id);
    assert.ok(c, `no check ${id}`);
    return c;
  };

  it('runs a real sandbox as the caller', () => {
    const c = byId('sandbox');
    assert.equal(c.status, 'ok', `${c.detail}\n${c.fix ?? ''}`);
    assert.match(c.detail, /\/bin\/true ran in a fresh sandbox/);
    assert.match(c.title, process.geteuid!() === 0 ? /as root/ : new RegExp(`uid ${process.geteuid!()}`));
  });

  it('runs a real sandbox on the rootless path when root (skipped otherwise)', () => {
    const c = byId('sandbox-unprivileged');
    if (process.geteuid!() === 0) {
      assert.equal(c.status, 'ok', `${c.detail}\n${c.fix ?? ''}`);
      assert.match(c.title, /uid 65534/);
    } else assert.equal(c.status, 'skip');
  });

  it('finds no failure on this host, and reads its real kernel', () => {
    const failed = checks.filter((c) => c.status === 'fail');
    assert.deepEqual(failed, [], formatDoctor(checks));
    assert.equal(doctorExitCode(checks), 0);
    assert.ok(byId('kernel').detail.startsWith(release()), byId('kernel').detail);
  });

  it('gives every check a status and detail, and a fix when it fails or warns', () => {
    assert.ok(checks.length >= 10);
    for (const c of checks) {
      assert.ok(['ok', 'warn', 'fail', 'skip'].includes(c.status), c.id);
      assert.ok(c.detail.length > 0, c.id);
      if (c.status === 'fail' || c.status === 'warn') assert.ok(c.fix, `${c.id} has no fix`);
    }
  });

  it('formats every check, then a summary', () => {
    const text = formatDoctor(checks);
    const lines = text.split('\n');
    for (const c of checks) assert.ok(text.includes(`${c.title}: ${c.detail}`), `${c.id} missing from:\n${text}`);
    const marks = lines.filter((l) => /^[✔⚠✘–] /.test(l));
    assert.equal(marks.length, checks.length);
    const ok = checks.filter((c) => c.status === 'ok').length;
    assert.match(lines.at(-1)!, new RegExp(`^${ok} ok, .*cubicle can run sandboxes on this host$`));
  });

  it('honours CUBICLE_LIBSECCOMP: `cubicle doctor` with a missing library fails the libseccomp check, with the fix', () => {
    const missing = '/nonexistent/libcubicle-missing.so.2';
    const r = spawnSync(process.execPath, [CLI, 'doctor'], {
      env: { ...process.env, CUBICLE_LIBSECCOMP: missing },
      encoding: 'utf8',
      timeout: 60_000,
    });
    assert.equal(r.status, 1, r.stdout + r.stderr);
    const lines = r.stdout.split('\n');
    const at = lines.findIndex((l) => l.startsWith('✘ libseccomp: '));
    assert.ok(at >= 0, r.stdout);
    assert.ok(lines[at]!.includes(`${missing} cannot be loaded`), lines[at]);
    const fix = lines
      .slice(at + 1)
      .filter((l, i, rest) => rest.slice(0, i + 1).every((x) => x.startsWith('    ')))
      .join('\n');
    assert.ok(fix.includes(`CUBICLE_LIBSECCOMP=${missing}`), fix);
    assert.ok(fix.includes('sudo apt-get install libseccomp2'), fix);
  });
});
