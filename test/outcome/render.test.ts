// How judged results are told: error codes and messages, CLI exit codes and lines, isolate's meta file.
import { strict as assert } from 'node:assert';
import { isCubicleError, SandboxError } from '../../sandbox/errors.js';
import { cliExitCode, cliReport, describeVerdict, isolateMeta, MESSAGE_OUTPUT_MAX, toSandboxError } from '../../sandbox/outcome/render.js';
import type { SandboxResult, Verdict } from '../../sandbox/types.js';

function result(r: Partial<SandboxResult> = {}): SandboxResult {
  return {
    command: ['/bin/sh', '-c', 'echo hi'],
    stdout: '',
    stderr: '',
    exitCode: 0,
    signal: null,
    verdict: 'ok',
    timedOut: false,
    isCanceled: false,
    failed: false,
    usage: {
      wallMs: 1200,
      cpuUserMs: 900,
      cpuSystemMs: 100,
      cpuMs: 1000,
      maxRssBytes: 4 << 20,
      voluntaryContextSwitches: 3,
      involuntaryContextSwitches: 4,
      minorPageFaults: 0,
      majorPageFaults: 0,
      peakMemoryBytes: 70 << 20,
      peakProcesses: 3,
    },
    setup: { ms: 4 },
    helperPid: 1,
    initPid: 2,
    namespaces: undefined,
    setupFailure: undefined,
    seccomp: undefined,
    violation: undefined,
    hostIds: { uid: 65534, gid: 65534, counters: 'shared', source: 'nobody' },
    limits: {
      cpuTime: { value: 500, unit: 'ms', mechanism: 'rlimit+sampling' },
      memory: { value: 64 << 20, unit: 'bytes', mechanism: 'cgroup-v1' },
    },
    ...r,
  };
}
const failed = (verdict: Verdict, r: Partial<SandboxResult> = {}): SandboxResult => result({ verdict, failed: true, ...r });

describe('outcome: rendering a result', () => {
  it("CLI exit codes: the payload's, 128+N, 124 for time limits, 125 for the sandbox", () => {
    const table: [SandboxResult, number][] = [
      [result(), 0],
      [failed('nonzero-exit', { exitCode: 7 }), 7],
      [failed('signaled', { exitCode: null, signal: 'SIGKILL' }), 137],
      [failed('cpu-time-limit', { exitCode: null, signal: 'SIGKILL' }), 124],
      [failed('wall-time-limit', { exitCode: 0 }), 124],
      [failed('memory-limit', { exitCode: 0 }), 1],
      [failed('memory-limit', { exitCode: null, signal: 'SIGKILL' }), 137],
      [failed('seccomp-violation', { exitCode: null, signal: 'SIGKILL' }), 159],
      [failed('setup-error', { exitCode: null, usage: undefined }), 125],
    ];
    for (const [r, code] of table) assert.equal(cliExitCode(r), code, r.verdict);
  });

  it("an error's message ends with the captured stderr and stdout (bounded); shortMessage has the one line", () => {
    const e = toSandboxError(failed('nonzero-exit', { exitCode: 1, stderr: 'a.c:1: error: expected ;\n', stdout: 'partial\n' }));
    assert.equal(e.shortMessage, 'Command failed with exit code 1: /bin/sh -c "echo hi"');
    assert.equal(e.message, `${e.shortMessage}\n\na.c:1: error: expected ;\n\npartial`);
    const huge = toSandboxError(failed('nonzero-exit', { exitCode: 1, stderr: Buffer.alloc(1 << 20, 'x') }));
    assert.ok(huge.message.length < MESSAGE_OUTPUT_MAX + 200, 'bounded');
    assert.match(huge.message, /output truncated/);
    assert.equal((huge.stderr as Buffer).length, 1 << 20, 'the whole output stays in the error');
    assert.equal(
      toSandboxError(failed('nonzero-exit', { exitCode: 2, stderr: '  \n' })).message,
      toSandboxError(failed('nonzero-exit', { exitCode: 2 })).shortMessage,
    );
  });

  it('errors carry a stable code per verdict and a message naming the command', () => {
    const e = toSandboxError(failed('memory-limit', { exitCode: null, signal: 'SIGKILL' }));
    assert.ok(e instanceof SandboxError && isCubicleError(e));
    assert.equal(e.code, 'ERR_SANDBOX_LIMIT');
    assert.equal(e.message, 'Command exceeded the memory limit of 64 MiB (peak 70 MiB): /bin/sh -c "echo hi"');
    assert.equal(e.verdict, 'memory-limit', 'the error is the result');
    assert.equal(toSandboxError(failed('wall-time-limit')).code, 'ERR_SANDBOX_TIMEOUT');
    assert.equal(toSandboxError(failed('nonzero-exit', { exitCode: 3 })).message, 'Command failed with exit code 3: /bin/sh -c "echo hi"');
    const setup = toSandboxError(
      failed('setup-error', {
        setupFailure: {
          stage: 'init',
          step: 'bind /a -> /a (ro)',
          syscall: 'openat2',
          errno: 2,
          errnoName: 'ENOENT',
          message: '/a',
          hint: 'create it',
        },
      }),
    );
    assert.equal(setup.code, 'ERR_SANDBOX_SETUP');
    assert.equal(setup.message, 'Sandbox setup failed (init, bind /a -> /a (ro)): openat2: ENOENT /a. Hint: create it');
    assert.deepEqual([setup.stage, setup.syscall, setup.errnoName, setup.hint], ['init', 'openat2', 'ENOENT', 'create it']);
    assert.equal(
      toSandboxError(failed('setup-error', { setupFailure: { stage: 'helper', message: 'x', hint: 'y' } })).code,
      'ERR_SANDBOX_HELPER',
    );
    assert.equal(
      toSandboxError(failed('setup-error', { setupFailure: { stage: 'seccomp', message: 'x', hint: 'y' } })).code,
      'ERR_SANDBOX_SECCOMP_UNAVAILABLE',
    );
  });

  it('the CLI reports limits, violations, setup failures and audit logs on stderr', () => {
    assert.deepEqual(cliReport(result()), []);
    assert.deepEqual(cliReport(failed('cpu-time-limit')), [
      'cubicle: cpu-time-limit: exceeded the CPU-time limit of 500 ms (used 1000 ms)',
    ]);
    const v = failed('seccomp-violation', {
      seccomp: { policy: 'judge', mode: 'enforce', violations: [] },
      violation: { syscall: 'ptrace', nr: 101, arch: 'x86_64' },
    });
    assert.deepEqual(cliReport(v), [
      'cubicle: seccomp-violation: was killed by the seccomp policy "judge" for calling ptrace (nr 101, x86_64)',
    ]);
    assert.match(
      cliReport(
        failed('setup-error', {
          setupFailure: { stage: 'exec', syscall: 'execve', errnoName: 'ENOENT', message: 'x', hint: 'give its full path' },
        }),
      )[0]!,
      /execve: ENOENT x\n {2}hint: give its full path/,
    );
    assert.deepEqual(cliReport(result({ seccomp: { policy: 'default', mode: 'log', violations: [] } })), [
      'cubicle: seccomp log (policy default): nothing would have been denied',
    ]);
    assert.equal(describeVerdict(failed('canceled')), 'was canceled');
  });

  it("isolate's meta file", () => {
    const meta = isolateMeta(failed('memory-limit', { exitCode: null, signal: 'SIGKILL' }));
    assert.equal(
      meta,
      [
        'time:1.000',
        'time-wall:1.200',
        'max-rss:4096',
        'cg-mem:71680',
        'csw-voluntary:3',
        'csw-forced:4',
        'exitsig:9',
        'killed:1',
        'cg-oom-killed:1',
        'status:SG',
        'message:Memory limit exceeded',
        'verdict:memory-limit',
        '',
      ].join('\n'),
    );
    assert.match(isolateMeta(failed('cpu-time-limit')), /^status:TO$/m);
    assert.match(
      isolateMeta(failed('setup-error', { usage: undefined, setupFailure: { stage: 's', message: 'two\nlines', hint: 'h' } })),
      /^message:Sandbox setup failed: two lines$/m,
    );
    assert.doesNotMatch(isolateMeta(result()), /status:/);
  });
});
