// Accounting accuracy (measured vs expected, per mechanism) and the overhead of limits against the same runs without.
// Usage: node dist/bench/accuracy.js [--runs N] [--json]
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { runSandboxed, type SandboxOptions } from '../sandbox/index.js';
import { cgroupV1Available } from '../sandbox/cgroup/index.js';
import { benchFlags } from './runner.js';

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;

/** The test probe, compiled into a world-readable temp dir. */
function buildProbe(): { bin: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), 'cubicle-bench-'));
  chmodSync(dir, 0o755);
  const bin = join(dir, 'probe');
  execFileSync('cc', ['-O1', '-pthread', '-o', bin, fileURLToPath(new URL('../../test/fixtures/probe.c', import.meta.url))]);
  chmodSync(bin, 0o755);
  return { bin, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

async function main(): Promise<void> {
  const values = benchFlags('usage: node dist/bench/accuracy.js [--runs N (default 5)] [--json]', {
    runs: { count: 5 },
    json: { switch: true },
  });
  const runs = values.runs;
  const { bin, cleanup } = buildProbe();
  const mounts: SandboxOptions['mounts'] = [{ type: 'bind', source: bin, target: '/probe', readOnly: true }];
  const mechanisms: [string, SandboxOptions][] = [['rlimits + sampling', { cgroups: false }]];
  if (cgroupV1Available() === true) mechanisms.unshift(['cgroup v1', {}]);
  const cases: { name: string; cmd: string[]; metric: 'cpuMs' | 'peakMemoryBytes'; expected: number }[] = [
    { name: 'CPU, 1 thread x 300 ms', cmd: ['/probe', 'burn', '300', '1'], metric: 'cpuMs', expected: 300 },
    { name: 'CPU, 4 threads x 150 ms', cmd: ['/probe', 'burn', '150', '4'], metric: 'cpuMs', expected: 600 },
    { name: 'memory, 64 MiB touched', cmd: ['/probe', 'hog', '64'], metric: 'peakMemoryBytes', expected: 64 << 20 },
    { name: 'memory, 64 MiB over 4 processes', cmd: ['/probe', 'hog', '64', '4'], metric: 'peakMemoryBytes', expected: 64 << 20 },
  ];
  const rows: { mechanism: string; case: string; expected: number; measured: number; errorPct: number }[] = [];
  const overhead: { mechanism: string; payload: string; withoutMs: number; withMs: number }[] = [];
  try {
    for (const [mech, opts] of mechanisms) {
      for (const c of cases) {
        const got: number[] = [];
        for (let i = 0; i < runs; i++) {
          const r = await runSandboxed(c.cmd, { ...opts, mounts, limits: { cpuTime: 60_000, memory: '1G', processes: 64 } });
          got.push(r.usage![c.metric]!);
        }
        const m = median(got);
        rows.push({ mechanism: mech, case: c.name, expected: c.expected, measured: m, errorPct: ((m - c.expected) / c.expected) * 100 });
      }
      for (const [payload, cmd] of [
        ['/bin/true', ['/bin/true']],
        ['burn 200 ms', ['/probe', 'burn', '200', '1']],
      ] as const) {
        const without: number[] = [];
        const withL: number[] = [];
        for (let i = 0; i < runs * 4; i++) {
          let t = performance.now();
          await runSandboxed([...cmd], { ...opts, mounts });
          without.push(performance.now() - t);
          t = performance.now();
          await runSandboxed([...cmd], {
            ...opts,
            mounts,
            limits: {
              cpuTime: 10_000,
              wallTime: 20_000,
              memory: '512M',
              processes: 64,
              fileSize: '64M',
              openFiles: 256,
              outputLimit: '16M',
            },
          });
          withL.push(performance.now() - t);
        }
        overhead.push({ mechanism: mech, payload, withoutMs: median(without), withMs: median(withL) });
      }
    }
  } finally {
    cleanup();
  }
  if (values.json) {
    console.log(JSON.stringify({ runs, accuracy: rows, overhead }));
    return;
  }
  const fmt = (metric: string, v: number): string =>
    metric.startsWith('CPU') ? `${v.toFixed(1)} ms` : `${(v / (1 << 20)).toFixed(2)} MiB`;
  console.log(
    `accounting accuracy (median of ${runs} runs; usage.cpuMs from wait4, usage.peakMemoryBytes from the cgroup or init's samples):`,
  );
  console.log('mechanism            case                                  expected      measured     error');
  for (const r of rows)
    console.log(
      `${r.mechanism.padEnd(20)} ${r.case.padEnd(36)} ` +
        `${fmt(r.case, r.expected).padStart(11)}  ${fmt(r.case, r.measured).padStart(11)}  ${r.errorPct.toFixed(1).padStart(6)}%`,
    );
  console.log(`\noverhead of limits (every limit set) against the same run without (median of ${runs * 4}):`);
  console.log('mechanism            payload         without ms   with ms   ratio');
  for (const o of overhead)
    console.log(
      `${o.mechanism.padEnd(20)} ${o.payload.padEnd(15)} ` +
        `${o.withoutMs.toFixed(2).padStart(10)}  ${o.withMs.toFixed(2).padStart(8)}  ${(o.withMs / o.withoutMs).toFixed(2).padStart(6)}x`,
    );
}

main().catch((e: unknown) => {
  console.error(e);
  process.exitCode = 1;
});
