import {
  BIND_ACCESS,
  ControlByte,
  NOTIFY_MODES,
  RLIMIT_NAMES,
  WATCHED_LIMITS,
  HelperExit,
  HelperFd,
  OPCODES,
  PLAN_MAGIC,
  PROTOCOL_VERSION,
  ProtocolLimits,
  Stage,
  StatusEvent,
} from './opcodes.js';

const cName = (s: string): string => s.replace(/([a-z0-9])([A-Z])/g, '$1_$2').toUpperCase().replace(/[^A-Z0-9]/g, '_');

/** Renders the C header that mirrors ./opcodes.ts, so no constant is copied by hand. */
export function renderProtocolHeader(): string {
  const lines: string[] = [
    '/* Generated from sandbox/protocol/opcodes.ts by sandbox/protocol/c-header.ts. Do not edit. */',
    '#ifndef CUBICLE_PROTOCOL_H',
    '#define CUBICLE_PROTOCOL_H',
    '',
    `#define CUB_PROTOCOL_VERSION ${PROTOCOL_VERSION}`,
    `#define CUB_PLAN_MAGIC ${JSON.stringify(PLAN_MAGIC)}`,
    '',
  ];
  for (const [k, v] of Object.entries(HelperFd)) lines.push(`#define CUB_FD_${cName(k)} ${v}`);
  lines.push('');
  lines.push(`#define CUB_PLAN_MAX_BYTES ${ProtocolLimits.planMaxBytes}`);
  lines.push(`#define CUB_TOKEN_MAX_BYTES ${ProtocolLimits.tokenMaxBytes}`);
  lines.push(`#define CUB_MAX_OPS ${ProtocolLimits.maxOps}`);
  lines.push(`#define CUB_BPF_MAX_INSNS ${ProtocolLimits.bpfMaxInstructions}`);
  lines.push('');
  for (const [k, v] of Object.entries(ControlByte)) lines.push(`#define CUB_CTL_${cName(k)} '${v}'`);
  lines.push('');
  for (const [k, v] of Object.entries(HelperExit)) lines.push(`#define CUB_EXIT_${cName(k)} ${v}`);
  lines.push('');
  for (const [k, v] of Object.entries(StatusEvent)) lines.push(`#define CUB_EV_${cName(k)} "${v}"`);
  lines.push('');
  for (const [k, v] of Object.entries(Stage)) lines.push(`#define CUB_STAGE_${cName(k)} "${v}"`);
  lines.push('');
  lines.push('enum cub_bind_access {');
  BIND_ACCESS.forEach((a, i) => lines.push(`  CUB_BIND_${cName(a)} = ${i},`));
  lines.push('};');
  lines.push(`static const char *const CUB_BIND_ACCESS_NAMES[] = {${BIND_ACCESS.map((a) => JSON.stringify(a)).join(', ')}};`);
  lines.push(`#define CUB_BIND_ACCESS_COUNT ${BIND_ACCESS.length}`);
  lines.push('');
  lines.push('enum cub_notify_mode {');
  NOTIFY_MODES.forEach((m, i) => lines.push(`  CUB_NOTIFY_${cName(m)} = ${i},`));
  lines.push('};');
  lines.push(`static const char *const CUB_NOTIFY_MODE_NAMES[] = {${NOTIFY_MODES.map((m) => JSON.stringify(m)).join(', ')}};`);
  lines.push(`#define CUB_NOTIFY_MODE_COUNT ${NOTIFY_MODES.length}`);
  lines.push('#define CUB_MAX_VIOLATIONS 64');
  lines.push(`static const char *const CUB_RLIMIT_NAMES[] = {${RLIMIT_NAMES.map((m) => JSON.stringify(m)).join(', ')}};`);
  lines.push(`#define CUB_RLIMIT_COUNT ${RLIMIT_NAMES.length}`);
  lines.push('enum cub_limit_kind {');
  WATCHED_LIMITS.forEach((m, i) => lines.push(`  CUB_LIMIT_${cName(m)} = ${i + 1},`));
  lines.push('};');
  lines.push(`static const char *const CUB_LIMIT_NAMES[] = {"none", ${WATCHED_LIMITS.map((m) => JSON.stringify(m)).join(', ')}};`);
  lines.push('');
  lines.push('enum cub_op {');
  OPCODES.forEach((op, i) => lines.push(`  CUB_OP_${cName(op.name)} = ${i},`));
  lines.push(`  CUB_OP__COUNT = ${OPCODES.length}`);
  lines.push('};');
  lines.push('');
  lines.push('struct cub_op_spec {');
  lines.push('  const char *name;');
  lines.push('  unsigned arity;');
  lines.push('};');
  lines.push('static const struct cub_op_spec CUB_OP_SPECS[CUB_OP__COUNT] = {');
  for (const op of OPCODES) lines.push(`  {${JSON.stringify(op.name)}, ${op.args.length}},`);
  lines.push('};');
  lines.push(`#define CUB_MAX_ARITY ${Math.max(...OPCODES.map((o) => o.args.length))}`);
  lines.push('');
  lines.push('#endif');
  return lines.join('\n') + '\n';
}
