// Turns a helper error event into a SetupFailure: names the plan step and gives the fix.
import { readFileSync } from 'node:fs';
import { usernsFix } from '../doctor/userns.js';
import { errnoName } from '../os-names.js';
import type { SetupFailure } from '../api/result.js';
import type { PlanOp } from '../plan/ops.js';
import type { ErrorEvent } from '../protocol/status.js';

/** The errno's symbolic name, e.g. 2 -> ENOENT. */
const errnoNameOf = (n: number | undefined): string | undefined => (n === undefined ? undefined : errnoName(n));

function readSysctl(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8').trim();
  } catch {
    return undefined;
  }
}

/** Why namespace creation was refused on this host, and the command that fixes it. */
export function usernsHint(errno: string | undefined): string {
  return usernsFix(errno);
}

/** Human description of a plan step. */
export function describeStep(op: PlanOp | undefined): string | undefined {
  if (!op) return undefined;
  const a = op.args;
  switch (op.op) {
    case 'bind':
      return `bind ${a[0]} -> ${a[1]} (${a[2]})`;
    case 'copy':
      return `copy ${a[0]} -> ${a[1]}`;
    case 'tmpfs':
      return `tmpfs on ${a[0]} (size ${a[1]})`;
    case 'symlink':
      return `symlink ${a[1]} -> ${a[0]}`;
    case 'dir':
    case 'file':
    case 'proc':
      return `${op.op} ${a[0]}`;
    default:
      return `${op.op} ${a.join(' ')}`.trim();
  }
}

function hintFor(e: ErrorEvent, name: string | undefined, op: PlanOp | undefined, program: string): string {
  const sys = e.syscall;
  if (e.stage === 'parent' && sys === 'clone') return usernsHint(name);
  if (e.stage === 'userns')
    return name === 'EPERM'
      ? 'the kernel refused the uid/gid map: a rootless sandbox can only map the caller\'s own ids; run `npx cubicle doctor`'
      : 'writing the uid/gid map failed; run `npx cubicle doctor`';
  if (op?.op === 'bind' && (sys === 'openat2' || sys === 'open') && name === 'ENOENT') return `the bind source ${op.args[0]} does not exist on the host; create it or fix the path`;
  if (op?.op === 'bind' && sys === 'openat2' && (name === 'ELOOP' || name === 'EXDEV'))
    return `the bind source ${op.args[0]} now has a symlink in its path (it changed since the options were checked); bind sources are never followed through symlinks`;
  if (op?.op === 'bind' && name === 'EACCES') return `the caller cannot access ${op.args[0]}; a rootless sandbox sees the host with the caller's own permissions`;
  if (op?.op === 'proc' && name === 'EPERM')
    return "the kernel refused a fresh /proc: the host's /proc has paths masked by over-mounts (Docker/Podman default); run the container with --security-opt systempaths=unconfined (or podman --security-opt unmask=ALL)";
  if (sys === 'lstat' && name === 'ELOOP') return `the target goes through a symlink inside the sandbox (${e.msg}); use the real path (e.g. /usr/bin instead of /bin)`;
  if ((op?.op === 'tmpfs' || op?.op === 'bind' || op?.op === 'dir' || op?.op === 'file') && name === 'EROFS')
    return 'the target lies inside a read-only bind; mount it somewhere else (e.g. under /tmp or a tmpfs of its own)';
  if (name === 'ENOSPC' && (op?.op === 'copy' || op?.op === 'file' || op?.op === 'dir' || op?.op === 'symlink')) return 'the root tmpfs is full; raise rootSize';
  if (e.stage === 'exec' && sys === 'execve') {
    if (name === 'ENOENT') return `${program} was not found inside the sandbox; give its full path, or bind the directory that holds it`;
    if (name === 'EACCES') return `${program} is not executable inside the sandbox (permissions, or a noexec mount)`;
    if (name === 'ENOEXEC') return `${program} is not a binary or script this kernel can run`;
  }
  if (e.stage === 'exec' && sys === 'chdir') return 'the working directory does not exist inside the sandbox or is not accessible to the sandbox user; bind it or choose another cwd';
  if (sys === 'mount' && name === 'EPERM') return 'the kernel refused a mount inside the user namespace; run `npx cubicle doctor`';
  return 'run `npx cubicle doctor` to check this host';
}

/** Builds the SetupFailure for an error event, using the plan to name the step that failed. */
export function toSetupFailure(e: ErrorEvent, plan: readonly PlanOp[], program: string): SetupFailure {
  const op = e.opIndex !== undefined ? plan[e.opIndex] : undefined;
  const name = errnoNameOf(e.errno);
  const step = describeStep(op);
  return {
    stage: e.stage,
    ...(e.op !== undefined ? { op: e.op } : {}),
    ...(step !== undefined ? { step } : {}),
    ...(e.syscall !== undefined ? { syscall: e.syscall } : {}),
    ...(e.errno !== undefined ? { errno: e.errno, errnoName: name } : {}),
    message: e.msg,
    hint: hintFor(e, name, op, program),
  };
}
