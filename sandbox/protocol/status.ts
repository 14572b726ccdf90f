// Reads the helper's status fd: bounded JSON lines, each checked against the event shapes it may take.
import { StatusEvent, WATCHED_LIMITS } from './opcodes.js';

export interface HelloEvent { ev: 'hello'; v: number; pid: number }
export interface ReadyEvent { ev: 'ready'; initPid: number; payloadPid: number; setupUs: number; ns: Record<string, number> }
export interface ExitEvent {
  ev: 'exit';
  code?: number;
  signal?: number;
  core?: boolean;
  killed?: boolean;
  wallUs: number;
  usage: { utimeUs: number; stimeUs: number; maxRssKb: number; minflt: number; majflt: number; nvcsw: number; nivcsw: number; inblock: number; oublock: number };
  violations: { nr: number; arch: number }[];
  sample?: { samples: number; peakMemory: number; peakTasks: number; limit: 'none' | 'memory' | 'tasks' | 'cpu' | 'wall' | 'oom'; limitAtUs: number; observed: number; cpuUs: number; cpuFromCgroup: boolean };
  oom?: boolean;
}
export interface ErrorEvent { ev: 'error'; stage: string; op?: string; opIndex?: number; syscall?: string; errno?: number; msg: string }
export type HelperEvent = HelloEvent | ReadyEvent | ExitEvent | ErrorEvent;

const MAX_LINE = 16 << 10;
const MAX_EVENTS = 64;

const isInt = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v);
const optInt = (v: unknown): boolean => v === undefined || isInt(v);
const optStr = (v: unknown): boolean => v === undefined || typeof v === 'string';
const optBool = (v: unknown): boolean => v === undefined || typeof v === 'boolean';

function validSample(v: unknown): boolean {
  if (v === undefined) return true;
  if (typeof v !== 'object' || v === null) return false;
  const s = v as Record<string, unknown>;
  return ['samples', 'peakMemory', 'peakTasks', 'limitAtUs', 'observed', 'cpuUs'].every((k) => isInt(s[k])) && typeof s.cpuFromCgroup === 'boolean' && ['none', ...WATCHED_LIMITS].includes(s.limit as string);
}

function validate(e: Record<string, unknown>): HelperEvent {
  const ok = (() => {
    switch (e.ev) {
      case StatusEvent.hello:
        return isInt(e.v) && isInt(e.pid);
      case StatusEvent.ready:
        return isInt(e.initPid) && isInt(e.payloadPid) && isInt(e.setupUs) && typeof e.ns === 'object' && e.ns !== null && Object.values(e.ns).every(isInt);
      case StatusEvent.exit: {
        const u = e.usage as Record<string, unknown> | undefined;
        return optInt(e.code) && optInt(e.signal) && optBool(e.core) && optBool(e.killed) && (e.code !== undefined) !== (e.signal !== undefined) && isInt(e.wallUs) && typeof u === 'object' && u !== null && ['utimeUs', 'stimeUs', 'maxRssKb', 'minflt', 'majflt', 'nvcsw', 'nivcsw', 'inblock', 'oublock'].every((k) => isInt(u[k])) && Array.isArray(e.violations) && e.violations.length <= 64 && (e.violations as unknown[]).every((v) => typeof v === 'object' && v !== null && isInt((v as Record<string, unknown>).nr) && isInt((v as Record<string, unknown>).arch)) && optBool(e.oom) && validSample(e.sample);
      }
      case StatusEvent.error:
        return typeof e.stage === 'string' && typeof e.msg === 'string' && optStr(e.op) && optInt(e.opIndex) && optStr(e.syscall) && optInt(e.errno);
      default:
        return false;
    }
  })();
  if (!ok) throw new Error(`malformed status event: ${JSON.stringify(e).slice(0, 200)}`);
  return e as unknown as HelperEvent;
}

/** Incremental parser; throws on an oversize line, too many events, or an event of the wrong shape. */
export class StatusReader {
  #pending = '';
  #count = 0;
  readonly events: HelperEvent[] = [];

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
      // The helper escapes bytes >= 0x7f as \u00XX: decode the JSON, then reinterpret latin-1 as UTF-8.
      const parsed = JSON.parse(line) as Record<string, unknown>;
      if (typeof parsed !== 'object' || parsed === null) throw new Error('status event is not an object');
      for (const k of ['msg', 'stage', 'op', 'syscall']) if (typeof parsed[k] === 'string') parsed[k] = Buffer.from(parsed[k] as string, 'latin1').toString('utf8');
      const ev = validate(parsed);
      this.events.push(ev);
      out.push(ev);
    }
    if (this.#pending.length > MAX_LINE) throw new Error('the helper sent an oversize status line');
    return out;
  }

  /** The terminal event (exit or error), if one arrived. */
  terminal(): ExitEvent | ErrorEvent | undefined {
    return this.events.find((e): e is ExitEvent | ErrorEvent => e.ev === 'exit' || e.ev === 'error');
  }
}
