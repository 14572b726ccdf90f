// The per-run cost of a cgroup v2 group against no cgroup: whole runs of /bin/true (interleaved), the helper's own
// setup (where CLONE_INTO_CGROUP is paid), and the supervisor's part step by step (create with its limits written and
// read back, read the counters, remove). Needs a cgroup v2 hierarchy this caller may use (root on a v2 host, or a
// delegated subtree); `../shared/vm/cgroup2-vm -- node dist/bench/cgroup-v2.js` gives one on other hosts.
// Usage: node dist/bench/cgroup-v2.js [--runs N] [--json]
import { performance } from 'node:perf_hooks';
import { createCgroup, planCgroup, removeCgroup } from '../sandbox/cgroup/index.js';
import { runSandboxed, type SandboxOptions } from '../sandbox/index.js';
import { summarize, type Stats, benchFlags } from './runner.js';

const LIMITS = { memory: '256M', processes: 64 } as const;

async function main(): Promise<void> {
  const values = benchFlags('usage: node dist/bench/cgroup-v2.js [--runs N (default 100)] [--json]', {
    runs: { count: 100 },
    json: { switch: true },
  });
  const runs = values.runs;
  const plan = (id: string) => planCgroup({ memoryBytes: 256 << 20, pidsMax: 65 }, id, { choice: 'v2', parent: undefined, runAs: false });
  const probe = plan('bench-probe');
  if ('reason' in probe) {
    console.log(`no cgroup v2 group for this caller: ${probe.reason}`);
    return;
  }
  const controllers = probe.enable.controllers.join(' ') || 'none';

  // Whole runs, interleaved so load drifts hit both alike.
  const variants: [string, SandboxOptions][] = [
    ['no cgroup (rlimits + sampling)', { cgroups: false, limits: LIMITS }],
    ['cgroup v2 group', { cgroups: 'v2', limits: LIMITS }],
  ];
  const wall = variants.map(() => [] as number[]);
  const setup = variants.map(() => [] as number[]);
  for (let i = 0; i < runs + 5; i++) {
    for (const [k, [, opts]] of variants.entries()) {
      const t = performance.now();
      const r = await runSandboxed(['/bin/true'], opts);
      if (i < 5) continue; // warm-up
      wall[k]!.push(performance.now() - t);
      if (r.setup) setup[k]!.push(r.setup.ms);
    }
  }

  // The supervisor's part, step by step.
  const steps = { create: [] as number[], read: [] as number[], remove: [] as number[] };
  for (let i = 0; i < runs; i++) {
    const p = plan(`${process.pid}-bench-${i.toString(36)}`);
    if ('reason' in p) throw new Error(p.reason);
    let t = performance.now();
    createCgroup(p);
    steps.create.push(performance.now() - t);
    t = performance.now();
    p.collect();
    steps.read.push(performance.now() - t);
    t = performance.now();
    removeCgroup(p);
    steps.remove.push(performance.now() - t);
  }

  const rows: { what: string; stats: Stats }[] = [
    ...variants.flatMap(([name], k) => [
      { what: `${name}: whole run`, stats: summarize(wall[k]!) },
      { what: `${name}: helper setup (clone to payload fork)`, stats: summarize(setup[k]!) },
    ]),
    { what: 'v2 group: create, write and read back limits', stats: summarize(steps.create) },
    { what: 'v2 group: read counters', stats: summarize(steps.read) },
    { what: 'v2 group: remove', stats: summarize(steps.remove) },
  ];
  if (values.json) {
    console.log(JSON.stringify({ runs, controllers, rows }, null, 2));
    return;
  }
  console.log(`cgroup v2 per-run cost, ${runs} runs each (controllers in the run's group: ${controllers})`);
  console.log('| | p50 ms | p95 ms |\n| --- | --- | --- |');
  for (const r of rows) console.log(`| ${r.what} | ${r.stats.p50.toFixed(2)} | ${r.stats.p95.toFixed(2)} |`);
  const extra = summarize(wall[1]!).p50 - summarize(wall[0]!).p50;
  console.log(`\nA v2 group adds ${extra.toFixed(2)} ms to a run at p50.`);
}

await main();
