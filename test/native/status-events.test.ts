// The status events, both directions: the C emitters generated from events.ts against the TS validator
// derived from the same declaration. A C program built from the generated code emits every event, and the
// reader must accept each line and give back the values it was given.
import { renderProtocolSource } from '../../sandbox/native/compile.js';
import { expectedStamp } from '../../sandbox/native/stamp.js';
import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { renderProtocolHeader, cMember } from '../../sandbox/protocol/c-header.js';
import { PIPE_BUF } from '../../sandbox/protocol/event-bounds.js';
import { MAX_STOPS, MAX_VIOLATIONS, STATUS_EVENTS, type EventName, type FieldsSpec } from '../../sandbox/protocol/events.js';
import { PROTOCOL_VERSION } from '../../sandbox/protocol/opcodes.js';
import { StatusReader, validateEvent } from '../../sandbox/protocol/status.js';

const NATIVE = fileURLToPath(new URL('../../native/', import.meta.url)); // dist/native

/** Events whose lines may be written while another stage writes: they must fit one atomic pipe write. */
const ATOMIC: readonly EventName[] = ['ready', 'error'];

type Mode = 'full' | 'absent' | 'ascii';

/** Awkward bytes: quotes, backslashes, control bytes, DEL, and multi-byte UTF-8 (2, 3 and 4 bytes). */
const TRICKY = Buffer.concat([Buffer.from('q"b\\s\x01\n\t\x1f\x7f/'), Buffer.from('é€😀', 'utf8')]);
const repeatTo = (b: Buffer, n: number): Buffer => Buffer.concat(Array.from({ length: Math.ceil(n / b.length) }, () => b)).subarray(0, n);
const INTS = [0, -1, 1, 42, Number.MAX_SAFE_INTEGER, -Number.MAX_SAFE_INTEGER, 4026531837, 2147483647, -2147483648, 123456789012];

/** C string literal of raw bytes (octal escapes: never greedy). */
const cBytes = (b: Buffer): string => `"${[...b].map((x) => `\\${x.toString(8).padStart(3, '0')}`).join('')}"`;

interface Case {
  event: EventName;
  mode: Mode;
  c: string[]; // assignments to `e`
  expected: Record<string, unknown>;
  cut: { path: (string | number)[]; input: Buffer; maxBytes: number }[]; // strings that may be cut
}

/** Fills a struct from the declaration: the C assignments and the value the reader should give back. */
function fill(
  fields: FieldsSpec,
  cBase: string,
  mode: Mode,
  path: (string | number)[],
  k: { n: number },
  out: Case,
): Record<string, unknown> {
  const js: Record<string, unknown> = {};
  for (const [name, f] of Object.entries(fields)) {
    const m = cMember(name);
    if (f.optional && mode === 'absent') continue;
    if (f.optional) out.c.push(`${cBase}.has_${m} = 1;`);
    const at = [...path, name];
    switch (f.type) {
      case 'int': {
        const v = INTS[k.n++ % INTS.length]!;
        out.c.push(`${cBase}.${m} = ${v}LL;`);
        js[name] = v;
        break;
      }
      case 'bool':
        out.c.push(`${cBase}.${m} = ${k.n % 2};`);
        js[name] = k.n++ % 2 === 1;
        break;
      case 'enum': {
        const i = k.n++ % f.values.length;
        out.c.push(`${cBase}.${m} = ${i};`);
        js[name] = f.values[i];
        break;
      }
      case 'string': {
        // full: longer than allowed, awkward bytes; ascii: longer than allowed, plain; absent: short and awkward
        const input =
          mode === 'full'
            ? repeatTo(TRICKY, f.maxBytes + 37)
            : mode === 'ascii'
              ? repeatTo(Buffer.from('abcdefghij'), f.maxBytes + 5)
              : TRICKY;
        out.c.push(`${cBase}.${m} = ${cBytes(input)};`);
        if (mode === 'full') {
          out.cut.push({ path: at, input, maxBytes: f.maxBytes });
          js[name] = '<cut>';
        } else js[name] = input.subarray(0, f.maxBytes).toString('utf8');
        break;
      }
      case 'object':
        js[name] = fill(f.fields, `${cBase}.${m}`, mode, at, k, out);
        break;
      case 'array': {
        const n = mode === 'absent' ? 0 : f.maxItems;
        out.c.push(`${cBase}.n_${m} = ${n};`);
        js[name] = Array.from({ length: n }, (_, i) => fill(f.item, `${cBase}.${m}[${i}]`, mode, [...at, i], k, out));
        break;
      }
    }
  }
  return js;
}

function cases(): Case[] {
  const all: Case[] = [];
  for (const event of Object.keys(STATUS_EVENTS) as EventName[])
    for (const mode of ['full', 'absent', 'ascii'] as Mode[]) {
      const c: Case = { event, mode, c: [], expected: {}, cut: [] };
      c.expected = { ev: event, ...fill(STATUS_EVENTS[event], 'e', mode, [], { n: mode.length }, c) };
      all.push(c);
    }
  return all;
}

const get = (o: unknown, path: (string | number)[]): unknown =>
  path.reduce<unknown>((v, k) => (v as Record<string | number, unknown>)[k], o);
const set = (o: unknown, path: (string | number)[], v: unknown): void => {
  (get(o, path.slice(0, -1)) as Record<string | number, unknown>)[path[path.length - 1]!] = v;
};

/** Builds and runs a C program against the generated header and emitters; returns what it wrote on the status fd. */
function runC(body: string): Buffer {
  const dir = mkdtempSync(join(tmpdir(), 'cubicle-status-'));
  try {
    const src = join(dir, 'emit.c');
    writeFileSync(src, `#include <string.h>\n#include "protocol.h"\n\nint main(void) {\n${body}\n  return 0;\n}\n`);
    const cc = spawnSync(
      process.env.CC ?? 'cc',
      ['-std=gnu11', '-Wall', '-Wextra', '-Werror', `-I${NATIVE}`, '-o', join(dir, 'emit'), src, join(NATIVE, 'protocol.c')],
      { encoding: 'utf8' },
    );
    assert.equal(cc.status, 0, `cc failed:\n${cc.stderr}`);
    const run = spawnSync(join(dir, 'emit'), [], { stdio: ['ignore', 'ignore', 'pipe', 'ignore', 'ignore', 'pipe'] });
    assert.equal(run.status, 0, String(run.stderr));
    return run.output[5] as Buffer;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const block = (event: EventName, assignments: string[]): string =>
  `  {\n    static struct cub_ev_${event} e;\n    memset(&e, 0, sizeof e);\n` +
  `${assignments.map((a) => `    ${a}`).join('\n')}\n    cub_emit_${event}(&e);\n  }`;

describe('status events: C emitters and the TS reader agree', () => {
  it('the header and emitters generated at build time are what the generator renders now', () => {
    assert.equal(readFileSync(join(NATIVE, 'protocol.h'), 'utf8'), renderProtocolHeader());
    assert.equal(readFileSync(join(NATIVE, 'protocol.c'), 'utf8'), renderProtocolSource(expectedStamp()));
  });

  it('the limits in the header come from events.ts', () => {
    const h = renderProtocolHeader();
    assert.match(h, new RegExp(`#define CUB_MAX_VIOLATIONS ${MAX_VIOLATIONS}\\n`));
    assert.match(h, new RegExp(`#define CUB_MAX_STOPS ${MAX_STOPS}\\n`));
    assert.match(h, /#define CUB_ARG_BIND_HOST_PATH 0\n/);
    assert.match(h, /#define CUB_INIT_CMD_GO 'g'\n/);
  });

  it('every event, with every optional field present and absent, round-trips through the reader', function () {
    this.timeout(60_000);
    const all = cases();
    const out = runC(all.map((c) => block(c.event, c.c)).join('\n'));
    const lines = out.toString('latin1').split('\n');
    assert.equal(lines.pop(), '', 'the output ends with a newline');
    assert.equal(lines.length, all.length, 'one line per emitted event');
    lines.forEach((line, i) => {
      const c = all[i]!;
      const what = `${c.event} (${c.mode})`;
      if (ATOMIC.includes(c.event))
        assert.ok(line.length + 1 <= PIPE_BUF - 1, `${what}: ${line.length + 1} bytes do not fit one atomic write`);
      const reader = new StatusReader({ acrossFields: false }); // every optional field at once is no real exit
      const [ev] = reader.push(Buffer.from(`${line}\n`, 'latin1'));
      assert.ok(ev, `${what}: accepted`);
      assert.equal(reader.events.length, 1);
      for (const { path, input, maxBytes } of c.cut) {
        const got = Buffer.from(get(ev, path) as string, 'utf8');
        assert.ok(got.length <= maxBytes, `${what} ${path.join('.')}: ${got.length} > ${maxBytes} bytes`);
        assert.ok(input.subarray(0, got.length).equals(got), `${what} ${path.join('.')}: not a prefix of what was given`);
        assert.ok(!got.toString('utf8').includes('\ufffd'), `${what} ${path.join('.')}: cut inside a character`);
        // cut only by maxBytes (less at most a partial character), or because the line had to stay atomic
        if (!(ATOMIC.includes(c.event) && line.length + 1 > PIPE_BUF - 32))
          assert.ok(got.length > maxBytes - 4, `${what} ${path.join('.')}: cut to ${got.length} bytes`);
        set(ev, path, '<cut>');
      }
      assert.deepEqual(ev, c.expected, what);
    });
  });

  it('an enum index out of range renders as a value the reader refuses', () => {
    const out = runC(block('exit', ['e.n_stops = 1;', 'e.stops[0].kind = 99;']));
    assert.match(out.toString(), /"kind":"\?"/);
    assert.throws(() => new StatusReader().push(out), /stops\[0\]\.kind is not one of/);
  });
});

describe('status reader: the validator derived from events.ts', () => {
  const exit = (): Record<string, unknown> => ({
    ev: 'exit',
    code: 0,
    wallUs: 1000,
    rusage: { utimeUs: 1, stimeUs: 2, maxRssKb: 3, minflt: 4, majflt: 5, nvcsw: 6, nivcsw: 7 },
    init: { utimeUs: 1, stimeUs: 1, sinceForkUs: 1 },
    sample: { samples: 1, peakMemory: 2, peakTasks: 3, cgroupCpuUs: 4 },
    stops: [{ kind: 'cpu', atUs: 5, observed: 6 }],
    violations: [{ nr: 1, arch: 2 }],
  });
  const error = (): Record<string, unknown> => ({
    ev: 'error',
    stage: 'init',
    op: 'bind',
    opIndex: 2,
    syscall: 'mount',
    errno: 2,
    msg: 'x',
  });
  // as the helper writes it: one byte per character, anything past latin-1 as a \u escape
  const line = (o: unknown): Buffer =>
    Buffer.from(
      `${JSON.stringify(o).replace(/[\u0100-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`)}\n`,
      'latin1',
    );
  const accepts = (o: unknown): void => void new StatusReader().push(line(o));
  const refuses = (o: unknown, re: RegExp): void => assert.throws(() => new StatusReader().push(line(o)), re);
  const withField = (base: Record<string, unknown>, path: (string | number)[], v: unknown): Record<string, unknown> => {
    const o = structuredClone(base);
    if (v === undefined) delete (get(o, path.slice(0, -1)) as Record<string | number, unknown>)[path[path.length - 1]!];
    else set(o, path, v);
    return o;
  };

  it('accepts well-formed events, optional fields absent or present', () => {
    accepts(exit());
    accepts({ ev: 'exit', initSignal: 9, rusage: exit().rusage, stops: [], violations: [] });
    accepts(error());
    accepts({ ev: 'error', stage: 'parent', msg: '' });
    accepts({ ev: 'hello', v: PROTOCOL_VERSION });
  });

  const table: [string, Record<string, unknown>, RegExp][] = [
    ['an unknown field', withField(exit(), ['core'], true), /exit\.core is not a field/],
    ['an unknown nested field', withField(exit(), ['rusage', 'inblock'], 0), /exit\.rusage\.inblock is not a field/],
    ['an unknown field in an array item', withField(exit(), ['stops', 0, 'limit'], 1), /exit\.stops\[0\]\.limit is not a field/],
    [
      'a hello of another protocol version (a stale helper build)',
      { ev: 'hello', v: PROTOCOL_VERSION - 1, pid: 7 },
      /speaks protocol version \d+; this library speaks \d+/,
    ],
    ['an unknown event', { ev: 'usage', v: 1 }, /"usage" is not a status event/],
    ['no event name', { v: 1 }, /is not a status event/],
    ['a string for an int', withField(exit(), ['code'], '0'), /exit\.code is not a safe integer/],
    ['a fraction for an int', withField(exit(), ['wallUs'], 1.5), /exit\.wallUs is not a safe integer/],
    ['an int past 2^53', withField(exit(), ['rusage', 'utimeUs'], 2 ** 53), /exit\.rusage\.utimeUs is not a safe integer/],
    ['an array for an object', withField(exit(), ['rusage'], []), /exit\.rusage is not an object/],
    ['null for an object', withField(exit(), ['init'], null), /exit\.init is not an object/],
    ['an object for an array', withField(exit(), ['stops'], {}), /exit\.stops is not an array/],
    ['a number for an array item', withField(exit(), ['violations', 0], 3), /exit\.violations\[0\] is not an object/],
    ['a number for a string', withField(error(), ['msg'], 3), /error\.msg is not a string/],
    ['a missing required field', withField(exit(), ['rusage'], undefined), /exit\.rusage is missing/],
    ['a missing required nested field', withField(exit(), ['rusage', 'nivcsw'], undefined), /exit\.rusage\.nivcsw is missing/],
    ['a missing required array', withField(exit(), ['violations'], undefined), /exit\.violations is missing/],
    ['a missing message', withField(error(), ['msg'], undefined), /error\.msg is missing/],
    ['an enum value out of range', withField(exit(), ['stops', 0, 'kind'], 'none'), /exit\.stops\[0\]\.kind is not one of/],
    ['an enum given as its index', withField(exit(), ['stops', 0, 'kind'], 2), /exit\.stops\[0\]\.kind is not one of/],
    [
      'more violations than maxItems',
      withField(
        exit(),
        ['violations'],
        Array.from({ length: MAX_VIOLATIONS + 1 }, () => ({ nr: 1, arch: 2 })),
      ),
      /exit\.violations has more than 64 entries/,
    ],
    ['both code and signal', withField(exit(), ['signal'], 9), /must carry exactly one of code or signal/],
    ['neither code, signal nor initSignal', withField(exit(), ['code'], undefined), /must carry exactly one of code or signal/],
    ['a code beside initSignal', withField(exit(), ['initSignal'], 9), /must carry exactly one of code or signal/],
    [
      'more stops than maxItems',
      withField(
        exit(),
        ['stops'],
        Array.from({ length: MAX_STOPS + 1 }, () => ({ kind: 'oom', atUs: 1, observed: 0 })),
      ),
      /exit\.stops has more than 8 entries/,
    ],
    ['a string longer than maxBytes', withField(error(), ['stage'], 'x'.repeat(33)), /error\.stage is longer than 32 bytes/],
    ['a string of characters past latin-1', withField(error(), ['msg'], 'snow ☃'), /error\.msg holds characters above/],
  ];
  for (const [what, event, re] of table) it(`refuses ${what}`, () => refuses(event, re));

  it('counts a string in raw bytes: \\u00XX escapes are bytes, read back as UTF-8', () => {
    const e = new StatusReader().push(line(withField(error(), ['msg'], Buffer.from('é€', 'utf8').toString('latin1'))))[0]!;
    assert.equal(e.ev === 'error' && e.msg, 'é€');
    refuses(withField(error(), ['stage'], Buffer.from('é'.repeat(17), 'utf8').toString('latin1')), /longer than 32 bytes/);
  });

  it('refuses anything after the terminal event, and a second terminal event', () => {
    const r = new StatusReader();
    r.push(Buffer.concat([line({ ev: 'hello', v: PROTOCOL_VERSION }), line(exit())]));
    assert.equal(r.terminal()?.ev, 'exit');
    assert.throws(() => r.push(line({ ev: 'hello', v: PROTOCOL_VERSION })), /after its terminal event/);
    assert.throws(() => new StatusReader().push(Buffer.concat([line(error()), line(exit())])), /after its terminal event/);
  });

  it('refuses an oversize line and too many events', () => {
    assert.throws(() => new StatusReader().push(Buffer.alloc(64 << 10, 0x20)), /oversize/);
    assert.throws(
      () => new StatusReader().push(Buffer.concat(Array.from({ length: 65 }, () => line({ ev: 'hello', v: PROTOCOL_VERSION })))),
      /too many/,
    );
  });

  it('validateEvent refuses a line that is not an object', () => {
    assert.throws(() => validateEvent([]), /is not an object/);
    assert.throws(() => validateEvent('exit'), /is not an object/);
  });
});
