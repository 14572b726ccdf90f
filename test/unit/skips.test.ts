// A test that cannot run here says why: every skip in the tests goes through skipBecause (which prints the
// reason), and no test is skipped unconditionally.
import { strict as assert } from 'node:assert';
import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const TEST_DIR = fileURLToPath(new URL('../../../test/', import.meta.url));
const HELPER = join(TEST_DIR, 'helpers', 'env.ts');

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? sources(join(dir, e.name)) : e.name.endsWith('.ts') ? [join(dir, e.name)] : [],
  );
}

describe('skips in the tests', () => {
  it('go through skipBecause, which prints the reason; none is unconditional', () => {
    const files = sources(TEST_DIR).filter((f) => f !== HELPER);
    assert.ok(files.length > 20, `found ${files.length} test sources`);
    const bare: string[] = [];
    for (const f of files) {
      readFileSync(f, 'utf8')
        .split('\n')
        .forEach((line, i) => {
          if (/\.skip\(\)|\b(it|describe)\.skip\(|\bx(it|describe)\(/.test(line))
            bare.push(`${relative(TEST_DIR, f)}:${i + 1}: ${line.trim()}`);
        });
    }
    assert.deepEqual(bare, [], 'skip only through skipBecause(this, reason)');
  });
});
