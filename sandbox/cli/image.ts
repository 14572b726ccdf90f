// `cubicle image build|ls|inspect|rm|gc`: the image cache from the command line.
import { parseArgs } from 'node:util';
import { buildImage } from '../../rootfs-builder/build.js';
import { cacheDir, collectGarbage, findImage, listImages, removeImage } from '../../rootfs-builder/cache.js';
import { ImageError } from '../errors.js';
import { parseSize } from '../units.js';
import { UsageError } from './args.js';

export const IMAGE_USAGE = `Usage: cubicle image <command>

  build SRC [--name NAME] [--max-size SIZE] [--max-entries N]
                      build an image from a directory, a rootfs tarball (.tar, .tar.gz), a docker save
                      archive or an OCI image layout tarball; prints its digest last
  ls [--json]         the cached images: name, digest, size
  inspect NAME|DIGEST what an image was built from, its size, and the entries the build altered
  rm NAME|DIGEST      remove a name (and its image when no other name points to it), or an image by digest
  gc                  remove unnamed images and what interrupted builds left behind

The cache is $CUBICLE_CACHE, else $XDG_CACHE_HOME/cubicle/images, else ~/.cache/cubicle/images.
`;

const mib = (n: number): string => `${(n / 1048576).toFixed(1)} MiB`;

/** A one-line progress display on a terminal; nothing otherwise. */
function progress(): { update: (entries: number, bytes: number) => void; done: () => void } {
  if (!process.stderr.isTTY) return { update: () => {}, done: () => {} };
  let last = 0;
  let shown = false;
  return {
    update: (entries, bytes) => {
      const now = Date.now();
      if (now - last < 100) return;
      last = now;
      shown = true;
      process.stderr.write(`\r\x1b[Kextracting: ${entries} entries, ${mib(bytes)}`);
    },
    done: () => void (shown && process.stderr.write('\r\x1b[K')),
  };
}

async function build(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    options: { name: { type: 'string' }, 'max-size': { type: 'string' }, 'max-entries': { type: 'string' } },
    allowPositionals: true,
    strict: true,
  });
  if (positionals.length !== 1) throw new UsageError('usage: cubicle image build SRC [--name NAME] [--max-size SIZE] [--max-entries N]');
  const maxEntries = values['max-entries'];
  if (maxEntries !== undefined && !/^[1-9]\d*$/.test(maxEntries))
    throw new UsageError(`--max-entries must be a positive integer, got "${maxEntries}"`);
  let maxBytes: number | undefined;
  try {
    if (values['max-size'] !== undefined) maxBytes = parseSize(values['max-size'], '--max-size');
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  const bar = progress();
  let image;
  try {
    image = await buildImage(positionals[0]!, {
      ...(values.name !== undefined ? { name: values.name } : {}),
      ...(maxBytes !== undefined ? { maxBytes } : {}),
      ...(maxEntries !== undefined ? { maxEntries: Number(maxEntries) } : {}),
      onProgress: bar.update,
    });
  } finally {
    bar.done();
  }
  if (!image.cached) for (const a of image.meta.altered) process.stderr.write(`cubicle: altered ${JSON.stringify(a.entry)}: ${a.reason}\n`);
  const { entries, size, altered } = image.meta;
  const what = `${entries} entries, ${mib(size)}`;
  process.stderr.write(
    image.cached ? `cubicle: already cached (${what})\n` : `cubicle: built ${what}${altered.length ? `, ${altered.length} altered` : ''}\n`,
  );
  process.stdout.write(`${image.digest}\n`);
  return 0;
}

function ls(argv: string[]): number {
  const json = argv.includes('--json');
  const bad = argv.find((a) => a !== '--json');
  if (bad !== undefined) throw new UsageError(`image ls: unexpected argument "${bad}"`);
  let images: ReturnType<typeof listImages> = [];
  try {
    images = listImages();
  } catch (e) {
    if (!(e instanceof ImageError && e.message.includes('does not exist yet'))) throw e;
  }
  const rows = images.flatMap((i) => (i.names.length ? i.names : [null]).map((name) => ({ name, digest: i.digest, size: i.meta.size })));
  if (json) process.stdout.write(JSON.stringify(rows) + '\n');
  else {
    process.stdout.write(`${'NAME'.padEnd(24)} ${'DIGEST'.padEnd(71)} SIZE\n`);
    for (const r of rows) process.stdout.write(`${(r.name ?? '<none>').padEnd(24)} ${r.digest} ${mib(r.size)}\n`);
  }
  return 0;
}

/** Entry point of `cubicle image ...`; returns the exit code. Image errors exit 1 with their message. */
export async function cmdImage(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  try {
    switch (sub) {
      case 'build':
        return await build(rest);
      case 'ls':
        return ls(rest);
      case 'inspect': {
        if (rest.length !== 1) throw new UsageError('usage: cubicle image inspect NAME|DIGEST');
        const i = findImage(rest[0]!);
        process.stdout.write(JSON.stringify({ ...i.meta, names: i.names, root: i.root }, null, 2) + '\n');
        return 0;
      }
      case 'rm': {
        if (rest.length !== 1) throw new UsageError('usage: cubicle image rm NAME|DIGEST');
        const r = await removeImage(rest[0]!);
        process.stderr.write(
          r.removed ? `cubicle: removed ${r.digest}\n` : `cubicle: removed the name; ${r.digest} stays for its other names\n`,
        );
        return 0;
      }
      case 'gc': {
        if (rest.length) throw new UsageError('usage: cubicle image gc');
        for (const what of await collectGarbage()) process.stderr.write(`cubicle: removed ${what}\n`);
        return 0;
      }
      case undefined:
      case 'help':
      case '--help':
      case '-h':
        process.stdout.write(IMAGE_USAGE);
        return sub === undefined ? 2 : 0;
      default:
        throw new UsageError(`unknown image command "${sub}" (cache: ${cacheDir()})\n\n${IMAGE_USAGE}`);
    }
  } catch (e) {
    if (!(e instanceof ImageError)) throw e;
    process.stderr.write(`cubicle: ${e.message}\n`);
    return 1;
  }
}
