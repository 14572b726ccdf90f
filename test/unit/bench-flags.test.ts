// Every bench refuses a flag it does not know as a usage error (exit 2, what was wrong and the usage), never with a
// stack trace: `node dist/bench/egress.js --help` once printed a TypeError's stack.
import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const BENCH = fileURLToPath(new URL('../../bench/', import.meta.url));
const benches = readdirSync(BENCH).filter((f) => f.endsWith('.js') && f !== 'runner.js');

describe('bench flags', () => {
  it('there are benches to check', () => assert.ok(benches.length >= 10, benches.join(' ')));
  for (const b of benches)
    it(`${b}: an unknown flag is a usage error (exit 2, no stack trace)`, () => {
      const r = spawnSync(process.execPath, [BENCH + b, '--no-such-flag'], { encoding: 'utf8', timeout: 30_000 });
      assert.equal(r.status, 2, `${b}: ${r.stderr}`);
      assert.match(r.stderr, /no-such-flag/);
      assert.match(r.stderr, /usage: node dist\/bench\//);
      assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
    });
});
