// Seccomp costs: per-syscall overhead of each shipped filter on a syscall-heavy loop, and profile compile time.
// Usage: node dist/bench/seccomp.js [--rounds N] [--json]
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { runSandboxed } from '../sandbox/index.js';
import { loadPolicy } from '../sandbox/policy/load.js';
import type { PolicyObject } from '../sandbox/types.js';
import { compileNow, compileProfile } from '../sandbox/seccomp/compile.js';
import { libseccomp } from '../sandbox/seccomp/libseccomp.js';
import { benchFlags } from './runner.js';

const TARGET_OVERHEAD = 0.05;

/** Median of a list of numbers. */
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;

/** Compiles the loop program into a world-readable temp dir; returns its path and a cleanup. */
function buildLoop(): { bin: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), 'cubicle-bench-'));
  chmodSync(dir, 0o755);
  const bin = join(dir, 'syscall-loop');
  execFileSync('cc', ['-O2', '-o', bin, fileURLToPath(new URL('../../bench/fixtures/syscall-loop.c', import.meta.url))]);
  chmodSync(bin, 0o755);
  return { bin, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** A filter that allows everything: the kernel's fixed cost of having any filter at all. */
const ALLOW_ALL: PolicyObject = { description: 'allow everything', seccomp: { defaultAction: 'SCMP_ACT_ALLOW', syscalls: [] } };
const POLICIES: Record<string, string | PolicyObject> = {
  none: 'none',
  'allow-all': ALLOW_ALL,
  default: 'default',
  judge: 'judge',
  permissive: 'permissive',
};

/** ns per syscall inside a sandbox under a policy (one run). */
async function nsPerCall(bin: string, policy: string | PolicyObject, mode: string): Promise<number> {
  const r = await runSandboxed(['/loop', mode, mode === 'read' ? '500000' : '2000000'], {
    policy,
    mounts: [{ type: 'bind', source: bin, target: '/loop', readOnly: true }],
  });
  return Number((r.stdout as string).trim());
}

async function main(): Promise<void> {
  const values = benchFlags('usage: node dist/bench/seccomp.js [--rounds N (default 9)] [--json]', {
    rounds: { count: 9 },
    json: { switch: true },
  });
  const rounds = values.rounds;
  const log = values.json ? (s: string) => process.stderr.write(s + '\n') : (s: string) => console.log(s);

  // Compile time: library load, first (cold) compile, cached compile.
  let t = performance.now();
  const lib = libseccomp();
  const loadMs = performance.now() - t;
  const compile: Record<string, { coldMs: number; cachedMs: number; instructions: number }> = {};
  for (const name of ['default', 'judge', 'permissive']) {
    const profile = loadPolicy(name).seccomp!;
    // Cold: libseccomp compiles it (what a policy of the caller's own costs; the shipped ones are prebuilt).
    t = performance.now();
    const cold = compileNow(profile, 'enforce', 'seccomp', true, name);
    const coldMs = performance.now() - t;
    compileProfile(profile, 'enforce'); // the prebuilt filter (or a compile), then the per-process cache
    t = performance.now();
    const again = compileProfile(profile, 'enforce');
    const cachedMs = performance.now() - t;
    if (!again.cached) throw new Error('the second compile was not served from the cache');
    compile[name] = { coldMs, cachedMs, instructions: cold.bpf.length / 8 };
  }

  const { bin, cleanup } = buildLoop();
  const policies = Object.keys(POLICIES);
  const overhead: Record<string, Record<string, { nsPerCall: number; ratio: number }>> = {};
  try {
    for (const mode of ['getppid', 'read']) {
      const samples: Record<string, number[]> = Object.fromEntries(policies.map((p) => [p, []]));
      for (const p of policies) await nsPerCall(bin, POLICIES[p]!, mode); // warm-up
      // Interleaved, alternating order: machine noise falls on every policy alike.
      for (let i = 0; i < rounds; i++)
        for (const p of i % 2 ? [...policies].reverse() : policies) samples[p]!.push(await nsPerCall(bin, POLICIES[p]!, mode));
      const base = median(samples.none!);
      overhead[mode] = Object.fromEntries(policies.map((p) => [p, { nsPerCall: median(samples[p]!), ratio: median(samples[p]!) / base }]));
    }
  } finally {
    cleanup();
  }

  if (values.json) {
    console.log(JSON.stringify({ libseccomp: lib.version, loadMs, compile, overhead, rounds }));
    return;
  }
  log(`libseccomp ${lib.version.major}.${lib.version.minor}.${lib.version.micro}, loaded through koffi in ${loadMs.toFixed(1)} ms`);
  log('\nprofile compile time (libseccomp, in process):');
  log('policy       BPF insns   cold ms   cached ms');
  for (const [name, c] of Object.entries(compile))
    log(
      `${name.padEnd(12)} ${String(c.instructions).padStart(9)}   ` +
        `${c.coldMs.toFixed(2).padStart(7)}   ${c.cachedMs.toFixed(3).padStart(9)}`,
    );
  log(`\nsyscall overhead inside the sandbox, median of ${rounds} rounds (getppid x 2,000,000; read 4 KiB from /dev/zero x 500,000):`);
  log('policy       getppid ns   x none   read ns   x none');
  for (const p of policies) {
    const g = overhead.getppid![p]!,
      r = overhead.read![p]!;
    log(
      `${p.padEnd(12)} ${g.nsPerCall.toFixed(1).padStart(10)}   ${g.ratio.toFixed(3)}   ` +
        `${r.nsPerCall.toFixed(1).padStart(7)}   ${r.ratio.toFixed(3)}`,
    );
  }
  log('(allow-all: a filter that allows everything, i.e. what the kernel charges for having any filter)');
  for (const name of ['default', 'judge', 'permissive']) {
    const g = overhead.getppid![name]!.ratio - 1,
      r = overhead.read![name]!.ratio - 1;
    const vsAllowAll = overhead.getppid![name]!.nsPerCall - overhead.getppid!['allow-all']!.nsPerCall;
    log(
      `${name}: +${(r * 100).toFixed(1)}% on read (target <= ${TARGET_OVERHEAD * 100}%: ${r <= TARGET_OVERHEAD ? 'meets' : 'MISSES'}), ` +
        `+${(g * 100).toFixed(1)}% on getppid; ${vsAllowAll.toFixed(1)} ns/call above allow-all`,
    );
  }
}

main().catch((e: unknown) => {
  console.error(e);
  process.exitCode = 1;
});
