// Startup latency benchmark: cubicle vs a plain spawn, bubblewrap with the same namespaces/mounts, and unshare.
// Usage: node dist/bench/startup.js [--runs N] [--warmup N] [--json]
import { spawnSync } from 'node:child_process';
import { cpus, release } from 'node:os';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { runSandboxed, type SandboxOptions } from '../sandbox/index.js';
import {
  BWRAP_FLAGS,
  measureRoundRobin,
  spawnMustSucceed,
  spawnTimed,
  summarize,
  which,
  type Row,
  type Sample,
  type Stats,
  type TimedSpawnOptions,
} from './runner.js';

const TARGET_RATIO = 1.0;
const GOAL_RATIO = 0.7;
const BATCH = 10;
/** The unprivileged host user that root drops to for the rootless rows (nobody/nogroup on Debian). */
const NOBODY = { uid: 65534, gid: 65534 } as const;
const UNSHARE_FLAGS = ['-Urmpiuf', '--net'];

interface Args {
  runs: number;
  warmup: number;
  json: boolean;
}

/** A row as reported: its statistics and ratios, or why it was skipped. */
interface RowReport {
  name: string;
  identity: string;
  command: string;
  stats?: Stats;
  vsSpawn?: number;
  vsBwrap?: number;
  setupP50Ms?: number;
  skipped?: string;
}

const USAGE = 'usage: node dist/bench/startup.js [--runs N (default 200)] [--warmup N (default 20)] [--json]';

/** A bad command line: reported with the usage text, without a stack trace. */
class UsageError extends Error {}

/** Parses --runs, --warmup and --json; throws UsageError on anything else. */
function parseCli(argv: string[]): Args {
  let values: { runs?: string; warmup?: string; json?: boolean; help?: boolean };
  try {
    ({ values } = parseArgs({
      args: argv,
      options: { runs: { type: 'string' }, warmup: { type: 'string' }, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } },
      strict: true,
      allowPositionals: false,
    }));
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    process.exit(0);
  }
  const count = (name: string, v: string | undefined, dflt: number, min: number): number => {
    if (v === undefined) return dflt;
    const n = Number(v);
    if (!Number.isInteger(n) || n < min) throw new UsageError(`--${name} must be an integer >= ${min}, got ${JSON.stringify(v)}`);
    return n;
  };
  return { runs: count('runs', values.runs, 200, 1), warmup: count('warmup', values.warmup, 20, 0), json: values.json === true };
}

/** Writes a human-readable line: to stdout normally, to stderr in --json mode so stdout stays pure JSON. */
function makeLogger(json: boolean): (line: string) => void {
  return (line) => (json ? process.stderr : process.stdout).write(`${line}\n`);
}

/** Runs one apt-get command non-interactively, its output on stderr; true when it exited 0. */
function aptGet(args: string[]): boolean {
  const r = spawnSync('apt-get', args, {
    stdio: ['ignore', 2, 2],
    env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' },
  });
  return r.status === 0;
}

/** Finds bwrap, installing Debian's bubblewrap when running as root; returns its path or why it is unavailable. */
function ensureBwrap(log: (line: string) => void): { path?: string; reason?: string } {
  const found = which('bwrap');
  if (found) return { path: found };
  if (process.geteuid?.() !== 0) {
    log('bwrap is missing. Install it with: sudo apt-get install -y bubblewrap (Debian/Ubuntu); the bwrap rows are skipped.');
    return { reason: 'bwrap not installed (sudo apt-get install -y bubblewrap)' };
  }
  if (!which('apt-get')) return { reason: 'bwrap not installed and apt-get is not available to install it' };
  log('bwrap is missing; installing bubblewrap with apt-get ...');
  if (!aptGet(['install', '-y', 'bubblewrap'])) {
    log('apt-get install failed; running apt-get update and retrying ...');
    if (!aptGet(['update']) || !aptGet(['install', '-y', 'bubblewrap'])) return { reason: 'apt-get install -y bubblewrap failed' };
  }
  const installed = which('bwrap');
  return installed ? { path: installed } : { reason: 'bubblewrap installed but bwrap is not on PATH' };
}

/** The first line printed by `cmd --version`, or undefined. */
function versionOf(cmd: string): string | undefined {
  const r = spawnSync(cmd, ['--version'], { stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim().split('\n')[0] : undefined;
}

/** Runs a sandbox once with `id -u` instead of /bin/true and checks the uid seen inside; returns an error text or undefined. */
async function preflightSpawn(argvPrefix: string[], expectUid: string, opts: TimedSpawnOptions): Promise<string | undefined> {
  try {
    const r = await spawnTimed([...argvPrefix, '/usr/bin/id', '-u'], opts);
    if (r.code !== 0) return `exit code ${String(r.code)}${r.signal ? ` (signal ${r.signal})` : ''}: ${r.stderr.trim() || '(no stderr)'}`;
    if (r.stdout.trim() !== expectUid) return `expected uid ${expectUid} inside, got ${JSON.stringify(r.stdout.trim())}`;
    return undefined;
  } catch (e) {
    return (e as Error).message;
  }
}

/** Times one cubicle run of /bin/true and insists it ran and exited 0. */
async function cubicleOnce(options: SandboxOptions): Promise<Sample> {
  const started = performance.now();
  const r = await runSandboxed(['/bin/true'], options);
  const ms = performance.now() - started;
  if (r.exitCode !== 0 || r.verdict !== 'ok') throw new Error(`cubicle run failed: verdict ${r.verdict}, exit code ${String(r.exitCode)}`);
  return r.setup ? { ms, setupMs: r.setup.ms } : { ms };
}

/** Checks that cubicle runs as uid 1000 inside before it is timed; throws otherwise (cubicle is what is measured). */
async function preflightCubicle(options: SandboxOptions): Promise<void> {
  const r = await runSandboxed(['/usr/bin/id', '-u'], options);
  const uid = String(r.stdout ?? '').trim();
  if (r.exitCode !== 0 || uid !== '1000')
    throw new Error(`cubicle preflight failed: exit ${String(r.exitCode)}, uid inside ${JSON.stringify(uid)}`);
}

/** A row of a spawned command, timed to 'close' and required to exit 0. */
function spawnRow(name: string, identity: string, argv: string[], opts: TimedSpawnOptions): Row {
  const who = opts.uid !== undefined ? ` (spawned with uid ${opts.uid}, gid ${String(opts.gid)})` : '';
  return { name, identity, command: `${argv.join(' ')}${who}`, once: () => spawnMustSucceed(argv, opts), samples: [] };
}

/** Builds the rows to measure, with the reasons for any that cannot run here. */
async function buildRows(log: (line: string) => void): Promise<{ rows: Row[]; skipped: RowReport[]; bwrapVersion?: string }> {
  const isRoot = process.geteuid?.() === 0;
  const self = isRoot ? 'root' : `uid ${process.geteuid?.() ?? '?'}`;
  const nobody = `uid ${NOBODY.uid}`;
  const identities: { label: string; spawn: TimedSpawnOptions; cubicle: SandboxOptions }[] = [{ label: self, spawn: {}, cubicle: {} }];
  if (isRoot) identities.push({ label: nobody, spawn: { ...NOBODY }, cubicle: { runAs: { ...NOBODY } } });

  const rows: Row[] = [spawnRow('spawn /bin/true', self, ['/bin/true'], {})];
  const skipped: RowReport[] = [];
  for (const id of identities) {
    await preflightCubicle(id.cubicle);
    const name = id.cubicle.runAs ? `cubicle (runAs ${NOBODY.uid})` : 'cubicle';
    const command = `runSandboxed(['/bin/true']${id.cubicle.runAs ? `, { runAs: { uid: ${NOBODY.uid}, gid: ${NOBODY.gid} } }` : ''})`;
    rows.push({ name, identity: id.label, command, once: () => cubicleOnce(id.cubicle), samples: [] });
  }

  const bwrap = ensureBwrap(log);
  for (const id of identities) {
    const name = `bwrap (as ${id.label})`;
    if (!bwrap.path) {
      skipped.push({ name, identity: id.label, command: 'bwrap', skipped: bwrap.reason! });
      continue;
    }
    const prefix = [bwrap.path, ...BWRAP_FLAGS];
    const problem = await preflightSpawn(prefix, '1000', id.spawn);
    if (problem) skipped.push({ name, identity: id.label, command: prefix.join(' '), skipped: `bwrap preflight failed: ${problem}` });
    else rows.push(spawnRow(name, id.label, [...prefix, '/bin/true'], id.spawn));
  }

  const unshare = which('unshare');
  for (const id of identities) {
    const name = `unshare -Urmpiuf --net (as ${id.label})`;
    if (!unshare) {
      skipped.push({ name, identity: id.label, command: 'unshare', skipped: 'unshare (util-linux) not found' });
      continue;
    }
    const prefix = [unshare, ...UNSHARE_FLAGS];
    const problem = await preflightSpawn(prefix, '0', id.spawn);
    if (problem) skipped.push({ name, identity: id.label, command: prefix.join(' '), skipped: `unshare preflight failed: ${problem}` });
    else rows.push(spawnRow(name, id.label, [...prefix, '/bin/true'], id.spawn));
  }
  const bwrapVersion = bwrap.path ? versionOf(bwrap.path) : undefined;
  return bwrapVersion ? { rows, skipped, bwrapVersion } : { rows, skipped };
}

/** Turns measured rows into reports with ratios against plain spawn and against bwrap of the same identity. */
function report(rows: readonly Row[], skipped: readonly RowReport[]): RowReport[] {
  const stats = new Map(rows.map((r) => [r, summarize(r.samples.map((s) => s.ms))]));
  const spawnP50 = stats.get(rows[0]!)!.p50;
  const bwrapP50 = (identity: string): number | undefined => {
    const b = rows.find((r) => r.name.startsWith('bwrap') && r.identity === identity);
    return b ? stats.get(b)!.p50 : undefined;
  };
  const measured = rows.map((r): RowReport => {
    const s = stats.get(r)!;
    const b = bwrapP50(r.identity);
    const setups = r.samples.flatMap((x) => (x.setupMs === undefined ? [] : [x.setupMs]));
    return {
      name: r.name,
      identity: r.identity,
      command: r.command,
      stats: s,
      vsSpawn: s.p50 / spawnP50,
      ...(b !== undefined ? { vsBwrap: s.p50 / b } : {}),
      ...(setups.length ? { setupP50Ms: summarize(setups).p50 } : {}),
    };
  });
  return [...measured, ...skipped];
}

/** Formats the report as an aligned text table. */
function table(reports: readonly RowReport[]): string[] {
  const header = ['name', 'p50 ms', 'p95 ms', 'mean ms', 'x spawn', 'x bwrap'];
  const cells = reports.map((r) =>
    r.stats
      ? [
          r.name,
          r.stats.p50.toFixed(2),
          r.stats.p95.toFixed(2),
          r.stats.mean.toFixed(2),
          `${r.vsSpawn!.toFixed(2)}x`,
          r.vsBwrap === undefined ? '-' : `${r.vsBwrap.toFixed(2)}x`,
        ]
      : [r.name, 'skipped', '', '', '', ''],
  );
  const widths = header.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i]!.length)));
  const fmt = (c: string[]): string =>
    c
      .map((v, i) => (i === 0 ? v.padEnd(widths[i]!) : v.padStart(widths[i]!)))
      .join('  ')
      .trimEnd();
  const lines = [fmt(header), widths.map((w) => '-'.repeat(w)).join('  '), ...cells.map(fmt)];
  for (const r of reports) if (r.skipped) lines.push(`  skipped ${r.name}: ${r.skipped}`);
  return lines;
}

/** One verdict line per cubicle row that has a bwrap row of the same identity to compare with. */
function verdicts(reports: readonly RowReport[]): { name: string; ratio: number; meetsTarget: boolean; meetsGoal: boolean }[] {
  return reports
    .filter((r) => r.name.startsWith('cubicle') && r.vsBwrap !== undefined)
    .map((r) => ({ name: r.name, ratio: r.vsBwrap!, meetsTarget: r.vsBwrap! <= TARGET_RATIO, meetsGoal: r.vsBwrap! <= GOAL_RATIO }));
}

/** JSON replacer that keeps three decimals of fractional numbers. */
function roundNumbers(_key: string, value: unknown): unknown {
  return typeof value === 'number' && !Number.isInteger(value) ? Math.round(value * 1000) / 1000 : value;
}

/** True when the report holds a bwrap row run as root. */
function isRootRun(reports: readonly RowReport[]): boolean {
  return reports.some((r) => r.name.startsWith('bwrap') && r.identity === 'root' && r.stats !== undefined);
}

/** Runs the benchmark and prints the table (or JSON). */
async function main(): Promise<void> {
  const args = parseCli(process.argv.slice(2));
  const log = makeLogger(args.json);
  const machine = {
    kernel: release(),
    cpus: cpus().length,
    cpuModel: cpus()[0]?.model ?? 'unknown',
    node: process.version,
    euid: process.geteuid?.() ?? -1,
  };
  log(`machine: kernel ${machine.kernel}, ${machine.cpus} cpus (${machine.cpuModel}), node ${machine.node}, euid ${machine.euid}`);

  const { rows, skipped, bwrapVersion } = await buildRows(log);
  if (bwrapVersion) log(`bwrap: ${bwrapVersion}`);
  log(`measuring ${rows.length} rows: ${args.warmup} warm-up + ${args.runs} runs each, round-robin batches of ${BATCH} ...`);
  const started = performance.now();
  await measureRoundRobin(rows, args.runs, args.warmup, BATCH);
  const elapsedS = (performance.now() - started) / 1000;

  const reports = report(rows, skipped);
  const summary = verdicts(reports);
  const setupP50 = reports.find((r) => r.name === 'cubicle')?.setupP50Ms;
  if (args.json) {
    const figures = {
      machine,
      bwrapVersion,
      runs: args.runs,
      warmup: args.warmup,
      elapsedS,
      rows: reports,
      cubicleSetupP50Ms: setupP50,
      summary,
      targetRatio: TARGET_RATIO,
      goalRatio: GOAL_RATIO,
    };
    process.stdout.write(`${JSON.stringify(figures, roundNumbers)}\n`);
    return;
  }
  log('');
  for (const line of table(reports)) log(line);
  log('(x spawn: p50 / p50 of plain spawn; x bwrap: p50 / p50 of the bwrap row created by the same host identity)');
  if (isRootRun(reports))
    log('(as root, bwrap maps its uid 1000 to host uid 0, while cubicle maps it to 65534; the uid 65534 rows are the rootless comparison)');
  log('');
  for (const v of summary) {
    const verdict = v.meetsGoal ? 'meets target and goal' : v.meetsTarget ? 'meets target, not goal' : 'MISSES target';
    log(`${v.name} / bwrap p50 ratio: ${v.ratio.toFixed(2)}x (target <= ${TARGET_RATIO.toFixed(1)}x, goal ${GOAL_RATIO}x): ${verdict}`);
  }
  if (summary.length === 0) log('cubicle / bwrap p50 ratio: n/a (no bwrap row)');
  for (const r of reports) if (r.setupP50Ms !== undefined) log(`${r.name} in-helper setup p50: ${r.setupP50Ms.toFixed(2)} ms`);
  log(`total measuring time ${elapsedS.toFixed(1)} s`);
}

main().catch((e: unknown) => {
  if (e instanceof UsageError) {
    process.stderr.write(`${e.message}\n${USAGE}\n`);
    process.exit(2);
  }
  process.stderr.write(`bench failed: ${(e as Error).stack ?? String(e)}\n`);
  process.exit(1);
});
