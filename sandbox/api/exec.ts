// exec: one more command inside a running named sandbox, by the helper in join mode. It runs as the payload
// runs (the same ids, rlimits, seccomp program, no capabilities, NO_NEW_PRIVS), in the sandbox's namespaces, root
// and cgroups, with the payload's cwd and environment unless the call gives its own; the result is a run's.
import { posix } from 'node:path';
import { nameViolation, prepareRun } from './prepare.js';
import { ErrorCode } from '../errors.js';
import { judge } from '../outcome/judge.js';
import { toSandboxError } from '../outcome/render.js';
import { encodePlan, Op, opArg, type PlanOp } from '../plan/ops.js';
import { supervise } from '../supervisor/supervisor.js';
import type { SandboxOptions, SandboxResult, StreamedResult } from '../types.js';
import { checkSandboxName, findSandbox, SandboxNameError, type SandboxEntry } from '../host/registry.js';

/** What exec accepts: the command's own I/O, environment additions, cwd and time; the sandbox's limits stay. */
export type ExecOptions = Pick<
  SandboxOptions,
  | 'env'
  | 'cwd'
  | 'timeout'
  | 'cancelSignal'
  | 'forceKillAfterDelay'
  | 'reject'
  | 'input'
  | 'stdin'
  | 'stdout'
  | 'stderr'
  | 'encoding'
  | 'maxBuffer'
>;
const EXEC_OPTION_NAMES = new Set<string>([
  'env',
  'cwd',
  'timeout',
  'cancelSignal',
  'forceKillAfterDelay',
  'reject',
  'input',
  'stdin',
  'stdout',
  'stderr',
  'encoding',
  'maxBuffer',
]);

/** The payload ops exec repeats, as the run's supervisor recorded them (see supervisor/register.ts). */
const STORED_OPS = new Set<string>(['userns', 'id-mapper', 'rlimit', 'cwd', 'env', 'search', 'seccomp']);

/** The entry's payload ops, checked: only those exec repeats, each with its arguments (the helper checks arity). */
function storedOps(entry: SandboxEntry): PlanOp[] {
  return entry.join.ops.map((op) => {
    if (!STORED_OPS.has(op.op) || !Array.isArray(op.args) || op.args.some((a) => typeof a !== 'string'))
      throw new SandboxNameError(
        `the registry entry of "${entry.name}" holds an op exec does not take (${String(op.op)}); stop and restart it`,
      );
    return op as PlanOp;
  });
}

/** The payload's environment and cwd, as the entry recorded them. */
function payloadEnv(entry: SandboxEntry): { env: Record<string, string>; cwd: string } {
  const env: Record<string, string> = {};
  let cwd = '/';
  for (const op of storedOps(entry)) {
    if (op.op === 'env') {
      const kv = opArg(op, 'keyEqualsValue');
      const eq = kv.indexOf('=');
      env[kv.slice(0, eq)] = kv.slice(eq + 1);
    } else if (op.op === 'cwd') cwd = opArg(op, 'path');
  }
  return { env, cwd };
}

/** The live entry of `name`, or a clear error. */
export function requireSandbox(name: string): SandboxEntry {
  const entry = findSandbox(checkSandboxName(name));
  if (!entry) throw new SandboxNameError(`no sandbox named "${name}" is running for this user (cubicle ps lists them)`, ErrorCode.notFound);
  if (entry.state !== 'running') throw new SandboxNameError(`the sandbox "${name}" is still starting; try again in a moment`);
  return entry;
}

function prepareExec(entry: SandboxEntry, cmd: string | readonly string[], options: ExecOptions) {
  for (const k of Object.keys(options)) if (!EXEC_OPTION_NAMES.has(k)) throw new SandboxNameError(`exec: unknown option "${k}"`);
  const base = payloadEnv(entry);
  // Validated as a run's options would be (policy none: the sandbox's own seccomp program is used).
  const p = prepareRun(cmd, {
    ...options,
    env: { ...base.env, ...(options.env ?? {}) },
    cwd: options.cwd ?? base.cwd,
    policy: 'none',
    cgroups: false,
  });
  const o = p.options;
  const ops: PlanOp[] = [Op.join(entry.join.socket)];
  // As root, the command joins the sandbox's cgroups (counted with it, held by its limits).
  if (process.geteuid?.() === 0) for (const dir of entry.cgroup?.join ?? []) ops.push(Op.cgroupJoin(dir));
  const kept = storedOps(entry).filter((op) => op.op !== 'env' && op.op !== 'cwd' && op.op !== 'search' && op.op !== 'seccomp');
  ops.push(...kept, Op.cwd(o.cwd));
  for (const [k, v] of Object.entries(o.env)) ops.push(Op.env(k, v));
  for (const a of o.argv) ops.push(Op.arg(a));
  if (!o.argv[0]!.includes('/'))
    for (const dir of o.env.PATH!.split(':'))
      if (dir.startsWith('/') && !dir.split('/').includes('..')) ops.push(Op.search(posix.normalize(dir).replace(/(.)\/$/, '$1')));
  ops.push(Op.exec(o.argv[0]!));
  const notify = entry.seccomp?.notify ?? 'none';
  if (notify !== 'none') ops.push(Op.seccomp(notify));
  ops.push(Op.end());
  const seccomp = entry.seccomp ? { ...entry.seccomp, name: nameViolation } : undefined;
  return {
    options: o,
    supervise: {
      ...p.supervise,
      plan: ops,
      planBytes: encodePlan(ops),
      bpf: Buffer.from(entry.join.bpf, 'base64'),
      cgroup: undefined,
      subids: undefined,
      files: undefined,
      joinHostIds: entry.hostIds,
      // nothing inside watches the command's own time: the supervisor's timer is its limit, not a backstop
      backstopSlackMs: 0,
    },
    judge: { ...p.judge, plan: ops, seccomp },
  };
}

/** Streams of a command exec'd into a sandbox, and its result, as spawnSandboxed gives them. */
export function spawnInSandbox(name: string, cmd: string | readonly string[], options: ExecOptions = {}) {
  const p = prepareExec(requireSandbox(name), cmd, options);
  const s = supervise(p.supervise, false);
  const result = s.record.then((record) => {
    const r = judge(record, p.judge);
    if (r.failed && p.options.reject) throw toSandboxError(r);
    return r as unknown as StreamedResult;
  });
  result.catch(() => {});
  return {
    pid: s.pid,
    stdin: s.stdin,
    stdout: s.stdout,
    stderr: s.stderr,
    result,
    kill: (signal?: 'SIGTERM' | 'SIGKILL') => s.kill(signal),
  };
}

/**
 * Runs a command inside the running sandbox `name` and resolves with its output and usage (a run's result). A string
 * runs via /bin/sh -c; an array is exec'd directly. Rejects with a SandboxError when it fails, unless reject: false.
 */
export async function execInSandbox(name: string, cmd: string | readonly string[], options: ExecOptions = {}): Promise<SandboxResult> {
  const p = prepareExec(requireSandbox(name), cmd, options);
  const record = await supervise(p.supervise, true).record;
  const r = judge(record, p.judge);
  if (r.failed && p.options.reject) {
    const f = record.failure;
    throw toSandboxError(r, f?.kind === 'launch' || f?.kind === 'protocol' ? f.error : undefined);
  }
  return r;
}
