// The cubicle command line: run, plan, doctor (the bin entry is ./main.cts).
import { closeSync, writeSync } from 'node:fs';
import { prepareRun } from '../api/prepare.js';
import { runSandboxed } from '../api/run.js';
import { isCubicleError, SandboxHostError, SandboxOptionError } from '../errors.js';
import { cliExitCode, CliExit, cliReport, isolateMetaForError, resultJsonChunks } from '../outcome/render.js';
import { formatPlan } from '../plan/ops.js';
import { listPolicies, loadPolicy } from '../policy/load.js';
import { openRegularForWrite } from '../safe-open.js';
import { compileProfile, profileToText } from '../seccomp/compile.js';
import type { SandboxOptions, SandboxResult } from '../types.js';
import { DEV_NULL, parseRunArgs, runFlagOf, RUN_USAGE, UsageError } from './args.js';
import { openOutputFile, runPassthrough, writeAndClose, writeMeta, type OutputTarget } from './passthrough.js';
import { asUsageError, didYouMean } from './usage.js';

const USAGE = `Usage: cubicle <command> [options]

Commands:
  run [options] -- CMD [ARGS...]   run CMD in a fresh rootless sandbox
  plan [options] -- CMD [ARGS...]  print the resolved policy, options and setup plan without running anything
  image build|ls|inspect|rm|gc     root filesystems from tarballs and directories (cubicle image help)
  network create|ls|rm             private networks between sandboxes, rootless (cubicle network help)
  policy list                      the shipped policies
  policy show NAME|PATH [--text]   a policy after extends, as JSON (--text: libseccomp's rendering of its filter)
  doctor                           check this host and print the fix for each problem
  isolate --init|--run|--cleanup   an isolate-compatible box (for judges built on isolate)
  serve [--listen HOST:PORT]       a go-judge-compatible judge service over HTTP (cubicle serve --help)
  worker --redis URL --queue NAME  a judge worker consuming a BullMQ queue (cubicle worker --help)
  ps [--json]                      your running named sandboxes (run --name NAME [--detach])
  inspect NAME                     a named sandbox's namespaces, pids and limits
  exec NAME -- CMD [ARGS...]       run CMD inside a running named sandbox
  stop NAME, wait NAME             end it (SIGTERM, then SIGKILL); wait for its end and print its result
  help, --help                     this help; 'cubicle COMMAND --help' for a command's options
  --version                        the version

Exit codes: the payload's own (run), 128+N for signal N, 124 for a time limit, 125 when the sandbox
itself failed, 2 for a usage error (an unknown flag or a value that is not valid).
`;

const POLICY_USAGE = `Usage: cubicle policy list
       cubicle policy show NAME|PATH [--text]

list   the shipped policies and what each is for
show   a policy after its extends chain, as JSON; --text: libseccomp's rendering of its compiled filter
`;

const DOCTOR_USAGE = `Usage: cubicle doctor

Checks this host (user namespaces, AppArmor, sysctls, libseccomp, cgroups, the helper) with real
sandbox runs, and prints the exact fix for each problem. Exit code 0 when every check passed, 1 otherwise.
`;

const wantsHelp = (argv: readonly string[]): boolean => {
  const dash = argv.indexOf('--');
  return (dash < 0 ? argv : argv.slice(0, dash)).some((a) => a === '--help' || a === '-h');
};

async function cmdRun(argv: string[]): Promise<number> {
  const args = parseRunArgs(argv);
  if (args.help) {
    process.stdout.write(RUN_USAGE);
    return 0;
  }
  if (args.detach) return (await import('./live.js')).runDetached(argv, args);
  // Files are opened before the run (no symlink, regular files): the sandbox cannot redirect where they go.
  const meta = { fd: args.metaFile !== undefined ? openOutputFile('--meta', args.metaFile) : undefined };
  try {
    return await runWithMeta(args, meta);
  } catch (e) {
    // isolate writes status:XX when the sandbox itself fails; a judge reading the meta file sees why.
    if (meta.fd !== undefined) writeAndClose(meta.fd, isolateMetaForError(String((e as Error).message)));
    throw e;
  }
}

/** -t relays the caller's terminal: its input and output cannot also be files or captured. */
function checkTerminalFlags(args: ReturnType<typeof parseRunArgs>): void {
  if (!args.tty) return;
  if (args.json)
    throw new UsageError('--json captures the output into one JSON object; it cannot be combined with -t, which relays your terminal');
  if (args.options.inputFile !== undefined || args.stdinNull)
    throw new UsageError("--stdin cannot be combined with -t: what you type is the terminal's input (drop -t to read a file)");
  for (const [flag, given] of [
    ['--stdout', args.stdoutFile],
    ['--stderr', args.stderrFile],
  ] as const)
    if (given !== undefined)
      throw new UsageError(
        `${flag} cannot be combined with -t: the command's output, stderr included, is what the terminal shows ` +
          '(drop -t to send it to a file)',
      );
}

async function runWithMeta(args: ReturnType<typeof parseRunArgs>, meta: { fd: number | undefined }): Promise<number> {
  checkTerminalFlags(args);
  const stdin = args.options.inputFile !== undefined || args.stdinNull ? {} : { stdin: 'inherit' as const };
  if (args.json) {
    if (args.stdoutFile !== undefined || args.stderrFile !== undefined)
      throw new UsageError('--stdout/--stderr cannot be combined with --json, which captures the output into the JSON object');
    const r = await runSandboxed<SandboxOptions>(args.command, { ...args.options, reject: false, ...stdin });
    await writeJson(r);
    writeMeta(meta, r);
    writeCopyOut(args.copyOutTo, r);
    if (r.verdict === 'setup-error') for (const line of cliReport(r)) process.stderr.write(`${line}\n`);
    return r.verdict === 'setup-error' ? CliExit.sandboxFailed : 0;
  }
  const resultFd = args.resultFile !== undefined ? openOutputFile('--result', args.resultFile) : undefined;
  const target = (flag: string, path: string | undefined): OutputTarget =>
    path === undefined ? { kind: 'inherit' } : path === DEV_NULL ? { kind: 'null' } : { kind: 'file', fd: openOutputFile(flag, path) };
  const stdout = target('--stdout', args.stdoutFile);
  const stderr = target('--stderr', args.stderrFile);
  const r = args.tty
    ? await (await import('./terminal.js')).runInTerminal(args.command, args.options)
    : await runPassthrough({ command: args.command, options: { ...args.options, ...stdin }, stdout, stderr });
  if (resultFd !== undefined) writeAndClose(resultFd, resultJsonChunks(r, 2));
  writeMeta(meta, r);
  writeCopyOut(args.copyOutTo, r);
  for (const line of cliReport(r)) process.stderr.write(`${line}\n`);
  return cliExitCode(r);
}

/** --copy-out: each file that came out goes to its host path (a regular file, never through a symlink, opened only
 *  now that the run is over); each refused one is named on stderr with why. */
function writeCopyOut(to: Map<string, string>, r: SandboxResult): void {
  for (const [name, dest] of to) {
    const data = r.files?.[name];
    if (!data) {
      process.stderr.write(`cubicle: --copy-out ${name}: ${r.fileErrors?.[name] ?? 'not collected'}\n`);
      continue;
    }
    let fd: number;
    try {
      fd = openRegularForWrite(dest);
    } catch (e) {
      process.stderr.write(`cubicle: --copy-out ${name}: ${(e as Error).message}\n`);
      continue;
    }
    for (let done = 0; done < data.length;) done += writeSync(fd, data, done, data.length - done);
    closeSync(fd);
  }
}

/** Prints the result as one JSON line, piece by piece with backpressure (it may be longer than any one string). */
/** Writes the result as JSON to stdout, piece by piece. A reader that goes away (EPIPE: `| head`) ends the
 *  writing, not the process: the meta file is still written. */
async function writeJson(r: SandboxResult): Promise<void> {
  let gone = false;
  process.stdout.on('error', () => (gone = true)); // stays attached: a late EPIPE must not throw either
  for (const piece of resultJsonChunks(r)) {
    if (gone) return;
    if (!process.stdout.write(piece))
      await new Promise((resolve) => {
        process.stdout.once('drain', resolve);
        process.stdout.once('error', resolve);
      });
  }
}

function cmdPlan(argv: string[]): number {
  const args = parseRunArgs(argv);
  if (args.help) {
    process.stdout.write(RUN_USAGE.replace('cubicle run', 'cubicle plan'));
    return 0;
  }
  const p = prepareRun(args.command, args.options);
  const { cancelSignal: _c, input: _i, ...shown } = p.options;
  const out = [
    `# policy: ${p.policy.chain.join(' <- ')}${p.policy.description ? ` (${p.policy.description.split('. ')[0]})` : ''}`,
    p.filter
      ? `# seccomp: ${p.filter.bpf.length / 8} BPF instructions, ${p.options.seccompLog ? 'log' : 'enforce'} mode, ` +
        `notifications: ${p.filter.notify}, compiled in ${p.filter.compileMs.toFixed(1)} ms` +
        `${p.filter.unknownSyscalls.length ? `; unknown here (ignored): ${p.filter.unknownSyscalls.join(' ')}` : ''}`
      : p.supervise.failure
        ? `# seccomp: cannot be applied: ${p.supervise.failure.message}`
        : '# seccomp: none',
    `# options (call > policy > defaults): ${JSON.stringify(shown)}`,
    formatPlan(p.plan),
  ];
  process.stdout.write(out.join('\n') + '\n');
  return 0;
}

function cmdPolicy(argv: string[]): number {
  if (wantsHelp(argv)) {
    process.stdout.write(POLICY_USAGE);
    return 0;
  }
  const [sub, ...rest] = argv;
  if (sub === 'list') {
    for (const { name, description } of listPolicies()) process.stdout.write(`${name.padEnd(12)} ${description}\n`);
    return 0;
  }
  if (sub === 'show' && rest.length >= 1) {
    const text = rest.includes('--text');
    const spec = rest.find((a) => a !== '--text')!;
    const policy = loadPolicy(spec);
    if (text) {
      if (!policy.seccomp) process.stdout.write(`# policy ${policy.name} has no seccomp filter\n`);
      else {
        process.stdout.write(profileToText(policy.seccomp));
        const unknown = compileProfile(policy.seccomp, 'enforce').unknownSyscalls;
        if (unknown.length) process.stdout.write(`# names libseccomp does not know on this architecture (ignored): ${unknown.join(' ')}\n`);
      }
    } else
      process.stdout.write(
        JSON.stringify(
          { name: policy.name, chain: policy.chain, description: policy.description, options: policy.options, seccomp: policy.seccomp },
          null,
          2,
        ) + '\n',
      );
    return 0;
  }
  const flag = rest.find((a) => a.startsWith('-') && a !== '--text');
  if (sub === 'show' && flag) throw new UsageError(`unknown option ${flag} for policy show (known: --text)`);
  throw new UsageError('usage: cubicle policy list | cubicle policy show NAME|PATH [--text]');
}

async function cmdDoctor(argv: string[]): Promise<number> {
  if (wantsHelp(argv)) {
    process.stdout.write(DOCTOR_USAGE);
    return 0;
  }
  if (argv.length) throw new UsageError(`doctor takes no arguments, got "${argv[0]}"`);
  const { runDoctor } = await import('./doctor-probes.js');
  const { formatDoctor, doctorExitCode } = await import('../doctor/index.js');
  const checks = await runDoctor();
  process.stdout.write(formatDoctor(checks) + '\n');
  return doctorExitCode(checks);
}

const COMMANDS = [
  'run',
  'plan',
  'policy',
  'image',
  'network',
  'doctor',
  'isolate',
  'serve',
  'worker',
  'ps',
  'inspect',
  'exec',
  'stop',
  'wait',
  'help',
  'version',
];

/** ps, inspect, exec, stop, wait and the detached supervisor: loaded only when used. */
async function cmdLive(cmd: string, argv: string[]): Promise<number> {
  const live = await import('./live.js');
  if (wantsHelp(argv) && cmd !== 'exec') {
    process.stdout.write(live.LIVE_USAGE);
    return 0;
  }
  switch (cmd) {
    case 'ps':
      return live.cmdPs(argv);
    case 'inspect':
      return live.cmdInspect(argv);
    case 'exec':
      return live.cmdExec(argv);
    case 'stop':
      return live.cmdStop(argv);
    case 'wait':
      return live.cmdWait(argv);
    default:
      return live.detachedMain(parseRunArgs(argv));
  }
}

/** The package version (package.json, read only when asked). */
async function cubicleVersion(): Promise<string> {
  const { packageVersion } = await import('../native/stamp.js');
  return packageVersion();
}

/** Entry point; returns the process exit code. */
export async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  try {
    switch (cmd) {
      case 'run':
        return await cmdRun(rest);
      case 'plan':
        return cmdPlan(rest);
      case 'policy':
        return cmdPolicy(rest);
      case 'image':
        return await (await import('./image.js')).cmdImage(rest);
      case 'network':
        return await (await import('./network.js')).cmdNetwork(rest);
      case 'doctor':
        return await cmdDoctor(rest);
      case 'ps':
      case 'inspect':
      case 'exec':
      case 'stop':
      case 'wait':
      case '__detached-run':
        return await cmdLive(cmd, rest);
      case 'isolate': {
        const { isolateMain } = await import('./isolate.js');
        return await isolateMain(rest);
      }
      case 'serve':
        return await (await import('./serve.js')).cmdServe(rest);
      case 'worker':
        return await (await import('./serve.js')).cmdWorker(rest);
      case '--version':
      case '-V':
      case 'version':
        process.stdout.write(`cubicle ${await cubicleVersion()}\n`);
        return 0;
      case undefined:
      case 'help':
      case '--help':
      case '-h':
        process.stdout.write(USAGE);
        return cmd === undefined ? 2 : 0;
      default: {
        const guess = didYouMean(cmd, COMMANDS);
        process.stderr.write(`cubicle: unknown command "${cmd}"${guess ? `; did you mean ${guess.slice(2)}?` : ''}\n\n${USAGE}`);
        return CliExit.usage;
      }
    }
  } catch (caught) {
    const e = cmd === 'run' || cmd === 'plan' ? asUsageError(caught, runFlagOf) : caught;
    if (e instanceof UsageError) {
      process.stderr.write(`cubicle: ${e.message}\n`);
      return CliExit.usage;
    }
    if (e instanceof SandboxOptionError || e instanceof SandboxHostError || isCubicleError(e)) {
      process.stderr.write(`cubicle: ${e.message}\n`);
      return CliExit.sandboxFailed;
    }
    process.stderr.write(`cubicle: internal error (a bug in cubicle; please report it): ${(e as Error).stack ?? String(e)}\n`);
    return CliExit.sandboxFailed;
  }
}
