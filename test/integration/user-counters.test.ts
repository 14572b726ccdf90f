// Per-user kernel counters: a sandbox never exhausts one of the host user's or another sandbox's. Root gives
// each concurrent sandbox host ids of its own; where ids are shared, each counter is capped at half the host's.
import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { spawnSandboxed } from '../../sandbox/index.js';
import { hostRlimit } from '../../sandbox/host/user-limits.js';
import { defaultHostIdRange } from '../../sandbox/options/resolve.js';
import { forEachIdentity, IS_ROOT, skipBecause } from '../helpers/env.js';

const hostInotifyMax = (): number => Number(readFileSync('/proc/sys/user/max_inotify_instances', 'utf8'));

/** Whether `uid` (this process's when undefined) can create an inotify instance on the host right now. */
function hostCanInotify(uid: number | undefined, gid: number | undefined): string {
  const r = spawnSync(
    '/usr/bin/python3',
    [
      '-c',
      'import ctypes, os\nl = ctypes.CDLL(None, use_errno=True)\n' +
        'print("ok" if l.inotify_init() >= 0 else os.strerror(ctypes.get_errno()))',
    ],
    { encoding: 'utf8', ...(uid !== undefined ? { uid, gid } : {}) },
  );
  return r.stdout.trim() || r.stderr;
}

describe('per-user counters as root', () => {
  it('two concurrent sandboxes get different host uids of their own (was 65534 for both)', async function () {
    if (!IS_ROOT) {
      return skipBecause(this, 'only root maps sandboxes to other host ids');
    }
    const { runSandboxed } = await import('../../sandbox/index.js');
    const cmd = ['/bin/sh', '-c', 'cat /proc/self/uid_map; sleep 1'];
    const [a, b] = await Promise.all([runSandboxed(cmd), runSandboxed(cmd)]);
    for (const r of [a, b]) {
      assert.equal(r.hostIds!.counters, 'own');
      assert.ok(r.hostIds!.uid >= defaultHostIdRange().start && r.hostIds!.uid < defaultHostIdRange().start + defaultHostIdRange().count);
      assert.equal((r.stdout as string).trim().split(/\s+/)[1], String(r.hostIds!.uid), 'the uid map says the same');
    }
    assert.notEqual(a.hostIds!.uid, b.hostIds!.uid);
    const fixed = await runSandboxed(['/bin/true'], { hostUid: 4242, hostGid: 4242 });
    assert.deepEqual(
      fixed.hostIds,
      { uid: 4242, gid: 4242, counters: 'shared', source: 'fixed' },
      'a fixed hostUid is shared (and capped)',
    );
  });
});

forEachIdentity((id, run) => {
  it('a sandbox exhausting inotify instances leaves the host user able to create one (was all 128 taken)', async () => {
    const p = spawnSandboxed(
      [
        '/usr/bin/python3',
        '-c',
        [
          'import ctypes, os, sys',
          'l = ctypes.CDLL(None, use_errno=True)',
          'fds = []',
          'while len(fds) < 1000:',
          '  fd = l.inotify_init()',
          '  if fd < 0: break',
          '  fds.append(fd)',
          'print(len(fds), flush=True)',
          'sys.stdin.read()',
        ].join('\n'),
      ],
      { ...id.spawnAs, stdin: 'pipe', limits: { openFiles: 4096, wallTime: 30_000 } },
    );
    const line = await new Promise<string>((resolve) => createInterface({ input: p.stdout! }).once('line', resolve));
    const host = id.rootless ? hostCanInotify(id.outerUid, id.outerGid) : hostCanInotify(undefined, undefined);
    p.stdin!.end();
    const r = await p.result;
    assert.equal(Number(line), Math.min(128, Math.floor(hostInotifyMax() / 2)), 'the sandbox got half of the host cap');
    assert.equal(host, 'ok', 'the host user could still create an inotify instance');
    assert.equal(r.verdict, 'ok');
  });

  it('POSIX mqueue bytes and pending signals are capped at half of the host limit (were not capped)', async () => {
    const mq = hostRlimit('msgqueue')!.soft;
    const sig = hostRlimit('sigpending')!.soft;
    const r = await run([
      '/usr/bin/python3',
      '-c',
      [
        'import ctypes, os, signal',
        'l = ctypes.CDLL(None, use_errno=True)',
        'class Attr(ctypes.Structure):',
        '  _fields_ = [("flags", ctypes.c_long), ("maxmsg", ctypes.c_long), ("msgsize", ctypes.c_long), ("cur", ctypes.c_long),',
        '              ("pad", ctypes.c_long * 4)]',
        'a = Attr(0, 10, 8192, 0)',
        'n = 0',
        'while n < 200:',
        '  if l.mq_open(b"/q%d" % n, os.O_CREAT | os.O_RDWR, 0o600, ctypes.byref(a)) < 0: break',
        '  n += 1',
        'signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGRTMIN])',
        'k = 0',
        'while k < 200000:',
        '  if l.sigqueue(os.getpid(), int(signal.SIGRTMIN), ctypes.c_void_p(0)) < 0: break', // kill() would override the limit
        '  k += 1',
        'print(n, k)',
        'print(*[x.split()[3] for x in open("/proc/self/limits") if x.startswith(("Max pending", "Max msgqueue"))])',
      ].join('\n'),
    ]);
    const [counts, limits] = (r.stdout as string).trim().split('\n');
    const [queues, signals] = counts!.split(' ').map(Number) as [number, number];
    assert.equal(limits, `${Math.floor(sig / 2)} ${Math.floor(mq / 2)}`);
    assert.ok(queues >= 1 && queues * 10 * 8192 <= mq / 2, `${queues} queues of 80 KiB under a host limit of ${mq} bytes`);
    assert.ok(signals >= 1 && signals <= sig / 2, `${signals} signals pending under a host limit of ${sig}`);
  });
});
