// Safe extraction: each malicious tarball is built inside its test and named after what it reproduces. A refused
// build names the entry and leaves nothing in the cache; an altered entry is reported by name.
import { strict as assert } from 'node:assert';
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { buildImage, type BuildImageOptions } from '../../rootfs-builder/build.js';
import { listImages } from '../../rootfs-builder/cache.js';
import { ImageError } from '../../sandbox/errors.js';
import { tarBytes, type TarEntry } from '../helpers/tarball.js';

describe('image extraction', () => {
  let work: string;
  let saved: string | undefined;
  beforeEach(() => {
    work = mkdtempSync(join(tmpdir(), 'cubicle-extract-'));
    saved = process.env.CUBICLE_CACHE;
    process.env.CUBICLE_CACHE = join(work, 'cache');
  });
  afterEach(() => {
    if (saved === undefined) delete process.env.CUBICLE_CACHE;
    else process.env.CUBICLE_CACHE = saved;
    rmSync(work, { recursive: true, force: true });
  });

  const tarball = (entries: TarEntry[], gzip = false): string => {
    const path = join(work, gzip ? 'in.tar.gz' : 'in.tar');
    writeFileSync(path, gzip ? gzipSync(tarBytes(entries)) : tarBytes(entries));
    return path;
  };

  /** Builds and expects a refusal naming `entry`, with nothing left in the cache. */
  async function refused(entries: TarEntry[], entry: string, reason: RegExp, opts: BuildImageOptions = {}): Promise<void> {
    await assert.rejects(buildImage(tarball(entries), { name: 'evil', ...opts }), (e: unknown) => {
      assert.ok(e instanceof ImageError, String(e));
      assert.equal(e.code, 'ERR_SANDBOX_IMAGE');
      assert.equal(e.entry, entry);
      assert.match(e.message, reason);
      return true;
    });
    const cache = join(work, 'cache');
    if (existsSync(cache)) {
      assert.deepEqual(listImages(cache), []);
      assert.deepEqual(readdirSync(join(cache, 'tmp')), [], 'the refused build left its temp dir behind');
      assert.deepEqual(readdirSync(join(cache, 'images')), []);
    }
  }

  it("dot-dot path: '../escape' is refused and nothing is written outside", async () => {
    await refused(
      [
        { path: 'ok', content: 'x' },
        { path: '../escape', content: 'pwned' },
      ],
      '../escape',
      /'\.\.'/,
    );
    assert.equal(existsSync(join(work, 'escape')), false);
    assert.equal(existsSync(join(work, 'cache', 'tmp', 'escape')), false);
  });

  it("dot-dot in the middle: 'a/../../escape' is refused", async () => {
    await refused([{ path: 'a/../../escape', content: 'pwned' }], 'a/../../escape', /'\.\.'/);
  });

  it('absolute path: /tmp/... is refused, not written on the host nor stripped silently', async () => {
    const target = join(work, 'absolute-target');
    await refused([{ path: target, content: 'pwned' }], target, /absolute path/);
    assert.equal(existsSync(target), false);
  });

  it('symlink then write through it: a file below a symlink entry to a host directory is refused', async () => {
    const outside = join(work, 'outside');
    mkdirSync(outside);
    await refused(
      [
        { path: 'link', type: 'SymbolicLink', linkpath: outside },
        { path: 'link/pwned', content: 'pwned' },
      ],
      'link/pwned',
      /through the symlink "link"/,
    );
    assert.deepEqual(readdirSync(outside), []);
  });

  it('directory replaced by a symlink of the same name, then written through (node-tar CVE-2021-32803 shape)', async () => {
    const outside = join(work, 'outside');
    mkdirSync(outside);
    await refused(
      [
        { path: 'd', type: 'Directory' },
        { path: 'd', type: 'SymbolicLink', linkpath: outside },
        { path: 'd/pwned', content: 'pwned' },
      ],
      'd/pwned',
      /through the symlink "d"/,
    );
    assert.deepEqual(readdirSync(outside), []);
  });

  it('relative symlink climbing out, then written through, is refused', async () => {
    await refused(
      [
        { path: 'up', type: 'SymbolicLink', linkpath: '../../..' },
        { path: 'up/pwned', content: 'pwned' },
      ],
      'up/pwned',
      /through the symlink/,
    );
  });

  it('hard link to a host file (absolute) is refused', async () => {
    await refused([{ path: 'passwd', type: 'Link', linkpath: '/etc/passwd' }], 'passwd', /hard link/);
  });

  it('hard link climbing out with .. is refused', async () => {
    await refused([{ path: 'passwd', type: 'Link', linkpath: '../../../../etc/passwd' }], 'passwd', /hard link/);
  });

  it('hard link through a symlink to a host directory is refused', async () => {
    await refused(
      [
        { path: 'etc', type: 'SymbolicLink', linkpath: '/etc' },
        { path: 'passwd', type: 'Link', linkpath: 'etc/passwd' },
      ],
      'passwd',
      /hard link through the symlink "etc"/,
    );
  });

  it('too many entries: past the entry cap the build is refused', async () => {
    const entries = Array.from({ length: 6 }, (_, i) => ({ path: `f${i}`, content: 'x' }));
    await refused(entries, 'f3', /more than 3 entries/, { maxEntries: 3 });
  });

  it('oversized: past the size cap the build is refused (a decompression bomb stops there)', async () => {
    await refused([{ path: 'big', content: Buffer.alloc(64 << 10) }], 'big', /more than 4096 bytes/, { maxBytes: 4096 });
  });

  it('device nodes and fifos are left out and named; setuid/setgid bits are dropped and named', async () => {
    const img = await buildImage(
      tarball([
        { path: 'dev/', type: 'Directory' },
        { path: 'dev/evil-null', type: 'CharacterDevice' },
        { path: 'dev/evil-disk', type: 'BlockDevice' },
        { path: 'pipe', type: 'FIFO' },
        { path: 'suid', content: '#!/bin/sh\n', mode: 0o4755 },
        { path: 'sgid', content: '#!/bin/sh\n', mode: 0o2755 },
        { path: 'plain', content: 'x', mode: 0o640 },
      ]),
      { name: 'altered' },
    );
    const why = Object.fromEntries(img.meta.altered.map((a) => [a.entry, a.reason]));
    assert.match(why['dev/evil-null'] ?? '', /CharacterDevice left out/);
    assert.match(why['dev/evil-disk'] ?? '', /BlockDevice left out/);
    assert.match(why.pipe ?? '', /FIFO left out/);
    assert.match(why.suid ?? '', /setuid bit dropped/);
    assert.match(why.sgid ?? '', /setgid bit dropped/);
    assert.equal(why.plain, undefined);
    assert.deepEqual(readdirSync(join(img.root, 'dev')), []);
    assert.equal(existsSync(join(img.root, 'pipe')), false);
    assert.equal(lstatSync(join(img.root, 'suid')).mode & 0o7777, 0o755);
    assert.equal(lstatSync(join(img.root, 'sgid')).mode & 0o7777, 0o755);
    assert.equal(lstatSync(join(img.root, 'plain')).mode & 0o7777, 0o640);
  });

  it('a gzip tarball builds; zstd and xz are refused with the way out', async () => {
    const img = await buildImage(tarball([{ path: 'etc/hello', content: 'hi\n' }], true));
    assert.equal(img.meta.source.kind, 'tar');
    const zst = join(work, 'x.tar.zst');
    writeFileSync(zst, Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0, 0, 0, 0]));
    await assert.rejects(buildImage(zst), /zstd-compressed.*decompress it first \(zstd -d/);
    const xz = join(work, 'x.tar.xz');
    writeFileSync(xz, Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00, 0, 0]));
    await assert.rejects(buildImage(xz), /xz-compressed.*xz -d -k/);
  });

  it('a source given through a symlink is refused; a directory source keeps symlinks as symlinks', async () => {
    const src = join(work, 'src');
    mkdirSync(join(src, 'etc'), { recursive: true });
    writeFileSync(join(src, 'etc', 'hello'), 'hi\n');
    symlinkSync('/etc/passwd', join(src, 'etc', 'passwd'));
    symlinkSync(src, join(work, 'via-link'));
    await assert.rejects(buildImage(join(work, 'via-link')), /symlink/);
    const img = await buildImage(src, { name: 'dir' });
    assert.equal(img.meta.source.kind, 'directory');
    assert.ok(lstatSync(join(img.root, 'etc', 'passwd')).isSymbolicLink());
    const again = await buildImage(src);
    assert.equal(again.digest, img.digest);
    assert.equal(again.cached, true);
  });

  it('a bad name or digest is refused by name', async () => {
    await assert.rejects(buildImage(tarball([{ path: 'a', content: 'x' }]), { name: '../x' }), /image name "..\/x" is not valid/);
    await assert.rejects(buildImage(tarball([{ path: 'a', content: 'x' }]), { name: `sha256:${'0'.repeat(64)}` }), /not valid/);
  });
});
