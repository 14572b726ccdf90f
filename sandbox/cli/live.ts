// The commands for named, running sandboxes: run --detach (and its detached supervisor), ps, inspect, exec, stop, wait.
import { spawn } from 'node:child_process';
import { Socket } from 'node:net';
import { fileURLToPath } from 'node:url';
import { prepareRun } from '../api/prepare.js';
import { runSandboxed } from '../api/run.js';
import { untilRunning, stopSandbox, waitSandbox } from '../api/stop-wait.js';
import { spawnInSandbox } from '../api/exec.js';
import { inspectSandbox, listSandboxes, type LiveSandbox } from '../api/list.js';
import { findSandbox, readResult, SandboxNameError, updateEntry, writeResult } from '../host/registry.js';
import { ErrorCode } from '../errors.js';
import { cliExitCode, CliExit, cliReport, resultJsonChunks } from '../outcome/render.js';
import type { SandboxOptions } from '../types.js';
import { parseDurationMs } from '../units.js';
import type { RunArgs } from './args.js';
import { parseFlags, UsageError } from './usage.js';

export const LIVE_USAGE = `Named sandboxes (run --name NAME [--detach] ...):
  ps [--json]                      every running named sandbox of yours: pids, state, age, CPU, memory
  inspect NAME [--json]            its namespaces (as /proc/PID/ns names them), pids and the limits in force
  exec NAME [options] -- CMD ...   run CMD inside it (its namespaces, root, cwd, environment, cgroup, ids and
                                   seccomp policy); options: --env K=V, --cwd DIR, --timeout S, --json
  stop NAME                        SIGTERM everything inside, SIGKILL after its grace (forceKillAfterDelay)
  wait NAME                        wait for it to end; print its result as run --json does
`;

const oneName = (cmd: string, argv: readonly string[]): string => {
  const rest = argv.filter((a) => a !== '--json');
  const flag = rest.find((a) => a.startsWith('-'));
  if (flag) throw new UsageError(`unknown option ${flag} for ${cmd}`);
  if (rest.length !== 1) throw new UsageError(`usage: cubicle ${cmd} NAME`);
  return rest[0]!;
};

const fmtAge = (ms: number): string =>
  ms < 60_000 ? `${Math.floor(ms / 1000)}s` : ms < 3_600_000 ? `${Math.floor(ms / 60_000)}m` : `${Math.floor(ms / 3_600_000)}h`;
const fmtMiB = (b: number): string => `${(b / (1 << 20)).toFixed(1)}M`;

/** The JSON of one sandbox in ps: the pinned fields first. */
const psJson = (s: LiveSandbox): object => ({
  name: s.name,
  pid: s.pid,
  helperPid: s.helperPid,
  state: s.state,
  startedAt: s.startedAt,
  namespaces: s.namespaces,
  usage: s.usage,
  payloadPid: s.payloadPid,
  ageMs: s.ageMs,
  command: s.command,
  detached: s.detached,
});

export async function cmdPs(argv: string[]): Promise<number> {
  const json = argv.includes('--json');
  const bad = argv.find((a) => a !== '--json');
  if (bad) throw new UsageError(`unknown argument ${bad} for ps (known: --json)`);
  const list = await listSandboxes();
  if (json) {
    process.stdout.write(JSON.stringify(list.map(psJson), null, 2) + '\n');
    return 0;
  }
  const rows = [['NAME', 'PID', 'HELPER', 'STATE', 'AGE', 'CPU', 'MEM', 'COMMAND']];
  for (const s of list) {
    const cpu = s.usage.cgroup?.cpuMs ?? s.usage.cpuMs;
    const mem = s.usage.cgroup?.memoryBytes ?? s.usage.memoryBytes;
    rows.push([
      s.name,
      String(s.pid),
      String(s.helperPid),
      s.state,
      fmtAge(s.ageMs),
      `${(cpu / 1000).toFixed(2)}s`,
      fmtMiB(mem),
      s.command.join(' '),
    ]);
  }
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  for (const r of rows) process.stdout.write(r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ') + '\n');
  return 0;
}

export async function cmdInspect(argv: string[]): Promise<number> {
  const name = oneName('inspect', argv);
  const s = await inspectSandbox(name);
  if (!s) throw new SandboxNameError(`no sandbox named "${name}" is running for this user (cubicle ps lists them)`, ErrorCode.notFound);
  if (argv.includes('--json')) {
    process.stdout.write(JSON.stringify(s, null, 2) + '\n');
    return 0;
  }
  const lines = [
    `name:       ${s.name}`,
    `state:      ${s.state}${s.detached ? ' (detached)' : ''}`,
    `started:    ${s.startedAt} (${fmtAge(s.ageMs)} ago)`,
    `command:    ${JSON.stringify(s.command)}`,
    `init pid:   ${s.pid} (host), payload pid ${s.payloadPid ?? '?'} (inside), helper pid ${s.helperPid}`,
    `host ids:   ${s.hostIds.uid}/${s.hostIds.gid}`,
    'namespaces: (as /proc/PID/ns shows them)',
    ...Object.entries(s.namespaces).map(([k, ino]) => `  ${k.padEnd(7)} ${k}:[${ino}]`),
    'limits:',
    ...(Object.keys(s.limits).length
      ? Object.entries(s.limits).map(([k, l]) => `  ${k.padEnd(12)} ${l!.value} ${l!.unit} (${l!.mechanism})`)
      : ['  (none set)']),
    `cgroup:     ${s.cgroup ? `${s.cgroup.version} ${s.cgroup.dirs.join(' ')}` : 'none'}`,
    `usage:      cpu ${(s.usage.cpuMs / 1000).toFixed(2)}s, memory ${fmtMiB(s.usage.memoryBytes)}, ${s.usage.processes} processes` +
      (s.usage.cgroup
        ? `; cgroup: cpu ${((s.usage.cgroup.cpuMs ?? 0) / 1000).toFixed(2)}s, memory ${fmtMiB(s.usage.cgroup.memoryBytes ?? 0)}`
        : ''),
  ];
  process.stdout.write(lines.join('\n') + '\n');
  return 0;
}

const EXEC_FLAGS = {
  env: { type: 'string', multiple: true },
  cwd: { type: 'string' },
  timeout: { type: 'string' },
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;

export async function cmdExec(argv: string[]): Promise<number> {
  const dash = argv.indexOf('--');
  const parsed = parseFlags(dash >= 0 ? argv.slice(0, dash) : [...argv], EXEC_FLAGS);
  const v = parsed.values;
  if (v.help) {
    process.stdout.write(LIVE_USAGE);
    return 0;
  }
  const [name, ...before] = parsed.positionals;
  const command = dash >= 0 ? argv.slice(dash + 1) : before;
  if (!name || command.length === 0)
    throw new UsageError('usage: cubicle exec NAME [--env K=V] [--cwd DIR] [--timeout S] [--json] -- CMD [ARGS...]');
  if (dash >= 0 && before.length) throw new UsageError(`unexpected argument "${before[0]}" before --`);
  const env: Record<string, string> = {};
  for (const e of v.env ?? []) {
    const eq = e.indexOf('=');
    if (eq <= 0) throw new UsageError(`--env "${e}" must be KEY=VALUE`);
    env[e.slice(0, eq)] = e.slice(eq + 1);
  }
  let timeout: number | undefined;
  try {
    timeout = v.timeout === undefined ? undefined : parseDurationMs(v.timeout, '--timeout');
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  const options = { env, ...(v.cwd !== undefined ? { cwd: v.cwd } : {}), ...(timeout !== undefined ? { timeout } : {}), reject: false };
  if (v.json) {
    const proc = spawnInSandbox(name, command, { ...options, stdout: 'pipe', stderr: 'pipe' });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    proc.stdout?.on('data', (c: Buffer) => out.push(c));
    proc.stderr?.on('data', (c: Buffer) => err.push(c));
    const r = await proc.result;
    const full = { ...r, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() };
    process.stdout.write([...resultJsonChunks(full as never)].join('') + '\n');
    return r.verdict === 'setup-error' ? CliExit.sandboxFailed : 0;
  }
  const proc = spawnInSandbox(name, command, { ...options, stdin: 'inherit', stdout: 'inherit', stderr: 'inherit' });
  const r = await proc.result;
  for (const line of cliReport(r as never)) process.stderr.write(`${line}\n`);
  return cliExitCode(r as never);
}

export async function cmdStop(argv: string[]): Promise<number> {
  await stopSandbox(oneName('stop', argv));
  return 0;
}

export async function cmdWait(argv: string[]): Promise<number> {
  process.stdout.write(await waitSandbox(oneName('wait', argv)));
  return 0;
}

/** The hidden command a detached run's supervisor runs: the run, its result recorded for `wait`; "ready" on fd 3. */
export const DETACHED_COMMAND = '__detached-run';

/**
 * run --detach: checks everything a run would, then starts a detached supervisor (a new session, no terminal) that
 * keeps enforcing the limits and records the result; returns once the payload runs (0), or with the run's own error.
 */
export async function runDetached(argv: readonly string[], args: RunArgs): Promise<number> {
  const name = args.options.name;
  if (name === undefined) throw new UsageError('--detach needs --name NAME (the name to reach the sandbox by later)');
  for (const [flag, given] of [
    ['--json', args.json],
    ['--stdout', args.stdoutFile],
    ['--stderr', args.stderrFile],
    ['--result', args.resultFile],
    ['--meta', args.metaFile],
    ['--copy-out', args.copyOutTo.size > 0 || undefined],
  ] as const)
    if (given) throw new UsageError(`${flag} cannot be combined with --detach: its result is printed by cubicle wait ${name}`);
  prepareRun(args.command, args.options); // every option error, before anything starts
  const held = findSandbox(name);
  if (held) throw new UsageError(`a sandbox named "${name}" is already running; choose another name, or: cubicle stop ${name}`);
  const dash = argv.indexOf('--');
  const runArgv = argv.filter((a, i) => !(a === '--detach' && (dash < 0 || i < dash)));
  // The package's own bin (whatever started this call: a bundle, the modules, another program importing the CLI).
  const childArgv = [...process.execArgv, fileURLToPath(new URL('./main.cjs', import.meta.url)), DETACHED_COMMAND, ...runArgv];
  // The caller's cwd: relative paths among the flags (--bind ./src, --stdin in.txt) mean what they meant here.
  const child = spawn(process.execPath, childArgv, { detached: true, stdio: ['ignore', 'ignore', 'ignore', 'pipe'], cwd: process.cwd() });
  const said = await new Promise<string>((resolve) => {
    let text = '';
    const fd3 = child.stdio[3] as NodeJS.ReadableStream;
    fd3.on('data', (c: Buffer) => (text += c.toString()));
    fd3.on('end', () => resolve(text));
    child.on('error', (e) => resolve(`error ${e.message}`));
  });
  child.unref();
  if (said.startsWith('ready')) return 0;
  // It ended before (or instead of) running: say why, as run would.
  const recorded = readResult(name);
  if (recorded) {
    const r = JSON.parse(recorded) as { verdict: string; setupFailure?: { message: string; hint: string } };
    if (r.verdict !== 'setup-error') return 0; // it ran, and is already done: cubicle wait prints how
    process.stderr.write(
      `cubicle: ${r.setupFailure?.message ?? 'the sandbox could not be set up'}\n  hint: ${r.setupFailure?.hint ?? ''}\n`,
    );
    return CliExit.sandboxFailed;
  }
  process.stderr.write(`cubicle: the detached supervisor ended without starting the sandbox${said ? `: ${said.trim()}` : ''}\n`);
  return CliExit.sandboxFailed;
}

/** The detached supervisor: runs the sandbox (output captured into the result), says "ready" on fd 3 once the
 *  payload runs, and leaves the result in the registry. */
export async function detachedMain(args: RunArgs): Promise<number> {
  const name = args.options.name!;
  let say: NodeJS.WritableStream | undefined;
  try {
    say = createWriteStreamOnFd3();
  } catch {
    say = undefined;
  }
  const options: SandboxOptions = { ...args.options, reject: false, stdin: 'ignore' };
  let result: Promise<unknown>;
  try {
    result = runSandboxed<SandboxOptions>(args.command, options);
  } catch (e) {
    say?.end(`error ${(e as Error).message}\n`);
    return CliExit.sandboxFailed;
  }
  const ended = await untilRunning(name, result);
  const entry = ended ? undefined : findSandbox(name);
  if (entry) updateEntry({ ...entry, detached: true });
  say?.end(ended ? 'ended\n' : 'ready\n');
  try {
    await result;
  } catch (e) {
    writeResult(name, JSON.stringify({ verdict: 'setup-error', setupFailure: { message: (e as Error).message, hint: '' } }) + '\n');
  }
  return 0;
}

/** fd 3: the pipe the starting CLI reads (a Socket writes to it without blocking this process). */
function createWriteStreamOnFd3(): NodeJS.WritableStream {
  const s = new Socket({ fd: 3, readable: false, writable: true });
  s.on('error', () => {}); // the starting CLI went away: nothing to tell
  return s;
}
