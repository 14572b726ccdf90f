/*
 * Size bounds of the status lines, computed from the declaration in ./events.ts. The C emitters size their
 * buffers from these and the reader bounds its lines with them, so neither side guesses.
 */
import { STATUS_EVENTS, type EventName, type FieldSpec, type FieldsSpec } from './events.js';

/** The longest rendering of a C long long ("-9223372036854775808"). */
export const INT_MAX_CHARS = 20;
/** The longest JSON escape of one raw byte (\u00XX). */
export const ESCAPE_MAX_CHARS = 6;
/** Writes of at most this many bytes to a pipe are atomic (POSIX PIPE_BUF on Linux). */
export const PIPE_BUF = 4096;

/**
 * The longest rendering of a value. With `stringsEmpty`, strings count only their quotes: what a line needs
 * before its strings take any room.
 */
export function valueBound(f: FieldSpec, stringsEmpty = false): number {
  switch (f.type) {
    case 'int':
      return INT_MAX_CHARS;
    case 'bool':
      return 'false'.length;
    case 'string':
      return 2 + (stringsEmpty ? 0 : ESCAPE_MAX_CHARS * f.maxBytes);
    case 'enum':
      return 2 + Math.max(...f.values.map((v) => Buffer.byteLength(v)));
    case 'object':
      return objectBound(f.fields, stringsEmpty);
    case 'array':
      return 2 + f.maxItems * objectBound(f.item, stringsEmpty) + Math.max(0, f.maxItems - 1);
  }
}

/** `"name":` and the value, without a separating comma. */
export const memberBound = (name: string, f: FieldSpec, stringsEmpty = false): number =>
  JSON.stringify(name).length + 1 + valueBound(f, stringsEmpty);

/** An object with every field present. */
export function objectBound(fields: FieldsSpec, stringsEmpty = false): number {
  const members = Object.entries(fields).map(([n, f]) => memberBound(n, f, stringsEmpty));
  return 2 + members.reduce((a, b) => a + b, 0) + Math.max(0, members.length - 1);
}

/** `{"ev":"name"`: every line starts so. */
export const linePrefix = (event: string): string => `{"ev":${JSON.stringify(event)}`;

/** The longest line of an event, its newline included. */
export function lineBound(event: EventName, stringsEmpty = false): number {
  const fields: FieldsSpec = STATUS_EVENTS[event];
  const members = Object.entries(fields).map(([n, f]) => 1 + memberBound(n, f, stringsEmpty));
  return linePrefix(event).length + members.reduce((a, b) => a + b, 0) + '}\n'.length;
}

/** The longest line of any event. */
export const MAX_STATUS_LINE = Math.max(...(Object.keys(STATUS_EVENTS) as EventName[]).map((e) => lineBound(e)));
