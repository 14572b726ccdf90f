// Pure parsing: sizes, durations, CLI arguments, plan encoding.
import { strict as assert } from 'node:assert';
import { parseRunArgs } from '../../sandbox/cli/args.js';
import { encodePlan, Op } from '../../sandbox/plan/ops.js';
import { PROTOCOL_VERSION } from '../../sandbox/protocol/opcodes.js';
import { parseDurationMs, parseSize } from '../../sandbox/units.js';

describe('units', () => {
  it('parses sizes with binary units', () => {
    assert.equal(parseSize('64M', 'x'), 64 << 20);
    assert.equal(parseSize('1.5K', 'x'), 1536);
    assert.equal(parseSize(4096, 'x'), 4096);
    assert.equal(parseSize('2GiB', 'x'), 2 * 1024 ** 3);
    assert.throws(() => parseSize('12 parsecs', 'tmpSize'), /tmpSize "12 parsecs" is not a size/);
    assert.throws(() => parseSize(-1, 'x'), /non-negative/);
  });
  it('parses durations; a bare number is seconds', () => {
    assert.equal(parseDurationMs('1.5', 't'), 1500);
    assert.equal(parseDurationMs('200ms', 't'), 200);
    assert.equal(parseDurationMs('2m', 't'), 120_000);
    assert.throws(() => parseDurationMs('0', '--timeout'), /greater than zero/);
    assert.throws(() => parseDurationMs('soon', '--timeout'), /not a duration/);
  });
});

describe('cli arguments', () => {
  it('splits SRC:DST at the last ":/" and reads repeated flags', () => {
    const a = parseRunArgs([
      '--bind',
      '/a:b:/c',
      '--ro-bind',
      '/x',
      '--tmpfs',
      '/t:1M',
      '--env',
      'K=V=W',
      '--timeout',
      '1.5',
      '--',
      'ls',
      '-la',
    ]);
    assert.deepEqual(a.command, ['ls', '-la']);
    assert.deepEqual(a.options.mounts, [
      { type: 'bind', source: '/a:b', target: '/c' },
      { type: 'bind', readOnly: true, source: '/x' },
      { type: 'tmpfs', target: '/t', size: '1M' },
    ]);
    assert.deepEqual(a.options.env, { K: 'V=W' });
    assert.equal(a.options.timeout, 1500);
  });
  it('refuses bad flags with a message naming them', () => {
    assert.throws(() => parseRunArgs(['--uid', 'x', '--', 'true']), /--uid must be a non-negative integer/);
    assert.throws(() => parseRunArgs(['--timeout', 'never', '--', 'true']), /not a duration/);
    assert.throws(() => parseRunArgs([]), /no command given/);
  });
});

describe('plan encoding', () => {
  it('encodes NUL-terminated tokens and refuses NUL inside a token', () => {
    const b = encodePlan([Op.arg('a'), Op.end()]);
    assert.equal(b.toString(), `cubicle-plan\x00${PROTOCOL_VERSION}\x00arg\x00a\x00end\x00`);
    assert.throws(() => encodePlan([Op.arg('a\0b')]), /NUL byte/);
  });
});
