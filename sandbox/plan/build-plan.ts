// Turns resolved options into the ordered list of ops the helper interprets. Pure: the host view and the
// limits' ops are given to it.
import { posix } from 'node:path';
import { BOX_DIR } from '../options/box.js';
import type { ResolvedOptions } from '../options/resolve.js';
import type { NotifyMode } from '../types.js';
import { tmpfsInodes } from './limits.js';
import { Op, type PlanOp } from './ops.js';
import { EGRESS_LINK, egressRuleset, HOST_ALIAS, STACK_TIMEOUT_MS, stackArgs, stackIfname, stackRequests } from '../egress/egress.js';

/** Device nodes bound from the host's /dev (the rest of /dev is a fresh tmpfs). */
const DEVICES = ['null', 'zero', 'full', 'random', 'urandom'];

function passwd(o: ResolvedOptions): string {
  const lines = new Map<number, string>();
  lines.set(65534, 'nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin');
  lines.set(0, 'root:x:0:0:root:/nonexistent:/usr/sbin/nologin');
  lines.set(o.uid, `${o.username}:x:${o.uid}:${o.gid}:${o.username}:${o.env.HOME}:/bin/sh`);
  return [...lines.values()].join('\n') + '\n';
}

function group(o: ResolvedOptions): string {
  const lines = new Map<number, string>();
  lines.set(65534, 'nogroup:x:65534:');
  lines.set(0, 'root:x:0:');
  lines.set(o.gid, `${o.username}:x:${o.gid}:`);
  return [...lines.values()].join('\n') + '\n';
}

/** Inside paths of every tmpfs the plan mounts (their pages count as the sandbox's memory). */
export function tmpfsPaths(o: ResolvedOptions): string[] {
  return [
    '/',
    '/dev/shm',
    '/tmp',
    ...(o.box ? [BOX_DIR] : []),
    ...(o.home ? [o.home.path] : []),
    ...o.mounts.filter((m) => m.type === 'tmpfs').map((m) => m.target),
  ];
}

/** The files option's contents, back to back: the sealed blob the helper reads them from (fd `files`). */
export function filesBlob(o: ResolvedOptions): Buffer | undefined {
  return o.box?.files.length ? Buffer.concat(o.box.files.map((f) => f.data)) : undefined;
}

/** The work directory: its tmpfs (owned by the sandbox's user), the files in it, and what comes out after. */
function boxOps(o: ResolvedOptions, inodes: number): PlanOp[] {
  if (!o.box) return [];
  const ops = [Op.tmpfs(BOX_DIR, o.box.size, 0o755, Math.max(inodes, o.box.files.length + 64))];
  let offset = 0;
  for (const f of o.box.files) {
    ops.push(Op.fileData(`${BOX_DIR}/${f.name}`, f.mode, offset, f.data.length));
    offset += f.data.length;
  }
  for (const name of o.box.copyOut) ops.push(Op.copyOut(`${BOX_DIR}/${name}`, o.box.copyOutMax, o.box.size));
  return ops;
}

/** With a terminal: a devpts of the sandbox's own, /dev/ptmx as its multiplexer, and /dev/tty (which opens the
 *  caller's controlling terminal: inside, the sandbox's own pty). */
function terminalDevices(): PlanOp[] {
  return [Op.devpts('/dev/pts'), Op.symlink('pts/ptmx', '/dev/ptmx'), Op.bind('/dev/tty', '/dev/tty', 'dev')];
}

/** The user-mode stack and its allowlist, when the sandbox has egress or published ports (stage 0 runs them). */
function networkOps(o: ResolvedOptions): PlanOp[] {
  const n = o.egress;
  if (!n.stack) return [];
  return [
    Op.netStack(n.stack.program, stackIfname(n), STACK_TIMEOUT_MS),
    ...stackArgs(n).map((a) => Op.netStackArg(a)),
    ...stackRequests(n).map((r) => Op.netApi(r)),
    Op.netRules(n.stack.nft, egressRuleset(n)),
  ];
}

/** Depth of an inside path, so parents are mounted before what goes below them. */
const depth = (p: string): number => (p === '/' ? 0 : p.split('/').length - 1);

/** The ops each part of the limits contributes (see limits/plan.ts). */
export interface LimitOps {
  stage0Ops: readonly PlanOp[];
  initOps: readonly PlanOp[];
  payloadOps: readonly PlanOp[];
}

/** Builds the plan: identity, root, the host view, /etc, /dev, /proc, /tmp, caller mounts, limits, payload. */
export function buildPlan(o: ResolvedOptions, hostView: readonly PlanOp[], notify: NotifyMode, limits: LimitOps): PlanOp[] {
  const ops: PlanOp[] = [...limits.stage0Ops];
  if (o.runAs) ops.push(Op.hostIds(o.runAs.uid, o.runAs.gid));
  ops.push(Op.userns(o.uid, o.gid, o.outerUid, o.outerGid), Op.root(o.rootSize));
  ops.push(...hostView);
  ops.push(Op.file('/etc/passwd', passwd(o)), Op.file('/etc/group', group(o)));
  ops.push(Op.file('/etc/hostname', `${o.hostname}\n`));
  const egress = o.egress.mode === 'egress';
  const hostAlias = egress ? `${EGRESS_LINK.gateway}\t${HOST_ALIAS}\n` : '';
  ops.push(Op.file('/etc/hosts', `127.0.0.1\tlocalhost ${o.hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n${hostAlias}`));
  if (egress) ops.push(Op.file('/etc/resolv.conf', `nameserver ${EGRESS_LINK.dns}\noptions timeout:2 attempts:2\n`));

  const inodes = tmpfsInodes(o.limits.memoryBytes);
  ops.push(Op.tmpfs('/dev', 64 << 10, 0o755, 64));
  for (const d of DEVICES) ops.push(Op.bind(`/dev/${d}`, `/dev/${d}`, 'dev'));
  ops.push(Op.symlink('/proc/self/fd', '/dev/fd'));
  ['stdin', 'stdout', 'stderr'].forEach((name, fd) => ops.push(Op.symlink(`/proc/self/fd/${fd}`, `/dev/${name}`)));
  if (o.tty) ops.push(...terminalDevices());
  ops.push(Op.tmpfs('/dev/shm', o.shmSize, 0o1777, inodes));
  ops.push(Op.remountReadOnly('/dev')); // the payload may not replace /dev/fd, /dev/stdin... (shm stays writable)
  ops.push(Op.proc('/proc'));
  ops.push(Op.tmpfs('/tmp', o.tmpSize, 0o1777, inodes));
  ops.push(...boxOps(o, inodes));
  if (o.home) ops.push(Op.dir('/home'), Op.tmpfs(o.home.path, o.home.size, 0o755, inodes));

  const mounts = [...o.mounts].sort((a, b) => depth(a.target) - depth(b.target));
  for (const m of mounts) {
    if (m.type === 'tmpfs') ops.push(Op.tmpfs(m.target, m.size!, 0o755, inodes));
    else if (m.idmap) ops.push(Op.bindIdmap(m.source!, m.target, m.readOnly ? 'ro' : 'rw', m.idmap.uid, m.idmap.gid));
    else ops.push(Op.bind(m.source!, m.target, `${m.readOnly ? 'ro' : 'rw'}${m.noexec ? '-noexec' : ''}`));
  }
  if (!o.rootfs?.writable) ops.push(Op.rootReadOnly()); // a writable image root keeps its overlay writable
  ops.push(Op.hostname(o.hostname), Op.loopback(), ...networkOps(o), ...limits.initOps, ...limits.payloadOps, Op.cwd(o.cwd));
  for (const [k, v] of Object.entries(o.env)) ops.push(Op.env(k, v));
  for (const a of o.argv) ops.push(Op.arg(a));
  if (!o.argv[0]!.includes('/'))
    for (const dir of o.env.PATH!.split(':'))
      if (dir.startsWith('/') && !dir.split('/').includes('..')) ops.push(Op.search(posix.normalize(dir).replace(/(.)\/$/, '$1')));
  ops.push(Op.exec(o.argv[0]!)); // with a '/' but relative (./a.out): execve resolves it against the cwd inside
  if (o.tty) ops.push(Op.tty('/dev/pts/ptmx', o.tty.columns, o.tty.rows));
  if (notify !== 'none') ops.push(Op.seccomp(notify));
  ops.push(Op.end());
  return ops;
}
