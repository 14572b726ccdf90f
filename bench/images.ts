// Image benchmark: extraction time and cache-hit time of a realistic root filesystem, and start latency with an
// image root against the host view. The image is a minbase equivalent taken from this host: the files of every
// installed package of priority "required" and of what they depend on (what debootstrap --variant=minbase
// installs), tarred once.
// Usage: node dist/bench/images.js [--runs N] [--json]
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, realpathSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { buildImage } from '../rootfs-builder/build.js';
import { runSandboxed, type SandboxOptions } from '../sandbox/index.js';
import { summarize, type Stats, benchFlags } from './runner.js';

const values = benchFlags('usage: node dist/bench/images.js [--runs N (default 20)] [--json]', {
  runs: { count: 20 },
  json: { switch: true },
});
const runs = values.runs;

/** A tarball of the host's "required" packages' files (plus the merged-/usr top-level links), made once. */
function minbaseTarball(): string {
  const out = join(tmpdir(), 'cubicle-bench-minbase.tar');
  if (existsSync(out)) return out;
  // installed packages: priority, status, and what they depend on; "required" ones and their dependencies are taken
  const rows = execFileSync('dpkg-query', ['-W', '-f', '${Package}\\t${Priority}\\t${db:Status-Abbrev}\\t${Pre-Depends}, ${Depends}\\n'], {
    encoding: 'utf8',
    maxBuffer: 64 << 20,
  })
    .split('\n')
    .map((l) => l.split('\t'))
    .filter((r) => r[2]?.startsWith('ii'));
  const deps = new Map(
    rows.map((r) => [r[0]!.split(':')[0]!, (r[3] ?? '').split(/[,|]/).map((d) => d.trim().split(/[\s:]/)[0]!)] as const),
  );
  const pkgs = new Set(rows.filter((r) => r[1] === 'required').map((r) => r[0]!.split(':')[0]!));
  for (const todo = [...pkgs]; todo.length;)
    for (const d of deps.get(todo.pop()!) ?? [])
      if (d && deps.has(d) && !pkgs.has(d)) {
        pkgs.add(d);
        todo.push(d);
      }
  const files = new Set<string>(['/bin', '/sbin', '/lib', '/lib64']);
  // dpkg lists some files by their pre-merged-/usr paths (/lib/...): each is taken at its real place, so the
  // archive never holds an entry below one of its own symlinks (which a build refuses)
  for (const line of execFileSync('dpkg', ['-L', ...pkgs], { encoding: 'utf8', maxBuffer: 64 << 20 }).split('\n'))
    if (line.startsWith('/') && line !== '/.' && existsSync(line)) files.add(join(realpathSync(dirname(line)), basename(line)));
  const list = join(tmpdir(), 'cubicle-bench-minbase.list');
  writeFileSync(
    list,
    [...files]
      .filter((f) => existsSync(f))
      .map((f) => f.slice(1))
      .join('\n') + '\n',
  );
  execFileSync('tar', ['-C', '/', '--no-recursion', '-cf', `${out}.tmp`, '-T', list]);
  execFileSync('mv', [`${out}.tmp`, out]);
  return out;
}

const ms = (t0: number): number => performance.now() - t0;
const fmt = (s: Stats): string => `p50 ${s.p50.toFixed(1)} ms, p95 ${s.p95.toFixed(1)} ms (n=${s.n})`;

async function main(): Promise<void> {
  const tar = minbaseTarball();
  const work = mkdtempSync(join(tmpdir(), 'cubicle-bench-images-'));
  const saved = process.env.CUBICLE_CACHE;
  try {
    const extract: number[] = [];
    let info = { entries: 0, size: 0, digest: '' };
    for (let i = 0; i < 3; i++) {
      process.env.CUBICLE_CACHE = join(work, `cold-${i}`);
      const t0 = performance.now();
      const img = await buildImage(tar, { name: 'minbase' });
      extract.push(ms(t0));
      info = { entries: img.meta.entries, size: img.meta.size, digest: img.digest };
    }
    const hit: number[] = [];
    for (let i = 0; i < 5; i++) {
      const t0 = performance.now();
      const img = await buildImage(tar, { name: 'minbase' });
      if (!img.cached) throw new Error('expected a cache hit');
      hit.push(ms(t0));
    }
    // start latency, interleaved: the host view against the image root (read-only and writable)
    const kinds: [string, SandboxOptions][] = [
      ['host view', {}],
      ['image root', { rootfs: 'minbase' }],
      ['image root, writable', { rootfs: 'minbase', writable: true }],
    ];
    const start = new Map<string, number[]>(kinds.map(([k]) => [k, []]));
    for (let i = 0; i < runs + 2; i++)
      for (const [k, o] of kinds) {
        const t0 = performance.now();
        await runSandboxed(['/bin/true'], o);
        if (i >= 2) start.get(k)!.push(ms(t0)); // two warm-up rounds
      }
    const result = {
      image: { tarball: tar, tarballBytes: statSync(tar).size, ...info },
      extractMs: summarize(extract),
      cacheHitMs: summarize(hit),
      startMs: Object.fromEntries([...start].map(([k, v]) => [k, summarize(v)])),
    };
    if (values.json) process.stdout.write(JSON.stringify(result, null, 2) + '\n');
    else {
      const mb = (n: number): string => `${(n / 1048576).toFixed(0)} MiB`;
      process.stdout.write(
        `image: minbase equivalent from this host's "required" packages: ${info.entries} entries, ${mb(info.size)} ` +
          `(tarball ${mb(result.image.tarballBytes)})\n` +
          `extract (cold cache): ${fmt(result.extractMs)}\n` +
          `cache hit (digest of the tarball + lookup): ${fmt(result.cacheHitMs)}\n` +
          [...start].map(([k, v]) => `start /bin/true, ${k}: ${fmt(summarize(v))}\n`).join(''),
      );
    }
  } finally {
    if (saved === undefined) delete process.env.CUBICLE_CACHE;
    else process.env.CUBICLE_CACHE = saved;
    rmSync(work, { recursive: true, force: true });
  }
}

await main();
