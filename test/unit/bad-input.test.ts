// Malformed input, fuzzed by table: every bad option or flag gets a clear, coded error naming what is wrong,
// synchronously and before anything runs; never a bare TypeError, a stack trace, a hang or a wrong result.
import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import {
  isCubicleError,
  runSandboxed,
  SandboxOptionError,
  type SandboxOptions,
  type SandboxResult,
  type Verdict,
} from '../../sandbox/index.js';
import { cliReport, describeVerdict, isolateMeta, resultToJson, toSandboxError } from '../../sandbox/outcome/render.js';
import { VERDICTS } from '../../sandbox/types.js';
import { CLI } from '../helpers/cli.js';

/** [what, command, options, the option the error must name] */
const OPTION_CASES: [string, unknown, unknown, string][] = [
  ['a number as the command', 42, {}, 'command'],
  ['null as the command', null, {}, 'command'],
  ['an empty argv', [], {}, 'command'],
  ['an empty argv[0]', [''], {}, 'command'],
  ['a number in argv', ['/bin/true', 1], {}, 'command'],
  ['a NUL byte in argv', ['/bin/true', 'a\0b'], {}, 'command'],
  ['an empty string command', '', {}, 'command'],
  ['an argument of 128 KiB (execve takes 128 KiB - 1)', ['/bin/true', 'a'.repeat(128 << 10)], {}, 'command'],
  ['a string command of 128 KiB', 'a'.repeat(128 << 10), {}, 'command'],
  [
    '300000 arguments (more than a quarter of an 8 MiB stack)',
    ['/bin/true', ...Array<string>(300_000).fill('ab')],
    { limits: { stack: '8M' } },
    'command',
  ],
  [
    'a few arguments over a small stack limit',
    ['/bin/true', ...Array<string>(3).fill('a'.repeat(100_000))],
    { limits: { stack: '256K' } },
    'command',
  ],
  ['options as a string', ['/bin/true'], 'x', 'options'],
  ['an unknown option', ['/bin/true'], { bogus: 1 }, 'bogus'],
  ['env as a string', ['/bin/true'], { env: 'A=1' }, 'env'],
  ['env as an array', ['/bin/true'], { env: ['A=1'] }, 'env'],
  ['an env key with =', ['/bin/true'], { env: { 'A=B': '1' } }, 'env'],
  ['an empty env key', ['/bin/true'], { env: { '': '1' } }, 'env'],
  ['an env value that is a number', ['/bin/true'], { env: { A: 1 } }, 'env'],
  ['an env value with NUL', ['/bin/true'], { env: { A: 'x\0y' } }, 'env'],
  ['an env entry of 128 KiB', ['/bin/true'], { env: { A: 'x'.repeat(128 << 10) } }, 'env'],
  [
    'an environment of 3 MiB',
    ['/bin/true'],
    { env: Object.fromEntries(Array.from({ length: 30 }, (_, i) => [`V${i}`, 'x'.repeat(100_000)])) },
    'env',
  ],
  ['a negative uid', ['/bin/true'], { uid: -1 }, 'uid'],
  ['a fractional uid', ['/bin/true'], { uid: 1.5 }, 'uid'],
  ['a NaN gid', ['/bin/true'], { gid: NaN }, 'gid'],
  ['a uid as a string', ['/bin/true'], { uid: '5' }, 'uid'],
  ['a uid of 2^32', ['/bin/true'], { uid: 2 ** 32 }, 'uid'],
  ['a relative cwd', ['/bin/true'], { cwd: 'tmp' }, 'cwd'],
  ['an empty cwd', ['/bin/true'], { cwd: '' }, 'cwd'],
  ['a cwd with ..', ['/bin/true'], { cwd: '/a/../b' }, 'cwd'],
  ['a cwd with NUL', ['/bin/true'], { cwd: '/a\0' }, 'cwd'],
  ['an empty hostname', ['/bin/true'], { hostname: '' }, 'hostname'],
  ['a hostname of 100 characters', ['/bin/true'], { hostname: 'a'.repeat(100) }, 'hostname'],
  ['a hostname with a space', ['/bin/true'], { hostname: 'a b' }, 'hostname'],
  ['a bad username', ['/bin/true'], { username: 'Root!' }, 'username'],
  ['mounts as a string', ['/bin/true'], { mounts: 'x' }, 'mounts'],
  ['a null mount', ['/bin/true'], { mounts: [null] }, 'mounts[0]'],
  ['a mount of unknown type', ['/bin/true'], { mounts: [{ type: 'overlay', target: '/x' }] }, 'mounts[0].type'],
  ['a relative bind source', ['/bin/true'], { mounts: [{ type: 'bind', source: 'rel' }] }, 'mounts[0].source'],
  ['a missing bind source', ['/bin/true'], { mounts: [{ type: 'bind', source: '/nonexistent-cubicle-src' }] }, 'mounts[0].source'],
  ['a negative tmpfs size', ['/bin/true'], { mounts: [{ type: 'tmpfs', target: '/x', size: -1 }] }, 'mounts[0].size'],
  ['a 2000T tmpfs', ['/bin/true'], { mounts: [{ type: 'tmpfs', target: '/x', size: '2000T' }] }, 'mounts[0].size'],
  ['a NaN rootSize', ['/bin/true'], { rootSize: NaN }, 'rootSize'],
  ['an unknown size unit', ['/bin/true'], { tmpSize: '1Z' }, 'tmpSize'],
  ['a zero shmSize', ['/bin/true'], { shmSize: 0 }, 'shmSize'],
  ['a negative timeout', ['/bin/true'], { timeout: -1 }, 'timeout'],
  ['a NaN timeout', ['/bin/true'], { timeout: NaN }, 'timeout'],
  ['a timeout as a string', ['/bin/true'], { timeout: '5s' }, 'timeout'],
  ['an infinite timeout', ['/bin/true'], { timeout: Infinity }, 'timeout'],
  ['a timeout over a year', ['/bin/true'], { timeout: 1e12 }, 'timeout'],
  ['a negative forceKillAfterDelay', ['/bin/true'], { forceKillAfterDelay: -1 }, 'forceKillAfterDelay'],
  ['a NaN forceKillAfterDelay', ['/bin/true'], { forceKillAfterDelay: NaN }, 'forceKillAfterDelay'],
  ['reject as a string', ['/bin/true'], { reject: 'yes' }, 'reject'],
  ['seccompLog as a number', ['/bin/true'], { seccompLog: 1 }, 'seccompLog'],
  ['strictLimits as a string', ['/bin/true'], { strictLimits: 'true' }, 'strictLimits'],
  ['cgroups v3', ['/bin/true'], { cgroups: 'v3' }, 'cgroups'],
  ['a relative cgroupParent', ['/bin/true'], { cgroupParent: 'rel' }, 'cgroupParent'],
  ['a missing cgroupParent', ['/bin/true'], { cgroupParent: '/nonexistent' }, 'cgroupParent'],
  ['input as a number', ['/bin/true'], { input: 42 }, 'input'],
  ['a missing inputFile', ['/bin/true'], { inputFile: '/nonexistent-cubicle-in' }, 'inputFile'],
  ['inputFile as a number', ['/bin/true'], { inputFile: 42 }, 'inputFile'],
  ['stdin as a file name', ['/bin/true'], { stdin: 'in.txt' }, 'stdin'],
  ['an unknown encoding', ['/bin/true'], { encoding: 'latin1' }, 'encoding'],
  ['limits as a string', ['/bin/true'], { limits: 'x' }, 'limits'],
  ['limits as an array', ['/bin/true'], { limits: [1000] }, 'limits'],
  ['an unknown limit', ['/bin/true'], { limits: { bogus: 1 } }, 'limits.bogus'],
  ['a negative cpuTime', ['/bin/true'], { limits: { cpuTime: -1 } }, 'limits.cpuTime'],
  ['a NaN cpuTime', ['/bin/true'], { limits: { cpuTime: NaN } }, 'limits.cpuTime'],
  ['a cpuTime of a million hours', ['/bin/true'], { limits: { cpuTime: '1000000h' } }, 'limits.cpuTime'],
  ['a wallTime that is no duration', ['/bin/true'], { limits: { wallTime: 'abc' } }, 'limits.wallTime'],
  ['a negative extraTime', ['/bin/true'], { limits: { extraTime: -1 } }, 'limits.extraTime'],
  ['a negative memory', ['/bin/true'], { limits: { memory: -5 } }, 'limits.memory'],
  ['a memory of 2^60', ['/bin/true'], { limits: { memory: 2 ** 60 } }, 'limits.memory'],
  ['a memory with two units', ['/bin/true'], { limits: { memory: '1 G B' } }, 'limits.memory'],
  ['zero processes', ['/bin/true'], { limits: { processes: 0 } }, 'limits.processes'],
  ['fractional processes', ['/bin/true'], { limits: { processes: 1.5 } }, 'limits.processes'],
  ['2^30 processes', ['/bin/true'], { limits: { processes: 2 ** 30 } }, 'limits.processes'],
  ['NaN openFiles', ['/bin/true'], { limits: { openFiles: NaN } }, 'limits.openFiles'],
  ['a 10-byte stack', ['/bin/true'], { limits: { stack: 10 } }, 'limits.stack'],
  ['a zero outputLimit', ['/bin/true'], { limits: { outputLimit: 0 } }, 'limits.outputLimit'],
  ['a policy that is a number', ['/bin/true'], { policy: 42 }, 'policy'],
  ['an unknown policy', ['/bin/true'], { policy: 'no-such-policy' }, 'policy'],
  ['a missing policy file', ['/bin/true'], { policy: '/nonexistent-cubicle.json' }, 'policy'],
];

describe('bad input: options, fuzzed by table', () => {
  for (const [what, cmd, options, option] of OPTION_CASES)
    it(`${what}: a coded SandboxOptionError naming ${option}, thrown synchronously`, () => {
      let thrown: unknown;
      let returned: unknown;
      try {
        returned = runSandboxed(cmd as string[], options as SandboxOptions);
      } catch (e) {
        thrown = e;
      }
      if (returned instanceof Promise) returned.catch(() => {}); // a run started: the assertion below fails
      assert.ok(thrown !== undefined, 'nothing was thrown: a run was started');
      assert.ok(thrown instanceof SandboxOptionError, `not a SandboxOptionError: ${String((thrown as Error).stack)}`);
      assert.ok(isCubicleError(thrown));
      assert.match(thrown.code, /^ERR_SANDBOX_/);
      assert.equal(thrown.option, option, thrown.message);
      assert.ok(thrown.message.length > 0 && thrown.message.length < 2000, thrown.message.slice(0, 300));
    });
});

/** [what, argv of the cli, its exit code]: 2 for anything wrong with what the flags say (a usage error), 125 for
 *  what the sandbox itself could not do (here: a policy that cannot be loaded). */
const CLI_CASES: [string, string[], number][] = [
  ['no command after run', ['run'], 2],
  ['an unknown subcommand', ['bogus'], 2],
  ['an unknown flag', ['run', '--bogus', '--', 'true'], 2],
  ['a flag missing its value', ['run', '--memory'], 2],
  ['a negative uid', ['run', '--uid', '-1', '--', 'true'], 2],
  ['a uid that is no number', ['run', '--uid', 'abc', '--', 'true'], 2],
  ['a huge uid', ['run', '--uid', '99999999999', '--', 'true'], 2],
  ['a memory that is no size', ['run', '--memory', 'lots', '--', 'true'], 2],
  ['an empty memory', ['run', '--memory', '', '--', 'true'], 2],
  ['a huge memory', ['run', '--memory', '99999999T', '--', 'true'], 2],
  ['a NaN time', ['run', '--time', 'NaN', '--', 'true'], 2],
  ['a negative time', ['run', '--time', '-1', '--', 'true'], 2],
  ['a wall time in exponent notation', ['run', '--wall-time', '1e9', '--', 'true'], 2],
  ['a wall time of 100000h', ['run', '--wall-time', '100000h', '--', 'true'], 2],
  ['an empty timeout', ['run', '--timeout', '', '--', 'true'], 2],
  ['zero processes', ['run', '--processes', '0', '--', 'true'], 2],
  ['a processes count of 20 digits', ['run', '--processes', '99999999999999999999', '--', 'true'], 2],
  ['zero open files', ['run', '--open-files', '0', '--', 'true'], 2],
  ['a 1-byte stack', ['run', '--stack', '1', '--', 'true'], 2],
  ['a zero output limit', ['run', '--output-limit', '0', '--', 'true'], 2],
  ['an env without =', ['run', '--env', 'noequals', '--', 'true'], 2],
  ['an env with an empty key', ['run', '--env', '=x', '--', 'true'], 2],
  ['an empty bind', ['run', '--bind', '', '--', 'true'], 2],
  ['a relative bind source', ['run', '--bind', 'rel:/x', '--', 'true'], 2],
  ['a tmpfs of no size', ['run', '--tmpfs', '/x:huge', '--', 'true'], 2],
  ['a relative cwd', ['run', '--cwd', 'rel', '--', 'true'], 2],
  ['a hostname with a space', ['run', '--hostname', 'a b', '--', 'true'], 2],
  ['cgroups v3', ['run', '--cgroups', 'v3', '--', 'true'], 2],
  ['a missing cgroup parent', ['run', '--cgroup-parent', '/nonexistent', '--', 'true'], 2],
  ['a relative cgroup parent', ['run', '--cgroup-parent', 'rel', '--', 'true'], 2],
  ['a missing policy file', ['run', '--policy', '/nonexistent-cubicle.json', '--', 'true'], 125],
  ['a missing stdin file', ['run', '--stdin', '/nonexistent-cubicle-in', '--', 'true'], 2],
  ['a meta file in a missing directory', ['run', '--meta', '/nonexistent-dir/meta', '--', 'true'], 2],
  ['--json with --stdout', ['run', '--json', '--stdout', '/tmp/cubicle-never-written', '--', 'true'], 2],
  ['plan with a bad memory', ['plan', '--memory', 'x', '--', 'true'], 2],
  ['policy show of a missing policy', ['policy', 'show', 'no-such-policy'], 125],
  ['policy with no subcommand', ['policy'], 2],
];

describe('bad input: the CLI, fuzzed by table', function () {
  this.timeout(30_000);
  for (const [what, args, status] of CLI_CASES)
    it(`${what}: exit ${status}, one clear "cubicle:" message, no stack trace`, () => {
      const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', input: '', timeout: 20_000 });
      assert.equal(r.status, status, r.stderr);
      assert.match(r.stderr, /^cubicle: \S/);
      assert.doesNotMatch(r.stderr, /internal error|\n\s+at |TypeError|Warning/, r.stderr);
    });
});

describe('bad input: every rendered figure is defined or left out', () => {
  const verdicts: readonly Verdict[] = VERDICTS;
  // A result whose helper was killed from outside: nothing measured, nothing known but the verdict.
  for (const verdict of verdicts)
    it(`${verdict} without usage, limits, signal or exit code renders no undefined, NaN, null or "?"`, () => {
      const r: SandboxResult = {
        command: ['/bin/true'],
        stdout: undefined,
        stderr: undefined,
        exitCode: null,
        signal: null,
        verdict,
        timedOut: false,
        isCanceled: false,
        failed: verdict !== 'ok',
        usage: undefined,
        setup: undefined,
        helperPid: undefined,
        initPid: undefined,
        namespaces: undefined,
        setupFailure: undefined,
        seccomp: undefined,
        violation: undefined,
        limits: {},
      } as unknown as SandboxResult;
      const texts = [describeVerdict(r), ...cliReport(r), isolateMeta(r), JSON.stringify(resultToJson(r))];
      if (verdict !== 'ok') texts.push(toSandboxError(r).message);
      for (const t of texts) assert.doesNotMatch(t.replace(/"[a-zA-Z]+":null/g, ''), /undefined|NaN|\bnull\b|\?/, t);
    });
});
