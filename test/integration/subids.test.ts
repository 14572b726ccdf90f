// A rootless caller with subordinate ids (/etc/subuid, /etc/subgid and newuidmap/newgidmap): each concurrent
// sandbox maps to a host uid of the caller's range that no other holds, so no sandbox can exhaust a per-user
// counter of the caller or of another sandbox. These run as a real unprivileged caller: this process when it is
// one, else (as root) the first user with a range, through setpriv with a supplementary group.
import { strict as assert } from 'node:assert';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { findRange, passwdEntry, subidsFor } from '../../sandbox/host/subids.js';
import { IS_ROOT, skipBecause } from '../helpers/env.js';

const INDEX = fileURLToPath(new URL('../../sandbox/index.js', import.meta.url));

interface Caller {
  uid: number;
  gid: number;
}

/** The unprivileged caller these tests run as, or why there is none. */
function findCaller(): Caller | { reason: string } {
  if (!IS_ROOT) {
    const own = subidsFor(process.geteuid!());
    return 'reason' in own ? own : { uid: process.geteuid!(), gid: process.getegid!() };
  }
  if (!existsSync('/usr/bin/setpriv')) return { reason: 'no setpriv (util-linux) to run as an unprivileged caller' };
  let text: string;
  try {
    text = readFileSync('/etc/subuid', 'utf8');
  } catch {
    return { reason: 'no /etc/subuid on this host (as root: touch /etc/subuid /etc/subgid; usermod --add-subuids ...)' };
  }
  for (const line of readFileSync('/etc/passwd', 'utf8').split('\n')) {
    const [name, , uid, gid] = line.split(':');
    if (!name || Number(uid) === 0 || !findRange(text, Number(uid), name)) continue;
    const ids = subidsFor(Number(uid));
    if ('reason' in ids) return ids;
    return { uid: Number(uid), gid: Number(gid) };
  }
  return { reason: 'no unprivileged user has a range in /etc/subuid (as root: usermod --add-subuids 100000-165535 --add-subgids ...)' };
}

/** Runs an ES module body as the caller, with `runSandboxed` in scope; returns what it prints as JSON. */
function asCaller(c: Caller, body: string, gid = c.gid): Promise<unknown> {
  const script = `import { runSandboxed, spawnSandboxed } from ${JSON.stringify(INDEX)};\n${body}`;
  const node = [process.execPath, '--input-type=module', '-e', script];
  // As root: the caller also holds a supplementary group (4), which must not follow the payload.
  const argv = IS_ROOT ? ['/usr/bin/setpriv', `--reuid=${c.uid}`, `--regid=${gid}`, `--groups=${c.gid},4`, '--', ...node] : node;
  return new Promise((resolve, reject) => {
    const p = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], cwd: '/' });
    let out = '',
      err = '';
    p.stdout.on('data', (d: Buffer) => (out += d.toString()));
    p.stderr.on('data', (d: Buffer) => (err += d.toString()));
    p.on('error', reject);
    p.on('close', (code) => {
      try {
        resolve(JSON.parse(out));
      } catch {
        reject(new Error(`caller exited ${code}: ${out}${err}`));
      }
    });
  });
}

interface Seen {
  verdict: string;
  hostIds: { uid: number; gid: number; counters: string; source: string; reason?: string };
  stdout: string;
  stderr: string;
}

describe('subordinate ids of a rootless caller', function () {
  this.timeout(120_000);
  let caller: Caller;
  before(function () {
    const found = findCaller();
    if ('reason' in found) return skipBecause(this, found.reason);
    caller = found;
  });

  it('two concurrent sandboxes map to different subordinate uids, not the caller (one starved the other)', async () => {
    const seen = (await asCaller(
      caller,
      `const cmd = ['/bin/sh', '-c', 'cat /proc/self/uid_map /proc/self/gid_map; grep Groups /proc/self/status; sleep 0.5'];
       const rs = await Promise.all([runSandboxed(cmd), runSandboxed(cmd)]);
       console.log(JSON.stringify(rs.map((r) => ({ verdict: r.verdict, hostIds: r.hostIds, stdout: r.stdout, stderr: r.stderr }))));`,
    )) as Seen[];
    const ids = subidsFor(caller.uid);
    assert.ok(!('reason' in ids));
    for (const r of seen) {
      assert.equal(r.verdict, 'ok', r.stderr);
      assert.equal(r.hostIds.source, 'subids');
      assert.equal(r.hostIds.counters, 'own');
      assert.ok(r.hostIds.uid >= ids.uid.start && r.hostIds.uid < ids.uid.start + ids.uid.count, `uid ${r.hostIds.uid}`);
      assert.equal(r.hostIds.gid - ids.gid.start, r.hostIds.uid - ids.uid.start, 'the k-th gid goes with the k-th uid');
      const [uidMap, gidMap, groups] = r.stdout.trim().split('\n');
      assert.equal(uidMap!.trim().split(/\s+/)[1], String(r.hostIds.uid), 'the uid map says the same');
      assert.equal(gidMap!.trim().split(/\s+/)[1], String(r.hostIds.gid), 'the gid map says the same');
      assert.match(groups!, /^Groups:\s*$/, "the caller's supplementary groups stayed outside (newgidmap leaves setgroups allowed)");
    }
    assert.notEqual(seen[0]!.hostIds.uid, seen[1]!.hostIds.uid);
    assert.notEqual(seen[0]!.hostIds.uid, caller.uid);
  });

  it('a sandbox exhausting inotify instances leaves the caller and another sandbox able to create one', async () => {
    const grab = [
      'import ctypes, sys, time',
      'l = ctypes.CDLL(None, use_errno=True)',
      'n = 0',
      'while n < 1000 and l.inotify_init() >= 0: n += 1',
      'print(n, flush=True)',
      'time.sleep(float(sys.argv[1]))',
    ].join('\n');
    const seen = (await asCaller(
      caller,
      `const greedy = runSandboxed(['/usr/bin/python3', '-c', ${JSON.stringify(grab)}, '3'], { limits: { openFiles: 4096 } });
       await new Promise((r) => setTimeout(r, 1500));
       const other = await runSandboxed(['/usr/bin/python3', '-c', ${JSON.stringify(grab)}, '0'], { limits: { openFiles: 4096 } });
       const { execFileSync } = await import('node:child_process');
       const probe = 'import ctypes; print(ctypes.CDLL(None).inotify_init() >= 0)';
       const host = execFileSync('/usr/bin/python3', ['-c', probe], { encoding: 'utf8' });
       const g = await greedy;
       console.log(JSON.stringify({ greedy: g.stdout, greedyIds: g.hostIds, other: other.stdout, host }));`,
    )) as { greedy: string; greedyIds: Seen['hostIds']; other: string; host: string };
    assert.equal(seen.greedyIds.source, 'subids');
    assert.ok(Number(seen.greedy) >= 1, `the greedy sandbox got ${seen.greedy}`);
    assert.equal(seen.other.trim(), seen.greedy.trim(), 'the other sandbox got as many as the first: its counter is its own');
    assert.equal(seen.host.trim(), 'True', 'the caller could still create an inotify instance');
  });

  it('a caller on another gid than its passwd one keeps its own ids and says why (newuidmap refused it)', async function () {
    if (!IS_ROOT) return skipBecause(this, 'needs root to start a caller with another gid');
    const seen = (await asCaller(
      caller,
      `const r = await runSandboxed(['/bin/true']);
       console.log(JSON.stringify({ verdict: r.verdict, hostIds: r.hostIds, stdout: r.stdout, stderr: r.stderr }));`,
      4,
    )) as Seen;
    assert.equal(seen.verdict, 'ok', seen.stderr);
    assert.equal(seen.hostIds.source, 'caller');
    assert.match(seen.hostIds.reason!, /primary gid/);
  });

  it('a read-write bind keeps the caller ids, and the result says why', async () => {
    const seen = (await asCaller(
      caller,
      `const { mkdtempSync, rmSync } = await import('node:fs');
       const dir = mkdtempSync('/tmp/cubicle-subids-');
       const mounts = [{ type: 'bind', source: dir, target: '/w' }];
       const r = await runSandboxed(['/bin/sh', '-c', 'echo hi > /w/f && cat /w/f'], { mounts });
       rmSync(dir, { recursive: true });
       console.log(JSON.stringify({ verdict: r.verdict, hostIds: r.hostIds, stdout: r.stdout, stderr: r.stderr }));`,
    )) as Seen;
    assert.equal(seen.verdict, 'ok', seen.stderr);
    assert.equal(seen.stdout, 'hi\n');
    assert.deepEqual(
      { uid: seen.hostIds.uid, source: seen.hostIds.source, counters: seen.hostIds.counters },
      { uid: caller.uid, source: 'caller', counters: 'shared' },
    );
    assert.match(seen.hostIds.reason!, /read-write bind/);
  });
});

describe('subordinate id ranges (parsing)', () => {
  const text = ['# comment', 'alice:100000:65536', '1001:200000:10', 'bob:x:5', 'carol:0:100', 'dave:1000:10', 'erin:5:0'].join('\n');
  it('finds a range by login name or by uid, and refuses malformed ones, ones holding root or the caller', () => {
    assert.deepEqual(findRange(text, 1000, 'alice'), { start: 100000, count: 65536 });
    assert.deepEqual(findRange(text, 1001, 'nobody-by-that-name'), { start: 200000, count: 10 });
    assert.equal(findRange(text, 1002, 'bob'), undefined, 'not a number');
    assert.equal(findRange(text, 1003, 'carol'), undefined, 'a range holding root');
    assert.equal(findRange(text, 1005, 'dave'), undefined, 'a range holding the caller itself');
    assert.equal(findRange(text, 1006, 'erin'), undefined, 'an empty range');
  });
  it("reads a uid's name, primary gid and home from /etc/passwd", () => {
    assert.equal(passwdEntry(0)?.name, 'root');
    assert.deepEqual(passwdEntry(7, 'lp:x:7:7:lp:/var/spool/lpd:/usr/sbin/nologin\n'), { name: 'lp', gid: 7, home: '/var/spool/lpd' });
  });
});
