// Every way a judged result is told: the library's error (code and message), the CLI's exit code, stderr lines
// and JSON, and isolate's meta file. The one place these texts are written; pure.
import { constants } from 'node:os';
import { ErrorCode, SandboxError, type ErrorCodeValue } from '../errors.js';
import { VERDICTS, type SandboxResult, type SetupFailure, type Verdict } from '../types.js';

/** CLI exit codes of the sandbox itself (a payload's own code passes through). */
export const CliExit = { sandboxFailed: 125, timeout: 124, usage: 2 } as const;

/** Verdicts that mean a limit was passed. */
export const LIMIT_VERDICTS: ReadonlySet<Verdict> = new Set(VERDICTS.filter((v) => v.endsWith('-limit')));

const signalNumber = (name: NodeJS.Signals): number => (constants.signals as Record<string, number>)[name] ?? 0;
const MiB = 1 << 20;
const known = (n: number | undefined): n is number => n !== undefined && Number.isFinite(n);
const bytes = (n: number | undefined): string | undefined =>
  !known(n) ? undefined : n >= MiB ? `${(n / MiB).toFixed(n % MiB ? 1 : 0)} MiB` : `${n} bytes`;
const ms = (n: number | undefined): string | undefined => (known(n) ? `${n.toFixed(0)} ms` : undefined);
const quote = (argv: readonly string[]): string => argv.map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : JSON.stringify(a))).join(' ');

/** "sandbox setup failed (stage, step): syscall: ERRNO message" — the hint is separate. */
export function describeFailure(f: SetupFailure): string {
  const where = [f.stage, f.step].filter(Boolean).join(', ');
  const sys = f.syscall ? `${f.syscall}: ${f.errnoName ?? ''} ` : '';
  return `sandbox setup failed (${where}): ${sys}${f.message}`;
}

/** " of <figure>" / " (<label> <figure>)": a figure that is not known is left out, never shown as undefined or "?". */
const of = (figure: string | undefined): string => (figure === undefined ? '' : ` of ${figure}`);
const aside = (label: string, figure: string | undefined): string => (figure === undefined ? '' : ` (${label} ${figure})`);

/** What ended the run, as a phrase that follows "Command" (or the CLI's "cubicle: <verdict>:"). */
export function describeVerdict(r: SandboxResult): string {
  const l = r.limits;
  const u = r.usage;
  switch (r.verdict) {
    case 'ok':
      return 'succeeded';
    case 'nonzero-exit':
      return r.exitCode === null ? 'failed' : `failed with exit code ${r.exitCode}`;
    case 'signaled':
      return r.signal ? `was killed with ${r.signal}` : 'was killed';
    case 'cpu-time-limit':
      return `exceeded the CPU-time limit${of(ms(l.cpuTime?.value))}${aside('used', ms(u?.cpuMs))}`;
    case 'wall-time-limit':
      return `exceeded the wall-time limit${of(ms(l.wallTime?.value))}${aside('ran', ms(u?.wallMs))}`;
    case 'memory-limit':
      return `exceeded the memory limit${of(bytes(l.memory?.value))}${u?.peakMemoryBytes ? aside('peak', bytes(u.peakMemoryBytes)) : ''}`;
    case 'process-limit':
      return `exceeded the process limit${of(l.processes?.value?.toString())} (processes and threads at once)`;
    case 'output-limit':
      return l.outputLimit?.mechanism === 'maxBuffer'
        ? `exceeded maxBuffer, the captured output kept per stream (${bytes(l.outputLimit.value)}; that much was kept)`
        : `exceeded the output limit${of(bytes(l.outputLimit?.value))}${l.outputLimit ? ' per stream' : ''}`;
    case 'file-size-limit':
      return `exceeded the file-size limit${of(bytes(l.fileSize?.value))}`;
    case 'canceled':
      return 'was canceled';
    case 'seccomp-violation': {
      const v = r.violation;
      const what = v?.syscall
        ? `calling ${v.syscall} (nr ${v.nr}, ${v.arch})`
        : 'a syscall the kernel refused outright (SIGSYS: a foreign ABI such as i386 int 0x80 or x32, or a kill action)';
      return `was killed by the seccomp policy${r.seccomp ? ` "${r.seccomp.policy}"` : ''} for ${what}`;
    }
    case 'setup-error':
      return r.setupFailure ? describeFailure(r.setupFailure) : 'sandbox setup failed';
  }
}

/** The stable code of a failed run's error. */
export function errorCodeFor(r: SandboxResult): ErrorCodeValue {
  switch (r.verdict) {
    case 'nonzero-exit':
      return ErrorCode.nonzeroExit;
    case 'signaled':
      return ErrorCode.signaled;
    case 'wall-time-limit':
      return ErrorCode.timeout;
    case 'canceled':
      return ErrorCode.canceled;
    case 'seccomp-violation':
      return ErrorCode.seccompViolation;
    case 'setup-error': {
      const stage = r.setupFailure?.stage;
      return stage === 'helper' ? ErrorCode.helper : stage === 'seccomp' ? ErrorCode.seccompUnavailable : ErrorCode.setup;
    }
    default:
      return ErrorCode.limit;
  }
}

/** Captured output kept in an error's message, per stream (the whole of it stays in the error's stderr/stdout). */
export const MESSAGE_OUTPUT_MAX = 8192;

/** A captured stream as the end of an error message: trimmed, at most MESSAGE_OUTPUT_MAX characters, the cut said. */
function outputForMessage(v: string | Buffer | undefined): string | undefined {
  if (v === undefined) return undefined;
  const text = (typeof v === 'string' ? v : v.toString('utf8', 0, Math.min(v.length, MESSAGE_OUTPUT_MAX * 4))).trim();
  if (text === '') return undefined;
  return text.length > MESSAGE_OUTPUT_MAX || v.length > MESSAGE_OUTPUT_MAX * 4
    ? `${text.slice(0, MESSAGE_OUTPUT_MAX)}\n[... output truncated; the whole of it is in the error's stderr/stdout]`
    : text;
}

/** The error a failed run rejects with: the result itself, with its code, a one-line `shortMessage`, and a
 *  `message` that ends with the captured stderr and stdout (bounded), so the cause shows where the error does. */
export function toSandboxError(r: SandboxResult, cause?: unknown): SandboxError {
  const f = r.setupFailure;
  const shortMessage =
    r.verdict === 'setup-error' && f
      ? `Sandbox ${describeFailure(f).slice('sandbox '.length)}. Hint: ${f.hint}`
      : `Command ${describeVerdict(r)}: ${quote(r.command)}`;
  const output = [outputForMessage(r.stderr), outputForMessage(r.stdout)].filter((o) => o !== undefined);
  const message = [shortMessage, ...output].join('\n\n');
  return new SandboxError(message, errorCodeFor(r), r, { shortMessage, ...(cause === undefined ? {} : { cause }) });
}

/** The CLI's exit code: the payload's, 128+N for a signal, 124 for time limits, 125 when the sandbox failed. */
export function cliExitCode(r: SandboxResult): number {
  if (r.verdict === 'setup-error') return CliExit.sandboxFailed;
  if (r.verdict === 'cpu-time-limit' || r.verdict === 'wall-time-limit') return CliExit.timeout; // even if it finished within the grace
  if (LIMIT_VERDICTS.has(r.verdict) && r.exitCode === 0) return 1; // over a limit is never success
  if (r.verdict === 'seccomp-violation') return 128 + signalNumber('SIGSYS'); // as if the kernel had killed it
  if (r.timedOut) return CliExit.timeout;
  if (r.exitCode !== null) return r.exitCode;
  if (r.signal) return 128 + signalNumber(r.signal);
  return CliExit.sandboxFailed;
}

/** What the CLI prints on stderr about how the run ended (nothing for a plain exit). */
export function cliReport(r: SandboxResult): string[] {
  const lines: string[] = [];
  if (LIMIT_VERDICTS.has(r.verdict) || r.verdict === 'seccomp-violation') lines.push(`cubicle: ${r.verdict}: ${describeVerdict(r)}`);
  if (r.verdict === 'setup-error') lines.push(`cubicle: ${describeVerdict(r)}${r.setupFailure ? `\n  hint: ${r.setupFailure.hint}` : ''}`);
  if (r.seccomp?.mode === 'log') {
    const seen = r.seccomp.violations.map((v) => v.syscall ?? `nr ${v.nr}`).join(', ');
    lines.push(`cubicle: seccomp log (policy ${r.seccomp.policy}): ${seen || 'nothing would have been denied'}`);
  }
  if (r.verdict === 'canceled') lines.push('cubicle: canceled; the sandbox was killed');
  else if (r.timedOut && !LIMIT_VERDICTS.has(r.verdict)) lines.push('cubicle: timed out; the sandbox was killed');
  return lines;
}

/** The result as plain JSON (stdout/stderr as strings); nothing from the sandbox is interpreted. */
export function resultToJson(r: SandboxResult): Record<string, unknown> {
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
    hostIds: r.hostIds,
    // Copied-out files by size (their bytes go to files: --copy-out NAME:HOSTPATH), and why any was refused.
    files: r.files ? Object.fromEntries(Object.entries(r.files).map(([k, v]) => [k, { bytes: v.length }])) : undefined,
    fileErrors: r.fileErrors,
  };
}

/** Characters of captured output escaped at a time (its JSON may be six times longer: a NUL is "\\u0000"). */
const JSON_SLICE = 1 << 20;

/**
 * resultToJson as JSON text, in pieces: the whole text can be longer than the longest string a JavaScript engine
 * makes, so each captured stream is escaped slice by slice (never splitting a surrogate pair). `indent` 0 gives
 * one line (--json), 2 the --result file's layout.
 */
export function* resultJsonChunks(r: SandboxResult, indent: 0 | 2 = 0): Generator<string> {
  const nl = indent ? '\n  ' : '';
  const sep = indent ? ': ' : ':';
  let first = true;
  yield '{';
  for (const [key, value] of Object.entries(resultToJson(r))) {
    if (value === undefined) continue;
    yield `${first ? '' : ','}${nl}${JSON.stringify(key)}${sep}`;
    first = false;
    if (typeof value === 'string' && (key === 'stdout' || key === 'stderr')) {
      yield '"';
      for (let at = 0; at < value.length;) {
        let end = Math.min(value.length, at + JSON_SLICE);
        const last = value.charCodeAt(end - 1);
        if (end < value.length && last >= 0xd800 && last <= 0xdbff) end -= 1;
        yield JSON.stringify(value.slice(at, end)).slice(1, -1);
        at = end;
      }
      yield '"';
    } else yield indent ? JSON.stringify(value, null, indent).replace(/\n/g, '\n  ') : JSON.stringify(value);
  }
  yield `${indent ? '\n' : ''}}\n`;
}

const META_STATUS: Partial<Record<Verdict, string>> = {
  'nonzero-exit': 'RE',
  signaled: 'SG',
  'cpu-time-limit': 'TO',
  'wall-time-limit': 'TO',
  'memory-limit': 'SG',
  'output-limit': 'SG',
  'process-limit': 'SG',
  'file-size-limit': 'SG',
  'seccomp-violation': 'SG',
  canceled: 'SG',
  'setup-error': 'XX',
};

function metaMessage(r: SandboxResult): string | undefined {
  switch (r.verdict) {
    case 'ok':
      return undefined;
    case 'nonzero-exit':
      return r.exitCode === null ? 'Exited with an error' : `Exited with error status ${r.exitCode}`;
    case 'signaled':
      return r.signal ? `Caught fatal signal ${signalNumber(r.signal)}` : 'Killed';
    case 'cpu-time-limit':
      return 'Time limit exceeded';
    case 'wall-time-limit':
      return 'Time limit exceeded (wall clock)';
    case 'memory-limit':
      return 'Memory limit exceeded';
    case 'output-limit':
      return 'Output limit exceeded';
    case 'process-limit':
      return 'Process limit exceeded';
    case 'file-size-limit':
      return 'File size limit exceeded';
    case 'seccomp-violation':
      return `Forbidden syscall ${r.violation?.syscall ?? '(killed by SIGSYS)'}`;
    case 'canceled':
      return 'Canceled';
    case 'setup-error':
      return r.setupFailure ? `Sandbox setup failed: ${r.setupFailure.message}` : 'Sandbox setup failed';
  }
}

/** isolate's meta file: key:value lines a judge built on isolate already parses. */
export function isolateMeta(r: SandboxResult): string {
  const u = r.usage;
  const lines: [string, string | number][] = [];
  if (u) {
    lines.push(
      ['time', (u.cpuMs / 1000).toFixed(3)],
      ['time-wall', (u.wallMs / 1000).toFixed(3)],
      ['max-rss', Math.round(u.maxRssBytes / 1024)],
    );
    if (u.peakMemoryBytes !== undefined) lines.push(['cg-mem', Math.round(u.peakMemoryBytes / 1024)]);
    lines.push(['csw-voluntary', u.voluntaryContextSwitches], ['csw-forced', u.involuntaryContextSwitches]);
  }
  if (r.exitCode !== null) lines.push(['exitcode', r.exitCode]);
  if (r.signal) lines.push(['exitsig', signalNumber(r.signal)]);
  if (LIMIT_VERDICTS.has(r.verdict) || r.verdict === 'seccomp-violation' || r.verdict === 'canceled') lines.push(['killed', 1]);
  if (r.verdict === 'memory-limit') lines.push(['cg-oom-killed', 1]);
  const status = META_STATUS[r.verdict];
  if (status) lines.push(['status', status]);
  const message = metaMessage(r);
  if (message) lines.push(['message', message.replace(/\n/g, ' ')]);
  lines.push(['verdict', r.verdict]);
  return lines.map(([k, v]) => `${k}:${v}`).join('\n') + '\n';
}

/** The meta file of a run that never produced a result (an error before or around it). */
export function isolateMetaForError(message: string): string {
  return `status:XX\nmessage:${message.replace(/\n/g, ' ')}\nverdict:setup-error\n`;
}
