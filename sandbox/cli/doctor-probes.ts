// The end-to-end half of the doctor's probes (here, beside the command, because they run sandboxes): real sandbox runs of /bin/true,
// and probeHost(), which gathers them together with the host's state (probe.ts).
import { performance } from 'node:perf_hooks';
import { egressProblems } from '../egress/egress.js';
import { runSandboxed } from '../api/run.js';
import { createPool } from '../pool/pool.js';
import { helperPathForMessages } from '../native/helper-path.js';
import { subidsFor } from '../host/subids.js';
import { diagnose, type DoctorCheck } from '../doctor/diagnose.js';
import type { Fact, HostFacts, PoolFacts, SandboxProbe, SandboxRunFacts } from '../doctor/facts.js';
import {
  attemptAsync,
  probeCgroups,
  probeConfinement,
  probeEuid,
  probeHostNamespaces,
  probeKernel,
  probeLibseccomp,
  probeMounts,
  probeSysctls,
} from '../doctor/probe.js';

/** The unprivileged host user the rootless path is probed as when the caller is root. */
export const UNPRIVILEGED_PROBE_ID = 65534;
const E2E_TIMEOUT_MS = 10_000;
const STDERR_KEEP = 2000;

/** Runs /bin/true in a real sandbox (as the caller, or with runAs) and records how it went. */
export async function probeSandbox(runAs?: { uid: number; gid: number }): Promise<SandboxProbe> {
  const run = await attemptAsync(async (): Promise<SandboxRunFacts> => {
    const r = await runSandboxed(['/bin/true'], { reject: false, timeout: E2E_TIMEOUT_MS, ...(runAs ? { runAs } : {}) });
    const stderr = r.stderr;
    return {
      verdict: r.verdict,
      exitCode: r.exitCode,
      signal: r.signal,
      ...(r.setupFailure ? { setupFailure: r.setupFailure } : {}),
      ...(r.setup ? { setupMs: r.setup.ms } : {}),
      ...(r.namespaces ? { namespaces: r.namespaces } : {}),
      ...(r.verdict !== 'ok' && stderr ? { stderr: stderr.slice(0, STDERR_KEEP) } : {}),
    };
  });
  return runAs ? { runAs, run } : { run };
}

/** Makes a warm pool of one sandbox, runs /bin/true in it, and records how long each step took. */
export async function probePool(): Promise<Fact<PoolFacts>> {
  return attemptAsync(async (): Promise<PoolFacts> => {
    const t0 = performance.now();
    const pool = createPool({ size: 1, retryDelayMs: E2E_TIMEOUT_MS });
    try {
      while (pool.stats().ready === 0 && !pool.stats().failures && performance.now() - t0 < E2E_TIMEOUT_MS)
        await new Promise((r) => setTimeout(r, 5));
      const s = pool.stats();
      if (s.ready === 0) return { failure: s.lastFailure ?? `no sandbox was ready within ${E2E_TIMEOUT_MS} ms` };
      const readyMs = performance.now() - t0;
      const t1 = performance.now();
      const r = await pool.run(['/bin/true'], { reject: false, timeout: E2E_TIMEOUT_MS });
      return { readyMs, use: r.pool, ...(r.poolMiss ? { poolMiss: r.poolMiss } : {}), verdict: r.verdict, runMs: performance.now() - t1 };
    } finally {
      await pool.close();
    }
  });
}

/** Gathers every fact about this host, including two end-to-end sandbox runs when the caller is root. */
export async function probeHost(): Promise<HostFacts> {
  const euid = probeEuid();
  const facts: HostFacts = {
    kernel: probeKernel(),
    euid,
    hostNamespaces: probeHostNamespaces(),
    sysctl: probeSysctls(),
    confinement: probeConfinement(),
    mounts: probeMounts(),
    libseccomp: probeLibseccomp(),
    ...(process.env.CUBICLE_LIBSECCOMP ? { libseccompOverride: process.env.CUBICLE_LIBSECCOMP } : {}),
    cgroups: probeCgroups(),
    ...(euid.ok && euid.value !== 0 ? { subids: { ok: true as const, value: subidsFor(euid.value) } } : {}),
    egress: { problems: egressProblems({ uid: process.geteuid!(), gid: process.getegid!() }) },
    helperPath: helperPathForMessages(),
    sandbox: await probeSandbox(),
  };
  facts.pool = await probePool();
  if (euid.ok && euid.value === 0)
    facts.sandboxUnprivileged = await probeSandbox({ uid: UNPRIVILEGED_PROBE_ID, gid: UNPRIVILEGED_PROBE_ID });
  return facts;
}

/** Probes this host (including real sandbox runs) and returns every check, root causes first. */
export async function runDoctor(): Promise<DoctorCheck[]> {
  return diagnose(await probeHost());
}
