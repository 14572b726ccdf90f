/*
 * Renders the C side of the protocol from ./opcodes.ts and ./events.ts, so no constant, field or event is
 * written twice: protocol.h (constants, opcodes and their argument indices, one struct per status event)
 * and protocol.c (one JSON emitter per status event). Both are generated at build time into the build
 * directory, next to the helper.
 */
import {
  BIND_ACCESS,
  ControlByte,
  COPY_OUT_STATUSES,
  HelperExit,
  HelperFd,
  RUN_OPS,
  HolderRequest,
  InitCommand,
  TerminalResize,
  JoinRequest,
  NOTIFY_MODES,
  OPCODES,
  PLAN_MAGIC,
  PROTOCOL_VERSION,
  ProtocolLimits,
  RLIMIT_NAMES,
  Stage,
} from './opcodes.js';
import {
  MAX_STOPS,
  MAX_VIOLATIONS,
  NAMESPACE_NAMES,
  STATUS_EVENTS,
  STOP_KINDS,
  type EventName,
  type FieldSpec,
  type FieldsSpec,
} from './events.js';
import { PIPE_BUF, lineBound, linePrefix, memberBound, valueBound } from './event-bounds.js';

const cName = (s: string): string =>
  s
    .replace(/([a-z0-9])([A-Z])/g, '$1_$2')
    .toUpperCase()
    .replace(/[^A-Z0-9]/g, '_');
const snake = (s: string): string => cName(s).toLowerCase();
/** Names a struct member may not take in C (keywords, and macros of the C library such as errno). */
const C_RESERVED = new Set(
  (
    'auto break case char const continue default do double else enum extern float for goto if inline int long register restrict ' +
    'return short signed sizeof static struct switch typedef union unsigned void volatile while bool true false errno stdin stdout stderr'
  ).split(' '),
);
/** The C member name of a field: snake_case, with a trailing underscore where C reserves the name. */
export const cMember = (field: string): string => (C_RESERVED.has(snake(field)) ? `${snake(field)}_` : snake(field));
const cStr = (s: string): string => JSON.stringify(s); // the values are ASCII: a JSON string literal is a C one

/**
 * Events written by stage 0 while no other process holding the status fd can run: hello (before the clone)
 * and exit (after init was reaped, and with it every process of the sandbox; the payload never holds the
 * status fd). Their lines may exceed PIPE_BUF. Every other event (error from any stage, ready while init may
 * be failing) must fit in one atomic pipe write: the emitter caps its strings so that the line does.
 */
const WRITTEN_ALONE: ReadonlySet<EventName> = new Set<EventName>(['hello', 'exit']);
/** A line written while others may write stays at most this long, so one write() is atomic. */
const ATOMIC_LINE_MAX = PIPE_BUF - 1;

/** Enums with a name of their own in C; any other enum field is named after its path. */
const NAMED_ENUMS = new Map<readonly string[], string>([[STOP_KINDS, 'stop_kind']]);

interface CEnum {
  tag: string; // enum cub_<tag>
  prefix: string; // CUB_<PREFIX>_<VALUE>
  values: readonly string[];
}

function enumFor(values: readonly string[], path: readonly string[]): CEnum {
  const tag = NAMED_ENUMS.get(values) ?? path.join('_');
  for (const v of values)
    if (!/^[\x20-\x7e]*$/.test(v) || /["\\]/.test(v)) throw new Error(`enum value ${JSON.stringify(v)} must be plain ASCII`);
  return { tag, prefix: cName(tag.replace(/_kind$/, '')), values };
}

const lineLimit = (event: EventName): number => (WRITTEN_ALONE.has(event) ? lineBound(event) : Math.min(lineBound(event), ATOMIC_LINE_MAX));

/** Walks every status event, collecting the enums and structs it needs (nested ones first). */
function renderEventTypes(): { enums: string[]; structs: string[] } {
  const enums: string[] = [];
  const structs: string[] = [];
  const seenEnums = new Set<string>();
  const emitEnum = (e: CEnum): void => {
    if (seenEnums.has(e.tag)) return;
    seenEnums.add(e.tag);
    enums.push(`enum cub_${e.tag} {`);
    e.values.forEach((v, i) => enums.push(`  CUB_${e.prefix}_${cName(v)} = ${i},`));
    enums.push('};');
    enums.push(`static const char *const CUB_${cName(e.tag)}_NAMES[] = {${e.values.map(cStr).join(', ')}};`);
    enums.push(`#define CUB_${cName(e.tag)}_COUNT ${e.values.length}`);
    enums.push('');
  };
  const struct = (tag: string, fields: FieldsSpec, path: string[]): void => {
    const body: string[] = [];
    for (const [name, f] of Object.entries(fields)) {
      const m = cMember(name);
      if (f.optional) body.push(`  int has_${m};`);
      switch (f.type) {
        case 'int':
          body.push(`  long long ${m};`);
          break;
        case 'bool':
          body.push(`  int ${m};`);
          break;
        case 'string':
          body.push(`  const char *${m}; /* at most ${f.maxBytes} bytes of it are sent */`);
          break;
        case 'enum': {
          const e = enumFor(f.values, [...path, snake(name)]);
          emitEnum(e);
          body.push(`  enum cub_${e.tag} ${m};`);
          break;
        }
        case 'object':
          struct(`${tag}_${m}`, f.fields, [...path, snake(name)]);
          body.push(`  struct ${tag}_${m} ${m};`);
          break;
        case 'array':
          struct(`${tag}_${m}_item`, f.item, [...path, snake(name)]);
          structs.push(`#define ${cName(tag)}_${cName(m)}_MAX ${f.maxItems}`, '');
          body.push(`  struct ${tag}_${m}_item ${m}[${cName(tag)}_${cName(m)}_MAX];`);
          body.push(`  unsigned n_${m}; /* entries of ${m} in use */`);
          break;
      }
    }
    if (body.length === 0) body.push('  char unused_;');
    structs.push(`struct ${tag} {`, ...body, '};');
    // An X-macro over the members, for code that fills a struct field by field by name.
    structs.push(
      `#define ${cName(tag)}_FIELDS(X) ${Object.keys(fields)
        .map((n) => `X(${cMember(n)})`)
        .join(' ')}`,
    );
    structs.push('');
  };
  for (const [event, fields] of Object.entries(STATUS_EVENTS) as [EventName, FieldsSpec][]) {
    struct(`cub_ev_${snake(event)}`, fields, [snake(event)]);
    structs.push(`/* The longest ${event} line; a line is never longer than CUB_EV_${cName(event)}_LINE_MAX bytes. */`);
    structs.push(`#define CUB_EV_${cName(event)}_LINE_MAX ${lineLimit(event)}`);
    structs.push(`void cub_emit_${snake(event)}(const struct cub_ev_${snake(event)} *e);`);
    structs.push('');
  }
  return { enums, structs };
}

/** Renders the C header that mirrors ./opcodes.ts and ./events.ts, so no constant is copied by hand. */
export function renderProtocolHeader(): string {
  const lines: string[] = [
    '/* Generated from sandbox/protocol/opcodes.ts and events.ts by sandbox/protocol/c-header.ts. Do not edit. */',
    '#ifndef CUBICLE_PROTOCOL_H',
    '#define CUBICLE_PROTOCOL_H',
    '',
    `#define CUB_PROTOCOL_VERSION ${PROTOCOL_VERSION}`,
    `#define CUB_PLAN_MAGIC ${cStr(PLAN_MAGIC)}`,
    '',
  ];
  for (const [k, v] of Object.entries(HelperFd)) lines.push(`#define CUB_FD_${cName(k)} ${v}`);
  lines.push('');
  lines.push(`#define CUB_PLAN_MAX_BYTES ${ProtocolLimits.planMaxBytes}`);
  lines.push(`#define CUB_TOKEN_MAX_BYTES ${ProtocolLimits.tokenMaxBytes}`);
  lines.push(`#define CUB_MAX_OPS ${ProtocolLimits.maxOps}`);
  lines.push(`#define CUB_BPF_MAX_INSNS ${ProtocolLimits.bpfMaxInstructions}`);
  lines.push('');
  lines.push('/* control fd: supervisor -> stage 0 */');
  for (const [k, v] of Object.entries(ControlByte)) lines.push(`#define CUB_CTL_${cName(k)} '${v}'`);
  lines.push(`#define CUB_RESIZE_BYTES ${TerminalResize.bytes}`);
  lines.push('/* internal pipe: stage 0 -> init */');
  for (const [k, v] of Object.entries(InitCommand)) lines.push(`#define CUB_INIT_CMD_${cName(k)} '${v}'`);
  lines.push('/* join socket: client -> stage 0 of a named sandbox */');
  for (const [k, v] of Object.entries(JoinRequest)) lines.push(`#define CUB_JOIN_REQ_${cName(k)} '${v}'`);
  lines.push(`static const char *const CUB_NS_NAMES[] = {${NAMESPACE_NAMES.map(cStr).join(', ')}};`);
  lines.push(`#define CUB_NS_COUNT ${NAMESPACE_NAMES.length}`);
  lines.push("/* a network holder's socket: client -> holder requests and its answers */");
  for (const [k, v] of Object.entries(HolderRequest)) lines.push(`#define CUB_HOLDER_${cName(k)} '${v}'`);
  lines.push('');
  for (const [k, v] of Object.entries(HelperExit)) lines.push(`#define CUB_EXIT_${cName(k)} ${v}`);
  lines.push('');
  for (const [k, v] of Object.entries(Stage)) lines.push(`#define CUB_STAGE_${cName(k)} ${cStr(v)}`);
  lines.push('');
  lines.push('enum cub_bind_access {');
  BIND_ACCESS.forEach((a, i) => lines.push(`  CUB_BIND_${cName(a)} = ${i},`));
  lines.push('};');
  lines.push(`static const char *const CUB_BIND_ACCESS_NAMES[] = {${BIND_ACCESS.map(cStr).join(', ')}};`);
  lines.push(`#define CUB_BIND_ACCESS_COUNT ${BIND_ACCESS.length}`);
  lines.push('');
  lines.push('enum cub_notify_mode {');
  NOTIFY_MODES.forEach((m, i) => lines.push(`  CUB_NOTIFY_${cName(m)} = ${i},`));
  lines.push('};');
  lines.push(`static const char *const CUB_NOTIFY_MODE_NAMES[] = {${NOTIFY_MODES.map(cStr).join(', ')}};`);
  lines.push(`#define CUB_NOTIFY_MODE_COUNT ${NOTIFY_MODES.length}`);
  lines.push('enum cub_copy_out_status {');
  COPY_OUT_STATUSES.forEach((s, i) => lines.push(`  CUB_COPY_OUT_${cName(s)} = ${i},`));
  lines.push('};');
  lines.push(`static const char *const CUB_COPY_OUT_STATUS_NAMES[] = {${COPY_OUT_STATUSES.map(cStr).join(', ')}};`);
  lines.push(`static const char *const CUB_RLIMIT_NAMES[] = {${RLIMIT_NAMES.map(cStr).join(', ')}};`);
  lines.push(`#define CUB_RLIMIT_COUNT ${RLIMIT_NAMES.length}`);
  lines.push('');
  lines.push('enum cub_op {');
  OPCODES.forEach((op, i) => lines.push(`  CUB_OP_${cName(op.name)} = ${i},`));
  lines.push(`  CUB_OP__COUNT = ${OPCODES.length}`);
  lines.push('};');
  lines.push('');
  lines.push('struct cub_op_spec {');
  lines.push('  const char *name;');
  lines.push('  unsigned arity;');
  lines.push('  int run; /* 1: belongs to a run plan (fd CUB_FD_RUN), never to a plan with await */');
  lines.push('};');
  lines.push('static const struct cub_op_spec CUB_OP_SPECS[CUB_OP__COUNT] = {');
  for (const op of OPCODES)
    lines.push(`  {${cStr(op.name)}, ${op.args.length}, ${(RUN_OPS as readonly string[]).includes(op.name) ? 1 : 0}},`);
  lines.push('};');
  lines.push(`#define CUB_MAX_ARITY ${Math.max(...OPCODES.map((o) => o.args.length))}`);
  lines.push('');
  lines.push('/* Argument positions: op->a[CUB_ARG_<OPCODE>_<ARGUMENT>] */');
  for (const op of OPCODES) op.args.forEach((a, i) => lines.push(`#define CUB_ARG_${cName(op.name)}_${cName(a)} ${i}`));
  lines.push('');
  lines.push('/* ---- status events (fd CUB_FD_STATUS), one JSON line each, written by cub_emit_*() ---- */');
  lines.push('');
  lines.push(`#define CUB_MAX_VIOLATIONS ${MAX_VIOLATIONS}`);
  lines.push(`#define CUB_MAX_STOPS ${MAX_STOPS}`);
  lines.push('');
  const { enums, structs } = renderEventTypes();
  lines.push(...enums, ...structs);
  lines.push('#endif');
  return lines.join('\n') + '\n';
}

// ---- the emitters ----

interface EmitCtx {
  out: string[];
  limit: number; // the line's length limit
  depth: number; // for unique loop and separator names
}

/**
 * Emits code for the value of member `m` of `base` (a C expression ending in -> or .), a member of struct
 * `tag`. `after` is the least the rest of the line needs (its strings empty): strings stop short of it.
 */
function emitValue(c: EmitCtx, f: FieldSpec, base: string, m: string, tag: string, path: string[], after: number, indent: string): void {
  const expr = `${base}${m}`;
  switch (f.type) {
    case 'int':
      c.out.push(`${indent}put_int(&l, ${expr});`);
      break;
    case 'bool':
      c.out.push(`${indent}put_lit(&l, ${expr} ? "true" : "false");`);
      break;
    case 'string':
      c.out.push(`${indent}put_str(&l, ${expr}, ${f.maxBytes}, ${c.limit - after});`);
      break;
    case 'enum': {
      const e = enumFor(f.values, path);
      c.out.push(`${indent}put_enum(&l, CUB_${cName(e.tag)}_NAMES, CUB_${cName(e.tag)}_COUNT, (int)${expr});`);
      break;
    }
    case 'object':
      c.out.push(`${indent}put_lit(&l, "{");`);
      emitFields(c, f.fields, `${expr}.`, `${tag}_${m}`, path, after + 1, indent, false);
      c.out.push(`${indent}put_lit(&l, "}");`);
      break;
    case 'array': {
      const i = `i${++c.depth}`;
      // an item's strings leave room for the items after it, each at its least
      const itemAfter = after + 1 + (f.maxItems - 1) * (1 + valueBound({ type: 'object', fields: f.item }, true));
      c.out.push(`${indent}put_lit(&l, "[");`);
      c.out.push(`${indent}for (unsigned ${i} = 0; ${i} < ${base}n_${m} && ${i} < ${cName(tag)}_${cName(m)}_MAX; ${i}++) {`);
      c.out.push(`${indent}  if (${i}) put_lit(&l, ",");`);
      c.out.push(`${indent}  put_lit(&l, "{");`);
      emitFields(c, f.item, `${expr}[${i}].`, `${tag}_${m}_item`, path, itemAfter + 1, `${indent}  `, false);
      c.out.push(`${indent}  put_lit(&l, "}");`);
      c.out.push(`${indent}}`);
      c.out.push(`${indent}put_lit(&l, "]");`);
      break;
    }
  }
}

/** Emits `"name":value` for each field present; `top`: the line's own fields, which always follow "ev". */
function emitFields(
  c: EmitCtx,
  fields: FieldsSpec,
  base: string,
  tag: string,
  path: string[],
  after: number,
  indent: string,
  top: boolean,
): void {
  const entries = Object.entries(fields);
  const sep = `n${++c.depth}`;
  if (!top) c.out.push(`${indent}int ${sep} = 0;`);
  entries.forEach(([name, f], k) => {
    const m = cMember(name);
    // the least the fields after this one need (optional ones counted as present): keys, quotes, commas
    const rest = entries.slice(k + 1).reduce((a, [n, g]) => a + 1 + memberBound(n, g, true), 0);
    let ind = indent;
    if (f.optional) {
      c.out.push(`${indent}if (${base}has_${m}) {`);
      ind = `${indent}  `;
    }
    if (!top) c.out.push(`${ind}if (${sep}++) put_lit(&l, ",");`);
    c.out.push(`${ind}put_lit(&l, ${JSON.stringify(`${top ? ',' : ''}${JSON.stringify(name)}:`)});`);
    emitValue(c, f, base, m, tag, [...path, snake(name)], after + rest, ind);
    if (f.optional) c.out.push(`${indent}}`);
  });
}

const EMITTER_RUNTIME = `
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "protocol.h"

/* A line being rendered into a buffer sized for the event's longest line: appends never overflow it. */
struct line {
  char *buf;
  size_t len, cap;
};

__attribute__((unused)) static void put(struct line *l, const char *s, size_t n) {
  if (n > l->cap - l->len) n = l->cap - l->len;
  memcpy(l->buf + l->len, s, n);
  l->len += n;
}

__attribute__((unused)) static void put_lit(struct line *l, const char *s) { put(l, s, strlen(s)); }

__attribute__((unused)) static void put_int(struct line *l, long long v) {
  char t[24];
  int n = snprintf(t, sizeof t, "%lld", v);
  put(l, t, n > 0 ? (size_t)n : 0);
}

/* An index into a name table; an index out of range renders as a name the reader refuses. */
__attribute__((unused)) static void put_enum(struct line *l, const char *const *names, int count, int v) {
  put_lit(l, "\\"");
  put_lit(l, v >= 0 && v < count ? names[v] : "?");
  put_lit(l, "\\"");
}

/* A JSON string of at most max_raw bytes of s whose closing quote ends at or before offset limit. Quotes and
 * backslashes are escaped, control bytes and bytes >= 0x7f become \\u00XX (the reader reads them back as
 * latin-1, then as UTF-8). A cut string is cut before a UTF-8 continuation byte, never inside a character. */
__attribute__((unused)) static void put_str(struct line *l, const char *s, size_t max_raw, size_t limit) {
  static const char hex[] = "0123456789abcdef";
  const unsigned char *u = (const unsigned char *)(s ? s : "");
  size_t take = 0, end = l->len + 1;
  for (; u[take] && take < max_raw; take++) {
    size_t w = (u[take] == '"' || u[take] == '\\\\') ? 2 : (u[take] < 0x20 || u[take] >= 0x7f) ? 6 : 1;
    if (end + w + 1 > limit) break;
    end += w;
  }
  for (int back = 0; u[take] && back < 3 && take > 0 && (u[take] & 0xc0) == 0x80; back++) take--;
  put_lit(l, "\\"");
  for (size_t i = 0; i < take; i++) {
    char e[6] = {'\\\\', 'u', '0', '0', hex[u[i] >> 4], hex[u[i] & 15]};
    if (u[i] == '"' || u[i] == '\\\\') {
      e[1] = (char)u[i];
      put(l, e, 2);
    } else if (u[i] < 0x20 || u[i] >= 0x7f) {
      put(l, e, 6);
    } else {
      put(l, (const char *)u + i, 1);
    }
  }
  put_lit(l, "\\"");
}

/* One write per line. A line that must not interleave is at most PIPE_BUF - 1 bytes, which a pipe takes
 * whole; the rest are written while no other writer exists. A short write (a signal in the middle of a
 * long line: the helper installs no handlers) is completed rather than left torn. */
__attribute__((unused)) static void write_line(const struct line *l) {
  size_t done = 0;
  while (done < l->len) {
    ssize_t n = write(CUB_FD_STATUS, l->buf + done, l->len - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    done += (size_t)n;
  }
}
`;

/** Renders protocol.c: one emitter per status event, each writing exactly one JSON line. */
export function renderStatusEmitters(): string {
  const out: string[] = [
    '/* Generated from sandbox/protocol/events.ts by sandbox/protocol/c-header.ts. Do not edit. */',
    '/* The status events as JSON lines: fields in declaration order, optional ones only when present. */',
    EMITTER_RUNTIME,
  ];
  for (const [event, fields] of Object.entries(STATUS_EVENTS) as [EventName, FieldsSpec][]) {
    const limit = lineLimit(event);
    const least = lineBound(event, true);
    if (least > limit)
      throw new Error(`the ${event} event needs ${least} bytes before its strings; at most ${limit} fit in one atomic write`);
    const c: EmitCtx = { out, limit, depth: 0 };
    out.push(`void cub_emit_${snake(event)}(const struct cub_ev_${snake(event)} *e) {`);
    out.push(`  char buf[CUB_EV_${cName(event)}_LINE_MAX];`);
    out.push('  struct line l = {buf, 0, sizeof buf};');
    out.push(`  put_lit(&l, ${JSON.stringify(linePrefix(event))});`);
    emitFields(c, fields, 'e->', `cub_ev_${snake(event)}`, [snake(event)], '}\n'.length, '  ', true);
    out.push('  put_lit(&l, "}\\n");');
    out.push('  write_line(&l);');
    out.push('}');
    out.push('');
  }
  return out.join('\n');
}
