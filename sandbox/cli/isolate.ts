// `cubicle isolate`: isolate's command line over cubicle sandboxes, so a judge built on isolate (CMS, Judge0)
// switches by changing the binary's name. --init makes a box and prints its directory, --run runs a command
// with box/ as /box (the working directory), --cleanup removes it. Exit codes as isolate's: 0 the program ran
// and exited 0 within its limits, 1 it failed or passed a limit, 2 an internal or usage error.
import { existsSync } from 'node:fs';
import { posix } from 'node:path';
import { describeVerdict, isolateMeta, isolateMetaForError } from '../outcome/render.js';
import type { LimitOptions, MountSpec, SandboxOptions, SandboxResult } from '../types.js';
import { boxOf, cleanupBox, initBox, openBox, parseBoxId, type Box } from './isolate-box.js';
import { openOutputFile, runPassthrough, writeAndClose, writeMeta, type OutputTarget } from './passthrough.js';
import { asUsageError, parseFlags, UsageError, type ParsedFlags } from './usage.js';

const FLAGS = {
  'box-id': { type: 'string', short: 'b' },
  init: { type: 'boolean' },
  run: { type: 'boolean' },
  cleanup: { type: 'boolean' },
  cg: { type: 'boolean' },
  'cg-timing': { type: 'boolean' },
  silent: { type: 'boolean', short: 's' },
  verbose: { type: 'boolean', short: 'v', multiple: true },
  meta: { type: 'string', short: 'M' },
  time: { type: 'string', short: 't' },
  'extra-time': { type: 'string', short: 'x' },
  'wall-time': { type: 'string', short: 'w' },
  stack: { type: 'string', short: 'k' },
  mem: { type: 'string', short: 'm' },
  'cg-mem': { type: 'string' },
  processes: { type: 'string', short: 'p' },
  fsize: { type: 'string', short: 'f' },
  'open-files': { type: 'string' },
  env: { type: 'string', short: 'E', multiple: true },
  'full-env': { type: 'boolean', short: 'e' },
  dir: { type: 'string', short: 'd', multiple: true },
  stdin: { type: 'string', short: 'i' },
  stdout: { type: 'string', short: 'o' },
  stderr: { type: 'string', short: 'r' },
  'stderr-to-stdout': { type: 'boolean' },
  chdir: { type: 'string', short: 'c' },
  help: { type: 'boolean', short: 'h' },
  // isolate's flags that cubicle refuses (see REFUSED): parsed so that the refusal names them.
  'share-net': { type: 'boolean', short: 'n' },
  'no-cg-timing': { type: 'boolean' },
  'inherit-fds': { type: 'boolean' },
  'tty-hack': { type: 'boolean' },
  'special-files': { type: 'boolean' },
  'no-default-dirs': { type: 'boolean' },
  wait: { type: 'boolean' },
  quota: { type: 'string', short: 'q' },
  'as-uid': { type: 'string' },
  'as-gid': { type: 'string' },
  core: { type: 'string' },
} as const;

/** isolate flags cubicle does not offer, and why; giving one is an error (exit 2), never silently ignored. */
const REFUSED: Readonly<Record<string, string>> = {
  'share-net': 'the sandbox has no network but loopback',
  'no-cg-timing': 'time is always that of the whole sandbox (every process and thread)',
  'inherit-fds': 'only fds 0-2 ever reach the payload',
  'tty-hack': 'there is no terminal inside',
  'special-files': 'device nodes other than /dev/null, zero, full, random and urandom are never created',
  'no-default-dirs': "the default view (/usr, /bin, /lib, /dev, /proc, /tmp) is cubicle's own",
  wait: 'boxes are not locked; give each concurrent run a box of its own',
  quota: 'disk quotas are not supported; bound files with -f and the box with the memory limit',
  'as-uid': 'the payload always runs as the box user',
  'as-gid': 'the payload always runs as the box user',
  core: 'core dumps are never written',
};

export const ISOLATE_USAGE = `Usage: cubicle isolate [options] --init | --run -- CMD [ARGS...] | --cleanup

isolate's command line over cubicle sandboxes. --init prints the box directory; its box/ is the
payload's working directory (/box inside), writable by the caller before and after a run.
Exit codes: 0 the program exited 0 within its limits, 1 it failed or passed a limit, 2 an error.

  -b, --box-id=ID        box id (0 to 2147483646; default 0)
  --cg                   accepted: cgroups are used whenever the host allows
  --cg-timing            accepted: time is always the whole sandbox's
  -s, --silent           no status line on stderr
  -M, --meta=FILE        write isolate's meta file (time, time-wall, max-rss, cg-mem, exitcode,
                         exitsig, killed, status, message)
  -t, --time=SECS        CPU-time limit          -x, --extra-time=SECS   grace before the kill
  -w, --wall-time=SECS   wall-time limit         -k, --stack=KB          stack per process
  -m, --mem=KB           memory of the whole sandbox (isolate: address space per process)
  --cg-mem=KB            memory of the whole sandbox
  -p, --processes[=N]    processes and threads at once (no N: unlimited; default 1)
  -f, --fsize=KB         largest file a process writes      --open-files=N   default 64
  -E, --env=VAR[=VAL]    set VAR, or pass the caller's VAR   -e, --full-env   pass every variable
  -d, --dir=IN[=OUT][:OPTS]  bind OUT (default IN) at IN; OPTS: rw, noexec, maybe, fs (IN=tmp:fs,
                         or :tmp, a tmpfs; /proc=proc:fs is always there)
  -i, -o, -r, --stdin=, --stdout=, --stderr=FILE   a file in the box (relative to the working
                         directory, or /box/...), or /dev/null
  --stderr-to-stdout     stderr goes where stdout goes
  -c, --chdir=DIR        working directory inside (default /box)
  -v, --verbose          accepted

Refused (an error): ${Object.keys(REFUSED)
  .map((f) => `--${f}`)
  .join(', ')}.
`;

type Values = ParsedFlags<typeof FLAGS>['values'];

/** isolate's seconds (fractions allowed) as ms; 0 means no limit. */
function seconds(flag: string, v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  if (!/^\d+(\.\d+)?$/.test(v)) throw new UsageError(`${flag} takes seconds (e.g. 1.5), got ${JSON.stringify(v)}`);
  const ms = Math.round(Number(v) * 1000);
  return ms > 0 ? ms : undefined;
}

/** isolate's kilobytes as bytes; 0 means no limit. */
function kilobytes(flag: string, v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  if (!/^\d{1,12}$/.test(v)) throw new UsageError(`${flag} takes kilobytes (an integer), got ${JSON.stringify(v)}`);
  return Number(v) > 0 ? Number(v) * 1024 : undefined;
}

function count(flag: string, v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  if (!/^\d{1,9}$/.test(v)) throw new UsageError(`${flag} takes an integer, got ${JSON.stringify(v)}`);
  return Number(v) > 0 ? Number(v) : undefined;
}

function limitsOf(v: Values): LimitOptions {
  const limits: LimitOptions = {};
  const set = <K extends keyof LimitOptions>(k: K, x: LimitOptions[K] | undefined): void => {
    if (x !== undefined) limits[k] = x;
  };
  set('cpuTime', seconds('--time', v.time));
  set('extraTime', seconds('--extra-time', v['extra-time']));
  set('wallTime', seconds('--wall-time', v['wall-time']));
  set('stack', kilobytes('--stack', v.stack));
  set('memory', kilobytes('--cg-mem', v['cg-mem']) ?? kilobytes('--mem', v.mem));
  set('fileSize', kilobytes('--fsize', v.fsize));
  // isolate's defaults: one process, 64 open files. -p alone (an empty value here) lifts the process limit.
  set('processes', v.processes === undefined ? 1 : v.processes === '' ? undefined : count('--processes', v.processes));
  set('openFiles', v['open-files'] === undefined ? 64 : count('--open-files', v['open-files']));
  return limits;
}

/** -E VAR=VAL sets, -E VAR passes the caller's VAR (if set), -e passes every variable. */
function envOf(v: Values): Record<string, string> {
  const env: Record<string, string> = {};
  if (v['full-env']) for (const [k, x] of Object.entries(process.env)) if (x !== undefined) env[k] = x;
  for (const e of v.env ?? []) {
    const eq = e.indexOf('=');
    const name = eq < 0 ? e : e.slice(0, eq);
    if (!/^[^=\0]+$/.test(name)) throw new UsageError(`--env ${JSON.stringify(e)} must be VAR or VAR=VALUE`);
    if (eq >= 0) env[name] = e.slice(eq + 1);
    else if (process.env[name] !== undefined) env[name] = process.env[name];
    else delete env[name];
  }
  return env;
}

/** One -d rule: IN[=OUT][:OPTS] -> a mount, or nothing (maybe + missing, or /proc which is always there). */
function dirRule(rule: string, exists: (p: string) => boolean): MountSpec | undefined {
  const colon = rule.indexOf(':');
  const spec = colon < 0 ? rule : rule.slice(0, colon);
  const opts =
    colon < 0
      ? []
      : rule
          .slice(colon + 1)
          .split(',')
          .filter(Boolean);
  const eq = spec.indexOf('=');
  const inside = eq < 0 ? spec : spec.slice(0, eq);
  const outside = eq < 0 ? spec : spec.slice(eq + 1);
  if (!inside.startsWith('/')) throw new UsageError(`--dir ${JSON.stringify(rule)}: the inside path must be absolute`);
  for (const o of opts)
    if (!['rw', 'noexec', 'maybe', 'fs', 'tmp'].includes(o))
      throw new UsageError(`--dir ${JSON.stringify(rule)}: option "${o}" is not supported (rw, noexec, maybe, fs, tmp are)`);
  if (eq >= 0 && outside === '') throw new UsageError(`--dir ${JSON.stringify(rule)}: removing a default rule is not supported`);
  if (opts.includes('tmp') || (opts.includes('fs') && outside === 'tmp')) return { type: 'tmpfs', target: inside };
  if (opts.includes('fs')) {
    if (outside === 'proc' && inside === '/proc') return undefined;
    throw new UsageError(`--dir ${JSON.stringify(rule)}: only proc at /proc and tmp filesystems can be mounted`);
  }
  if (!outside.startsWith('/')) throw new UsageError(`--dir ${JSON.stringify(rule)}: the outside path must be absolute`);
  if (opts.includes('maybe') && !exists(outside)) return undefined;
  return {
    type: 'bind',
    source: outside,
    target: inside,
    readOnly: !opts.includes('rw'),
    ...(opts.includes('noexec') ? { noexec: true } : {}),
  };
}

/** A stdio file of isolate's (a path inside, relative to the working directory) as the host path in the box. */
function boxFile(flag: string, path: string, cwd: string, box: Box): string | null {
  if (path === '/dev/null') return null;
  const inside = posix.resolve(cwd, path);
  if (inside !== '/box' && inside.startsWith('/box/')) return `${box.work}${inside.slice('/box'.length)}`;
  throw new UsageError(`${flag} ${JSON.stringify(path)}: only files in the box (/box/...) or /dev/null can be redirected`);
}

/** The API option each isolate flag becomes, so a bad value is reported as the flag. */
const FLAG_OF: Readonly<Record<string, string>> = {
  cwd: '--chdir',
  env: '--env',
  'limits.cpuTime': '--time',
  'limits.extraTime': '--extra-time',
  'limits.wallTime': '--wall-time',
  'limits.stack': '--stack',
  'limits.memory': '--cg-mem/--mem',
  'limits.fileSize': '--fsize',
  'limits.processes': '--processes',
  'limits.openFiles': '--open-files',
  'mounts[]': '--dir',
  command: 'the command',
};

/** The status line isolate prints on stderr unless -s. */
function statusLine(r: SandboxResult): string {
  const u = r.usage;
  if (r.verdict === 'ok') return `OK (${((u?.cpuMs ?? 0) / 1000).toFixed(3)} sec real, ${((u?.wallMs ?? 0) / 1000).toFixed(3)} sec wall)`;
  if (r.verdict === 'setup-error') return `${describeVerdict(r)}${r.setupFailure ? ` (hint: ${r.setupFailure.hint})` : ''}`;
  const message = /^message:(.*)$/m.exec(isolateMeta(r))?.[1];
  return message ?? r.verdict;
}

async function runBox(v: Values, command: string[]): Promise<number> {
  if (command.length === 0) throw new UsageError('--run needs a command after --: cubicle isolate --run -- CMD [ARGS...]');
  const box = openBox(boxOf(parseBoxId(v['box-id'])));
  const cwd = v.chdir === undefined ? '/box' : posix.resolve('/box', v.chdir);
  const mounts: MountSpec[] = [{ type: 'bind', source: box.work, target: '/box' }];
  for (const d of v.dir ?? []) {
    const m = dirRule(d, existsSync);
    if (m) mounts.push(m);
  }
  const options: SandboxOptions = {
    env: envOf(v),
    mounts,
    cwd,
    limits: limitsOf(v),
    ...(box.hostIds ? { hostUid: box.hostIds.uid, hostGid: box.hostIds.gid } : {}),
  };
  const stdinPath = v.stdin === undefined ? undefined : boxFile('--stdin', v.stdin, cwd, box);
  if (stdinPath === null) options.stdin = 'ignore';
  else if (stdinPath !== undefined) options.inputFile = stdinPath;
  else options.stdin = 'inherit';
  const meta = { fd: v.meta !== undefined ? openOutputFile('--meta', v.meta) : undefined };
  try {
    const target = (flag: string, p: string | undefined): OutputTarget => {
      const host = p === undefined ? undefined : boxFile(flag, p, cwd, box);
      return host === undefined ? { kind: 'inherit' } : host === null ? { kind: 'null' } : { kind: 'file', fd: openOutputFile(flag, host) };
    };
    const stdout = target('--stdout', v.stdout);
    const stderr = v['stderr-to-stdout'] ? ({ kind: 'stdout' } as const) : target('--stderr', v.stderr);
    const r = await runPassthrough({ command, options, stdout, stderr });
    writeMeta(meta, r);
    if (!v.silent) process.stderr.write(`${statusLine(r)}\n`);
    return r.verdict === 'ok' ? 0 : r.verdict === 'setup-error' ? 2 : 1;
  } catch (e) {
    if (meta.fd !== undefined) writeAndClose(meta.fd, isolateMetaForError(String((e as Error).message)));
    throw e;
  }
}

/** `cubicle isolate ...`; returns isolate's exit code (0, 1, 2). */
export async function isolateMain(argv: string[]): Promise<number> {
  const dash = argv.indexOf('--');
  // isolate's -p takes its value only when attached (-p10, --processes=10); alone it lifts the limit.
  const flags = (dash < 0 ? argv : argv.slice(0, dash)).map((a) => (a === '-p' || a === '--processes' ? '--processes=' : a));
  try {
    const { values: v, positionals } = parseFlags(flags, FLAGS);
    if (v.help) {
      process.stdout.write(ISOLATE_USAGE);
      return 0;
    }
    for (const [flag, why] of Object.entries(REFUSED))
      if (v[flag as keyof Values] !== undefined) throw new UsageError(`--${flag} is not supported: ${why}`);
    const modes = (['init', 'run', 'cleanup'] as const).filter((m) => v[m]);
    if (modes.length !== 1) throw new UsageError('give exactly one of --init, --run, --cleanup');
    const command = dash < 0 ? positionals : [...positionals, ...argv.slice(dash + 1)];
    if (modes[0] !== 'run' && command.length) throw new UsageError(`unexpected argument ${JSON.stringify(command[0])}`);
    if (modes[0] === 'init') {
      process.stdout.write(`${initBox(boxOf(parseBoxId(v['box-id']))).dir}\n`);
      return 0;
    }
    if (modes[0] === 'cleanup') {
      cleanupBox(boxOf(parseBoxId(v['box-id'])));
      return 0;
    }
    return await runBox(v, command);
  } catch (caught) {
    const e = asUsageError(caught, (o) => FLAG_OF[o]);
    process.stderr.write(`cubicle isolate: ${e instanceof Error ? e.message : String(e)}\n`);
    return 2;
  }
}
