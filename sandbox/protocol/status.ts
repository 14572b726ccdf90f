// Reads the helper's status fd: bounded JSON lines, each checked against its declaration in ./events.ts.
import {
  STATUS_EVENTS,
  TERMINAL_EVENTS,
  type ErrorEvent,
  type EventName,
  type ExitEvent,
  type FieldSpec,
  type FieldsSpec,
  type HelperEvent,
} from './events.js';
import { MAX_STATUS_LINE } from './event-bounds.js';
import { PROTOCOL_VERSION } from './opcodes.js';

export type { ErrorEvent, ExitEvent, HelloEvent, HelperEvent, ReadyEvent, StopEvent } from './events.js';

/** One line may be as long as the longest event the declaration allows, and no longer. */
const MAX_LINE = MAX_STATUS_LINE;
const MAX_EVENTS = 64;

const TERMINAL: ReadonlySet<string> = new Set(TERMINAL_EVENTS);

export class MalformedEventError extends Error {}

const fail = (where: string, why: string): never => {
  throw new MalformedEventError(`malformed status event: ${where} ${why}`);
};

/**
 * Checks a value against its field declaration and returns it as the caller sees it: strings, which the
 * helper sends as latin-1 escapes of their raw bytes, are decoded as UTF-8 once their raw length is checked.
 */
function checkValue(v: unknown, f: FieldSpec, where: string): unknown {
  switch (f.type) {
    case 'int':
      if (typeof v !== 'number' || !Number.isSafeInteger(v)) fail(where, 'is not a safe integer');
      return v;
    case 'bool':
      if (typeof v !== 'boolean') fail(where, 'is not a boolean');
      return v;
    case 'string': {
      if (typeof v !== 'string') fail(where, 'is not a string');
      const raw = Buffer.from(v as string, 'latin1');
      if (raw.toString('latin1') !== v) fail(where, 'holds characters above \\u00ff');
      if (raw.length > f.maxBytes) fail(where, `is longer than ${f.maxBytes} bytes`);
      return raw.toString('utf8');
    }
    case 'enum':
      if (typeof v !== 'string' || !f.values.includes(v)) fail(where, `is not one of ${f.values.join(', ')}`);
      return v;
    case 'object':
      return checkFields(v, f.fields, where);
    case 'array':
      if (!Array.isArray(v)) fail(where, 'is not an array');
      if ((v as unknown[]).length > f.maxItems) fail(where, `has more than ${f.maxItems} entries`);
      return (v as unknown[]).map((item, i) => checkFields(item, f.item, `${where}[${i}]`));
  }
}

/** Every declared field present unless optional, of its declared shape; no field that is not declared. */
function checkFields(v: unknown, fields: FieldsSpec, where: string, skip?: string): Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return fail(where, 'is not an object');
  const o = v as Record<string, unknown>;
  for (const k of Object.keys(o)) if (k !== skip && !Object.hasOwn(fields, k)) fail(`${where}.${k}`, 'is not a field of this event');
  const out: Record<string, unknown> = {};
  if (skip !== undefined) out[skip] = o[skip];
  for (const [name, f] of Object.entries(fields)) {
    if (o[name] === undefined) {
      if (!f.optional) fail(`${where}.${name}`, 'is missing');
      continue;
    }
    out[name] = checkValue(o[name], f, `${where}.${name}`);
  }
  return out;
}

/** Validates one parsed status line against its event's declaration. */
export function validateEvent(parsed: unknown): HelperEvent {
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) return fail('line', 'is not an object');
  const ev = (parsed as Record<string, unknown>).ev;
  if (typeof ev !== 'string' || !Object.hasOwn(STATUS_EVENTS, ev)) return fail('ev', `${JSON.stringify(ev)} is not a status event`);
  return checkFields(parsed, STATUS_EVENTS[ev as EventName], ev, 'ev') as unknown as HelperEvent;
}

/** A hello from another protocol version: a stale helper build. Checked before the fields (that version's
 *  hello may have other fields) so the error names the cause. */
function checkVersion(parsed: unknown): void {
  const o = parsed as Record<string, unknown> | null;
  if (typeof o !== 'object' || o === null || o.ev !== 'hello' || o.v === PROTOCOL_VERSION) return;
  const e = new Error(`the helper speaks protocol version ${JSON.stringify(o.v)}; this library speaks ${PROTOCOL_VERSION}`);
  throw Object.assign(e, {
    hint: 'the helper binary is from another build of cubicle: rebuild it (npm run build, or reinstall the package)',
  });
}

/** What no per-field declaration can say: the payload's status is its code or its signal; without either,
 *  init died first (initSignal). */
function checkAcrossFields(event: HelperEvent): HelperEvent {
  if (event.ev === 'exit') {
    const given = [event.code, event.signal].filter((v) => v !== undefined).length;
    if (given === 2 || (given === 0) === (event.initSignal === undefined))
      return fail('exit', 'must carry exactly one of code or signal, or initSignal alone');
  }
  return event;
}

/** Incremental parser; throws on an oversize line, too many events, an event of the wrong shape, or any event after the terminal one. */
export class StatusReader {
  readonly #acrossFields: boolean;
  #pending = '';
  #count = 0;
  readonly events: HelperEvent[] = [];

  /** `acrossFields: false` checks each event against its declaration only, not the version or rules across
   *  fields (the emitters' drift test). */
  constructor(options: { acrossFields?: boolean } = {}) {
    this.#acrossFields = options.acrossFields ?? true;
  }

  push(chunk: Buffer): HelperEvent[] {
    this.#pending += chunk.toString('latin1');
    const out: HelperEvent[] = [];
    let nl: number;
    while ((nl = this.#pending.indexOf('\n')) >= 0) {
      if (nl > MAX_LINE) throw new Error('the helper sent an oversize status line');
      if (this.terminal()) throw new Error('the helper sent an event after its terminal event');
      const line = this.#pending.slice(0, nl);
      this.#pending = this.#pending.slice(nl + 1);
      if (++this.#count > MAX_EVENTS) throw new Error('the helper sent too many status events');
      // The helper escapes bytes >= 0x7f as \u00XX: each string is its raw bytes read as latin-1.
      const parsed: unknown = JSON.parse(line);
      if (this.#acrossFields) checkVersion(parsed);
      const shaped = validateEvent(parsed);
      const ev = this.#acrossFields ? checkAcrossFields(shaped) : shaped;
      this.events.push(ev);
      out.push(ev);
    }
    if (this.#pending.length > MAX_LINE) throw new Error('the helper sent an oversize status line');
    return out;
  }

  /** The terminal event (exit or error), if one arrived. */
  terminal(): ExitEvent | ErrorEvent | undefined {
    return this.events.find((e): e is ExitEvent | ErrorEvent => TERMINAL.has(e.ev));
  }
}
