// Images: built from tarballs the test makes (busybox-static as the userland), run as the sandbox's root through
// the CLI as each identity (root's cache and an ordinary user's), layered docker save and OCI archives with
// whiteouts, the cache's hits, concurrency and housekeeping, read-only and writable roots.
import { strict as assert } from 'node:assert';
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chownSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, chmodSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { buildImage } from '../../rootfs-builder/build.js';
import { runSandboxed } from '../../sandbox/index.js';
import { identities, skipBecause } from '../helpers/env.js';
import { tarBytes, type TarEntry } from '../helpers/tarball.js';
import { CLI } from '../helpers/cli.js';

/** A static busybox from Debian's busybox-static package, or undefined. */
function staticBusybox(): string | undefined {
  for (const p of ['/bin/busybox', '/usr/bin/busybox']) {
    try {
      const head = readFileSync(p).subarray(0, 4096).toString('latin1');
      if (!head.includes('ld-linux')) return p;
    } catch {
      /* not here */
    }
  }
  return undefined;
}

const APPLETS = ['sh', 'ls', 'cat', 'echo', 'id', 'stat', 'mkdir', 'touch', 'test'];

/** A userland: busybox with its applets as symlinks (one absolute, to check targets are kept as given). */
const userland = (busybox: string): TarEntry[] => [
  { path: './', type: 'Directory' },
  { path: './bin/', type: 'Directory' },
  { path: './bin/busybox', content: readFileSync(busybox), mode: 0o755 },
  ...APPLETS.map((a) => ({ path: `./bin/${a}`, type: 'SymbolicLink' as const, linkpath: a === 'cat' ? '/bin/busybox' : 'busybox' })),
  { path: './etc/', type: 'Directory' },
  { path: './etc/motd', content: 'from the image\n' },
];

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

for (const id of identities())
  describe(`images, ${id.label}`, () => {
    let work: string;
    let cache: string;
    let busybox: string;
    const owner = id.spawnAs.runAs;
    const cubicle = (args: string[]) =>
      spawnSync(process.execPath, [CLI, ...args], {
        encoding: 'utf8',
        timeout: 60_000,
        env: { ...process.env, CUBICLE_CACHE: cache },
        ...(owner ?? {}),
      });
    const ok = (args: string[]): string => {
      const r = cubicle(args);
      assert.equal(r.status, 0, `cubicle ${args.join(' ')}: ${r.stderr}`);
      return r.stdout;
    };
    const write = (name: string, data: Buffer): string => {
      const p = join(work, name);
      writeFileSync(p, data);
      chmodSync(p, 0o644);
      return p;
    };

    before(function () {
      const b = staticBusybox();
      if (!b) skipBecause(this, 'no static busybox here (apt-get install busybox-static)');
      busybox = b;
    });
    beforeEach(() => {
      work = mkdtempSync(join(tmpdir(), 'cubicle-images-'));
      chmodSync(work, 0o755);
      cache = join(work, 'cache');
      if (owner) chownSync(work, owner.uid, owner.gid);
    });
    afterEach(() => rmSync(work, { recursive: true, force: true }));

    it('builds from a tarball (digest last on stdout), runs a program inside it, and the second build is a cache hit', () => {
      const tar = write('bb.tar.gz', gzipSync(tarBytes(userland(busybox))));
      const first = ok(['image', 'build', tar, '--name', 'bb']).trim().split('\n');
      const digest = first.at(-1)!;
      assert.match(digest, /^sha256:[0-9a-f]{64}$/);
      assert.equal(digest, `sha256:${sha(readFileSync(tar))}`, 'the digest of a tarball is the sha256 of its bytes');
      const again = cubicle(['image', 'build', tar, '--name', 'bb']);
      assert.equal(again.stdout.trim(), digest);
      assert.match(again.stderr, /already cached/);
      const out = ok(['run', '--rootfs', 'bb', '--', '/bin/sh', '-c', 'cat /etc/motd; id -un; stat -c %U:%G /bin/busybox /etc/motd']);
      assert.equal(out, 'from the image\nsandbox\nsandbox:sandbox\nsandbox:sandbox\n');
      // by digest too; cubicle's own /etc/passwd, /proc, /dev, /tmp; the absolute symlink kept as given
      const inside = ok([
        'run',
        '--rootfs',
        digest,
        '--',
        '/bin/sh',
        '-c',
        'grep -c "^sandbox:x:1000:" /etc/passwd; test -d /proc/self && echo proc; echo x > /dev/null && echo dev; ' +
          'touch /tmp/t && echo tmp; ls -l /bin/cat | grep -o "/bin/busybox"',
      ]);
      assert.equal(inside, '1\nproc\ndev\ntmp\n/bin/busybox\n');
    });

    it('the root is read-only; --writable lets the payload write anywhere without touching the cache', () => {
      const tar = write('bb.tar', tarBytes(userland(busybox)));
      ok(['image', 'build', tar, '--name', 'bb']);
      const ro = cubicle(['run', '--rootfs', 'bb', '--', '/bin/sh', '-c', 'echo x > /etc/motd']);
      assert.notEqual(ro.status, 0);
      assert.match(ro.stderr, /Read-only file system/);
      const rw = ok([
        'run',
        '--rootfs',
        'bb',
        '--writable',
        '--',
        '/bin/sh',
        '-c',
        'echo changed > /etc/motd && mkdir /opt && echo new > /opt/f && echo extra >> /etc/passwd && cat /etc/motd /opt/f',
      ]);
      assert.equal(rw, 'changed\nnew\n');
      const root = JSON.parse(ok(['image', 'inspect', 'bb'])) as { root: string; digest: string };
      if (!owner) {
        assert.equal(readFileSync(join(root.root, 'etc', 'motd'), 'utf8'), 'from the image\n');
        assert.equal(existsSync(join(root.root, 'opt')), false);
      }
      assert.equal(
        ok(['run', '--rootfs', 'bb', '--', '/bin/cat', '/etc/motd']),
        'from the image\n',
        'the next run sees the image as built',
      );
    });

    it('a layered docker save archive: layers in order, whiteouts and opaque directories honoured', () => {
      const lower = tarBytes([
        ...userland(busybox),
        { path: 'etc/keep', content: 'kept\n' },
        { path: 'etc/gone', content: 'should be deleted\n' },
        { path: 'data/', type: 'Directory' },
        { path: 'data/old1', content: 'old\n' },
        { path: 'data/sub/old2', content: 'old\n' },
        { path: 'lib/', type: 'Directory' },
        { path: 'lib/real', content: 'linked\n' },
        { path: 'lib/hard', type: 'Link', linkpath: 'lib/real' },
      ]);
      const upper = tarBytes([
        { path: 'etc/.wh.gone', content: '' },
        { path: 'data/.wh..wh..opq', content: '' },
        { path: 'data/new', content: 'new\n' },
        { path: 'etc/added', content: 'added\n' },
      ]);
      const manifest = [{ Config: 'config.json', RepoTags: ['test:1'], Layers: ['aaa/layer.tar', 'bbb/layer.tar'] }];
      const archive = tarBytes([
        { path: 'aaa/', type: 'Directory' },
        { path: 'aaa/layer.tar', content: lower },
        { path: 'bbb/', type: 'Directory' },
        { path: 'bbb/layer.tar', content: upper },
        { path: 'config.json', content: '{}' },
        { path: 'manifest.json', content: JSON.stringify(manifest) },
      ]);
      const tar = write('saved.tar', archive);
      ok(['image', 'build', tar, '--name', 'layered']);
      const out = ok(['run', '--rootfs', 'layered', '--', '/bin/sh', '-c', 'ls /etc; echo --; ls -R /data; echo --; cat /lib/hard']);
      assert.equal(out, 'added\ngroup\nhostname\nhosts\nkeep\nmotd\npasswd\n--\n/data:\nnew\n--\nlinked\n');
      const info = JSON.parse(ok(['image', 'inspect', 'layered'])) as { source: { kind: string } };
      assert.equal(info.source.kind, 'docker-save');
    });

    it('an OCI image layout with gzip layers', () => {
      const blobs: TarEntry[] = [];
      const put = (data: Buffer): { digest: string; size: number } => {
        const hex = sha(data);
        blobs.push({ path: `blobs/sha256/${hex}`, content: data });
        return { digest: `sha256:${hex}`, size: data.length };
      };
      const l1 = put(gzipSync(tarBytes(userland(busybox))));
      const l2 = put(
        gzipSync(
          tarBytes([
            { path: 'etc/.wh.motd', content: '' },
            { path: 'etc/oci', content: 'oci\n' },
          ]),
        ),
      );
      const config = put(Buffer.from('{}'));
      const manifest = put(
        Buffer.from(
          JSON.stringify({
            schemaVersion: 2,
            mediaType: 'application/vnd.oci.image.manifest.v1+json',
            config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...config },
            layers: [l1, l2].map((l) => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', ...l })),
          }),
        ),
      );
      const index = { schemaVersion: 2, manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', ...manifest }] };
      const tar = write(
        'oci.tar',
        tarBytes([
          { path: 'oci-layout', content: '{"imageLayoutVersion":"1.0.0"}' },
          { path: 'index.json', content: JSON.stringify(index) },
          ...blobs,
        ]),
      );
      ok(['image', 'build', tar, '--name', 'oci']);
      assert.equal(
        ok(['run', '--rootfs', 'oci', '--', '/bin/sh', '-c', 'cat /etc/oci; test -e /etc/motd || echo no-motd']),
        'oci\nno-motd\n',
      );
    });

    it('concurrent builds of the same image are safe: one tree, every builder gets the digest', async () => {
      const tar = write('bb.tar', tarBytes(userland(busybox)));
      const builds = await Promise.all(
        [1, 2, 3].map(
          (i) =>
            new Promise<{ code: number | null; out: string; err: string }>((resolve) => {
              const p = spawn(process.execPath, [CLI, 'image', 'build', tar, '--name', `bb${i}`], {
                env: { ...process.env, CUBICLE_CACHE: cache },
                ...(owner ?? {}),
              });
              let out = '';
              let err = '';
              p.stdout.on('data', (d: Buffer) => (out += d.toString()));
              p.stderr.on('data', (d: Buffer) => (err += d.toString()));
              p.on('close', (code) => resolve({ code, out, err }));
            }),
        ),
      );
      for (const b of builds) assert.equal(b.code, 0, b.err);
      const digests = new Set(builds.map((b) => b.out.trim()));
      assert.equal(digests.size, 1);
      assert.equal(builds.filter((b) => /already cached/.test(b.err)).length, 2, 'exactly one builder extracted');
      assert.equal(readdirSync(join(cache, 'images')).length, 1);
      assert.deepEqual(readdirSync(join(cache, 'tmp')), []);
      const ls = JSON.parse(ok(['image', 'ls', '--json'])) as { name: string; digest: string; size: number }[];
      assert.deepEqual(ls.map((r) => r.name).sort(), ['bb1', 'bb2', 'bb3']);
      assert.ok(ls.every((r) => r.digest === [...digests][0] && r.size > 1 << 20));
    });

    it('a refused build exits non-zero naming the entry and lists nothing; rm and gc clean up', () => {
      const evil = write(
        'evil.tar',
        tarBytes([
          { path: 'ok', content: 'x' },
          { path: '../../escape', content: 'x' },
        ]),
      );
      const r = cubicle(['image', 'build', evil, '--name', 'evil']);
      assert.notEqual(r.status, 0);
      assert.match(r.stderr, /refused entry "\.\.\/\.\.\/escape"/);
      assert.equal(r.stdout, '');
      assert.deepEqual(JSON.parse(ok(['image', 'ls', '--json'])), []);
      const altered = cubicle(['image', 'build', write('dev.tar', tarBytes([{ path: 'dev/x', type: 'CharacterDevice' }])), '--name', 'd']);
      assert.equal(altered.status, 0);
      assert.match(altered.stderr, /altered "dev\/x": CharacterDevice left out/);
      const tar = write('bb.tar', tarBytes(userland(busybox)));
      const digest = ok(['image', 'build', tar, '--name', 'a']).trim();
      ok(['image', 'build', tar, '--name', 'b']);
      assert.match(ok(['image', 'inspect', 'a']), new RegExp(digest));
      ok(['image', 'rm', 'a']);
      assert.deepEqual(
        (JSON.parse(ok(['image', 'ls', '--json'])) as { name: string }[]).map((x) => x.name),
        [digest < altered.stdout.trim() ? 'b' : 'd', digest < altered.stdout.trim() ? 'd' : 'b'],
      );
      ok(['image', 'rm', 'b']);
      const missing = cubicle(['run', '--rootfs', 'b', '--', '/bin/true']);
      assert.equal(missing.status, 2, 'an unknown image is a usage error (exit 2), as every bad flag value');
      assert.match(missing.stderr, /no image named "b".*cubicle image build SRC --name b/);
      // a crashed build leaves a temp dir: gc removes it
      const leftover = join(cache, 'tmp', `${'ab'.repeat(32)}.1.dead`);
      const mk = spawnSync('mkdir', [leftover], owner ?? {});
      assert.equal(mk.status, 0);
      const gc = cubicle(['image', 'gc']);
      assert.equal(gc.status, 0);
      assert.match(gc.stderr, /leftover/);
      assert.deepEqual(readdirSync(join(cache, 'tmp')), []);
    });
  });

describe('images: the same input gives the same digest for root and for an ordinary user', () => {
  it('root and uid 65534 build one tarball to one digest', function () {
    const ids = identities();
    if (ids.length < 2) skipBecause(this, 'needs root to run the build as a second, unprivileged user too');
    const work = mkdtempSync(join(tmpdir(), 'cubicle-images-'));
    try {
      chmodSync(work, 0o755);
      const tar = join(work, 'in.tar');
      writeFileSync(tar, tarBytes([{ path: 'etc/hello', content: 'hi\n' }]));
      chmodSync(tar, 0o644);
      const digests = ids.map((id, i) => {
        const own = join(work, `user${i}`);
        mkdirSync(own, { mode: 0o700 });
        if (id.spawnAs.runAs) chownSync(own, id.spawnAs.runAs.uid, id.spawnAs.runAs.gid);
        const r = spawnSync(process.execPath, [CLI, 'image', 'build', tar], {
          encoding: 'utf8',
          env: { ...process.env, CUBICLE_CACHE: join(own, 'cache') },
          ...(id.spawnAs.runAs ?? {}),
        });
        assert.equal(r.status, 0, r.stderr);
        return r.stdout.trim();
      });
      assert.equal(digests[0], digests[1]);
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
  });
});

describe('images through the API', () => {
  it('runSandboxed(cmd, { rootfs, writable }) runs inside the image as the sandbox user', async function () {
    const b = staticBusybox();
    if (!b) skipBecause(this, 'no static busybox here (apt-get install busybox-static)');
    const work = mkdtempSync(join(tmpdir(), 'cubicle-images-'));
    const saved = process.env.CUBICLE_CACHE;
    process.env.CUBICLE_CACHE = join(work, 'cache');
    try {
      writeFileSync(join(work, 'bb.tar'), tarBytes(userland(b)));
      const img = await buildImage(join(work, 'bb.tar'), { name: 'bb' });
      const r = await runSandboxed(['/bin/sh', '-c', 'echo hi > /etc/motd; cat /etc/motd; stat -c %U /etc/motd /bin/busybox'], {
        rootfs: 'bb',
        writable: true,
      });
      assert.equal(r.stdout, 'hi\nsandbox\nsandbox\n');
      assert.equal(readFileSync(join(img.root, 'etc', 'motd'), 'utf8'), 'from the image\n');
    } finally {
      if (saved === undefined) delete process.env.CUBICLE_CACHE;
      else process.env.CUBICLE_CACHE = saved;
      rmSync(work, { recursive: true, force: true });
    }
  });
});
