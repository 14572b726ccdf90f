// Warm pool latency: /bin/true and an A+B program through a plain spawn from Node, bwrap from Node, runSandboxed
// (cold) and a warm pool's run, interleaved run by run, with p50/p99 and ratios to the plain spawn.
// Usage: node dist/bench/pool.js [--runs N (default 50)] [--warmup N (default 5)] [--json]
import { execFileSync, spawn } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { createPool, runSandboxed, type SandboxOptions, type SandboxPool } from '../sandbox/index.js';
import { BENCH_ENV, BWRAP_FLAGS, percentile, which, benchFlags } from './runner.js';

const GOAL_RATIO = 2;
const SUM =
  '#include <stdio.h>\nint main(void) { long a, b; if (scanf("%ld %ld", &a, &b) != 2) return 3; printf("%ld\\n", a + b); return 0; }\n';

interface Program {
  label: string;
  /** The host path, bound at the same path inside. */
  path: string;
  input: string;
  expect: string;
}

/** Spawns argv with `input` on stdin; resolves with its stdout once it closed, or rejects unless it exited 0. */
function spawnWithInput(argv: readonly string[], input: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0]!, argv.slice(1), { stdio: ['pipe', 'pipe', 'pipe'], env: BENCH_ENV });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.once('error', reject);
    child.once('close', (code) =>
      code === 0
        ? resolve(Buffer.concat(out).toString())
        : reject(new Error(`${argv.join(' ')}: exit ${code}: ${Buffer.concat(err).toString()}`)),
    );
    child.stdin.on('error', () => {}); // a program that never reads its stdin (true) closes it first
    child.stdin.end(input);
  });
}

interface Row {
  name: string;
  program: Program;
  once: () => Promise<void>;
  ms: number[];
}

async function main(): Promise<void> {
  const values = benchFlags('usage: node dist/bench/pool.js [--runs N (default 50)] [--warmup N (default 5)] [--json]', {
    runs: { count: 50 },
    warmup: { count: 5, min: 0 },
    json: { switch: true },
  });
  const { runs, warmup } = values;
  const dir = mkdtempSync(join(tmpdir(), 'cubicle-bench-pool-'));
  chmodSync(dir, 0o755);
  let pool: SandboxPool | undefined;
  try {
    writeFileSync(join(dir, 'sum.c'), SUM);
    execFileSync('cc', ['-O2', '-o', join(dir, 'sum'), join(dir, 'sum.c')]);
    chmodSync(join(dir, 'sum'), 0o755);
    const programs: Program[] = [
      { label: '/bin/true', path: '/bin/true', input: '', expect: '' },
      { label: 'A+B', path: join(dir, 'sum'), input: '1 2\n', expect: '3\n' },
    ];
    const sandbox: SandboxOptions = { mounts: [{ type: 'bind', source: join(dir, 'sum'), target: join(dir, 'sum'), readOnly: true }] };
    pool = createPool({ size: 4, maxStarting: 2, options: sandbox });
    const p = pool;
    const bwrap = which('bwrap');
    const check = (what: string, got: string, want: string): void => {
      if (got !== want) throw new Error(`${what}: stdout ${JSON.stringify(got)}, expected ${JSON.stringify(want)}`);
    };
    const rows: Row[] = [];
    for (const prog of programs) {
      const add = (name: string, once: () => Promise<void>): number => rows.push({ name, program: prog, once, ms: [] });
      add('spawn', async () => check('spawn', await spawnWithInput([prog.path], prog.input), prog.expect));
      if (bwrap)
        add('bwrap', async () =>
          check('bwrap', await spawnWithInput([bwrap, ...BWRAP_FLAGS, '--ro-bind', dir, dir, prog.path], prog.input), prog.expect),
        );
      add('cold', async () => {
        const r = await runSandboxed([prog.path], { ...sandbox, input: prog.input });
        check('cold', String(r.stdout), prog.expect);
      });
      add('pool', async () => {
        const r = await p.run([prog.path], { ...sandbox, input: prog.input });
        check('pool', String(r.stdout), prog.expect);
      });
    }
    /** The pool row waits (untimed) for a ready sandbox, so it measures a hit, with the refill running meanwhile. */
    const untilReady = async (): Promise<void> => {
      for (let i = 0; i < 400 && p.stats().ready === 0; i++) await new Promise((r) => setTimeout(r, 5));
    };
    for (let i = 0; i < warmup; i++) for (const row of rows) await row.once();
    const before = p.stats();
    for (let i = 0; i < runs; i++)
      for (let k = 0; k < rows.length; k++) {
        const row = rows[(i + k) % rows.length]!;
        if (row.name === 'pool') await untilReady();
        const t = performance.now();
        await row.once();
        row.ms.push(performance.now() - t);
      }
    const after = p.stats();
    const report = rows.map((r) => {
      const sorted = [...r.ms].sort((a, b) => a - b);
      const spawnRow = rows.find((x) => x.name === 'spawn' && x.program === r.program)!;
      const base = percentile(
        [...spawnRow.ms].sort((a, b) => a - b),
        50,
      );
      return {
        program: r.program.label,
        row: r.name,
        p50: percentile(sorted, 50),
        p99: percentile(sorted, 99),
        vsSpawn: percentile(sorted, 50) / base,
      };
    });
    const poolUse = { hits: after.hits - before.hits, misses: after.misses - before.misses };
    if (values.json) {
      console.log(JSON.stringify({ runs, rows: report, pool: poolUse, goalRatio: GOAL_RATIO }, null, 2));
      return;
    }
    console.log(`warm pool latency: ${runs} interleaved runs per row (after ${warmup} warm-up), ms; ratio = p50 / plain spawn's p50`);
    if (!bwrap) console.log('bwrap: not installed, row skipped');
    console.log(`${'program'.padEnd(10)} ${'row'.padEnd(6)} ${'p50'.padStart(8)} ${'p99'.padStart(8)} ${'ratio'.padStart(7)}`);
    const num = (n: number, w: number): string => n.toFixed(2).padStart(w);
    for (const r of report)
      console.log(`${r.program.padEnd(10)} ${r.row.padEnd(6)} ${num(r.p50, 8)} ${num(r.p99, 8)} ${num(r.vsSpawn, 7)}`);
    console.log(`pool runs measured: ${poolUse.hits} hits, ${poolUse.misses} misses`);
    for (const prog of programs) {
      const r = report.find((x) => x.program === prog.label && x.row === 'pool')!;
      const met = r.vsSpawn <= GOAL_RATIO ? 'met' : 'NOT met';
      console.log(`goal (pool within ${GOAL_RATIO}x a plain spawn) for ${prog.label}: ${met} (${r.vsSpawn.toFixed(2)}x)`);
    }
  } finally {
    await pool?.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((e: unknown) => {
  console.error(`bench/pool: ${(e as Error).message}`);
  process.exit(1);
});
