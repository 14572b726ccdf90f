// The rootfs option: resolution (names, digests, errors), the plan it gives, and whose ids the sandbox maps to.
import { strict as assert } from 'node:assert';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildImage } from '../../rootfs-builder/build.js';
import { ROOT_IMAGE_OWNER } from '../../rootfs-builder/cache.js';
import { prepareRun } from '../../sandbox/api/prepare.js';
import { SandboxOptionError } from '../../sandbox/errors.js';
import { opArg } from '../../sandbox/plan/ops.js';
import { tarBytes } from '../helpers/tarball.js';

describe('rootfs option', () => {
  let work: string;
  let saved: string | undefined;
  let digest: string;
  before(async () => {
    work = mkdtempSync(join(tmpdir(), 'cubicle-rootfs-'));
    saved = process.env.CUBICLE_CACHE;
    process.env.CUBICLE_CACHE = join(work, 'cache');
    writeFileSync(join(work, 'in.tar'), tarBytes([{ path: 'bin/true', content: '', mode: 0o755 }]));
    digest = (await buildImage(join(work, 'in.tar'), { name: 'tiny' })).digest;
  });
  after(() => {
    if (saved === undefined) delete process.env.CUBICLE_CACHE;
    else process.env.CUBICLE_CACHE = saved;
    rmSync(work, { recursive: true, force: true });
  });

  it('puts the image op right after root, binds nothing of the host view, and keeps the root read-only', () => {
    const { plan } = prepareRun(['/bin/true'], { rootfs: 'tiny' });
    const names = plan.map((p) => p.op);
    const root = names.indexOf('root');
    assert.equal(names[root + 1], 'image');
    const image = plan[root + 1]!;
    assert.equal(image.op, 'image');
    if (image.op === 'image') {
      assert.match(opArg(image, 'hostPath'), new RegExp(`/images/${digest.slice(7)}/rootfs$`));
      assert.equal(opArg(image, 'writable'), '0');
    }
    assert.ok(!plan.some((p) => p.op === 'bind' && p.args[0] === '/usr'), 'the host /usr is not bound');
    assert.ok(names.includes('root-ro'));
  });

  it('writable: the image op says so and the root stays writable; by digest too', () => {
    const { plan } = prepareRun(['/bin/true'], { rootfs: digest, writable: true });
    const image = plan.find((p) => p.op === 'image')!;
    assert.equal(image.args[1], '1');
    assert.ok(!plan.some((p) => p.op === 'root-ro'));
  });

  it('refuses writable without rootfs, an unknown name, a bad name and a missing digest, naming the option', () => {
    const refuses = (o: object, option: string, msg: RegExp): void =>
      assert.throws(
        () => prepareRun(['/bin/true'], o),
        (e: unknown) => e instanceof SandboxOptionError && e.option === option && msg.test(e.message),
      );
    refuses({ writable: true }, 'writable', /writable needs rootfs/);
    refuses({ writable: 'yes' }, 'writable', /boolean/);
    refuses({ rootfs: 'nope' }, 'rootfs', /no image named "nope".*cubicle image build SRC --name nope/);
    refuses({ rootfs: '../etc' }, 'rootfs', /not valid/);
    refuses({ rootfs: `sha256:${'0'.repeat(64)}` }, 'rootfs', /is not in/);
    refuses({ rootfs: 42 }, 'rootfs', /name or sha256: digest/);
  });

  it("maps the sandbox to the tree's owner: root's image owner, or a rootless caller's own ids", () => {
    const { options, supervise } = prepareRun(['/bin/true'], { rootfs: 'tiny' });
    if (process.geteuid!() === 0) {
      assert.equal(options.outerUid, ROOT_IMAGE_OWNER);
      assert.equal(options.outerGid, ROOT_IMAGE_OWNER);
      assert.equal(options.hostIdRange, undefined);
    } else {
      assert.equal(options.outerUid, process.geteuid!());
      assert.match((supervise.subids as { reason: string }).reason, /image tiny's files are the caller's/);
    }
  });
});
