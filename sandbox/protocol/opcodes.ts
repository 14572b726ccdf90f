/*
 * The supervisor <-> helper protocol. This module is the only place its constants live: the C header
 * (sandbox/native/protocol.h, generated at build time by ./c-header.ts) is derived from it.
 *
 *   supervisor (Node)                                     helper stage 0 (host side, single-threaded)
 *   ------------------------------------------------------------------------------------------------
 *   fd 3 plan    --"cubicle-plan" "1" {op arg...}* "end"-->  read to EOF, parsed, refused if malformed
 *   fd 4 bpf     --raw struct sock_filter[] (may be empty)-->  read to EOF, length % 8 == 0
 *   fd 5 status  <--{"ev":"hello",...}\n                       helper is alive, protocol version
 *                <--{"ev":"ready",...}\n                       namespaces built, payload forked
 *                <--{"ev":"exit",...}\n   (terminal)           exec happened; payload status + rusage
 *             or <--{"ev":"error",...}\n  (terminal)           setup failed; nothing ran
 *   fd 6 control --'t' terminate | 'k' kill-->                 EOF means the supervisor is gone: kill all
 *                --'w' cols rows (TerminalResize)-->          with a terminal: its new window size
 *
 * A plan with `await` (a warm pool's sandbox) stops after the mounts: init builds everything up to there, stage 0
 * writes {"ev":"warm",...}, and init waits. The run's own ops (payload, limits, files, copy-out) arrive later as
 * a second plan on fd 9 run, the BPF on fd 4 and the files blob as a stream on fd 7, all read by init; the
 * helper refuses a first plan holding a run op and a run plan holding anything else.
 *
 *   stage 0 --InitCommand byte--> init, on their internal pipe: go (ids mapped, start), terminate, kill,
 *                                 resize (the same 5 bytes, written at once)
 *
 * With a terminal (the `tty` op), init holds the pty master and relays it: helper fd 0 -> master (typed
 * input), master -> helper fd 1 (what the terminal shows); the payload's 0-2 are the pty's slave.
 *
 *   a named sandbox (listen-join): stage 0 listens on a unix socket in the owner's runtime directory. A client of
 *   the same uid (SO_PEERCRED) sends one JoinRequest byte: join -> stage 0 replies with a JoinReply line and the
 *   namespace fds of init (SCM_RIGHTS, in NAMESPACE_NAMES order); terminate / kill -> as on the control fd.
 *   The helper in join mode (the `join` op) is such a client: it enters those namespaces and runs one command.
 *
 * The status events and their fields are declared in ./events.ts.
 *
 * Plan tokens are NUL-terminated byte strings. Every opcode has a fixed arity; unknown opcodes, wrong
 * arity, relative paths, '..' components and oversize input are refused by the helper, never ignored.
 * Exactly one terminal event is written per run.
 */

import type { NotifyMode } from '../types.js';

/** Protocol version; the first two plan tokens are PLAN_MAGIC and this number. */
export const PROTOCOL_VERSION = 4;
export const PLAN_MAGIC = 'cubicle-plan';

/** File descriptors the helper receives besides stdio. */
export const HelperFd = { plan: 3, bpf: 4, status: 5, control: 6, files: 7, copyOut: 8, run: 9 } as const;

/**
 * How init frames each copy-out on fd `copyOut`, in plan order: a header line
 * `<op index> <status> <size>\n`, then `size` bytes of content (0 unless the status is `ok`). A status other
 * than ok names why the file was refused.
 */
export const COPY_OUT_STATUSES = ['ok', 'missing', 'symlink', 'not-regular', 'directory', 'hardlink', 'too-large', 'unreadable'] as const;

/**
 * Size bounds the helper enforces on its inputs. They hold whatever execve accepts (see options/exec-size.ts):
 * a token with its NUL is at most MAX_ARG_STRLEN (32 pages: 128 KiB), and the plan holds up to 6 MiB of
 * arguments and environment (a quarter of an 8 MiB stack is 2 MiB; 6 MiB is the kernel's cap), one op each.
 */
export const ProtocolLimits = {
  planMaxBytes: 16 << 20,
  tokenMaxBytes: 128 << 10,
  maxOps: 1 << 20,
  bpfMaxInstructions: 4096,
} as const;

/** One-byte commands on the control fd (resize is followed by its size, see TerminalResize). */
export const ControlByte = { terminate: 't', kill: 'k', resize: 'w' } as const;

/**
 * A window size message on the control fd and on init's pipe: the resize byte, then the columns and the rows as
 * big-endian 16-bit numbers. Each side writes it at once; stage 0 reassembles it however its reads split it.
 */
export const TerminalResize = { bytes: 5, maxCells: 65535 } as const;

/** One-byte requests on a named sandbox's join socket (see the table above). */
export const JoinRequest = { join: 'j', terminate: 't', kill: 'k' } as const;

/**
 * One-byte commands stage 0 sends init on their internal pipe: `go` once the id maps are written (init
 * waits for it before anything else), then `terminate` (SIGTERM to everything inside) or `kill` (SIGKILL to
 * everything inside; init still reaps and reports). EOF on that pipe means stage 0 is gone.
 */
export const InitCommand = { go: 'g', terminate: 't', kill: 'k', resize: 'w' } as const;

/**
 * Plan opcodes in the order the C enum numbers them. `args` names each argument (the arity is its
 * length); the comment says how the helper interprets it.
 */
export const OPCODES = [
  // identity: inner uid/gid seen inside, outer uid/gid they map to on the host (single-id maps)
  { name: 'userns', args: ['innerUid', 'innerGid', 'outerUid', 'outerGid'] },
  // stage 0, before anything else (only when started as root): become this unprivileged host user, so the
  // namespaces are created without privilege, as any rootless caller would
  { name: 'host-ids', args: ['hostUid', 'hostGid'] },
  // stage 0 (a rootless caller with a subordinate id range): the outer ids of `userns` are the caller's
  // subordinate ids, mapped by these setuid tools (shadow's newuidmap/newgidmap) instead of by stage 0 itself
  { name: 'id-mapper', args: ['newuidmap', 'newgidmap'] },
  // stage 0, before clone (root only): join a cgroup (v1 controller dir or v2 dir) by writing to its cgroup.procs
  { name: 'cgroup-join', args: ['dir'] },
  // stage 0 (cgroup v2): clone init straight into this group (CLONE_INTO_CGROUP); stage 0 stays outside
  { name: 'cgroup-into', args: ['dir'] },
  // stage 0 (cgroup v2): memory.events, whose oom/oom_kill counts make stage 0 stop the whole sandbox
  { name: 'cgroup-events', args: ['file'] },
  // stage 0: a cgroup's CPU usage file (cpuacct.usage, ns), opened before clone; init then judges and reports CPU
  // from it, which counts even children their parent never waited for
  { name: 'cgroup-cpu', args: ['usageFile'] },
  // stage 0 (cgroup v2): memory.current, opened before clone; init samples it for the peak (kernels without memory.peak)
  { name: 'cgroup-memory', args: ['currentFile'] },
  // stage 0: a cgroup v1 memory dir whose OOM events mean memory-limit: kill all
  { name: 'cgroup-oom-watch', args: ['dir'] },
  // the fresh root: a tmpfs of this many bytes
  { name: 'root', args: ['sizeBytes'] },
  // right after root (an image run): the root is an overlay whose lower layer is this host directory (opened by
  // stage 0 before anything else, no symlink followed) and whose upper is the root tmpfs, so nothing reaches the
  // directory. writable 0: the root is made read-only at the end (root-ro); 1: the payload may write anywhere
  { name: 'image', args: ['hostPath', 'writable'] },
  // stage 0 of a named sandbox: listen on this unix socket (bound before any id change) and hand the owner's
  // processes the namespace fds of init, or stop the sandbox, on request (see JoinRequest)
  { name: 'listen-join', args: ['socketPath'] },
  // join mode: instead of creating a sandbox, enter the running one whose stage 0 listens on this socket and run
  // the payload ops (userns inner ids, rlimit, cwd, env, arg, search, exec, seccomp) there, in its cgroups (cgroup-join)
  { name: 'join', args: ['socketPath'] },
  // filesystem ops, executed in plan order inside the new root (paths are absolute, inside view)
  { name: 'dir', args: ['path', 'modeOctal'] },
  { name: 'bind', args: ['hostPath', 'path', 'access'] }, // access: ro | rw | dev
  { name: 'copy', args: ['hostPath', 'path', 'modeOctal'] },
  { name: 'symlink', args: ['target', 'path'] },
  { name: 'file', args: ['path', 'modeOctal', 'content'] },
  // a bind whose files owned by diskUid/diskGid appear owned by the sandbox's own ids (an idmapped mount, Linux
  // 5.12+): stage 0, as root, clones and idmaps the host tree before the namespaces exist; init attaches it
  { name: 'bind-idmap', args: ['hostPath', 'path', 'access', 'diskUid', 'diskGid'] },
  // a file whose content is `length` bytes at `offset` of the sealed files blob on fd `files`, created with
  // exactly this mode (the caller's files option)
  { name: 'file-data', args: ['path', 'modeOctal', 'offset', 'length'] },
  // init, once everything inside has ended: this regular file (no symlink, no hard link, at most maxBytes; all
  // copied files at most totalBytes) goes to the supervisor on fd `copyOut`, framed (see CopyOutFrame)
  { name: 'copy-out', args: ['path', 'maxBytes', 'totalBytes'] },
  // a fresh tmpfs; inodes caps its files (nr_inodes): their kernel memory is not counted as the sandbox's
  { name: 'tmpfs', args: ['path', 'sizeBytes', 'modeOctal', 'inodes'] },
  // a warm sandbox's run: its tmpfs at path (mounted by the first plan) is remounted with this inode cap, the run's
  { name: 'tmpfs-inodes', args: ['path', 'inodes'] },
  { name: 'proc', args: ['path'] },
  // a devpts instance of the sandbox's own (newinstance, ptmxmode=0666, mode=0620, gid = the inner gid)
  { name: 'devpts', args: ['path'] },
  // make the mount at path read-only (that mount only, not those below it)
  { name: 'remount-ro', args: ['path'] },
  // after the filesystem: remount the root tmpfs read-only
  { name: 'root-ro', args: [] },
  { name: 'hostname', args: ['name'] },
  { name: 'loopback', args: [] },
  // a private network: stage 0 connects to the network's holder at this socket, receives its user and network
  // namespaces, joins both before the clone (so the holder's user namespace owns the sandbox's), then makes a veth
  // pair whose host end joins the bridge and whose other end is `eth0` in the sandbox; init gives eth0 this IPv4
  // address with this prefix length, brings it up, and lets the payload's gid use ICMP echo sockets. The socket's
  // peer must be the process holderPid (the holder the run's record named: a network removed and created again
  // under the same name in between has another holder, and the join fails rather than meet it)
  { name: 'network', args: ['socket', 'address', 'prefixLen', 'holderPid'] },
  // holder mode (a plan of holder ops only): the helper starts a network's holder listening on this socket
  { name: 'holder', args: ['socket'] },
  // holder mode: one line of the holder's user namespace map (kind uid|gid), written by stage 0 itself or, after
  // `id-mapper`, by newuidmap/newgidmap (all lines of a kind in one call)
  { name: 'holder-map', args: ['kind', 'inner', 'outer', 'count'] },
  // stage 0, after the id maps and before init is released: start this user-mode network stack (slirp4netns) on the
  // host side, attached to the sandbox's namespaces, and wait until interface `ifname` inside has its default route
  // (at most timeoutMs)
  { name: 'net-stack', args: ['program', 'ifname', 'timeoutMs'] },
  // one argument of the net-stack program, in order; stage 0 replaces {init} with init's host pid and {api} with the
  // path of the stack's API socket (in a private directory stage 0 makes, removed with the stack)
  { name: 'net-stack-arg', args: ['value'] },
  // stage 0, once the link is up: one JSON request to the stack's API socket (e.g. a published port); a reply
  // without "return" is a setup error
  { name: 'net-api', args: ['request'] },
  // stage 0, right after net-stack is up and before init is released: load this nftables ruleset (the egress
  // allowlist) into the sandbox's network namespace with the host's nft program; a failure is a setup error
  { name: 'net-rules', args: ['nft', 'ruleset'] },
  // init: cap a per-user kernel counter inside the sandbox's own user namespace (/proc/sys/user/max_<name>)
  { name: 'ucount', args: ['name', 'value'] },
  // init: sample the sandbox every intervalUs; kill everything when a limit is passed (0 = not watched)
  { name: 'watch', args: ['intervalUs', 'cpuUs', 'wallUs', 'memoryBytes', 'tasks', 'measureMemory'] },
  // init: count this tmpfs's used pages as sandbox memory when sampling
  { name: 'watch-tmpfs', args: ['path'] },
  // the payload stage: setrlimit(resource, soft, hard); values are numbers or "unlimited"
  { name: 'rlimit', args: ['resource', 'soft', 'hard'] },
  // the payload
  { name: 'cwd', args: ['path'] },
  { name: 'env', args: ['keyEqualsValue'] },
  { name: 'arg', args: ['value'] },
  { name: 'search', args: ['dir'] }, // PATH directories tried in order when exec has no '/'
  { name: 'exec', args: ['program'] },
  // init: a pseudo-terminal from this ptmx (inside the new root) of this window size: its slave becomes the
  // payload's stdio and controlling terminal; init relays the master to and from its own stdin/stdout
  { name: 'tty', args: ['ptmx', 'columns', 'rows'] },
  // how init handles the filter's user notifications: none (no notify actions), kill (report the syscall and
  // kill the sandbox), log (record it and let the call continue)
  { name: 'seccomp', args: ['notifyMode'] },
  // a warm pool's sandbox: the run's own ops come later, as a second plan on fd `run` (see the header)
  { name: 'await', args: [] },
  { name: 'end', args: [] },
] as const;

/** The ops of a run plan (fd `run`), read by init when the command arrives; a plan with `await` holds none of them. */
export const RUN_OPS = [
  'tmpfs-inodes',
  'file-data',
  'copy-out',
  'watch',
  'rlimit',
  'cwd',
  'env',
  'arg',
  'search',
  'exec',
  'seccomp',
] as const;

export type OpName = (typeof OPCODES)[number]['name'];

/** Values of the `access` argument of `bind`. */
/** How a bind is attached: read-only, read-write, with devices; the -noexec forms also refuse execution from it. */
export const BIND_ACCESS = ['ro', 'rw', 'dev', 'ro-noexec', 'rw-noexec'] as const;
export type BindAccess = (typeof BIND_ACCESS)[number];

export const NOTIFY_MODES = ['none', 'kill', 'log'] as const satisfies readonly NotifyMode[];

/** Resources the rlimit op accepts, in the helper's table order. */
export const RLIMIT_NAMES = [
  'cpu',
  'fsize',
  'data',
  'stack',
  'core',
  'nproc',
  'nofile',
  'memlock',
  'as',
  'msgqueue',
  'sigpending',
] as const;
export type RlimitName = (typeof RLIMIT_NAMES)[number];

/**
 * One-byte requests a client writes on a connection to a network's holder. `join`: the holder answers with its
 * user and network namespace fds (SCM_RIGHTS) and counts the connection as a member until it closes; `remove`:
 * the network is gone, the holder refuses further joins and exits once no member is left (it answers `ok`);
 * `ping`: it answers `ok`. Any other byte, or a peer that is not the holder's owner, is refused (`no`).
 */
export const HolderRequest = { join: 'j', remove: 'r', ping: 'p', ok: 'k', no: 'n' } as const;

/** Stage names carried by `error` events (and shown by `ps` as the helper renames itself). */
export const Stage = {
  parent: 'parent', // stage 0, host side: plan, clone, id maps, supervision
  userns: 'userns', // stage 0 writing uid_map/gid_map
  init: 'init', // stage 1, PID 1 inside: mounts, pivot_root, hostname, loopback
  exec: 'exec', // stage 2: ids, fds, caps, no_new_privs, seccomp, execve
  join: 'join', // join mode: entering a running sandbox's namespaces
  holder: 'holder', // a network's holder: its namespaces, bridge and socket
} as const;
export type StageName = (typeof Stage)[keyof typeof Stage];

/** Exit codes of the helper process itself (the payload's status travels in the `exit` event). */
export const HelperExit = { ok: 0, setupFailed: 125, usage: 126 } as const;
