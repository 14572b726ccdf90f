// Small benchmark toolkit: timed child processes, percentile statistics and a round-robin scheduler.
import { spawn, type SpawnOptions } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';

/** One measured sample: its latency and, for sandboxes that report it, the in-helper setup time. */
export interface Sample {
  ms: number;
  setupMs?: number;
}

/** A benchmark row: a named operation that is timed many times. */
export interface Row {
  name: string;
  /** Which host identity creates the namespaces: the caller's own, or an unprivileged user chosen by root. */
  identity: string;
  /** What is run, for the record (a shell-like command line or the API call). */
  command: string;
  /** Runs the operation once, verifies it succeeded (throws otherwise) and returns its timing. */
  once: () => Promise<Sample>;
  samples: Sample[];
}

/** Summary statistics of a list of latencies, in ms. */
export interface Stats {
  n: number;
  p50: number;
  p95: number;
  mean: number;
  min: number;
  max: number;
}

/** Where a command spawned for timing runs as, and with which environment. */
export interface TimedSpawnOptions {
  uid?: number;
  gid?: number;
  env?: NodeJS.ProcessEnv;
  /** stdout and stderr to /dev/null instead of pipes to this process (Node's pipes are socketpairs). */
  quiet?: boolean;
}

/** A small, fixed environment for spawned tools, so the host's environment does not leak into timings. */
export const BENCH_ENV: NodeJS.ProcessEnv = { PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', LANG: 'C' };

/** The value at percentile p (0..100) of ascending `sorted`, by the nearest-rank method. */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1]!;
}

/** p50, p95, mean, min and max of `values`. */
export function summarize(values: readonly number[]): Stats {
  const sorted = [...values].sort((a, b) => a - b);
  const sum = sorted.reduce((a, b) => a + b, 0);
  return {
    n: sorted.length,
    p50: percentile(sorted, 50),
    p95: percentile(sorted, 95),
    mean: sorted.length ? sum / sorted.length : Number.NaN,
    min: sorted[0] ?? Number.NaN,
    max: sorted[sorted.length - 1] ?? Number.NaN,
  };
}

/** The result of one spawned command: how it ended, what it wrote, and how long it took to 'close'. */
export interface SpawnOutcome {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  ms: number;
}

/** Spawns argv, waits for 'close' (exit and stdio drained) and reports the outcome with its latency. */
export function spawnTimed(argv: readonly string[], opts: TimedSpawnOptions = {}): Promise<SpawnOutcome> {
  return new Promise((resolve, reject) => {
    const options: SpawnOptions = { stdio: opts.quiet ? 'ignore' : ['ignore', 'pipe', 'pipe'], env: opts.env ?? BENCH_ENV };
    if (opts.uid !== undefined) options.uid = opts.uid;
    if (opts.gid !== undefined) options.gid = opts.gid;
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    const started = performance.now();
    const child = spawn(argv[0]!, argv.slice(1), options);
    child.stdout?.on('data', (b: Buffer) => out.push(b));
    child.stderr?.on('data', (b: Buffer) => err.push(b));
    child.once('error', reject);
    child.once('close', (code, signal) => {
      const ms = performance.now() - started;
      resolve({ code, signal, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString(), ms });
    });
  });
}

/** Spawns argv once, throws unless it exited 0, and returns the latency as a Sample. */
export async function spawnMustSucceed(argv: readonly string[], opts: TimedSpawnOptions = {}): Promise<Sample> {
  const r = await spawnTimed(argv, opts);
  if (r.code !== 0 || r.signal !== null) {
    const how = r.signal ? `signal ${r.signal}` : `exit code ${String(r.code)}`;
    throw new Error(`${argv.join(' ')} failed (${how}): ${r.stderr.trim() || '(no stderr)'}`);
  }
  return { ms: r.ms };
}

/** The absolute path of `name` found on PATH, or undefined. */
export function which(name: string, path: string = process.env.PATH ?? BENCH_ENV.PATH ?? ''): string | undefined {
  for (const dir of path.split(':').filter(Boolean)) {
    const candidate = join(dir, name);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not in this directory
    }
  }
  return undefined;
}

/**
 * Warms every row up, then measures `runs` samples per row in round-robin batches of `batch`, rotating
 * which row goes first each round, so slow drifts of the machine hit all rows alike. Strictly sequential.
 */
export async function measureRoundRobin(rows: readonly Row[], runs: number, warmup: number, batch: number): Promise<void> {
  for (let i = 0; i < warmup; i++) {
    for (const row of rows) await row.once();
  }
  const rounds = Math.ceil(runs / batch);
  for (let round = 0; round < rounds; round++) {
    for (let k = 0; k < rows.length; k++) {
      const row = rows[(round + k) % rows.length]!;
      const todo = Math.min(batch, runs - row.samples.length);
      for (let i = 0; i < todo; i++) row.samples.push(await row.once());
    }
  }
}

/** bwrap flags giving the same namespaces and filesystem view as cubicle's default sandbox. */
export const BWRAP_FLAGS = [
  '--unshare-user',
  '--unshare-pid',
  '--unshare-ipc',
  '--unshare-uts',
  '--unshare-net',
  '--unshare-cgroup',
  '--uid',
  '1000',
  '--gid',
  '1000',
  '--ro-bind',
  '/usr',
  '/usr',
  '--symlink',
  'usr/bin',
  '/bin',
  '--symlink',
  'usr/lib',
  '/lib',
  '--symlink',
  'usr/lib64',
  '/lib64',
  '--symlink',
  'usr/sbin',
  '/sbin',
  '--dev',
  '/dev',
  '--proc',
  '/proc',
  '--tmpfs',
  '/tmp',
  '--ro-bind',
  '/etc/ld.so.cache',
  '/etc/ld.so.cache',
  '--die-with-parent',
  '--new-session',
];

/** A bench's flags: counts (integers of at least `min`, with a default), switches, and text. */
export type FlagSpec = Record<string, { count: number; min?: number } | { switch: true } | { text: true }>;
type FlagValues<S extends FlagSpec> = {
  [K in keyof S]: S[K] extends { count: number } ? number : S[K] extends { switch: true } ? boolean : string | undefined;
};

/**
 * Reads a bench's flags from the command line. `--help` prints `usage` and exits 0; an unknown flag, a positional
 * argument or a bad count prints what was wrong and the usage to stderr and exits 2 (a usage error, never a stack).
 */
export function benchFlags<S extends FlagSpec>(usage: string, spec: S, argv: string[] = process.argv.slice(2)): FlagValues<S> {
  const options: Record<string, { type: 'string' | 'boolean' }> = { help: { type: 'boolean' } };
  for (const [name, s] of Object.entries(spec)) options[name] = { type: 'switch' in s ? 'boolean' : 'string' };
  const fail = (message: string): never => {
    process.stderr.write(`${message}\n${usage}\n`);
    process.exit(2);
  };
  let values: Record<string, string | boolean | undefined> = {};
  try {
    ({ values } = parseArgs({ args: argv, options, strict: true, allowPositionals: false }));
  } catch (e) {
    fail((e as Error).message);
  }
  if (values.help) {
    process.stdout.write(`${usage}\n`);
    process.exit(0);
  }
  const out: Record<string, number | boolean | string | undefined> = {};
  for (const [name, s] of Object.entries(spec)) {
    const v = values[name];
    if ('switch' in s) out[name] = v === true;
    else if ('text' in s) out[name] = v as string | undefined;
    else if (v === undefined) out[name] = s.count;
    else {
      const n = Number(v);
      if (!/^\d+$/.test(String(v)) || !Number.isSafeInteger(n) || n < (s.min ?? 1))
        fail(`--${name} must be an integer >= ${s.min ?? 1}, got ${JSON.stringify(v)}`);
      out[name] = n;
    }
  }
  return out as FlagValues<S>;
}
