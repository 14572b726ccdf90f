// The CLI's cost per call: `cubicle run -- /bin/true` beside a plain spawn of /bin/true, `node -e 0` (what starting
// any Node program costs) and bwrap (with cubicle's namespaces and layout, and as `--unshare-all --ro-bind / /`).
// cubicle's own share is what it adds above `node -e 0`; rows interleave, so load on the machine hits all alike.
// The first call after a build stores the CLI's compiled code in the per-user cache (see sandbox/cli/main.cts);
// the warm-up runs make it, as every call after the first on a real machine would find it.
// Usage: node dist/bench/cli.js [--runs N (default 40)] [--warmup N (default 5)] [--baseline PACKAGE_DIR]
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import {
  BENCH_ENV,
  BWRAP_FLAGS,
  measureRoundRobin,
  spawnMustSucceed,
  spawnTimed,
  summarize,
  which,
  type Row,
  benchFlags,
} from './runner.js';

/** The most cubicle itself may add to a call above `node -e 0` (p50). */
const OWN_SHARE_TARGET_MS = 30;
const CLI = fileURLToPath(new URL('../sandbox/cli/main.cjs', import.meta.url));

/** CPU (user + system, ms) of this process's reaped children so far, from /proc/self/stat (10 ms ticks). */
function childrenCpuMs(): number {
  const stat = readFileSync('/proc/self/stat', 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[13]) + Number(fields[14])) * 10; // cutime, cstime (fields 16 and 17 of stat)
}

const values = benchFlags('usage: node dist/bench/cli.js [--runs N (default 40)] [--warmup N (default 5)] [--baseline PACKAGE_DIR]', {
  runs: { count: 40 },
  warmup: { count: 5, min: 0 },
  baseline: { text: true },
});
const { runs, warmup } = values;

const cpu = new Map<string, number>();
const row = (name: string, argv: string[], quiet = false): Row => ({
  name,
  identity: 'caller',
  command: argv.join(' '),
  samples: [],
  once: async () => {
    const before = childrenCpuMs();
    const s = await spawnMustSucceed(argv, { quiet });
    cpu.set(name, (cpu.get(name) ?? 0) + childrenCpuMs() - before);
    return s;
  },
});
const NODE = 'node -e 0';
const CUBICLE = 'cubicle run -- /bin/true';
const QUIET = 'cubicle run, output /dev/null';
const rows = [
  row('/bin/true (plain spawn)', ['/bin/true']),
  row(NODE, [process.execPath, '-e', '0']),
  row(CUBICLE, [process.execPath, CLI, 'run', '--', '/bin/true']),
  // Output to /dev/null (as an isolate-style judge sends it to files): nothing is copied through the CLI, so it
  // never loads Node's streams; a socketpair (Node's 'pipe', the row above) is copied through it.
  row(QUIET, [process.execPath, CLI, 'run', '--', '/bin/true'], true),
];
// --baseline DIR: another build of cubicle (e.g. the previous release's package root), measured alongside.
if (values.baseline) {
  const bin = (JSON.parse(readFileSync(`${values.baseline}/package.json`, 'utf8')) as { bin: { cubicle: string } }).bin.cubicle;
  rows.push(row('baseline cubicle run', [process.execPath, `${values.baseline}/${bin}`, 'run', '--', '/bin/true']));
}
const bwrap = which('bwrap');
if (bwrap) {
  rows.push(row('bwrap (cubicle layout)', [bwrap, ...BWRAP_FLAGS, '/bin/true']));
  rows.push(row('bwrap --unshare-all', [bwrap, '--unshare-all', '--ro-bind', '/', '/', '/bin/true']));
} else console.log('bwrap: not installed (apt-get install bubblewrap); its rows are skipped');

await measureRoundRobin(rows, 0, warmup, 5); // warm-up only
cpu.clear();
await measureRoundRobin(rows, runs, 0, 5); // CPU is counted over these runs only
const p50 = (name: string): number => summarize(rows.find((r) => r.name === name)!.samples.map((s) => s.ms)).p50;
const cpuOf = (name: string): number => (cpu.get(name) ?? 0) / runs;
console.log(`${runs} runs each, interleaved; wall p50 / mean CPU per call (user + system, the process and its children)`);
for (const r of rows) {
  const ratio = (base: string): string => (p50(r.name) / p50(base)).toFixed(2).padStart(6);
  const vsBwrap = bwrap ? `${ratio('bwrap --unshare-all')}x bwrap` : '';
  console.log(
    `${r.name.padEnd(30)} ${p50(r.name).toFixed(1).padStart(7)} ms ${cpuOf(r.name).toFixed(1).padStart(7)} ms CPU` +
      `  ${ratio(NODE)}x node -e 0 ${vsBwrap}`,
  );
}
// Where a call's time goes: the CLI's own marks (CUBICLE_TIMING=1, see sandbox/timing.ts), medians over `runs` calls.
// Phases: Node's start (what `node -e 0` also pays), the bundle loaded and evaluated, the run planned (policy,
// options, seccomp, limits, the plan), the helper started (koffi, the host-id lease, posix_spawn), the sandbox's life
// (set-up, the payload, its end), the result reported, and Node's exit after the last mark.
const PHASES: [string, string, string][] = [
  ['node start', '', 'entered'],
  ['bundle load', 'entered', 'loaded'],
  ['plan', 'loaded', 'planned'],
  ['helper start', 'planned', 'spawned'],
  ['sandbox', 'spawned', 'ended'],
  ['report', 'ended', 'result'],
  ['exit', 'result', 'exit'],
];
const phases = new Map<string, number[]>(PHASES.map(([name]) => [name, []]));
const after = new Map<string, number[]>([['teardown', []]]);
for (let i = 0; i < runs; i++) {
  const r = await spawnTimed([process.execPath, CLI, 'run', '--', '/bin/true'], { env: { ...BENCH_ENV, CUBICLE_TIMING: '1' } });
  const closedAt = performance.timeOrigin + performance.now(); // epoch ms, as the child's origin + its marks
  const line = /^cubicle-timing (\{.*\})$/m.exec(r.stderr)?.[1];
  if (r.code !== 0 || !line) throw new Error(`cubicle run with CUBICLE_TIMING=1 printed no timing (exit ${String(r.code)}): ${r.stderr}`);
  const m = JSON.parse(line) as Record<string, number>;
  for (const [name, from, to] of PHASES) phases.get(name)!.push((m[to] ?? NaN) - (from ? (m[from] ?? NaN) : 0));
  after.get('teardown')!.push(closedAt - (m.origin! + m.exit!)); // from the exit event until this process saw the end
}
console.log(`\nwhere a call goes (cubicle run -- /bin/true, CUBICLE_TIMING=1, medians of ${runs} calls, ms):`);
for (const [name, values] of [...phases, ...after]) console.log(`  ${name.padEnd(14)} ${summarize(values).p50.toFixed(1).padStart(7)}`);

for (const name of [CUBICLE, QUIET]) {
  const own = p50(name) - p50(NODE);
  const met = own <= OWN_SHARE_TARGET_MS ? 'met' : 'NOT met';
  console.log(
    `${name}: cubicle's own share (above node -e 0) ${own.toFixed(1)} ms p50 wall, ` +
      `${(cpuOf(name) - cpuOf(NODE)).toFixed(1)} ms CPU; target <= ${OWN_SHARE_TARGET_MS} ms: ${met}`,
  );
}
