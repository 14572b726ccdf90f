// The cubicle command line: run, plan, doctor (the bin entry is ./main.ts).
import { closeSync, createWriteStream, ftruncateSync, writeSync } from 'node:fs';
import { openRegularForWrite } from '../safe-open.js';
import { constants } from 'node:os';
import { prepareRun } from '../api/prepare.js';
import { listPolicies, loadPolicy } from '../policy/load.js';
import { compileProfile, profileToText } from '../seccomp/compile.js';
import type { SandboxResult } from '../api/result.js';
import { runSandboxed, spawnSandboxed } from '../api/run.js';
import { SandboxError, SandboxOptionError } from '../errors.js';
import { formatPlan } from '../plan/ops.js';
import { parseRunArgs, RUN_USAGE, UsageError } from './args.js';

const EXIT_SANDBOX_FAILED = 125;
const EXIT_TIMEOUT = 124;

const USAGE = `Usage: cubicle <command> [options]

Commands:
  run [options] -- CMD [ARGS...]   run CMD in a fresh rootless sandbox
  plan [options] -- CMD [ARGS...]  print the resolved policy, options and setup plan without running anything
  policy list                      the shipped policies
  policy show NAME|PATH [--text]   a policy after extends, as JSON (--text: libseccomp's rendering of its filter)
  doctor                           check this host and print the fix for each problem
  help                             this help

Run 'cubicle run --help' for the run options.
`;

/** The result as plain JSON (stdout/stderr as strings); nothing from the sandbox is interpreted. */
export function resultToJson(r: SandboxResult, error?: SandboxError): Record<string, unknown> {
  const text = (v: string | Buffer | undefined): string | undefined => (v === undefined ? undefined : v.toString());
  return {
    command: r.command,
    verdict: r.verdict,
    exitCode: r.exitCode,
    signal: r.signal,
    timedOut: r.timedOut,
    isCanceled: r.isCanceled,
    failed: r.failed,
    stdout: text(r.stdout),
    stderr: text(r.stderr),
    usage: r.usage ?? null,
    setupMs: r.setup?.ms ?? null,
    namespaces: r.namespaces ?? null,
    setupFailure: r.setupFailure ?? null,
    limits: r.limits,
    seccomp: r.seccomp ?? null,
    violation: r.violation ?? null,
    ...(error ? { error: { code: error.code, message: error.message } } : {}),
  };
}

/** Maps a finished run to the CLI's exit code. */
export function exitCodeFor(r: SandboxResult): number {
  if (r.verdict === 'setup-error') return EXIT_SANDBOX_FAILED;
  if (r.verdict === 'cpu-time-limit' || r.verdict === 'wall-time-limit') return EXIT_TIMEOUT; // even if it finished within the grace
  if (LIMIT_VERDICTS.has(r.verdict) && r.exitCode === 0) return 1; // over a limit is never success
  if (r.verdict === 'seccomp-violation') return 128 + signalNumber('SIGSYS'); // as if the kernel had killed it
  if (r.timedOut) return EXIT_TIMEOUT;
  if (r.exitCode !== null) return r.exitCode;
  if (r.signal) return 128 + signalNumber(r.signal);
  return EXIT_SANDBOX_FAILED;
}

const signalNumber = (name: NodeJS.Signals): number => (constants.signals as Record<string, number>)[name] ?? 0;

async function cmdRun(argv: string[]): Promise<number> {
  const args = parseRunArgs(argv);
  if (args.help) {
    process.stdout.write(RUN_USAGE);
    return 0;
  }
  // Files are opened before the run (no symlink, regular files): the sandbox cannot redirect where they go.
  const meta = { fd: args.metaFile !== undefined ? openOutputFile('--meta', args.metaFile) : undefined };
  try {
    return await runWithMeta(args, meta);
  } catch (e) {
    // isolate writes status:XX when the sandbox itself fails; a judge reading the meta file sees why.
    if (meta.fd !== undefined) writeAndClose(meta.fd, `status:XX\nmessage:${String((e as Error).message).replace(/\n/g, ' ')}\nverdict:setup-error\n`);
    throw e;
  }
}

/** Writes the meta file once; afterwards the fd is gone from `meta` (an error later must not touch it). */
function writeMeta(meta: { fd: number | undefined }, r: SandboxResult): void {
  if (meta.fd === undefined) return;
  const fd = meta.fd;
  meta.fd = undefined;
  writeAndClose(fd, formatMeta(r));
}

async function runWithMeta(args: ReturnType<typeof parseRunArgs>, meta: { fd: number | undefined }): Promise<number> {
  const stdin = args.options.inputFile !== undefined ? {} : { stdin: 'inherit' as const };
  if (args.json) {
    if (args.stdoutFile !== undefined || args.stderrFile !== undefined) throw new UsageError('--stdout/--stderr cannot be combined with --json, which captures the output into the JSON object');
    const r = await runSandboxed(args.command, { ...args.options, reject: false, ...stdin });
    process.stdout.write(JSON.stringify(resultToJson(r)) + '\n');
    writeMeta(meta, r);
    if (r.verdict === 'setup-error') process.stderr.write(`cubicle: ${describeFailure(r)}\n`);
    return r.verdict === 'setup-error' ? EXIT_SANDBOX_FAILED : 0;
  }
  const resultFd = args.resultFile !== undefined ? openOutputFile('--result', args.resultFile) : undefined;
  const outFd = args.stdoutFile !== undefined ? openOutputFile('--stdout', args.stdoutFile) : undefined;
  const errFd = args.stderrFile !== undefined ? openOutputFile('--stderr', args.stderrFile) : undefined;
  // With an output limit or a file, output goes through this process (counted); otherwise straight through.
  const limited = args.options.limits?.outputLimit !== undefined;
  const mode = (fd: number | undefined): 'pipe' | 'inherit' => (fd !== undefined || limited ? 'pipe' : 'inherit');
  const proc = spawnSandboxed(args.command, { ...args.options, reject: false, ...stdin, stdout: mode(outFd), stderr: mode(errFd) });
  const drained: Promise<void>[] = [];
  const route = (src: NodeJS.ReadableStream | null, fd: number | undefined, fallback: NodeJS.WritableStream): void => {
    if (!src) return;
    const dest = fd !== undefined ? createWriteStream('', { fd, autoClose: true }) : fallback;
    src.pipe(dest, { end: fd !== undefined });
    drained.push(new Promise((r) => (fd !== undefined ? (dest as NodeJS.EventEmitter).on('close', () => r()) : src.on('end', () => r()))));
  };
  route(proc.stdout, outFd, process.stdout);
  route(proc.stderr, errFd, process.stderr);
  let interrupts = 0;
  const onSignal = (): void => proc.kill(++interrupts > 1 ? 'SIGKILL' : 'SIGTERM');
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  process.on('SIGHUP', onSignal);
  const r = await proc.result;
  await Promise.all(drained);
  process.off('SIGINT', onSignal);
  process.off('SIGTERM', onSignal);
  process.off('SIGHUP', onSignal);
  if (resultFd !== undefined) writeAndClose(resultFd, JSON.stringify(resultToJson(r), null, 2) + '\n');
  writeMeta(meta, r);
  if (LIMIT_VERDICTS.has(r.verdict)) process.stderr.write(`cubicle: ${r.verdict}: ${describeLimit(r)}\n`);
  if (r.verdict === 'setup-error') process.stderr.write(`cubicle: ${describeFailure(r)}\n`);
  if (r.verdict === 'seccomp-violation') process.stderr.write(`cubicle: ${describeViolation(r)}\n`);
  if (r.seccomp?.mode === 'log') process.stderr.write(`cubicle: seccomp log (policy ${r.seccomp.policy}): ${r.seccomp.violations.length ? r.seccomp.violations.map((v) => v.syscall ?? `nr ${v.nr}`).join(', ') : 'nothing would have been denied'}\n`);
  if (r.timedOut && !LIMIT_VERDICTS.has(r.verdict)) process.stderr.write(`cubicle: timed out; the sandbox was killed\n`);
  return exitCodeFor(r);
}

function openOutputFile(flag: string, path: string): number {
  try {
    return openRegularForWrite(path);
  } catch (e) {
    throw new UsageError(`${flag}: ${(e as Error).message}`);
  }
}

/** Replaces the file's whole content: whatever a sandbox wrote into it meanwhile is gone. */
function writeAndClose(fd: number, text: string): void {
  ftruncateSync(fd, 0);
  writeSync(fd, text, 0);
  closeSync(fd);
}

const LIMIT_VERDICTS = new Set(['cpu-time-limit', 'wall-time-limit', 'memory-limit', 'output-limit', 'process-limit', 'file-size-limit']);

function describeLimit(r: SandboxResult): string {
  const l = r.limits;
  const u = r.usage;
  switch (r.verdict) {
    case 'cpu-time-limit':
      return `CPU time ${u?.cpuMs.toFixed(0)} ms passed the limit of ${l.cpuTime?.value} ms`;
    case 'wall-time-limit':
      return `wall time ${u?.wallMs.toFixed(0)} ms passed the limit of ${l.wallTime?.value} ms`;
    case 'memory-limit':
      return `memory passed the limit of ${l.memory?.value} bytes (peak ${u?.peakMemoryBytes ?? '?'})`;
    case 'process-limit':
      return `more than ${l.processes?.value} processes and threads`;
    case 'output-limit':
      return `an output stream passed ${l.outputLimit?.value} bytes`;
    default:
      return `a file passed ${l.fileSize?.value} bytes`;
  }
}

/** isolate's meta file: key:value lines a judge built on isolate already parses. */
export function formatMeta(r: SandboxResult): string {
  const u = r.usage;
  const lines: [string, string | number][] = [];
  if (u) {
    lines.push(['time', (u.cpuMs / 1000).toFixed(3)], ['time-wall', (u.wallMs / 1000).toFixed(3)], ['max-rss', Math.round(u.maxRssBytes / 1024)]);
    if (u.peakMemoryBytes !== undefined) lines.push(['cg-mem', Math.round(u.peakMemoryBytes / 1024)]);
    lines.push(['csw-voluntary', u.voluntaryContextSwitches], ['csw-forced', u.involuntaryContextSwitches]);
  }
  if (r.exitCode !== null) lines.push(['exitcode', r.exitCode]);
  if (r.signal) lines.push(['exitsig', constants.signals[r.signal] ?? 0]);
  const killed = LIMIT_VERDICTS.has(r.verdict) || r.verdict === 'seccomp-violation' || r.verdict === 'canceled';
  if (killed) lines.push(['killed', 1]);
  if (r.verdict === 'memory-limit') lines.push(['cg-oom-killed', 1]);
  const status: Record<string, string> = { 'nonzero-exit': 'RE', signaled: 'SG', 'cpu-time-limit': 'TO', 'wall-time-limit': 'TO', 'memory-limit': 'SG', 'output-limit': 'SG', 'process-limit': 'SG', 'file-size-limit': 'SG', 'seccomp-violation': 'SG', canceled: 'SG', 'setup-error': 'XX' };
  if (status[r.verdict]) lines.push(['status', status[r.verdict]!]);
  const message: Record<string, string> = {
    'nonzero-exit': `Exited with error status ${r.exitCode}`,
    signaled: `Caught fatal signal ${r.signal ? constants.signals[r.signal] : '?'}`,
    'cpu-time-limit': 'Time limit exceeded',
    'wall-time-limit': 'Time limit exceeded (wall clock)',
    'memory-limit': 'Memory limit exceeded',
    'output-limit': 'Output limit exceeded',
    'process-limit': 'Process limit exceeded',
    'file-size-limit': 'File size limit exceeded',
    'seccomp-violation': `Forbidden syscall ${r.violation?.syscall ?? '(killed by SIGSYS)'}`,
    canceled: 'Canceled',
    'setup-error': `Sandbox setup failed: ${r.setupFailure?.message ?? ''}`,
  };
  if (message[r.verdict]) lines.push(['message', message[r.verdict]!.replace(/\n/g, ' ')]);
  lines.push(['verdict', r.verdict]);
  return lines.map(([k, v]) => `${k}:${v}`).join('\n') + '\n';
}

function describeViolation(r: SandboxResult): string {
  const v = r.violation!;
  return v.syscall ? `killed by the seccomp policy "${r.seccomp?.policy}": ${v.syscall} (nr ${v.nr}, ${v.arch}) is not allowed` : `killed by the kernel's seccomp action (SIGSYS): a foreign ABI (i386 int 0x80, x32) or a kill rule`;
}

function describeFailure(r: SandboxResult): string {
  const f = r.setupFailure;
  if (!f) return 'the sandbox failed';
  const where = [f.stage, f.step].filter(Boolean).join(', ');
  const sys = f.syscall ? ` ${f.syscall}: ${f.errnoName ?? ''}` : '';
  return `sandbox setup failed (${where}):${sys} ${f.message}\n  hint: ${f.hint}`;
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
      ? `# seccomp: ${p.filter.bpf.length / 8} BPF instructions, ${p.options.seccompLog ? 'log' : 'enforce'} mode, notifications: ${p.filter.notify}, compiled in ${p.filter.compileMs.toFixed(1)} ms${p.filter.unknownSyscalls.length ? `; unknown here (ignored): ${p.filter.unknownSyscalls.join(' ')}` : ''}`
      : p.failure
        ? `# seccomp: cannot be applied: ${p.failure.message}`
        : '# seccomp: none',
    `# options (call > policy > defaults): ${JSON.stringify(shown)}`,
    formatPlan(p.plan),
  ];
  process.stdout.write(out.join('\n') + '\n');
  return 0;
}

function cmdPolicy(argv: string[]): number {
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
    } else process.stdout.write(JSON.stringify({ name: policy.name, chain: policy.chain, description: policy.description, options: policy.options, seccomp: policy.seccomp }, null, 2) + '\n');
    return 0;
  }
  throw new UsageError('usage: cubicle policy list | cubicle policy show NAME|PATH [--text]');
}

async function cmdDoctor(): Promise<number> {
  const doctor = await import('../doctor/index.js');
  const checks = await doctor.runDoctor();
  process.stdout.write(doctor.formatDoctor(checks) + '\n');
  return doctor.doctorExitCode(checks);
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
      case 'doctor':
        return await cmdDoctor();
      case undefined:
      case 'help':
      case '--help':
      case '-h':
        process.stdout.write(USAGE);
        return cmd === undefined ? 2 : 0;
      default:
        process.stderr.write(`cubicle: unknown command "${cmd}"\n\n${USAGE}`);
        return 2;
    }
  } catch (e) {
    if (e instanceof UsageError || e instanceof SandboxOptionError) {
      process.stderr.write(`cubicle: ${e.message}\n`);
      return e instanceof UsageError ? 2 : EXIT_SANDBOX_FAILED;
    }
    process.stderr.write(`cubicle: ${(e as Error).stack ?? String(e)}\n`);
    return EXIT_SANDBOX_FAILED;
  }
}

