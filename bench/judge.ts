// A+B judging: latency (p50/p99) and throughput of one compiled A+B program fed "1 2", through a plain spawn from
// Node, bwrap from Node, the library (files copied into /box, as the service does), `cubicle serve` over HTTP
// (a separate process, the binary cached by fileId) and a BullMQ worker, as ratios to the plain spawn, in one run.
// Rows are interleaved in batches so load drifts hit every row alike.
// Usage: node dist/bench/judge.js [--runs N (50)] [--warmup N (5)] [--jobs N (50)] [--pool N] [--runner MODULE] [--json]
//   --pool N          passed to `cubicle serve --pool N` (a warm pool, once the service wires one)
//   --runner MODULE   a module whose default export creates a runner ({ run(cmd, options) } with runSandboxed's
//                     signature, e.g. a warm pool): adds a "library via runner" row and a "serve via runner" row
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, release, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { pathToFileURL, fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { createServer, runSandboxed, type JudgeResult, type JudgeServer, type Runner, type SandboxOptions } from '../sandbox/index.js';
import { freePort, missingForQueue, portOpen, startRedis, type LocalRedis } from '../test/helpers/loopback.js';
import { BWRAP_FLAGS, percentile, which } from './runner.js';

const CLI = fileURLToPath(new URL('../sandbox/cli/main.cjs', import.meta.url));
const GOAL_RATIO = 2;
const BATCH = 5;
const SOURCE =
  '#include <stdio.h>\nint main(void) { long a, b; if (scanf("%ld %ld", &a, &b) != 2) return 1; printf("%ld\\n", a + b); return 0; }\n';
const INPUT = '1 2\n';
const EXPECTED = '3\n';

interface Args {
  runs: number;
  warmup: number;
  jobs: number;
  pool: number;
  runner: string | undefined;
  json: boolean;
}

interface Path {
  name: string;
  /** One judged run; throws unless the answer is right. */
  once: () => Promise<void>;
  samples: number[];
  skipped?: string;
  throughput?: number;
}

class UsageError extends Error {}

function parseCli(argv: string[]): Args {
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        runs: { type: 'string' },
        warmup: { type: 'string' },
        jobs: { type: 'string' },
        pool: { type: 'string' },
        runner: { type: 'string' },
        json: { type: 'boolean' },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  const count = (name: string, dflt: number, min: number): number => {
    const v = values[name] as string | undefined;
    if (v === undefined) return dflt;
    const n = Number(v);
    if (!Number.isInteger(n) || n < min) throw new UsageError(`--${name} must be an integer >= ${min}, got ${JSON.stringify(v)}`);
    return n;
  };
  return {
    runs: count('runs', 50, 1),
    warmup: count('warmup', 5, 0),
    jobs: count('jobs', 50, 1),
    pool: count('pool', 0, 0),
    runner: values.runner as string | undefined,
    json: values.json === true,
  };
}

/** Feeds INPUT to a spawned process and checks its answer. */
function feed(child: ChildProcess, what: string): Promise<void> {
  return new Promise((resolvePromise, reject) => {
    let out = '';
    let err = '';
    child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr?.on('data', (d: Buffer) => (err += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => {
      if (code === 0 && out === EXPECTED) resolvePromise();
      else reject(new Error(`${what}: exit ${code}, stdout ${JSON.stringify(out)}, stderr ${err.trim()}`));
    });
    child.stdin!.end(INPUT);
  });
}

/** A go-judge /run body for the cached binary. */
const runBody = (fileId: string): unknown => ({
  cmd: [
    {
      args: ['a'],
      env: ['PATH=/usr/bin:/bin'],
      files: [{ content: INPUT }, { name: 'stdout', max: 1024 }, { name: 'stderr', max: 1024 }],
      cpuLimit: 1e9,
      memoryLimit: 64 << 20,
      procLimit: 8,
      copyIn: { a: { fileId } },
    },
  ],
});
/** The same body with the binary read from the host by the worker (--src-dir): a job carries no file store. */
const srcBody = (path: string): unknown => {
  const body = runBody('x') as { cmd: Record<string, unknown>[] };
  body.cmd[0]!.copyIn = { a: { src: path } };
  return body;
};

function checkAnswer(rs: JudgeResult[], what: string): void {
  if (rs[0]?.status !== 'Accepted' || rs[0].files?.stdout !== EXPECTED) throw new Error(`${what}: ${JSON.stringify(rs).slice(0, 300)}`);
}

/** An HTTP judge: uploads the binary once, then each run posts /run referencing it. */
async function httpPath(name: string, base: string): Promise<Path> {
  const form = new FormData();
  form.append('file', new Blob([readFileSync(binPath)]), 'a');
  const up = await fetch(`${base}/file`, { method: 'POST', body: form });
  const fileId = (await up.json()) as string;
  const body = JSON.stringify(runBody(fileId));
  return {
    name,
    samples: [],
    once: async () => {
      const r = await fetch(`${base}/run`, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
      checkAnswer((await r.json()) as JudgeResult[], name);
    },
  };
}

let binPath = '';

async function main(): Promise<void> {
  const args = parseCli(process.argv.slice(2));
  const log = (line: string): boolean => (args.json ? process.stderr : process.stdout).write(`${line}\n`);
  const dir = mkdtempSync(join(tmpdir(), 'cubicle-judge-bench-'));
  chmodSync(dir, 0o755);
  const cleanups: (() => Promise<void> | void)[] = [() => rmSync(dir, { recursive: true, force: true })];
  try {
    writeFileSync(join(dir, 'a.c'), SOURCE);
    binPath = join(dir, 'a');
    execFileSync('cc', ['-O2', '-o', binPath, join(dir, 'a.c')]);
    chmodSync(binPath, 0o755);
    const binary = readFileSync(binPath);
    const boxOptions: SandboxOptions = {
      files: { a: { content: binary, mode: 0o755 } },
      input: INPUT,
      limits: { cpuTime: 1000, memory: 64 << 20, processes: 8 },
      reject: false,
    };
    const libraryOnce = (runner: Runner, what: string) => async (): Promise<void> => {
      const r = await runner.run(['./a'], boxOptions);
      if (r.verdict !== 'ok' || r.stdout !== EXPECTED) throw new Error(`${what}: ${r.verdict} ${String(r.stdout)}`);
    };
    const paths: Path[] = [
      { name: 'plain spawn from Node', samples: [], once: () => feed(spawn(binPath, [], { stdio: 'pipe' }), 'spawn') },
    ];
    const bwrap = which('bwrap');
    paths.push({
      name: 'bwrap from Node',
      samples: [],
      ...(bwrap ? {} : { skipped: 'bwrap is not installed' }),
      once: () =>
        feed(spawn(bwrap!, [...BWRAP_FLAGS, '--ro-bind', binPath, '/box/a', '--chdir', '/box', './a'], { stdio: 'pipe' }), 'bwrap'),
    });
    paths.push({ name: 'library (runSandboxed, files into /box)', samples: [], once: libraryOnce({ run: runSandboxed }, 'library') });
    let extraRunner: Runner | undefined;
    if (args.runner) {
      const mod = (await import(pathToFileURL(resolve(args.runner)).href)) as { default: () => Runner | Promise<Runner> };
      extraRunner = await mod.default();
      paths.push({ name: 'library via runner', samples: [], once: libraryOnce(extraRunner, 'runner') });
    }

    // cubicle serve as its own process (what a judge deploys), and in-process with the extra runner.
    const port = await freePort();
    const serveArgs = [CLI, 'serve', '--listen', `127.0.0.1:${port}`, '--parallelism', String(Math.max(2, cpus().length))];
    if (args.pool) serveArgs.push('--pool', String(args.pool));
    const serve = spawn(process.execPath, serveArgs, { stdio: ['ignore', 'ignore', 'inherit'] });
    cleanups.push(() => void serve.kill('SIGTERM'));
    if (!(await portOpen(port, 15_000))) throw new Error('cubicle serve did not start');
    paths.push(await httpPath(`cubicle serve over HTTP${args.pool ? ` (--pool ${args.pool})` : ''}`, `http://127.0.0.1:${port}`));
    if (extraRunner) {
      const inproc: JudgeServer = createServer({ runner: extraRunner, parallelism: Math.max(2, cpus().length) });
      const a = await inproc.listen(0);
      cleanups.push(() => inproc.close());
      paths.push(await httpPath('serve via runner (in-process)', `http://127.0.0.1:${a.port}`));
    }
    paths.push(await bullmqPath(srcBody(binPath), dir, cleanups));

    const live = paths.filter((p) => !p.skipped);
    log(`A+B judging on ${cpus().length} CPUs (${cpus()[0]?.model ?? '?'}), Linux ${release()}, Node ${process.version}`);
    log(
      `${args.runs} runs per path interleaved in batches of ${BATCH} after ${args.warmup} warm-up runs; ` +
        `then ${args.jobs} jobs, 2 at a time`,
    );
    for (let i = 0; i < args.warmup; i++) for (const p of live) await p.once();
    const rounds = Math.ceil(args.runs / BATCH);
    for (let round = 0; round < rounds; round++)
      for (let k = 0; k < live.length; k++) {
        const p = live[(round + k) % live.length]!;
        for (let i = 0; i < BATCH && p.samples.length < args.runs; i++) {
          const t = performance.now();
          await p.once();
          p.samples.push(performance.now() - t);
        }
      }
    for (const p of live) p.throughput = await throughput(p, args.jobs, 2);

    const spawnP50 = median(paths[0]!.samples);
    const bwrapP50 = paths[1]!.skipped ? undefined : median(paths[1]!.samples);
    const rows = paths.map((p) => {
      if (p.skipped) return { name: p.name, skipped: p.skipped };
      const sorted = [...p.samples].sort((a, b) => a - b);
      const p50 = percentile(sorted, 50);
      return {
        name: p.name,
        p50Ms: round2(p50),
        p99Ms: round2(percentile(sorted, 99)),
        perSecond: round2(p.throughput!),
        vsSpawn: round2(p50 / spawnP50),
        ...(bwrapP50 !== undefined ? { vsBwrap: round2(p50 / bwrapP50) } : {}),
      };
    });
    log('');
    log(
      `${'path'.padEnd(44)} ${'p50 ms'.padStart(8)} ${'p99 ms'.padStart(8)} ${'runs/s'.padStart(8)} ` +
        `${'×spawn'.padStart(7)} ${'×bwrap'.padStart(7)}`,
    );
    for (const r of rows) {
      if ('skipped' in r) {
        log(`${r.name.padEnd(44)} skipped: ${r.skipped}`);
        continue;
      }
      log(
        `${r.name.padEnd(44)} ${r.p50Ms.toFixed(2).padStart(8)} ${r.p99Ms.toFixed(2).padStart(8)} ${r.perSecond.toFixed(1).padStart(8)} ` +
          `${r.vsSpawn.toFixed(2).padStart(7)} ${(r.vsBwrap?.toFixed(2) ?? '-').padStart(7)}`,
      );
    }
    let poolLine = '';
    if (args.pool) {
      const v = (await (await fetch(`http://127.0.0.1:${port}/version`)).json()) as {
        poolStats?: { hits: number; misses: number; missReasons: Record<string, number> };
      };
      const why = Object.entries(v.poolStats?.missReasons ?? {}).map(([k, n]) => `${n} ${k}`);
      const counts = v.poolStats ? `${v.poolStats.hits} hits, ${v.poolStats.misses} misses` : '';
      if (v.poolStats) poolLine = `the service's pool over the whole bench: ${counts}${why.length ? `: ${why.join(', ')}` : ''}`;
    }
    const http = rows.find((r) => r.name.startsWith('cubicle serve'));
    if (http && !('skipped' in http))
      log(
        `\ngoal: A+B over HTTP at most ${GOAL_RATIO}× a plain spawn (with the warm pool); measured ${http.vsSpawn.toFixed(2)}× ` +
          (args.pool ? `with --pool ${args.pool}${poolLine ? ` (${poolLine})` : ''}` : 'without a pool'),
      );
    if (args.json) process.stdout.write(`${JSON.stringify({ runs: args.runs, jobs: args.jobs, rows }, null, 2)}\n`);
  } finally {
    for (const c of cleanups.reverse()) await c();
  }
}

const median = (xs: number[]): number =>
  percentile(
    [...xs].sort((a, b) => a - b),
    50,
  );
const round2 = (x: number): number => Math.round(x * 100) / 100;

/** Runs `jobs` judged runs, `parallel` at a time; runs per second. */
async function throughput(p: Path, jobs: number, parallel: number): Promise<number> {
  let next = 0;
  const t = performance.now();
  await Promise.all(
    Array.from({ length: parallel }, async () => {
      while (next++ < jobs) await p.once();
    }),
  );
  return (jobs / (performance.now() - t)) * 1000;
}

/** A BullMQ worker (`cubicle worker`) on a redis-server of its own: each run is Queue.add + waitUntilFinished. */
async function bullmqPath(body: unknown, srcDir: string, cleanups: (() => Promise<void> | void)[]): Promise<Path> {
  const name = 'cubicle worker via BullMQ';
  const skip = (why: string): Path => ({ name, samples: [], skipped: why, once: () => Promise.resolve() });
  const missing = missingForQueue();
  if (missing) return skip(missing);
  let redis: LocalRedis;
  try {
    redis = await startRedis();
  } catch (e) {
    return skip((e as Error).message);
  }
  cleanups.push(() => redis.stop());
  const url = redis.url;
  const worker = spawn(process.execPath, [CLI, 'worker', '--redis', url, '--queue', 'bench', '--concurrency', '2', '--src-dir', srcDir], {
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  cleanups.push(() => void worker.kill('SIGTERM'));
  const { Queue, QueueEvents } = await import('bullmq');
  const queue = new Queue('bench', { connection: { url } });
  const events = new QueueEvents('bench', { connection: { url } });
  await events.waitUntilReady();
  cleanups.push(async () => {
    await events.close();
    await queue.close();
  });
  return {
    name,
    samples: [],
    once: async () => {
      const job = await queue.add('run', body, { removeOnComplete: true, removeOnFail: true });
      checkAnswer((await job.waitUntilFinished(events, 30_000)) as JudgeResult[], name);
    },
  };
}

main().catch((e: unknown) => {
  process.stderr.write(
    `bench/judge: ${e instanceof UsageError ? `${e.message}\nusage: node dist/bench/judge.js --help` : String((e as Error).stack)}\n`,
  );
  process.exitCode = e instanceof UsageError ? 2 : 1;
});
