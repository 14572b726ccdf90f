// Typed constructors for plan ops and the encoder that turns a plan into the helper's token stream.
import { SandboxOptionError } from '../errors.js';
import {
  OPCODES,
  PLAN_MAGIC,
  PROTOCOL_VERSION,
  ProtocolLimits,
  type BindAccess,
  type OpName,
  type RlimitName,
} from '../protocol/opcodes.js';
import type { NotifyMode } from '../types.js';

type OpSpec<N extends OpName> = Extract<(typeof OPCODES)[number], { readonly name: N }>;
/** The declared argument names of an opcode, in order. */
export type OpArgName<N extends OpName> = OpSpec<N>['args'][number];

/** One plan op: its opcode and its arguments in declared order (see OPCODES). */
export type PlanOp = { readonly [N in OpName]: { readonly op: N; readonly args: readonly string[] } }[OpName];

const ARG_NAMES = new Map<string, readonly string[]>(OPCODES.map((o) => [o.name, o.args]));

/** Builds an op from its arguments by name; the positions come from the declaration. */
export function makeOp<N extends OpName>(op: N, args: { readonly [A in OpArgName<N>]: string | number }): PlanOp {
  const names = ARG_NAMES.get(op)!;
  const given = args as Record<string, string | number>;
  for (const k of Object.keys(given)) if (!names.includes(k)) throw new Error(`internal: plan op ${op} has no argument ${k}`);
  return { op, args: names.map((n) => String(given[n])) } as PlanOp;
}

/** An op's argument by its declared name. */
export function opArg<N extends OpName>(op: { readonly op: N; readonly args: readonly string[] }, name: OpArgName<N>): string {
  const i = ARG_NAMES.get(op.op)!.indexOf(name);
  if (i < 0 || i >= op.args.length) throw new Error(`internal: plan op ${op.op} has no argument ${String(name)}`);
  return op.args[i]!;
}

const mode = (m: number): string => m.toString(8);

/** Constructors, one per opcode, so callers never spell an opcode, its arity or an argument's position. */
export const Op = {
  userns: (innerUid: number, innerGid: number, outerUid: number, outerGid: number): PlanOp =>
    makeOp('userns', { innerUid, innerGid, outerUid, outerGid }),
  hostIds: (uid: number, gid: number): PlanOp => makeOp('host-ids', { hostUid: uid, hostGid: gid }),
  idMapper: (newuidmap: string, newgidmap: string): PlanOp => makeOp('id-mapper', { newuidmap, newgidmap }),
  fileData: (path: string, mode: number, offset: number, length: number): PlanOp =>
    makeOp('file-data', { path, modeOctal: mode.toString(8), offset, length }),
  bindIdmap: (hostPath: string, path: string, access: 'ro' | 'rw', diskUid: number, diskGid: number): PlanOp =>
    makeOp('bind-idmap', { hostPath, path, access, diskUid, diskGid }),
  copyOut: (path: string, maxBytes: number, totalBytes: number): PlanOp => makeOp('copy-out', { path, maxBytes, totalBytes }),
  root: (sizeBytes: number): PlanOp => makeOp('root', { sizeBytes }),
  image: (hostPath: string, writable: boolean): PlanOp => makeOp('image', { hostPath, writable: writable ? 1 : 0 }),
  dir: (path: string, m = 0o755): PlanOp => makeOp('dir', { path, modeOctal: mode(m) }),
  bind: (hostPath: string, path: string, access: BindAccess): PlanOp => makeOp('bind', { hostPath, path, access }),
  copy: (hostPath: string, path: string, m = 0o644): PlanOp => makeOp('copy', { hostPath, path, modeOctal: mode(m) }),
  symlink: (target: string, path: string): PlanOp => makeOp('symlink', { target, path }),
  file: (path: string, content: string, m = 0o644): PlanOp => makeOp('file', { path, modeOctal: mode(m), content }),
  tmpfs: (path: string, sizeBytes: number, m: number, inodes: number): PlanOp =>
    makeOp('tmpfs', { path, sizeBytes, modeOctal: mode(m), inodes }),
  proc: (path: string): PlanOp => makeOp('proc', { path }),
  devpts: (path: string): PlanOp => makeOp('devpts', { path }),
  tty: (ptmx: string, columns: number, rows: number): PlanOp => makeOp('tty', { ptmx, columns, rows }),
  remountReadOnly: (path: string): PlanOp => makeOp('remount-ro', { path }),
  rootReadOnly: (): PlanOp => makeOp('root-ro', {}),
  hostname: (name: string): PlanOp => makeOp('hostname', { name }),
  loopback: (): PlanOp => makeOp('loopback', {}),
  network: (socket: string, address: string, prefixLen: number, holderPid: number): PlanOp =>
    makeOp('network', { socket, address, prefixLen, holderPid }),
  holder: (socket: string): PlanOp => makeOp('holder', { socket }),
  holderMap: (kind: 'uid' | 'gid', inner: number, outer: number, count: number): PlanOp =>
    makeOp('holder-map', { kind, inner, outer, count }),
  netStack: (program: string, ifname: string, timeoutMs: number): PlanOp => makeOp('net-stack', { program, ifname, timeoutMs }),
  netStackArg: (value: string): PlanOp => makeOp('net-stack-arg', { value }),
  netRules: (nft: string, ruleset: string): PlanOp => makeOp('net-rules', { nft, ruleset }),
  netApi: (request: string): PlanOp => makeOp('net-api', { request }),
  cwd: (path: string): PlanOp => makeOp('cwd', { path }),
  env: (key: string, value: string): PlanOp => makeOp('env', { keyEqualsValue: `${key}=${value}` }),
  arg: (value: string): PlanOp => makeOp('arg', { value }),
  search: (dir: string): PlanOp => makeOp('search', { dir }),
  exec: (program: string): PlanOp => makeOp('exec', { program }),
  seccomp: (notifyMode: NotifyMode): PlanOp => makeOp('seccomp', { notifyMode }),
  cgroupJoin: (dir: string): PlanOp => makeOp('cgroup-join', { dir }),
  cgroupOomWatch: (dir: string): PlanOp => makeOp('cgroup-oom-watch', { dir }),
  ucount: (name: string, value: number): PlanOp => makeOp('ucount', { name, value }),
  watch: (intervalUs: number, cpuUs: number, wallUs: number, memoryBytes: number, tasks: number, measureMemory: boolean): PlanOp =>
    makeOp('watch', { intervalUs, cpuUs, wallUs, memoryBytes, tasks, measureMemory: measureMemory ? 1 : 0 }),
  cgroupCpu: (usageFile: string): PlanOp => makeOp('cgroup-cpu', { usageFile }),
  cgroupMemory: (currentFile: string): PlanOp => makeOp('cgroup-memory', { currentFile }),
  cgroupInto: (dir: string): PlanOp => makeOp('cgroup-into', { dir }),
  cgroupEvents: (file: string): PlanOp => makeOp('cgroup-events', { file }),
  watchTmpfs: (path: string): PlanOp => makeOp('watch-tmpfs', { path }),
  rlimit: (resource: RlimitName, soft: number | 'unlimited', hard: number | 'unlimited'): PlanOp =>
    makeOp('rlimit', { resource, soft, hard }),
  tmpfsInodes: (path: string, inodes: number): PlanOp => makeOp('tmpfs-inodes', { path, inodes }),
  await: (): PlanOp => makeOp('await', {}),
  listenJoin: (socketPath: string): PlanOp => makeOp('listen-join', { socketPath }),
  join: (socketPath: string): PlanOp => makeOp('join', { socketPath }),
  end: (): PlanOp => makeOp('end', {}),
} as const;

const ARITY = new Map<string, number>(OPCODES.map((o) => [o.name, o.args.length]));

/** Encodes a plan as NUL-terminated tokens; throws if a token holds a NUL byte or the plan is oversize. */
export function encodePlan(ops: readonly PlanOp[]): Buffer {
  const parts: Buffer[] = [Buffer.from(`${PLAN_MAGIC}\0${PROTOCOL_VERSION}\0`)];
  let size = parts[0]!.length;
  for (const { op, args } of ops) {
    if (ARITY.get(op) !== args.length) throw new Error(`internal: plan op ${op} given ${args.length} arguments`);
    for (const token of [op, ...args]) {
      if (token.includes('\0'))
        throw new SandboxOptionError(
          op,
          `a value passed to the sandbox (plan step ${op}) contains a NUL byte: ${JSON.stringify(token.slice(0, 80))}`,
        );
      const b = Buffer.from(`${token}\0`);
      if (b.length > ProtocolLimits.tokenMaxBytes)
        throw new SandboxOptionError(
          op,
          `a value passed to the sandbox (plan step ${op}) is longer than ${ProtocolLimits.tokenMaxBytes} bytes: ` +
            `${JSON.stringify(token.slice(0, 80))}...`,
        );
      size += b.length;
      parts.push(b);
    }
  }
  if (ops.length > ProtocolLimits.maxOps)
    throw new SandboxOptionError(
      'options',
      `the sandbox plan has ${ops.length} steps; at most ${ProtocolLimits.maxOps} are allowed (too many mounts, env entries or arguments)`,
    );
  if (size > ProtocolLimits.planMaxBytes)
    throw new SandboxOptionError(
      'options',
      `the sandbox plan is ${size} bytes; at most ${ProtocolLimits.planMaxBytes} are allowed (too many binds, env or args?)`,
    );
  return Buffer.concat(parts, size);
}

/** Renders a plan for humans, one op a line. */
export function formatPlan(ops: readonly PlanOp[]): string {
  return ops.map(({ op, args }) => [op, ...args.map((a) => JSON.stringify(a))].join(' ')).join('\n');
}
