// Per-user counters, planned without a sandbox: caps at half of the host's, and host id leases.
import { strict as assert } from 'node:assert';
import { readFileSync, rmSync } from 'node:fs';
import { parseLimits } from '../../sandbox/host/user-limits.js';
import { resolveOptions } from '../../sandbox/options/resolve.js';
import { sharedRlimitCaps, ucountCaps, UCOUNT_CAPS } from '../../sandbox/plan/limits.js';
import { leaseHostIds } from '../../sandbox/supervisor/host-ids.js';
import { skipBecause } from '../helpers/env.js';

describe('per-user counters (planning)', () => {
  it('reads the rlimits a sandbox inherits from /proc/self/limits', () => {
    const text = [
      'Limit                     Soft Limit           Hard Limit           Units     ',
      'Max processes             96367                96367                processes ',
      'Max pending signals       96367                unlimited            signals   ',
      'Max msgqueue size         819200               819200               bytes     ',
    ].join('\n');
    assert.deepEqual(parseLimits(text), {
      nproc: { soft: 96367, hard: 96367 },
      sigpending: { soft: 96367, hard: Infinity },
      msgqueue: { soft: 819200, hard: 819200 },
    });
  });

  it('caps each counter inside at half of the host cap (the inotify cap was the host default, 128)', () => {
    const caps = ucountCaps((name) => (name === 'inotify_instances' ? 128 : name === 'inotify_watches' ? 1000 : null));
    assert.equal(caps.inotify_instances, 64);
    assert.equal(caps.inotify_watches, 500);
    assert.equal(caps.user_namespaces, UCOUNT_CAPS.user_namespaces, 'unknown host cap: the fixed cap');
    assert.equal(ucountCaps(() => 1).inotify_instances, 1, 'never 0');
    const rl = sharedRlimitCaps((name) => (name === 'msgqueue' ? { soft: 819200, hard: 819200 } : { soft: Infinity, hard: Infinity }));
    assert.deepEqual(rl, { msgqueue: 409600 }, 'an unlimited host limit is left alone');
  });

  it('hostIdRange is validated, and only for root without a hostUid', function () {
    if (process.geteuid!() !== 0) {
      assert.throws(() => resolveOptions(['/bin/true'], { hostIdRange: { start: 100000, count: 10 } }), /hostIdRange is for a root caller/);
      return;
    }
    assert.deepEqual(resolveOptions(['/bin/true'], { hostIdRange: { start: 1_500_000_000, count: 10 } }).hostIdRange, {
      start: 1_500_000_000,
      count: 10,
    });
    assert.throws(() => resolveOptions(['/bin/true'], { hostIdRange: { start: 0, count: 10 } }), /hostIdRange must lie within/);
    assert.throws(() => resolveOptions(['/bin/true'], { hostIdRange: { start: 65000, count: 1000 } }), /65534/);
    assert.throws(() => resolveOptions(['/bin/true'], { hostIdRange: { start: 1, count: 0 } }), /count at least 1/);
    assert.throws(() => resolveOptions(['/bin/true'], { hostUid: 5000, hostIdRange: { start: 1_500_000_000, count: 10 } }), /no hostUid/);
    assert.equal(resolveOptions(['/bin/true'], { hostUid: 5000 }).hostIdRange, undefined, 'a fixed hostUid is used as given');
  });

  it("hostIdRange holding a host account's uid is refused (its sandboxes would own that account's files)", function () {
    if (process.geteuid!() !== 0) return skipBecause(this, 'only root gives a hostIdRange');
    const account = readFileSync('/etc/passwd', 'utf8')
      .split('\n')
      .map((l) => l.split(':'))
      .find((f) => Number(f[2]) >= 1 && Number(f[2]) < 65534);
    if (!account) return skipBecause(this, 'no account with a uid from 1 to 65533 on this host');
    const uid = Number(account[2]);
    assert.throws(
      () => resolveOptions(['/bin/true'], { hostIdRange: { start: uid, count: 1 } }),
      new RegExp(`holds (uid|gid) \\d+ \\(\\w`),
    );
  });

  it('host id leases: one holder per id, released ids are free again, none when the range is full', function () {
    if (process.geteuid!() !== 0) {
      return skipBecause(this, 'only root leases host ids');
    }
    const dir = `/run/cubicle/test-leases-${process.pid}`;
    try {
      const range = { start: 2_000_000, count: 2 };
      const a = leaseHostIds(range, dir)!;
      const b = leaseHostIds(range, dir)!;
      assert.deepEqual([a.uid, b.uid, a.gid], [2_000_000, 2_000_001, 2_000_000]);
      assert.equal(leaseHostIds(range, dir), null, 'every id is held');
      a.release();
      a.release();
      const c = leaseHostIds(range, dir)!;
      assert.equal(c.uid, 2_000_000, 'a released id is leased again');
      b.release();
      c.release();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
