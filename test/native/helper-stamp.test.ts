// The helper's stamp: a binary is run only when it was built for this package version, protocol and architecture.
import { strict as assert } from 'node:assert';
import { existsSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { helperPath } from '../../sandbox/native/helper-path.js';
import { expectedStamp, helperMismatch, STAMP_MARKER, STAMP_SECTION } from '../../sandbox/native/stamp.js';
import { skipBecause, worldReadableTmp } from '../helpers/env.js';

const REPO = fileURLToPath(new URL('../../..', import.meta.url));

describe('helper stamp', () => {
  it('the helper in use carries this package version and protocol, and its stamp matches', () => {
    const bytes = readFileSync(helperPath()).toString('latin1');
    assert.ok(bytes.includes(`${STAMP_MARKER}${expectedStamp()};`));
    assert.equal(helperMismatch(helperPath()), null);
  });

  it('the stamp is read from its own ELF section; a build without that section is still checked (searched whole)', () => {
    const real = readFileSync(helperPath()).toString('latin1');
    assert.ok(real.includes(`${STAMP_SECTION}\0`), 'the helper has the stamp section');
    const t = worldReadableTmp();
    try {
      // The section renamed: found by searching the file, as in builds made before the section existed.
      const renamed = `${STAMP_SECTION.slice(0, -1)}X\0`;
      writeFileSync(join(t.dir, 'older'), Buffer.from(real.replace(`${STAMP_SECTION}\0`, renamed), 'latin1'));
      assert.equal(helperMismatch(join(t.dir, 'older')), null);
      const stale = real.replace(`${STAMP_SECTION}\0`, renamed).replace(expectedStamp(), '0.0.1/0000000000000000');
      writeFileSync(join(t.dir, 'older-stale'), Buffer.from(stale, 'latin1'));
      assert.match(helperMismatch(join(t.dir, 'older-stale')) ?? '', /stamped "0\.0\.1\/0+", this package needs/);
    } finally {
      t.cleanup();
    }
  });

  it('a binary for another architecture is refused before it is run', function () {
    const other = process.arch === 'x64' ? 'arm64' : 'x64';
    const path = join(REPO, 'prebuilds', `linux-${other}`, 'cubicle-helper');
    if (!existsSync(path)) skipBecause(this, `no linux-${other} prebuild here (npm pack builds it with a cross compiler)`);
    assert.match(helperMismatch(path) ?? '', /built for ELF machine \d+, this host \(\w+\) needs \d+/);
  });

  it('a binary of another version, a script, a symlink and a missing file are refused', () => {
    const t = worldReadableTmp();
    try {
      const real = readFileSync(helperPath()).toString('latin1');
      writeFileSync(
        join(t.dir, 'old'),
        Buffer.from(real.replace(`${STAMP_MARKER}${expectedStamp()}`, `${STAMP_MARKER}0.0.1/0000000000000000`), 'latin1'),
      );
      assert.match(helperMismatch(join(t.dir, 'old')) ?? '', /stamped "0\.0\.1\/0+", this package needs/);
      writeFileSync(join(t.dir, 'script'), '#!/bin/sh\nexit 0\n');
      assert.match(helperMismatch(join(t.dir, 'script')) ?? '', /not an ELF executable/);
      writeFileSync(join(t.dir, 'nostamp'), Buffer.from(real.replaceAll(STAMP_MARKER, 'X'.repeat(STAMP_MARKER.length)), 'latin1'));
      assert.match(helperMismatch(join(t.dir, 'nostamp')) ?? '', /no version stamp/);
      assert.match(helperMismatch(join(t.dir, 'missing')) ?? '', /ENOENT/);
      symlinkSync(helperPath(), join(t.dir, 'link'));
      assert.match(helperMismatch(join(t.dir, 'link')) ?? '', /ELOOP/, 'a symlink is never followed');
    } finally {
      t.cleanup();
    }
  });
});
