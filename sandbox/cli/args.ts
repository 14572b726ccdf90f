// Parses `cubicle run|plan [options] -- CMD [ARGS...]` into SandboxOptions; errors name the flag.
import type { MountSpec, SandboxOptions } from '../types.js';
import { parseDurationMs } from '../units.js';
import { parseFlags, UsageError } from './usage.js';

export { UsageError };

/** The run flag each API option comes from, so a bad value is reported as the flag the user typed. */
const RUN_FLAG_OF: Readonly<Record<string, string>> = {
  env: '--env',
  cwd: '--cwd',
  hostname: '--hostname',
  network: '--network',
  name: '--name',
  uid: '--uid',
  gid: '--gid',
  hostUid: '--host-uid',
  hostGid: '--host-gid',
  timeout: '--timeout',
  policy: '--policy',
  'limits.cpuTime': '--time',
  'limits.wallTime': '--wall-time',
  'limits.extraTime': '--extra-time',
  'limits.memory': '--memory',
  'limits.processes': '--processes',
  'limits.fileSize': '--fsize',
  'limits.openFiles': '--open-files',
  'limits.stack': '--stack',
  'limits.outputLimit': '--output-limit',
  limits: 'the limit flags',
  maxBuffer: '--max-buffer',
  cgroupParent: '--cgroup-parent',
  inputFile: '--stdin',
  tty: '-t',
  files: '--file',
  copyOut: '--copy-out',
  copyOutMax: '--copy-out-max',
  boxSize: '--box-size',
  rootSize: '--root-size',
  tmpSize: '--tmp-size',
  shmSize: '--shm-size',
  rootfs: '--rootfs',
  writable: '--writable',
  'mounts[]': '--bind/--ro-bind/--tmpfs',
  allowHosts: '--allow-host',
  allowCidrs: '--allow-cidr',
  publish: '--publish',
  homeSize: '--home-size',
  command: 'the command',
};
export const runFlagOf = (option: string): string | undefined => RUN_FLAG_OF[option];

/** --stdin/--stdout/--stderr /dev/null: no file is opened; the stream is empty or discarded. */
export const DEV_NULL = '/dev/null';

export interface RunArgs {
  command: string[];
  /** --stdin /dev/null: an empty stdin (the terminal is not passed through). */
  stdinNull?: boolean;
  options: SandboxOptions;
  json: boolean;
  /** -t/--tty: a terminal inside, relayed to the caller's (options.tty is set too). */
  tty: boolean;
  /** --copy-out NAME[:HOSTPATH]: where each copied-out file goes on the host (default ./NAME). */
  copyOutTo: Map<string, string>;
  resultFile?: string;
  metaFile?: string;
  stdoutFile?: string;
  stderrFile?: string;
  /** --detach: a detached supervisor keeps the (named) sandbox running after the CLI returns. */
  detach?: boolean;
}

const RUN_FLAGS = {
  bind: { type: 'string', multiple: true },
  'ro-bind': { type: 'string', multiple: true },
  tmpfs: { type: 'string', multiple: true },
  rootfs: { type: 'string' },
  writable: { type: 'boolean' },
  env: { type: 'string', multiple: true },
  cwd: { type: 'string' },
  hostname: { type: 'string' },
  network: { type: 'string' },
  name: { type: 'string' },
  uid: { type: 'string' },
  gid: { type: 'string' },
  'host-uid': { type: 'string' },
  'host-gid': { type: 'string' },
  timeout: { type: 'string' },
  policy: { type: 'string' },
  'seccomp-log': { type: 'boolean' },
  time: { type: 'string' },
  'wall-time': { type: 'string' },
  'extra-time': { type: 'string' },
  memory: { type: 'string' },
  processes: { type: 'string' },
  fsize: { type: 'string' },
  'open-files': { type: 'string' },
  stack: { type: 'string' },
  'output-limit': { type: 'string' },
  'max-buffer': { type: 'string' },
  'strict-limits': { type: 'boolean' },
  'no-cgroups': { type: 'boolean' },
  cgroups: { type: 'string' },
  'cgroup-parent': { type: 'string' },
  file: { type: 'string', multiple: true },
  'copy-out': { type: 'string', multiple: true },
  'copy-out-max': { type: 'string' },
  'box-size': { type: 'string' },
  'root-size': { type: 'string' },
  'tmp-size': { type: 'string' },
  'shm-size': { type: 'string' },
  'allow-host': { type: 'string', multiple: true },
  'allow-cidr': { type: 'string', multiple: true },
  publish: { type: 'string', multiple: true },
  'home-size': { type: 'string' },
  stdin: { type: 'string' },
  stdout: { type: 'string' },
  stderr: { type: 'string' },
  meta: { type: 'string' },
  json: { type: 'boolean' },
  tty: { type: 'boolean', short: 't' },
  result: { type: 'string' },
  detach: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;

export const RUN_USAGE = `Usage: cubicle run [options] -- CMD [ARGS...]

Runs CMD in a fresh rootless sandbox. stdio passes through; the exit code is CMD's,
128+N if a signal N killed it, 124 on a time limit, 125 if the sandbox itself failed, 2 for a
usage error. A program path with a '/' (./a.out) is resolved against --cwd inside.

Options:
  --bind SRC[:DST][:idmap]
                         bind host path SRC read-write at DST (default: the same path); as root,
                         :idmap shows SRC's owner as the sandbox's user (idmapped mount, Linux 5.12+)
  --ro-bind SRC[:DST]    bind host path SRC read-only
  --tmpfs DST[:SIZE]     a fresh tmpfs at DST (SIZE like 64M; default 64M)
  --rootfs NAME|DIGEST   an image (cubicle image build) as the root instead of the host's /usr, read-only
  --writable             with --rootfs: writes anywhere go to a tmpfs overlay (--root-size), never to the cache
  --env K=V              set a variable inside (repeatable); nothing is inherited
  --cwd DIR              working directory inside (default /tmp)
  --hostname NAME        hostname inside (default cubicle)
  --network NAME         none (default): only lo; egress: the outside through a user-mode stack, only where
                         --allow-host/--allow-cidr allow (anything else is refused at connect); or a private
                         network's name (cubicle network create NAME)
  --name SBX             the sandbox's name; on a network, later sandboxes on it resolve SBX (/etc/hosts)
  --uid N, --gid N       ids inside (default 1000)
  --host-uid N, --host-gid N
                         as root: fixed host ids the sandbox maps to (default: ids of its own)
  --timeout SECONDS      wall-clock limit (fractions or units: 1.5, 500ms, 2m)
  --policy NAME|PATH     a shipped policy (default, judge, permissive, none) or a policy file
  --seccomp-log          audit mode: report what the filter would deny, and let every call proceed
  --time SECONDS         CPU-time limit of the whole sandbox (every process and thread)
  --wall-time SECONDS    wall-time limit (like --timeout, with --extra-time semantics)
  --extra-time SECONDS   grace before a time limit kills, so the true time is reported
  --memory SIZE          memory of the whole sandbox, tmpfs and shm included (256M, 1G)
  --processes N          processes and threads alive at once
  --fsize SIZE           largest file a process may write
  --open-files N         open files per process
  --stack SIZE           stack per process
  --output-limit SIZE    bytes per output stream; the run is killed past it
  --max-buffer SIZE      with --json: output kept per stream (default 100M); past it the run stops (output-limit)
  --strict-limits        fail instead of falling back when cgroups cannot enforce memory/processes
  --no-cgroups           enforce limits with rlimits and sampling only
  --cgroups v1|v2        use only this cgroup version
  --cgroup-parent DIR    a delegated cgroup v2 directory for rootless cgroup limits
  --file NAME=@HOSTPATH  put a host file into the work directory /box (repeatable; /box becomes the cwd)
  --file NAME=TEXT       put TEXT (exactly, no newline added) into /box/NAME
  --copy-out NAME[:HOSTPATH]
                         after the run, write /box/NAME to HOSTPATH (default ./NAME), never through a
                         symlink; a file refused (symlink, fifo, hard link, too large, missing) is named on stderr
  --copy-out-max SIZE    largest file --copy-out takes (default 64M)
  --box-size SIZE        size of /box, counted against --memory (default 64M)
  --root-size SIZE       size of the root tmpfs, or with --rootfs --writable of its overlay (default 16M)
  --tmp-size SIZE, --shm-size SIZE
                         sizes of /tmp and /dev/shm (default 64M each; the ci policy gives /tmp 1G)
  --allow-host HOST:PORT with --network egress: allow this destination (repeatable; HOST resolved on the host now;
                         host.cubicle.internal:PORT is the host's loopback)
  --allow-cidr CIDR      with --network egress: allow an IPv4 network on every port (repeatable)
  --publish HOSTPORT:SANDBOXPORT
                         forward 127.0.0.1:HOSTPORT on the host to SANDBOXPORT inside (repeatable; TCP; with
                         any --network, a private one included)
  --home-size SIZE       a writable HOME of its own, a tmpfs of SIZE at /home/USER (the ci policy sets 512M)
  --stdin FILE           read stdin from FILE (never through a symlink; /dev/null: empty)
  --stdout FILE          write stdout to FILE; --stderr FILE likewise (never through a symlink;
                         /dev/null discards)
  --meta FILE            write an isolate-compatible key:value meta file
  -t, --tty              a terminal inside, relayed to yours (yours in raw mode until the end): job control,
                         Ctrl-C to the foreground process inside, window size and resizes passed on
  --json                 capture output; print one JSON object (the result) and exit 0
                         unless the sandbox itself failed
  --result FILE          pass stdio through and write the result object to FILE
  --name NAME            register the running sandbox as NAME (cubicle ps, inspect, exec, stop, wait)
  --detach               with --name: return once the payload runs; a detached supervisor keeps the limits
                         and records the result (cubicle wait NAME prints it)
  -h, --help             this help
`;

function intFlag(name: string, v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  if (!/^\d+$/.test(v)) throw new UsageError(`--${name} must be a non-negative integer, got "${v}"`);
  return Number(v);
}

/** SRC[:DST] with DST absolute: split at the last ":/" so a SRC may itself contain ':'. */
function splitBind(flag: string, v: string): { source: string; target?: string } {
  const at = v.lastIndexOf(':/');
  if (at > 0) return { source: v.slice(0, at), target: v.slice(at + 1) };
  if (v.endsWith(':') || v.length === 0) throw new UsageError(`--${flag} "${v}" needs SRC[:DST]`);
  return { source: v };
}

/** Parses run/plan arguments (everything after the subcommand). */
export function parseRunArgs(argv: readonly string[]): RunArgs & { help: boolean } {
  const dash = argv.indexOf('--');
  const flagPart = dash >= 0 ? argv.slice(0, dash) : argv;
  let parsed;
  try {
    parsed = parseFlags([...flagPart], RUN_FLAGS);
  } catch (e) {
    throw new UsageError(`${(e as Error).message}${dash < 0 ? '\nPut the command after --, e.g. cubicle run --timeout 2 -- ls -la' : ''}`);
  }
  const v = parsed.values;
  const command = dash >= 0 ? argv.slice(dash + 1) : parsed.positionals;
  if (dash >= 0 && parsed.positionals.length) throw new UsageError(`unexpected argument "${parsed.positionals[0]}" before --`);
  if (!v.help && command.length === 0) throw new UsageError('no command given: cubicle run [options] -- CMD [ARGS...]');

  const mounts: MountSpec[] = [];
  for (const b of v.bind ?? []) {
    const idmap = b.endsWith(':idmap');
    mounts.push({ type: 'bind', ...splitBind('bind', idmap ? b.slice(0, -':idmap'.length) : b), ...(idmap ? { idmap: true } : {}) });
  }
  for (const b of v['ro-bind'] ?? []) mounts.push({ type: 'bind', readOnly: true, ...splitBind('ro-bind', b) });
  for (const t of v.tmpfs ?? []) {
    const at = t.lastIndexOf(':');
    mounts.push(at > 0 ? { type: 'tmpfs', target: t.slice(0, at), size: t.slice(at + 1) } : { type: 'tmpfs', target: t });
  }
  const env: Record<string, string> = {};
  for (const e of v.env ?? []) {
    const eq = e.indexOf('=');
    if (eq <= 0) throw new UsageError(`--env "${e}" must be KEY=VALUE`);
    env[e.slice(0, eq)] = e.slice(eq + 1);
  }
  const options: SandboxOptions = { env, mounts };
  if (v.rootfs !== undefined) options.rootfs = v.rootfs;
  if (v.writable) options.writable = true;
  if (v.cwd !== undefined) options.cwd = v.cwd;
  if (v.hostname !== undefined) options.hostname = v.hostname;
  if (v.network !== undefined) options.network = v.network;
  if (v.name !== undefined) options.name = v.name;
  const ids = {
    uid: intFlag('uid', v.uid),
    gid: intFlag('gid', v.gid),
    hostUid: intFlag('host-uid', v['host-uid']),
    hostGid: intFlag('host-gid', v['host-gid']),
  };
  for (const [k, n] of Object.entries(ids)) if (n !== undefined) (options as Record<string, unknown>)[k] = n;
  if (v.policy !== undefined) options.policy = v.policy;
  if (v['seccomp-log']) options.seccompLog = true;
  if (v.timeout !== undefined) {
    try {
      options.timeout = parseDurationMs(v.timeout, '--timeout');
    } catch (e) {
      throw new UsageError((e as Error).message);
    }
  }
  const limits: NonNullable<SandboxOptions['limits']> = {};
  const secs = (flag: string, x: string | undefined): number | undefined => {
    if (x === undefined) return undefined;
    try {
      return parseDurationMs(x, `--${flag}`);
    } catch (e) {
      throw new UsageError((e as Error).message);
    }
  };
  const t = { cpuTime: secs('time', v.time), wallTime: secs('wall-time', v['wall-time']), extraTime: secs('extra-time', v['extra-time']) };
  for (const [k, n] of Object.entries(t)) if (n !== undefined) (limits as Record<string, unknown>)[k] = n;
  for (const [flag, key] of [
    ['memory', 'memory'],
    ['fsize', 'fileSize'],
    ['stack', 'stack'],
    ['output-limit', 'outputLimit'],
  ] as const) {
    const x = v[flag];
    if (x !== undefined) (limits as Record<string, unknown>)[key] = /^\d+$/.test(x) ? Number(x) : x;
  }
  const procs = intFlag('processes', v.processes);
  if (procs !== undefined) limits.processes = procs;
  const files = intFlag('open-files', v['open-files']);
  if (files !== undefined) limits.openFiles = files;
  if (Object.keys(limits).length) options.limits = limits;
  if (v['strict-limits']) options.strictLimits = true;
  if (v.tty) options.tty = true;
  if (v['no-cgroups']) options.cgroups = false;
  if (v.cgroups !== undefined) {
    if (v.cgroups !== 'v1' && v.cgroups !== 'v2') throw new UsageError(`--cgroups must be v1 or v2, got "${v.cgroups}"`);
    if (v['no-cgroups']) throw new UsageError('--cgroups and --no-cgroups contradict each other');
    options.cgroups = v.cgroups;
  }
  if (v['cgroup-parent'] !== undefined) options.cgroupParent = v['cgroup-parent'];
  if (v.stdin === DEV_NULL) options.stdin = 'ignore';
  else if (v.stdin !== undefined) options.inputFile = v.stdin;
  const copyOutTo = new Map<string, string>();
  if (v.file?.length) {
    const files = Object.create(null) as NonNullable<SandboxOptions['files']>; // a name like __proto__ stays a name
    for (const f of v.file) {
      const eq = f.indexOf('=');
      if (eq <= 0) throw new UsageError(`--file "${f}" must be NAME=@HOSTPATH or NAME=TEXT`);
      const name = f.slice(0, eq);
      if (name in files) throw new UsageError(`--file names ${name} twice`);
      files[name] = f[eq + 1] === '@' ? { path: f.slice(eq + 2) } : f.slice(eq + 1);
    }
    options.files = files;
  }
  if (v['copy-out']?.length) {
    for (const c of v['copy-out']) {
      const colon = c.indexOf(':');
      const name = colon < 0 ? c : c.slice(0, colon);
      const dest = colon < 0 ? `./${name}` : c.slice(colon + 1);
      if (!name || !dest) throw new UsageError(`--copy-out "${c}" must be NAME[:HOSTPATH]`);
      if (copyOutTo.has(name)) throw new UsageError(`--copy-out names ${name} twice`);
      copyOutTo.set(name, dest);
    }
    options.copyOut = [...copyOutTo.keys()];
  }
  if (v['copy-out-max'] !== undefined) options.copyOutMax = v['copy-out-max'];
  if (v['box-size'] !== undefined) options.boxSize = v['box-size'];
  if (v['root-size'] !== undefined) options.rootSize = v['root-size'];
  if (v['tmp-size'] !== undefined) options.tmpSize = v['tmp-size'];
  if (v['shm-size'] !== undefined) options.shmSize = v['shm-size'];
  if (v.name !== undefined) options.name = v.name;
  if (v['allow-host']?.length) options.allowHosts = v['allow-host'];
  if (v['allow-cidr']?.length) options.allowCidrs = v['allow-cidr'];
  if (v.publish?.length) options.publish = v.publish;
  if (v['home-size'] !== undefined) options.homeSize = v['home-size'];
  if (v['max-buffer'] !== undefined) options.maxBuffer = /^\d+$/.test(v['max-buffer']) ? Number(v['max-buffer']) : v['max-buffer'];
  return {
    command: [...command],
    options,
    json: v.json === true,
    tty: v.tty === true,
    copyOutTo,
    ...(v.result !== undefined ? { resultFile: v.result } : {}),
    ...(v.meta !== undefined ? { metaFile: v.meta } : {}),
    ...(v.stdout !== undefined ? { stdoutFile: v.stdout } : {}),
    ...(v.stderr !== undefined ? { stderrFile: v.stderr } : {}),
    ...(v.stdin === DEV_NULL ? { stdinNull: true } : {}),
    ...(v.detach ? { detach: true } : {}),
    help: v.help === true,
  };
}
