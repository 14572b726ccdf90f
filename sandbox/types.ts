// The public types, in one bottom module that every other module may import; it imports nothing of cubicle's.
import type { Readable } from 'node:stream';

// ---- options ----

/** A host path bound into the sandbox, or a fresh tmpfs. */
export type MountSpec =
  | { type: 'bind'; source: string; target?: string; readOnly?: boolean; noexec?: boolean; idmap?: boolean }
  | { type: 'tmpfs'; target: string; size?: number | string };

/** Limits as the caller gives them: numbers (ms, bytes, counts) or strings with units ("1.5s", "256M"). */
export interface LimitOptions {
  /** CPU time of every process and thread together. */
  cpuTime?: number | string;
  /** Wall-clock time from the payload's start (the same as `timeout`, with extraTime semantics). */
  wallTime?: number | string;
  /** Grace after cpuTime/wallTime before the kill, so the true time is measured (isolate's --extra-time). */
  extraTime?: number | string;
  /** Everything the sandbox holds: process memory, tmpfs and /dev/shm pages, memfd pages. */
  memory?: number | string;
  /** Processes and threads alive at once. */
  processes?: number;
  /** Largest file a process may write (RLIMIT_FSIZE). */
  fileSize?: number | string;
  /** Open files per process (RLIMIT_NOFILE). */
  openFiles?: number;
  /** Stack size per process (RLIMIT_STACK). */
  stack?: number | string;
  /** Bytes per output stream (stdout, stderr); the run is killed past it. */
  outputLimit?: number | string;
}

/** Every limit name, checked against LimitOptions at compile time (a name missing here fails the build). */
export const LIMIT_NAMES = [
  'cpuTime',
  'wallTime',
  'extraTime',
  'memory',
  'processes',
  'fileSize',
  'openFiles',
  'stack',
  'outputLimit',
] as const;

/** A file put into the work directory: text (UTF-8), bytes, a host file (read by the caller, never through a
 *  symlink), or content with a mode (default 0644; no setuid/setgid/sticky bits). */
export type FileSpec = string | Uint8Array | { path: string; mode?: number } | { content: string | Uint8Array; mode?: number };

/** Which cgroups a run may use: any (v1 first, then v2), one version, or none. */
export type CgroupChoice = boolean | 'v1' | 'v2';

/** A terminal's window size, in character cells. */
export interface TerminalSize {
  columns: number;
  rows: number;
}

export interface SandboxOptions {
  /** Environment inside; nothing of the host's is inherited. PATH and HOME get defaults unless given. */
  env?: Record<string, string>;
  /** Working directory inside (absolute). Default: /tmp. */
  cwd?: string;
  /** Hostname inside. Default: "cubicle". */
  hostname?: string;
  /**
   * The network the sandbox joins: 'none' (the default: only `lo`); 'egress', the outside through a user-mode stack
   * (slirp4netns) and an allowlist (allowHosts, allowCidrs) enforced inside the sandbox's network namespace, where
   * everything else is refused at connect; or the name of a private network made by `cubicle network create`
   * (sandboxes on it reach each other by address and by name; nothing else).
   */
  network?: string;
  /** The sandbox's name: 1-63 of [A-Za-z0-9_.-], starting with a letter or digit. It registers the running sandbox
   *  in the caller's registry, so `listSandboxes()` and `cubicle ps/inspect/exec/stop` find it (the name is free again
   *  once it ends); on a network, later sandboxes on it resolve it (/etc/hosts inside). */
  name?: string;
  /** uid/gid inside. Default 1000/1000. 0 is allowed (no capabilities either way). */
  uid?: number;
  gid?: number;
  /** User and group name written to the generated /etc/passwd and /etc/group. Default "sandbox" ("root" for uid 0). */
  username?: string;
  /** When the caller is root: the unprivileged host uid/gid the sandbox maps to. Default 65534. Never 0. */
  hostUid?: number;
  hostGid?: number;
  /** When the caller is root and gives no hostUid: host ids to give each concurrent sandbox a uid (and the same
   *  gid) of its own, locked for the run's life. Default from CUBICLE_HOST_ID_RANGE ("START:COUNT"), else
   *  { start: 1000000000, count: 65536 }. */
  hostIdRange?: { start: number; count: number };
  /** When the caller is root: create the sandbox as this host user, so namespaces are made without privilege. */
  runAs?: { uid: number; gid: number };
  /** Extra binds and tmpfs mounts, applied after the default view (so they may cover parts of it). */
  mounts?: readonly MountSpec[];
  /** Size of the fresh root tmpfs. Default 16M. */
  rootSize?: number | string;
  /** Size of /tmp and of /dev/shm. Default 64M each. */
  tmpSize?: number | string;
  shmSize?: number | string;
  /** Wall-clock limit in ms; the whole sandbox is killed when it passes. */
  timeout?: number;
  /** Aborting kills the whole sandbox; the result has isCanceled. */
  cancelSignal?: AbortSignal;
  /** After kill('SIGTERM'), how long to wait before SIGKILL. Default 2000 ms. */
  forceKillAfterDelay?: number;
  /** Resolve instead of rejecting when the run fails. Default true (reject). */
  reject?: boolean;
  /** Data for stdin. */
  input?: string | Uint8Array | Readable;
  /** A host file read as stdin. */
  inputFile?: string;
  /** stdin when neither input nor inputFile is given. Default 'ignore' (empty). */
  stdin?: 'ignore' | 'inherit' | 'pipe';
  /** 'pipe' captures (runSandboxed) or streams (spawnSandboxed); 'inherit' passes through. Default 'pipe'. */
  stdout?: 'pipe' | 'inherit' | 'ignore';
  stderr?: 'pipe' | 'inherit' | 'ignore';
  /** A pseudo-terminal inside (Docker's -t, go-judge's tty): the payload leads a session whose controlling
   *  terminal is a pty of the sandbox's own devpts, and its stdin, stdout and stderr are that terminal. What the
   *  terminal shows arrives as stdout (stderr is part of it: leave stderr unset); stdin is typed into it, and its
   *  end types the end-of-file character. true: 80 columns by 24 rows; or the initial size. Resize it with
   *  SandboxProcess.resize(). */
  tty?: boolean | TerminalSize;
  /** 'utf8' gives strings, 'buffer' gives Buffers (binary-safe). Default 'utf8'. */
  encoding?: 'utf8' | 'buffer';
  /** Captured output kept per stream (bytes or a size); past it the run is stopped with verdict output-limit and
   *  the first maxBuffer bytes are kept. Default 100M; at most what one string (utf8) or Buffer can hold. */
  maxBuffer?: number | string;
  /** A shipped policy name ('default', 'judge', 'permissive', 'none'), a path to a policy file, or a policy object. Default 'default'. */
  policy?: string | PolicyObject;
  /** Audit mode: the seccomp filter reports what it would deny or kill, and lets every call proceed. */
  seccompLog?: boolean;
  /** Resource limits for the whole sandbox (see LimitOptions); the result says which mechanism enforced each. */
  limits?: LimitOptions;
  /** Fail closed instead of falling back to rlimits and sampling when memory/process limits cannot use cgroups. */
  strictLimits?: boolean;
  /** Use cgroups when the host allows (default true: v1 first, then v2); 'v1' or 'v2' picks one; false always
   *  uses rlimits and init's sampler. */
  cgroups?: CgroupChoice;
  /** A delegated cgroup v2 directory the caller may write (for rootless cgroup limits); runs get groups below it. */
  cgroupParent?: string;
  /** Files put into the work directory /box (a tmpfs of its own, owned by the sandbox's user) before the payload
   *  starts, by flat name. With files or copyOut, /box is the default cwd. */
  files?: Record<string, FileSpec>;
  /** Flat names of files in /box returned after the run: result.files[NAME], or result.fileErrors[NAME]. */
  copyOut?: readonly string[];
  /** The most bytes one copied-out file may have. Default 64M. */
  copyOutMax?: number | string;
  /** Size of the /box tmpfs (counted against the memory limit). Default 64M. It bounds copyOut in total. */
  boxSize?: number | string;
  /** An image of the cache (`cubicle image build`), by name or `sha256:` digest, as the sandbox's root instead of
   *  the host's /usr; read-only unless `writable`. cubicle still adds its own /proc, /dev, /tmp, /etc/passwd, /etc/group. */
  rootfs?: string;
  /** With rootfs: the payload may write anywhere in the image's tree; writes go to a tmpfs overlay (rootSize) and
   *  never reach the cache. */
  writable?: boolean;
  /** With network 'egress': "HOST:PORT" destinations allowed (HOST resolved on the host at run start);
   *  host.cubicle.internal:PORT is the host's loopback. */
  allowHosts?: readonly string[];
  /** With network 'egress': IPv4 networks ("10.1.0.0/16") allowed on every port. */
  allowCidrs?: readonly string[];
  /** Host ports bound on 127.0.0.1 only, forwarded to ports inside: "HOSTPORT:SANDBOXPORT" or { hostPort, sandboxPort };
   *  with any network (on a private one the stack sits beside its eth0 and lets only replies out). */
  publish?: readonly (string | { hostPort: number; sandboxPort: number })[];
  /** A writable home of this size: a tmpfs owned by the sandbox's user at /home/USERNAME, and HOME points there. */
  homeSize?: number | string;
}

/** Every option name, checked against SandboxOptions at compile time (a name missing here fails the build). */
export const OPTION_NAMES = [
  'env',
  'cwd',
  'hostname',
  'network',
  'name',
  'uid',
  'gid',
  'username',
  'hostUid',
  'hostGid',
  'hostIdRange',
  'runAs',
  'mounts',
  'rootSize',
  'tmpSize',
  'shmSize',
  'timeout',
  'cancelSignal',
  'forceKillAfterDelay',
  'reject',
  'input',
  'inputFile',
  'stdin',
  'stdout',
  'stderr',
  'tty',
  'encoding',
  'maxBuffer',
  'policy',
  'seccompLog',
  'limits',
  'strictLimits',
  'cgroups',
  'rootfs',
  'writable',
  'cgroupParent',
  'files',
  'copyOut',
  'copyOutMax',
  'boxSize',
  'allowHosts',
  'allowCidrs',
  'publish',
  'homeSize',
] as const satisfies readonly (keyof SandboxOptions)[];

/** The options a policy may set as defaults (a call's own options win). */
export const POLICY_OPTION_NAMES = [
  'env',
  'cwd',
  'hostname',
  'uid',
  'gid',
  'username',
  'rootSize',
  'tmpSize',
  'shmSize',
  'timeout',
  'limits',
  'network',
  'homeSize',
] as const satisfies readonly (keyof SandboxOptions)[];
export type PolicyOptions = Pick<SandboxOptions, (typeof POLICY_OPTION_NAMES)[number]>;

// ---- policies and seccomp profiles (the OCI format, the subset cubicle reads) ----

export interface SeccompArg {
  index: number;
  value: number | string;
  valueTwo?: number | string;
  op: string;
}

export interface SeccompRule {
  names: string[];
  action: string;
  errnoRet?: number;
  args?: SeccompArg[];
  comment?: string;
}

export interface SeccompProfile {
  defaultAction: string;
  defaultErrnoRet?: number;
  architectures?: string[];
  syscalls: SeccompRule[];
}

/** A policy as written: in a file, or passed as an object. */
export interface PolicyObject {
  $schema?: string;
  description?: string;
  extends?: string;
  options?: PolicyOptions;
  seccomp?: Partial<SeccompProfile> | null;
}

/** How the seccomp filter's user notifications are handled: none (no notify actions), kill, or log (audit). */
export type NotifyMode = 'none' | 'kill' | 'log';

// ---- results ----

/** Why a run ended; exactly one per run. */
export const VERDICTS = [
  'ok',
  'nonzero-exit',
  'signaled',
  'cpu-time-limit',
  'wall-time-limit',
  'memory-limit',
  'output-limit',
  'process-limit',
  'file-size-limit',
  'seccomp-violation',
  'setup-error',
  'canceled',
] as const;
export type Verdict = (typeof VERDICTS)[number];

/** A syscall the seccomp filter stopped (or, in log mode, would have stopped). */
export interface SeccompViolation {
  /** e.g. 'ptrace'; null when the kernel killed the process itself (SIGSYS) and did not say which call. */
  syscall: string | null;
  nr: number | null;
  /** e.g. 'x86_64', 'x86' (i386), or null. */
  arch: string | null;
}

export interface SeccompReport {
  policy: string;
  mode: 'enforce' | 'log';
  /** Distinct syscalls reported by the filter, in the order they happened (at most 64). */
  violations: SeccompViolation[];
}

export interface SandboxUsage {
  /** Wall time from the payload's fork to its exit, measured inside by init (ms). */
  wallMs: number;
  /** CPU of every process of the sandbox (init's own share removed), from the helper's wait4 on init (ms). */
  cpuUserMs: number;
  cpuSystemMs: number;
  /** The CPU cgroup's count when there is one (it includes children nobody waited for), else user + system. */
  cpuMs: number;
  /** Largest resident set of any single process (bytes), mapped file pages included. */
  maxRssBytes: number;
  voluntaryContextSwitches: number;
  involuntaryContextSwitches: number;
  minorPageFaults: number;
  majorPageFaults: number;
  /** Peak memory the whole sandbox owned (anonymous memory, page tables and kernel stacks of its processes,
   *  tmpfs, SysV IPC and memfd pages; not page cache of mapped programs and libraries): the cgroup's peak when
   *  a memory cgroup enforced the limit, else the peak of init's samples, which count the same pages. */
  peakMemoryBytes: number | undefined;
  /** Most tasks (processes and threads) seen at once by the sampler. */
  peakProcesses: number | undefined;
}

/** A setup failure: where, which syscall, which errno, and the fix. */
export interface SetupFailure {
  stage: string;
  op?: string;
  /** The plan step that failed, e.g. 'bind /data -> /data (rw)'. */
  step?: string;
  syscall?: string;
  errno?: number;
  errnoName?: string;
  message: string;
  hint: string;
}

export type Mechanism =
  | 'cgroup-v1'
  | 'cgroup-v2'
  | 'sampling'
  | 'rlimit'
  | 'rlimit+sampling'
  | 'cgroup-v1+sampling'
  | 'cgroup-v2+sampling'
  | 'supervisor'
  | 'maxBuffer';

/** What the result says of each limit that was set. */
export interface AppliedLimit {
  value: number;
  unit: 'ms' | 'bytes' | 'count';
  mechanism: Mechanism;
  /** The value the kernel reports back after setup (cgroup files), when it differs in form (rounding). */
  readBack?: number;
}

/** The host ids the sandbox maps to, which its per-user kernel counters (tasks, inotify, mqueue bytes, pending
 *  signals, namespaces) are charged to. */
export interface HostIds {
  uid: number;
  gid: number;
  /** 'own': a uid no other sandbox of this host uses while it runs; 'shared': the caller's own uid, a fixed
   *  hostUid or nobody, where each counter is capped inside at half of the host's limit. */
  counters: 'own' | 'shared';
  /** Where they came from: root's hostIdRange ('range'), the rootless caller's /etc/subuid and /etc/subgid
   *  ranges mapped by newuidmap/newgidmap ('subids'), the caller's own ids ('caller'), a fixed hostUid/hostGid
   *  ('fixed'), or nobody when root's range could not be used ('nobody'). */
  source: 'range' | 'subids' | 'caller' | 'fixed' | 'nobody';
  /** With shared counters where ids of its own were possible in principle: why they were not used. */
  reason?: string;
}

/** The value type option K takes in options O, or `Default` where O leaves it out (or may be undefined). */
type OptionOf<O, K extends keyof SandboxOptions, Default> = K extends keyof O
  ? O[K] extends infer V
    ? V extends undefined
      ? Default
      : V
    : never
  : Default;

/** The tty option of options O: false without a terminal (distributes over boolean). */
export type TerminalOf<O extends SandboxOptions> = OptionOf<O, 'tty', false>;

/** How stderr is passed with a terminal (`T`, the tty option) or without one (`Mode`): with one, it is part of
 *  what the terminal shows, never a stream of its own. */
type StderrWith<T, Mode> = T extends false ? Mode : 'ignore';

/** The mode stream K ends up in: its option, except stderr under a terminal. */
export type StreamMode<O extends SandboxOptions, K extends 'stdout' | 'stderr'> = K extends 'stderr'
  ? StderrWith<OptionOf<O, 'tty', false>, OptionOf<O, 'stderr', 'pipe'>>
  : OptionOf<O, K, 'pipe'>;

/** What a captured stream holds, following the options as execa's types do: a string by default, a Buffer with
 *  `encoding: 'buffer'`, undefined when the stream is not piped. */
export type CapturedOutput<O extends SandboxOptions, K extends 'stdout' | 'stderr'> =
  StreamMode<O, K> extends infer Mode
    ? Mode extends 'pipe'
      ? OptionOf<O, 'encoding', 'utf8'> extends infer E
        ? E extends 'buffer'
          ? Buffer
          : string
        : never
      : undefined
    : never;

/** A field every run that started has: known for certain when a failed run would have rejected (the default),
 *  possibly undefined with `reject: false` (a run whose setup failed has none). */
export type KnownUnlessReject<O extends SandboxOptions, T> =
  OptionOf<O, 'reject', true> extends infer R ? (R extends true ? T : T | undefined) : never;

/** A run's result. Its type follows the options `O` it was started with (stdout/stderr, usage), as execa's do. */
export interface SandboxResult<O extends SandboxOptions = SandboxOptions> {
  command: readonly string[];
  stdout: CapturedOutput<O, 'stdout'>;
  stderr: CapturedOutput<O, 'stderr'>;
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  verdict: Verdict;
  timedOut: boolean;
  isCanceled: boolean;
  failed: boolean;
  usage: KnownUnlessReject<O, SandboxUsage>;
  /** Setup time inside the helper, from start to the payload's fork (ms). */
  setup: KnownUnlessReject<O, { ms: number }>;
  helperPid: number | undefined;
  initPid: number | undefined;
  namespaces: Record<string, number> | undefined;
  setupFailure: SetupFailure | undefined;
  /** The seccomp policy in force and what it reported; undefined without a filter. */
  seccomp: SeccompReport | undefined;
  /** With verdict seccomp-violation: the call that ended the run. */
  violation: SeccompViolation | undefined;
  /** Each limit that was set: its value and the mechanism that enforced it. */
  limits: Partial<Record<(typeof LIMIT_NAMES)[number], AppliedLimit>>;
  /** The host ids the sandbox mapped to, and whether its per-user counters were its own. */
  hostIds: HostIds;
  /** With copyOut: each file that came out of /box, by name. */
  files?: Record<string, Buffer>;
  /** With copyOut: each file that did not, and why (symlink, hard link, not a regular file, directory, too large,
   *  missing, unreadable, or not collected when the run was stopped before it ended). */
  fileErrors?: Record<string, string>;
  /** A warm pool's run (SandboxPool.run): 'hit' when it ran in a sandbox made ahead, 'miss' when it ran cold. */
  pool?: 'hit' | 'miss';
  /** With pool 'miss': why the run could not use a warm sandbox. */
  poolMiss?: string;
}

/** The result of spawnSandboxed: the same, without captured output (it went to the streams). */
export type StreamedResult<O extends SandboxOptions = SandboxOptions> = Omit<SandboxResult<O>, 'stdout' | 'stderr'> & {
  stdout: undefined;
  stderr: undefined;
};

// Compile-time checks that the name lists above name every field of their interface.
type Missing<T, L extends readonly unknown[]> = Exclude<keyof T, L[number]>;
const everyOptionNamed: [Missing<SandboxOptions, typeof OPTION_NAMES>] extends [never]
  ? true
  : Missing<SandboxOptions, typeof OPTION_NAMES> = true;
const everyLimitNamed: [Missing<LimitOptions, typeof LIMIT_NAMES>] extends [never] ? true : Missing<LimitOptions, typeof LIMIT_NAMES> =
  true;
void everyOptionNamed;
void everyLimitNamed;
