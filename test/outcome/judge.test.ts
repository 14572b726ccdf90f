// The outcome module judged from records alone: no sandbox runs here (the integration tests run real ones).
import { strict as assert } from 'node:assert';
import type { ResolvedLimits } from '../../sandbox/limits/resolve.js';
import { judge, type JudgeContext } from '../../sandbox/outcome/judge.js';
import type { RunRecord } from '../../sandbox/outcome/record.js';
import { Op } from '../../sandbox/plan/ops.js';
import type { ExitEvent, StopEvent } from '../../sandbox/protocol/events.js';

const plan = [Op.userns(1000, 1000, 65534, 65534), Op.root(1 << 20), Op.bind('/data', '/data', 'rw'), Op.exec('/bin/true'), Op.end()];

function ctx(limits: Partial<ResolvedLimits> = {}, extra: Partial<JudgeContext> = {}): JudgeContext {
  const base = { argv: ['/bin/true'], limits: { extraTimeMs: 0, ...limits }, applied: {}, plan, seccomp: undefined };
  return { ...base, encoding: 'utf8', maxBuffer: 100 << 20, ...extra };
}

function exitEvent(e: Partial<ExitEvent> = {}): ExitEvent {
  return {
    ev: 'exit',
    code: 0,
    wallUs: 50_000,
    rusage: { utimeUs: 30_000, stimeUs: 10_000, maxRssKb: 2048, minflt: 100, majflt: 0, nvcsw: 5, nivcsw: 1 },
    init: { utimeUs: 4_000, stimeUs: 2_000, sinceForkUs: 5_000 },
    sample: { samples: 3, peakMemory: 3 << 20, peakTasks: 2 },
    stops: [],
    violations: [],
    ...e,
  };
}

function record(r: Partial<RunRecord> = {}): RunRecord {
  return {
    helperPid: 1234,
    failure: undefined,
    ready: { ev: 'ready', initPid: 1235, payloadPid: 2, setupUs: 4000, ns: { user: 1, mnt: 2, pid: 3, net: 4, uts: 5, ipc: 6, cgroup: 7 } },
    terminal: exitEvent(),
    helperExit: { code: 0, signal: null },
    stops: [],
    cgroup: undefined,
    stdout: [Buffer.from('out')],
    stderr: [Buffer.from('err')],
    hostDiagnosis: undefined,
    hostIds: { uid: 65534, gid: 65534, counters: 'shared', source: 'nobody' },
    elapsedMs: 80,
    ...r,
  };
}

const stop = (kind: StopEvent['kind'], atUs: number, observed = 0): StopEvent => ({ kind, atUs, observed });

describe('outcome: judging a run record', () => {
  it("a clean exit is ok; usage removes init's own CPU and reads the rest of wait4", () => {
    const r = judge(record(), ctx());
    assert.equal(r.verdict, 'ok');
    assert.equal(r.failed, false);
    assert.equal(r.exitCode, 0);
    assert.equal(r.signal, null);
    assert.equal(r.usage!.cpuUserMs, 26);
    assert.equal(r.usage!.cpuSystemMs, 8);
    assert.equal(r.usage!.cpuMs, 34);
    assert.equal(r.usage!.wallMs, 50);
    assert.equal(r.usage!.peakMemoryBytes, 3 << 20, 'the sampled peak');
    assert.equal(r.usage!.peakProcesses, 2);
    assert.equal(r.setup!.ms, 4);
    assert.deepEqual([r.stdout, r.stderr], ['out', 'err']);
    assert.equal(r.initPid, 1235);
  });

  it("the CPU cgroup counts children nobody waited for, less init's share since the fork", () => {
    const r = judge(record({ terminal: exitEvent({ sample: { samples: 3, peakMemory: 0, peakTasks: 2, cgroupCpuUs: 905_000 } }) }), ctx());
    assert.equal(r.usage!.cpuMs, 900, "cgroup 905 ms - init 5 ms, above wait4's 34 ms");
    const low = judge(record({ terminal: exitEvent({ sample: { samples: 3, peakMemory: 0, peakTasks: 2, cgroupCpuUs: 1_000 } }) }), ctx());
    assert.equal(low.usage!.cpuMs, 34, 'never below what wait4 counted');
  });

  it("peak memory: the cgroup's when it measured, else samples, never the largest RSS (it counts mapped files)", () => {
    const cg = judge(record({ cgroup: { counters: { peakMemoryBytes: 9 << 20 }, readBack: {} } }), ctx());
    assert.equal(cg.usage!.peakMemoryBytes, 9 << 20);
    const rss = judge(record({ terminal: exitEvent({ sample: { samples: 1, peakMemory: 1000, peakTasks: 1 } }) }), ctx());
    assert.equal(rss.usage!.peakMemoryBytes, 1000);
  });

  it("the payload's own status: nonzero exit, signal, and init killed before it reported", () => {
    assert.equal(judge(record({ terminal: exitEvent({ code: 3 }) }), ctx()).verdict, 'nonzero-exit');
    const sig = judge(record({ terminal: exitEvent({ code: undefined, signal: 9 }) }), ctx());
    assert.deepEqual([sig.verdict, sig.signal, sig.exitCode], ['signaled', 'SIGKILL', null]);
    const init = judge(record({ terminal: exitEvent({ code: undefined, initSignal: 9, wallUs: undefined }) }), ctx());
    assert.deepEqual([init.verdict, init.signal], ['signaled', 'SIGKILL']);
    assert.equal(init.usage!.wallMs, 80, 'wall from the supervisor when init could not measure it');
  });

  it('each stop kind of the helper gives its verdict', () => {
    const table: [StopEvent['kind'], string][] = [
      ['memory', 'memory-limit'],
      ['oom', 'memory-limit'],
      ['tasks', 'process-limit'],
      ['cpu', 'cpu-time-limit'],
      ['wall', 'wall-time-limit'],
      ['seccomp', 'seccomp-violation'],
    ];
    for (const [kind, verdict] of table) {
      const r = judge(record({ terminal: exitEvent({ code: undefined, signal: 9, stops: [stop(kind, 1000)] }) }), ctx());
      assert.equal(r.verdict, verdict, kind);
      assert.equal(r.failed, true);
    }
  });

  it('the earliest stop wins, whichever side made it', () => {
    const killed = { code: undefined, signal: 9 };
    const both = judge(record({ terminal: exitEvent({ ...killed, stops: [stop('cpu', 500), stop('oom', 300)] }) }), ctx());
    assert.equal(both.verdict, 'memory-limit');
    const output = judge(
      record({ terminal: exitEvent({ ...killed, stops: [stop('wall', 200)] }), stops: [{ reason: 'output', atUs: 100 }] }),
      ctx(),
    );
    assert.equal(output.verdict, 'output-limit');
    const late = judge(
      record({ terminal: exitEvent({ ...killed, stops: [stop('wall', 200)] }), stops: [{ reason: 'output', atUs: 900 }] }),
      ctx({ wallTimeMs: 100 }),
    );
    assert.deepEqual([late.verdict, late.timedOut], ['wall-time-limit', true]);
  });

  it('a user kill is no verdict: the run ends as its status says', () => {
    const r = judge(record({ terminal: exitEvent({ code: undefined, signal: 15 }), stops: [{ reason: 'user', atUs: 10 }] }), ctx());
    assert.deepEqual([r.verdict, r.signal], ['signaled', 'SIGTERM']);
  });

  it('a fork bomb spinning at its process cap until a time limit is process-limit (with a pids cgroup or without)', () => {
    const limits = { processes: 10, wallTimeMs: 1000 };
    const atCap = { samples: 50, peakMemory: 0, peakTasks: 10 };
    const wallStop = { terminal: exitEvent({ code: undefined, signal: 9, sample: atCap, stops: [stop('wall', 1_000_000)] }) };
    assert.equal(judge(record(wallStop), ctx(limits)).verdict, 'process-limit', 'sampled at the cap, then the wall limit');
    const refused = { ...wallStop, cgroup: { counters: { pidsRefused: 500 }, readBack: {} } };
    assert.equal(judge(record(refused), ctx(limits)).verdict, 'process-limit', 'refused forks, then the wall limit');
    const none = { ...wallStop, cgroup: { counters: { pidsRefused: 0 }, readBack: {} } };
    assert.equal(judge(record(none), ctx(limits)).verdict, 'wall-time-limit', 'at the cap, but the pids cgroup refused nothing');
    const one = judge(record(wallStop), ctx({ processes: 1, wallTimeMs: 1000 })).verdict;
    assert.equal(one, 'wall-time-limit', 'a single process is always at a cap of 1: no evidence');
  });

  it("untimed evidence, in priority order, over the payload's status", () => {
    const limits = { memoryBytes: 64 << 20, processes: 10, cpuTimeMs: 100, wallTimeMs: 1000 };
    const cases: [Partial<RunRecord>, string, string][] = [
      [
        { cgroup: { counters: { oomKills: 1 }, readBack: {} }, terminal: exitEvent({ code: undefined, signal: 9 }) },
        'memory-limit',
        'the OOM killer in the memory cgroup',
      ],
      [
        { terminal: exitEvent({ code: 0, sample: { samples: 5, peakMemory: 70 << 20, peakTasks: 1 } }) },
        'memory-limit',
        'a late sample over the memory limit',
      ],
      [
        { cgroup: { counters: { pidsRefused: 3 }, readBack: {} }, terminal: exitEvent({ code: 1 }) },
        'process-limit',
        'forks the pids controller refused',
      ],
      [
        { cgroup: { counters: { pidsRefused: 3 }, readBack: {} }, terminal: exitEvent({ code: 0 }) },
        'ok',
        'forks refused, but the program handled it and exited 0',
      ],
      [
        { terminal: exitEvent({ code: 1, sample: { samples: 5, peakMemory: 0, peakTasks: 10 } }) },
        'nonzero-exit',
        'at the cap without a pids cgroup (refusals unseen): its own status',
      ],
      [
        { terminal: exitEvent({ code: 0, rusage: { ...exitEvent().rusage, utimeUs: 150_000 } }) },
        'cpu-time-limit',
        'CPU over the limit, finished within the grace',
      ],
      [{ terminal: exitEvent({ code: 0, wallUs: 1_500_000 }) }, 'wall-time-limit', 'wall over the limit within the grace'],
      [{ terminal: exitEvent({ code: undefined, signal: 25 }) }, 'file-size-limit', 'SIGXFSZ'],
      [{ terminal: exitEvent({ code: undefined, signal: 24 }) }, 'cpu-time-limit', 'SIGXCPU with a CPU limit'],
    ];
    for (const [rec, verdict, why] of cases) assert.equal(judge(record(rec), ctx(limits)).verdict, verdict, why);
    // Several kinds of evidence at once: the list's order decides, not the order they were noticed in.
    const seccomp = {
      policy: 'judge',
      mode: 'enforce' as const,
      notify: 'kill' as const,
      name: () => ({ syscall: null, nr: null, arch: null }),
    };
    const both = record({
      cgroup: { counters: { oomKills: 1, pidsRefused: 2 }, readBack: {} },
      terminal: exitEvent({ code: undefined, signal: 31 }),
    });
    assert.equal(judge(both, ctx(limits, { seccomp })).verdict, 'process-limit', 'a refused fork before an OOM kill');
    const oomAndSigsys = record({
      cgroup: { counters: { oomKills: 1 }, readBack: {} },
      terminal: exitEvent({ code: undefined, signal: 31 }),
    });
    assert.equal(judge(oomAndSigsys, ctx(limits, { seccomp })).verdict, 'memory-limit', 'an OOM kill before SIGSYS');
    // With no limit set, the same signals are just signals.
    assert.equal(judge(record({ terminal: exitEvent({ code: undefined, signal: 24 }) }), ctx()).verdict, 'signaled');
    // A sample over the limit does not count when a memory cgroup measured (init does not read PSS then).
    const cgMeasured = record({
      cgroup: { counters: { peakMemoryBytes: 10 << 20 }, readBack: {} },
      terminal: exitEvent({ sample: { samples: 5, peakMemory: 70 << 20, peakTasks: 1 } }),
    });
    assert.equal(judge(cgMeasured, ctx(limits)).verdict, 'ok');
  });

  it('seccomp: a kill names the syscall; SIGSYS from the kernel has no name; log mode lists what it saw', () => {
    const name = (arch: number, nr: number) => ({
      syscall: nr === 101 ? 'ptrace' : `nr${nr}`,
      nr,
      arch: arch === 0xc000003e ? 'x86_64' : 'other',
    });
    const seccomp = { policy: 'judge', mode: 'enforce' as const, notify: 'kill' as const, name };
    const killed = judge(
      record({
        terminal: exitEvent({
          code: undefined,
          signal: 9,
          stops: [stop('seccomp', 300, 101)],
          violations: [{ nr: 101, arch: 0xc000003e }],
        }),
      }),
      ctx({}, { seccomp }),
    );
    assert.equal(killed.verdict, 'seccomp-violation');
    assert.deepEqual(killed.violation, { syscall: 'ptrace', nr: 101, arch: 'x86_64' });
    assert.equal(killed.seccomp!.policy, 'judge');
    const sigsys = judge(record({ terminal: exitEvent({ code: undefined, signal: 31 }) }), ctx({}, { seccomp }));
    assert.deepEqual([sigsys.verdict, sigsys.violation], ['seccomp-violation', { syscall: null, nr: null, arch: null }]);
    const log = judge(
      record({
        terminal: exitEvent({
          violations: [
            { nr: 101, arch: 0xc000003e },
            { nr: 7, arch: 0xc000003e },
          ],
        }),
      }),
      ctx({}, { seccomp: { ...seccomp, mode: 'log', notify: 'log' } }),
    );
    assert.equal(log.verdict, 'ok');
    assert.equal(log.violation, undefined);
    assert.deepEqual(
      log.seccomp!.violations.map((v) => v.syscall),
      ['ptrace', 'nr7'],
    );
    assert.equal(
      judge(record({ terminal: exitEvent({ code: undefined, signal: 31 }) }), ctx()).verdict,
      'signaled',
      'SIGSYS without a filter is just a signal',
    );
  });

  it("setup failures: the helper's error names the plan step and the fix", () => {
    const r = judge(
      record({
        ready: undefined,
        terminal: { ev: 'error', stage: 'init', op: 'bind', opIndex: 2, syscall: 'openat2', errno: 2, msg: '/data' },
      }),
      ctx(),
    );
    assert.equal(r.verdict, 'setup-error');
    assert.equal(r.setupFailure!.step, 'bind /data -> /data (rw)');
    assert.equal(r.setupFailure!.errnoName, 'ENOENT');
    assert.match(r.setupFailure!.hint, /does not exist on the host/);
    assert.equal(r.usage, undefined);
  });

  it('failures outside the protocol: not launched, killed helper, prepared and cgroup failures', () => {
    const launch = judge(
      record({ ready: undefined, terminal: undefined, failure: { kind: 'launch', error: new Error('spawn ENOENT') } }),
      ctx(),
    );
    assert.deepEqual([launch.verdict, launch.setupFailure!.stage], ['setup-error', 'helper']);
    assert.match(launch.setupFailure!.hint, /can be executed by this user/);
    const died = judge(record({ ready: undefined, terminal: undefined, helperExit: { code: null, signal: 'SIGKILL' } }), ctx());
    assert.match(died.setupFailure!.message, /SIGKILL/);
    const proto = judge(record({ terminal: undefined, failure: { kind: 'protocol', error: new Error('malformed status event') } }), ctx());
    assert.match(proto.setupFailure!.message, /malformed/);
    const prepared = { stage: 'seccomp', message: 'libseccomp cannot be loaded', hint: 'install it' };
    assert.equal(judge(record({ terminal: undefined, failure: { kind: 'prepared', failure: prepared } }), ctx()).setupFailure, prepared);
    const cg = { stage: 'cgroup', syscall: 'write', message: 'cannot write', hint: 'root' };
    assert.equal(judge(record({ terminal: undefined, failure: { kind: 'cgroup', failure: cg } }), ctx()).verdict, 'setup-error');
  });

  it('a cancel or timeout explains a setup that never finished', () => {
    const canceled = judge(
      record({
        ready: undefined,
        terminal: undefined,
        helperExit: { code: null, signal: 'SIGKILL' },
        stops: [{ reason: 'cancel', atUs: -1 }],
      }),
      ctx(),
    );
    assert.deepEqual([canceled.verdict, canceled.isCanceled, canceled.failed], ['canceled', true, true]);
    const timeout = judge(
      record({ ready: undefined, terminal: undefined, stops: [{ reason: 'timeout', atUs: -1 }] }),
      ctx({ wallTimeMs: 100 }),
    );
    assert.deepEqual([timeout.verdict, timeout.timedOut], ['wall-time-limit', true]);
  });

  it('limits carry the values the cgroup read back; output decodes as asked', () => {
    const applied = {
      memory: { value: 64 << 20, unit: 'bytes' as const, mechanism: 'cgroup-v1' as const },
      processes: { value: 10, unit: 'count' as const, mechanism: 'cgroup-v1+sampling' as const },
    };
    const r = judge(
      record({ cgroup: { counters: {}, readBack: { memory: 64 << 20, pids: 17 } } }),
      ctx({}, { applied, encoding: 'buffer' }),
    );
    assert.equal(r.limits.memory!.readBack, 64 << 20);
    assert.equal(r.limits.processes!.readBack, 17);
    assert.equal((applied.processes as { readBack?: number }).readBack, undefined, "the plan's record is not modified");
    assert.ok(Buffer.isBuffer(r.stdout));
    assert.equal(judge(record({ stdout: undefined }), ctx()).stdout, undefined, 'not captured');
  });

  it('captured output past maxBuffer is output-limit, and the result names maxBuffer as the bound passed', () => {
    const killed = { code: undefined, signal: 9 };
    const r = judge(record({ terminal: exitEvent(killed), stops: [{ reason: 'max-buffer', atUs: 100 }] }), ctx({}, { maxBuffer: 4096 }));
    assert.equal(r.verdict, 'output-limit');
    assert.deepEqual(r.limits.outputLimit, { value: 4096, unit: 'bytes', mechanism: 'maxBuffer' });
  });
});
