// Setup failures: a helper error event, or a helper that ended outside the protocol, turned into a
// SetupFailure that names the plan step and gives the fix.
import type { CgroupSetupError } from '../cgroup/index.js';
import { errnoName } from '../os-names.js';
import { constants } from 'node:os';
import { opArg, type PlanOp } from '../plan/ops.js';
import type { ErrorEvent } from '../protocol/events.js';
import type { SetupFailure } from '../types.js';
import type { RunRecord } from './record.js';

/** The errno's symbolic name, e.g. 2 -> ENOENT. */
const errnoNameOf = (n: number | undefined): string | undefined => (n === undefined ? undefined : errnoName(n));

/** Human description of a plan step. */
function describeStep(op: PlanOp | undefined): string | undefined {
  if (!op) return undefined;
  switch (op.op) {
    case 'bind':
      return `bind ${opArg(op, 'hostPath')} -> ${opArg(op, 'path')} (${opArg(op, 'access')})`;
    case 'copy':
      return `copy ${opArg(op, 'hostPath')} -> ${opArg(op, 'path')}`;
    case 'tmpfs':
      return `tmpfs on ${opArg(op, 'path')} (size ${opArg(op, 'sizeBytes')})`;
    case 'symlink':
      return `symlink ${opArg(op, 'path')} -> ${opArg(op, 'target')}`;
    case 'dir':
    case 'file':
    case 'proc':
      return `${op.op} ${opArg(op, 'path')}`;
    default:
      return `${op.op} ${op.args.join(' ')}`.trim();
  }
}

function hintFor(
  e: ErrorEvent,
  name: string | undefined,
  op: PlanOp | undefined,
  program: string,
  hostDiagnosis: string | undefined,
): string {
  const sys = e.syscall;
  if (e.stage === 'parent' && (sys === 'clone' || sys === 'clone3'))
    return hostDiagnosis ?? 'the kernel refused new namespaces; run `npx cubicle doctor` for a diagnosis of this host';
  if (e.stage === 'parent' && /^egress: /.test(e.msg))
    return (
      'the network stack (slirp4netns) or nft failed for this sandbox, so it did not start (egress never runs without ' +
      'its allowlist); check that slirp4netns and nftables are installed and /dev/net/tun is usable by this user'
    );
  if (e.stage === 'userns' && /newuidmap|newgidmap/.test(e.msg))
    return (
      "the caller's subordinate ids (/etc/subuid, /etc/subgid) could not be mapped; check that its ranges there are " +
      'its own and that newuidmap/newgidmap are setuid root (package uidmap); `npx cubicle doctor` checks both'
    );
  if (e.stage === 'userns')
    return name === 'EPERM'
      ? "the kernel refused the uid/gid map: a rootless sandbox can only map the caller's own ids; run `npx cubicle doctor`"
      : 'writing the uid/gid map failed; run `npx cubicle doctor`';
  if (op?.op === 'bind' && (sys === 'openat2' || sys === 'open') && name === 'ENOENT')
    return `the bind source ${opArg(op, 'hostPath')} does not exist on the host; create it or fix the path`;
  if (op?.op === 'bind' && sys === 'openat2' && (name === 'ELOOP' || name === 'EXDEV'))
    return (
      `the bind source ${opArg(op, 'hostPath')} now has a symlink in its path (it changed since the options were checked); ` +
      'bind sources are never followed through symlinks'
    );
  if (op?.op === 'bind-idmap' && sys === 'mount_setattr' && (name === 'EINVAL' || name === 'EOPNOTSUPP'))
    return (
      `the filesystem of ${opArg(op, 'hostPath')} cannot be idmapped (Linux 5.12+: ext4, xfs, btrfs, f2fs; tmpfs from 6.3; ` +
      'overlayfs from 5.19); move the directory to one that can, or bind it without idmap'
    );
  if (op?.op === 'bind' && name === 'EACCES')
    return `the caller cannot access ${opArg(op, 'hostPath')}; a rootless sandbox sees the host with the caller's own permissions`;
  if (op?.op === 'proc' && name === 'EPERM')
    return (
      "the kernel refused a fresh /proc: the host's /proc has paths masked by over-mounts (Docker/Podman default); " +
      'run the container with --security-opt systempaths=unconfined (or podman --security-opt unmask=ALL)'
    );
  if (op?.op === 'devpts')
    return "a terminal inside (tty) needs a devpts instance of the sandbox's own, which this kernel refused; run without tty";
  if (sys === 'lstat' && name === 'ELOOP')
    return `the target goes through a symlink inside the sandbox (${e.msg}); use the real path (e.g. /usr/bin instead of /bin)`;
  if ((op?.op === 'tmpfs' || op?.op === 'bind' || op?.op === 'dir' || op?.op === 'file') && name === 'EROFS')
    return 'the target lies inside a read-only bind; mount it somewhere else (e.g. under /tmp or a tmpfs of its own)';
  if (name === 'ENOSPC' && (op?.op === 'copy' || op?.op === 'file' || op?.op === 'dir' || op?.op === 'symlink'))
    return 'the root tmpfs is full; raise rootSize';
  if (e.stage === 'exec' && sys === 'execve') {
    if (name === 'ENOENT') return `${program} was not found inside the sandbox; give its full path, or bind the directory that holds it`;
    if (name === 'EACCES') return `${program} is not executable inside the sandbox (permissions, or a noexec mount)`;
    if (name === 'ENOEXEC') return `${program} is not a binary or script this kernel can run`;
  }
  if (e.stage === 'exec' && sys === 'chdir')
    return (
      'the working directory does not exist inside the sandbox or is not accessible to the sandbox user; ' + 'bind it or choose another cwd'
    );
  if (sys === 'mount' && name === 'EPERM') return 'the kernel refused a mount inside the user namespace; run `npx cubicle doctor`';
  return 'run `npx cubicle doctor` to check this host';
}

/** Builds the SetupFailure for an error event, using the plan to name the step that failed. A refused clone's
 *  hint is the doctor's diagnosis of this host, which the supervisor gathered (`hostDiagnosis`). */
export function toSetupFailure(e: ErrorEvent, plan: readonly PlanOp[], program: string, hostDiagnosis?: string): SetupFailure {
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
    hint: hintFor(e, name, op, program, hostDiagnosis),
  };
}

/** The failure of a run whose helper never sent a terminal event: it could not start, broke the protocol, or died. */
export function helperFailure(record: RunRecord): SetupFailure {
  const f = record.failure;
  if (f?.kind === 'launch') {
    const hint = (f.error as { hint?: unknown }).hint;
    return {
      stage: 'helper',
      message: f.error.message,
      hint:
        typeof hint === 'string'
          ? hint
          : 'check that the helper named above can be executed by this user (every directory above it searchable); ' +
            'npx cubicle doctor checks the host',
    };
  }
  const x = record.helperExit;
  const how = x ? (x.signal ?? `exit code ${x.code}`) : 'unknown status';
  const message = f?.kind === 'protocol' ? f.error.message : `the helper ended (${how}) without reporting a result`;
  const hint = f?.kind === 'protocol' ? (f.error as { hint?: unknown }).hint : undefined;
  return {
    stage: 'helper',
    message,
    hint:
      typeof hint === 'string' ? hint : 'this is a bug in cubicle, or the helper was killed from outside; rerun with NODE_DEBUG=cubicle',
  };
}

/** The failure of a run whose cgroup could not be created: the syscall, the path, and what to do. */
export function cgroupFailure(e: CgroupSetupError): SetupFailure {
  const errno = e.errno === undefined ? undefined : (constants.errno as Record<string, number>)[e.errno];
  let hint =
    'run `npx cubicle doctor` to check this host, or pass cgroups: false (--cgroups off) to enforce limits by rlimits and sampling';
  if (e.errno === 'EACCES' || e.errno === 'EPERM' || e.errno === 'EROFS')
    hint =
      `this user may not write ${e.path}: ` +
      'run as root, or pass a cgroup v2 directory delegated to this user as cgroupParent (--cgroup-parent)';
  else if (e.errno === 'EBUSY' && e.path.endsWith('cgroup.subtree_control'))
    hint =
      'cgroup v2 only lets a group without processes of its own delegate controllers: ' +
      'move the processes in that group into a leaf group, or pass a cgroupParent that holds none';
  else if (e.syscall === 'read')
    hint = 'the kernel rounded or refused the limit; choose another value, or pass cgroups: false to enforce it by sampling';
  return {
    stage: 'cgroup',
    syscall: e.syscall,
    ...(errno !== undefined ? { errno, errnoName: e.errno } : {}),
    message: e.message,
    hint,
  };
}
