// The files that came out of the work directory: init's framed stream (see COPY_OUT_STATUSES in
// protocol/opcodes.ts) parsed against the plan's copy-out ops. Pure. Every byte is the payload's: a frame that
// does not match the plan ends parsing, and every name without a frame is reported as not collected.
import { BOX_DIR } from '../options/box.js';
import { opArg, type PlanOp } from '../plan/ops.js';
import { COPY_OUT_STATUSES } from '../protocol/opcodes.js';

const REASONS: Record<(typeof COPY_OUT_STATUSES)[number], string> = {
  ok: '',
  missing: 'missing: no such file in /box',
  symlink: 'symlink: not followed',
  'not-regular': 'not a regular file (a fifo, socket or device)',
  directory: 'a directory, not a file',
  hardlink: 'hard link: the file has other names',
  'too-large': 'too large: over copyOutMax, or past boxSize for all files together',
  unreadable: 'unreadable by the sandbox user (its mode)',
};

export interface CopiedOut {
  files: Record<string, Buffer>;
  fileErrors: Record<string, string>;
}

/** The copy-out ops of a plan: op index → name in /box. */
function copyOutNames(plan: readonly PlanOp[]): Map<number, string> {
  const names = new Map<number, string>();
  plan.forEach((op, i) => {
    if (op.op === 'copy-out') names.set(i, opArg(op, 'path').slice(BOX_DIR.length + 1));
  });
  return names;
}

export function parseCopyOut(raw: Buffer | undefined, plan: readonly PlanOp[]): CopiedOut | undefined {
  const names = copyOutNames(plan);
  if (!names.size) return undefined;
  const out: CopiedOut = {
    files: Object.create(null) as Record<string, Buffer>,
    fileErrors: Object.create(null) as Record<string, string>,
  };
  const data = raw ?? Buffer.alloc(0);
  const pending = [...names.entries()];
  let at = 0;
  while (pending.length && at < data.length) {
    const nl = data.indexOf(0x0a, at);
    if (nl < 0 || nl - at > 64) break;
    const m = /^(\d+) ([a-z-]+) (\d+)$/.exec(data.toString('latin1', at, nl));
    const [index, name] = pending[0]!;
    if (!m || Number(m[1]) !== index || !(COPY_OUT_STATUSES as readonly string[]).includes(m[2]!)) break;
    const status = m[2] as (typeof COPY_OUT_STATUSES)[number];
    const size = Number(m[3]);
    if ((status !== 'ok' && size !== 0) || nl + 1 + size > data.length) break;
    if (status === 'ok') out.files[name] = Buffer.from(data.subarray(nl + 1, nl + 1 + size));
    else out.fileErrors[name] = REASONS[status];
    pending.shift();
    at = nl + 1 + size;
  }
  for (const [, name] of pending) out.fileErrors[name] = 'not collected: the sandbox ended before its files were copied out';
  return out;
}
