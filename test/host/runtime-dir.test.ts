// The per-user runtime directory (registry of live sandboxes, networks): private to its user, and never one that
// another user planted (a symlink, a directory someone else owns, one open to others).
import { strict as assert } from 'node:assert';
import { chmodSync, chownSync, lstatSync, mkdirSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { skipBecause } from '../helpers/env.js';
import { runtimeDir, RuntimeDirError, runtimeDirPath } from '../../sandbox/host/runtime-dir.js';

describe('runtimeDir', () => {
  let xdg: string;
  beforeEach(() => {
    xdg = mkdtempSync(join(tmpdir(), 'cubicle-xdg-'));
    chmodSync(xdg, 0o700);
  });
  afterEach(() => rmSync(xdg, { recursive: true, force: true }));

  it('is $XDG_RUNTIME_DIR/cubicle, made 0700 with its subdirectory', () => {
    const dir = runtimeDir('sandboxes', { XDG_RUNTIME_DIR: xdg });
    assert.equal(dir, join(xdg, 'cubicle', 'sandboxes'));
    for (const d of [join(xdg, 'cubicle'), dir]) {
      const st = lstatSync(d);
      assert.ok(st.isDirectory());
      assert.equal(st.mode & 0o777, 0o700, d);
      assert.equal(st.uid, process.geteuid!());
    }
  });

  it('falls back to /tmp/cubicle-run-UID when XDG_RUNTIME_DIR is open to others or not set', () => {
    chmodSync(xdg, 0o755);
    assert.equal(runtimeDirPath({ XDG_RUNTIME_DIR: xdg }), `/tmp/cubicle-run-${process.geteuid!()}`);
    assert.equal(runtimeDirPath({}), `/tmp/cubicle-run-${process.geteuid!()}`);
    assert.equal(runtimeDirPath({ XDG_RUNTIME_DIR: 'relative/dir' }), `/tmp/cubicle-run-${process.geteuid!()}`);
  });

  it('refuses a planted symlink in place of its directory (regression: a squatter redirecting the registry)', () => {
    const elsewhere = join(xdg, 'elsewhere');
    mkdirSync(elsewhere, { mode: 0o700 });
    symlinkSync(elsewhere, join(xdg, 'cubicle'));
    assert.throws(
      () => runtimeDir('sandboxes', { XDG_RUNTIME_DIR: xdg }),
      (e: unknown) => {
        assert.ok(e instanceof RuntimeDirError);
        assert.match(e.message, /is not a directory \(a symlink is never followed\)/);
        assert.match(e.message, /remove it/);
        return true;
      },
    );
  });

  it('refuses a directory open to other users', () => {
    mkdirSync(join(xdg, 'cubicle'), { mode: 0o700 });
    chmodSync(join(xdg, 'cubicle'), 0o777);
    assert.throws(() => runtimeDir('', { XDG_RUNTIME_DIR: xdg }), /open to other users \(mode 777; it must be 0700\)/);
  });

  it("refuses a directory another user owns (regression: a squatter's /tmp/cubicle-run-UID)", function () {
    if (process.geteuid!() !== 0) skipBecause(this, 'making a directory owned by another user needs root');
    mkdirSync(join(xdg, 'cubicle'), { mode: 0o700 });
    chownSync(join(xdg, 'cubicle'), 65534, 65534);
    assert.throws(() => runtimeDir('', { XDG_RUNTIME_DIR: xdg }), /is owned by uid 65534, not by this user/);
  });
});
