// Typed constructors for plan ops and the encoder that turns a plan into the helper's token stream.
import { OPCODES, PLAN_MAGIC, PROTOCOL_VERSION, ProtocolLimits, type BindAccess, type NotifyModeName, type OpName, type RlimitName } from '../protocol/opcodes.js';

export interface PlanOp {
  readonly op: OpName;
  readonly args: readonly string[];
}

const mode = (m: number): string => m.toString(8);

/** Constructors, one per opcode, so callers never spell an opcode or its arity by hand. */
export const Op = {
  userns: (innerUid: number, innerGid: number, outerUid: number, outerGid: number): PlanOp => ({ op: 'userns', args: [innerUid, innerGid, outerUid, outerGid].map(String) }),
  hostIds: (uid: number, gid: number): PlanOp => ({ op: 'host-ids', args: [String(uid), String(gid)] }),
  root: (sizeBytes: number): PlanOp => ({ op: 'root', args: [String(sizeBytes)] }),
  dir: (path: string, m = 0o755): PlanOp => ({ op: 'dir', args: [path, mode(m)] }),
  bind: (hostPath: string, path: string, access: BindAccess): PlanOp => ({ op: 'bind', args: [hostPath, path, access] }),
  copy: (hostPath: string, path: string, m = 0o644): PlanOp => ({ op: 'copy', args: [hostPath, path, mode(m)] }),
  symlink: (target: string, path: string): PlanOp => ({ op: 'symlink', args: [target, path] }),
  file: (path: string, content: string, m = 0o644): PlanOp => ({ op: 'file', args: [path, mode(m), content] }),
  tmpfs: (path: string, sizeBytes: number, m = 0o755): PlanOp => ({ op: 'tmpfs', args: [path, String(sizeBytes), mode(m)] }),
  proc: (path: string): PlanOp => ({ op: 'proc', args: [path] }),
  remountReadOnly: (path: string): PlanOp => ({ op: 'remount-ro', args: [path] }),
  rootReadOnly: (): PlanOp => ({ op: 'root-ro', args: [] }),
  hostname: (name: string): PlanOp => ({ op: 'hostname', args: [name] }),
  loopback: (): PlanOp => ({ op: 'loopback', args: [] }),
  cwd: (path: string): PlanOp => ({ op: 'cwd', args: [path] }),
  env: (key: string, value: string): PlanOp => ({ op: 'env', args: [`${key}=${value}`] }),
  arg: (value: string): PlanOp => ({ op: 'arg', args: [value] }),
  search: (dir: string): PlanOp => ({ op: 'search', args: [dir] }),
  exec: (program: string): PlanOp => ({ op: 'exec', args: [program] }),
  seccomp: (notifyMode: NotifyModeName): PlanOp => ({ op: 'seccomp', args: [notifyMode] }),
  cgroupJoin: (dir: string): PlanOp => ({ op: 'cgroup-join', args: [dir] }),
  cgroupOomWatch: (dir: string): PlanOp => ({ op: 'cgroup-oom-watch', args: [dir] }),
  ucount: (name: string, value: number): PlanOp => ({ op: 'ucount', args: [name, String(value)] }),
  watch: (intervalUs: number, cpuUs: number, wallUs: number, memoryBytes: number, tasks: number, measureMemory: boolean): PlanOp => ({ op: 'watch', args: [intervalUs, cpuUs, wallUs, memoryBytes, tasks, measureMemory ? 1 : 0].map(String) }),
  cgroupCpu: (usageFile: string): PlanOp => ({ op: 'cgroup-cpu', args: [usageFile] }),
  cgroupInto: (dir: string): PlanOp => ({ op: 'cgroup-into', args: [dir] }),
  cgroupEvents: (file: string): PlanOp => ({ op: 'cgroup-events', args: [file] }),
  watchTmpfs: (path: string): PlanOp => ({ op: 'watch-tmpfs', args: [path] }),
  rlimit: (resource: RlimitName, soft: number | 'unlimited', hard: number | 'unlimited'): PlanOp => ({ op: 'rlimit', args: [resource, String(soft), String(hard)] }),
  end: (): PlanOp => ({ op: 'end', args: [] }),
} as const;

const ARITY = new Map<string, number>(OPCODES.map((o) => [o.name, o.args.length]));

/** Encodes a plan as NUL-terminated tokens; throws if a token holds a NUL byte or the plan is oversize. */
export function encodePlan(ops: readonly PlanOp[]): Buffer {
  const parts: Buffer[] = [Buffer.from(`${PLAN_MAGIC}\0${PROTOCOL_VERSION}\0`)];
  let size = parts[0]!.length;
  for (const { op, args } of ops) {
    if (ARITY.get(op) !== args.length) throw new Error(`internal: plan op ${op} given ${args.length} arguments`);
    for (const token of [op, ...args]) {
      if (token.includes('\0')) throw new TypeError(`a value passed to the sandbox contains a NUL byte: ${JSON.stringify(token.slice(0, 80))}`);
      const b = Buffer.from(`${token}\0`);
      if (b.length > ProtocolLimits.tokenMaxBytes) throw new TypeError(`a value passed to the sandbox is longer than ${ProtocolLimits.tokenMaxBytes} bytes: ${JSON.stringify(token.slice(0, 80))}...`);
      size += b.length;
      parts.push(b);
    }
  }
  if (ops.length > ProtocolLimits.maxOps) throw new TypeError(`the sandbox plan has ${ops.length} steps; at most ${ProtocolLimits.maxOps} are allowed`);
  if (size > ProtocolLimits.planMaxBytes) throw new TypeError(`the sandbox plan is ${size} bytes; at most ${ProtocolLimits.planMaxBytes} are allowed (too many binds, env or args?)`);
  return Buffer.concat(parts, size);
}

/** Renders a plan for humans, one op a line. */
export function formatPlan(ops: readonly PlanOp[]): string {
  return ops.map(({ op, args }) => [op, ...args.map((a) => JSON.stringify(a))].join(' ')).join('\n');
}
