// The CLI's cost per call: `cubicle run -- /bin/true` beside `node -e 0` (what starting any Node program costs)
// and bwrap with the same namespaces. cubicle's own share is what it adds above `node -e 0`; rows interleave.
// Usage: node dist/bench/cli.js [--runs N (default 40)] [--warmup N (default 5)] [--baseline PACKAGE_DIR]
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { BWRAP_FLAGS, measureRoundRobin, spawnMustSucceed, summarize, which, type Row } from './runner.js';

/** The most cubicle itself may add to a call above `node -e 0` (p50). */
const OWN_SHARE_TARGET_MS = 30;
const CLI = fileURLToPath(new URL('../sandbox/cli/main.cjs', import.meta.url));

/** CPU (user + system, ms) of this process's reaped children so far, from /proc/self/stat (10 ms ticks). */
function childrenCpuMs(): number {
  const stat = readFileSync('/proc/self/stat', 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[13]) + Number(fields[14])) * 10; // cutime, cstime (fields 16 and 17 of stat)
}

const { values } = parseArgs({
  options: { runs: { type: 'string' }, warmup: { type: 'string' }, baseline: { type: 'string' } },
  strict: true,
});
const runs = Number(values.runs ?? 40);
const warmup = Number(values.warmup ?? 5);

const cpu = new Map<string, number>();
const row = (name: string, argv: string[]): Row => ({
  name,
  identity: 'caller',
  command: argv.join(' '),
  samples: [],
  once: async () => {
    const before = childrenCpuMs();
    const s = await spawnMustSucceed(argv);
    cpu.set(name, (cpu.get(name) ?? 0) + childrenCpuMs() - before);
    return s;
  },
});
const rows = [
  row('node -e 0', [process.execPath, '-e', '0']),
  row('cubicle run -- /bin/true', [process.execPath, CLI, 'run', '--', '/bin/true']),
];
// --baseline DIR: another build of cubicle (e.g. the previous release's package root), measured alongside.
if (values.baseline)
  rows.push(row('baseline cubicle run', [process.execPath, `${values.baseline}/dist/sandbox/cli/main.cjs`, 'run', '--', '/bin/true']));
const bwrap = which('bwrap');
if (bwrap) rows.push(row('bwrap ... /bin/true', [bwrap, ...BWRAP_FLAGS, '/bin/true']));
else console.log('bwrap: not installed (apt-get install bubblewrap); its row is skipped');

await measureRoundRobin(rows, 0, warmup, 5); // warm-up only
cpu.clear();
await measureRoundRobin(rows, runs, 0, 5); // CPU is counted over these runs only
const p50 = (r: Row): number => summarize(r.samples.map((s) => s.ms)).p50;
console.log(`${runs} runs each, interleaved; wall p50 / mean CPU per call`);
for (const r of rows) {
  const cpuMs = (cpu.get(r.name) ?? 0) / runs;
  console.log(`${r.name.padEnd(28)} ${p50(r).toFixed(1).padStart(7)} ms ${cpuMs.toFixed(1).padStart(7)} ms CPU`);
}
const own = p50(rows[1]!) - p50(rows[0]!);
const met = own <= OWN_SHARE_TARGET_MS ? 'met' : 'NOT met';
console.log(`cubicle's own share (above node -e 0): ${own.toFixed(1)} ms p50, target <= ${OWN_SHARE_TARGET_MS} ms: ${met}`);
