// The process cap: exactly N tasks alive at once, held by the kernel (pids cgroup or RLIMIT_NPROC), a default
// cap for every sandbox, and the judge policy's defaults. Every task-spawning payload here stops by itself at a
// bound it carries (threads waiting on an event), so no run can grow past it whatever the cap does.
import { strict as assert } from 'node:assert';
import { DEFAULT_PROCESSES } from '../../sandbox/plan/limits.js';
import type { SandboxOptions } from '../../sandbox/index.js';
import { forEachIdentity, forEachMechanism } from '../helpers/env.js';

/** Starts up to `max` threads that wait; prints how many started and why it stopped; exits with `code`. */
const threads = (max: number, code = 0): string[] => [
  '/usr/bin/python3',
  '-c',
  [
    'import sys, threading',
    'threading.stack_size(65536)',
    'ev = threading.Event()',
    'n = 0',
    'why = "all"',
    'try:',
    `  while n < ${max}:`,
    '    threading.Thread(target=ev.wait).start()',
    '    n += 1',
    'except RuntimeError as e:',
    '  why = str(e)',
    'print(n, why)',
    'ev.set()',
    `sys.exit(${code})`,
  ].join('\n'),
];

forEachIdentity((id, run) => {
  forEachMechanism(id, (m) => {
    const go = (cmd: string[], o: SandboxOptions = {}) => run(cmd, { ...m.opts, reject: false, ...o });

    it('--processes N lets exactly N tasks live (was N + max(4, N/4)): the next thread fails and the program goes on', async () => {
      for (const n of [10, 64]) {
        const r = await go(threads(200), { limits: { processes: n, wallTime: 20_000 } });
        assert.equal(r.stdout, `${n - 1} can't start new thread\n`, `processes ${n}: the main thread and ${n - 1} more`);
        assert.equal(r.verdict, 'ok', 'the program handled the refusal and exited 0');
        assert.ok(r.usage!.peakProcesses! <= n, `peak ${r.usage!.peakProcesses} for a cap of ${n}`);
        assert.equal(r.limits.processes!.value, n);
      }
    });

    it('a refused task and a failing exit give process-limit with a pids cgroup (without one, refusals are unseen)', async () => {
      const r = await go(threads(200, 3), { limits: { processes: 10 } });
      assert.equal(r.stdout, "9 can't start new thread\n");
      assert.equal(r.verdict, m.cgroup ? 'process-limit' : 'nonzero-exit');
      const fits = await go(threads(8, 3), { limits: { processes: 10 } });
      assert.equal(fits.verdict, 'nonzero-exit', 'a failure with no refused task is its own');
    });

    it('without limits.processes a default cap holds (was none: a bomb ran to the host pid limit)', async () => {
      const r = await go(threads(DEFAULT_PROCESSES + 100));
      assert.equal(r.stdout, `${DEFAULT_PROCESSES - 1} can't start new thread\n`);
      assert.equal(r.limits.processes!.value, DEFAULT_PROCESSES);
      assert.equal(r.verdict, 'ok');
      const raised = await go(threads(DEFAULT_PROCESSES + 100), { limits: { processes: DEFAULT_PROCESSES + 200 } });
      assert.equal(raised.stdout, `${DEFAULT_PROCESSES + 100} all\n`, 'limits.processes raises it');
    });

    it("the judge policy caps processes, output and file size by default (was none: 'judge' ran bombs to the host limit)", async () => {
      const r = await go(threads(100), { policy: 'judge' });
      assert.equal(r.stdout, "63 can't start new thread\n");
      assert.deepEqual([r.limits.processes?.value, r.limits.outputLimit?.value, r.limits.fileSize?.value], [64, 64 << 20, 64 << 20]);
      const own = await go(threads(100), { policy: 'judge', limits: { processes: 200 } });
      assert.equal(own.stdout, '100 all\n', "the call's own limit wins");
    });
  });
});
