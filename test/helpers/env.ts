// Shared test environment: the identities each test runs as, a world-readable temp area, the compiled probe.
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { planCgroup } from '../../sandbox/cgroup/index.js';
import { runSandboxed, type SandboxOptions, type SandboxResult } from '../../sandbox/index.js';

export const IS_ROOT = process.geteuid!() === 0;
/** The unprivileged host user the rootless variant runs as when the tests run as root. */
export const ROOTLESS_ID = { uid: 65534, gid: 65534 };

export interface Identity {
  label: string;
  /** Options that make the sandbox be created as this identity. */
  spawnAs: SandboxOptions;
  /** The host uid/gid the sandbox's ids map to (as root: the shared fallback; each run leases ids of its own). */
  outerUid: number;
  outerGid: number;
  rootless: boolean;
}

/** The invoking user and, when that is root, an unprivileged uid too ("rootless" is the product). */
export function identities(): Identity[] {
  const me = process.geteuid!();
  const list: Identity[] = [
    {
      label: IS_ROOT ? 'as root (own host ids per sandbox)' : `as uid ${me}`,
      spawnAs: {},
      outerUid: IS_ROOT ? 65534 : me,
      outerGid: IS_ROOT ? 65534 : process.getegid!(),
      rootless: !IS_ROOT,
    },
  ];
  if (IS_ROOT)
    list.push({
      label: `rootless, as uid ${ROOTLESS_ID.uid}`,
      spawnAs: { runAs: ROOTLESS_ID },
      outerUid: ROOTLESS_ID.uid,
      outerGid: ROOTLESS_ID.gid,
      rootless: true,
    });
  return list;
}

/** Defines the same tests once per identity. */
export function forEachIdentity(
  body: (id: Identity, run: (cmd: string | string[], o?: SandboxOptions) => Promise<SandboxResult>) => void,
): void {
  for (const id of identities()) {
    describe(id.label, () => body(id, (cmd, o = {}) => runSandboxed(cmd, { ...o, ...id.spawnAs })));
  }
}

/** A temp directory every identity can read (mode 0755), removed by the returned cleanup. */
export function worldReadableTmp(prefix = 'cubicle-test-'): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  chmodSync(dir, 0o755);
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

let probePath: string | undefined;

/** Compiles test/fixtures/probe.c once per test run; returns the host path of the binary (mode 0755). */
export function probe(): string {
  if (probePath) return probePath;
  const repo = fileURLToPath(new URL('../../..', import.meta.url));
  const { dir } = worldReadableTmp('cubicle-probe-');
  const out = join(dir, 'probe');
  execFileSync('cc', ['-O1', '-Wall', '-pthread', '-o', out, join(repo, 'test', 'fixtures', 'probe.c')], { stdio: 'inherit' });
  chmodSync(out, 0o755);
  process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
  probePath = out;
  return out;
}

/** Bind the probe at /probe inside. */
export const probeMount = (): SandboxOptions['mounts'] => [{ type: 'bind', source: probe(), target: '/probe', readOnly: true }];

/** Host pids whose pid namespace has this inode (processes of a given sandbox still alive). */
export function pidsInPidNamespace(nsInode: number): number[] {
  const found: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const link = readlinkSync(`/proc/${name}/ns/pid`);
      if (link === `pid:[${nsInode}]`) found.push(Number(name));
    } catch {
      /* exited, or not ours to inspect */
    }
  }
  return found;
}

/** Whether a host pid exists (and is not a zombie). */
export function alive(pid: number): boolean {
  try {
    statSync(`/proc/${pid}`);
    return !/^State:\s+Z/m.test(readFileSync(`/proc/${pid}/status`, 'utf8'));
  } catch {
    return false;
  }
}

/** Waits until `cond` is true or `ms` pass; returns the last value of cond. */
export async function waitFor(cond: () => boolean, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (cond()) return true;
    await new Promise((r) => setTimeout(r, 25));
  }
  return cond();
}

/** Skips the running test (or suite, from a hook) and prints why: a skip never passes silently. Every skip in
 *  the tests goes through here (a test checks it). */
export function skipBecause(ctx: Mocha.Context, reason: string): never {
  console.log(`      skipped: ${reason}`);
  ctx.skip();
}

/** A way this host enforces memory and process limits for an identity: its cgroup (whichever version the host
 *  gives it) or rlimits + init's sampler. */
export interface LimitMechanism {
  label: string;
  opts: SandboxOptions;
  /** The cgroup version, for the cgroup mechanism. */
  cgroup: 'v1' | 'v2' | undefined;
  /** Why this host cannot give the identity this mechanism. */
  skip?: string;
}

/** The mechanisms of `id`: a cgroup with memory and pids controllers when the host gives one, and always sampling. */
export function limitMechanisms(id: Identity): LimitMechanism[] {
  const planned = planCgroup({ memoryBytes: 64 << 20, pidsMax: 16 }, 'probe', {
    choice: true,
    parent: undefined,
    runAs: id.spawnAs.runAs !== undefined,
  });
  let cgroup: LimitMechanism = { label: 'cgroup', opts: {}, cgroup: undefined };
  if ('reason' in planned) cgroup.skip = planned.reason;
  else if (!planned.memoryDir || !planned.pidsDir)
    cgroup.skip = `the cgroup ${planned.version} group here lacks the memory or pids controller`;
  else cgroup = { label: `cgroup ${planned.version}`, opts: {}, cgroup: planned.version };
  return [cgroup, { label: 'rlimits + sampling', opts: { cgroups: false }, cgroup: undefined }];
}

/** Defines the same tests once per limit mechanism of `id`; one the host lacks skips with the reason. */
export function forEachMechanism(id: Identity, body: (m: LimitMechanism) => void): void {
  for (const m of limitMechanisms(id)) {
    describe(m.label, () => {
      before(function () {
        if (m.skip) skipBecause(this, m.skip);
      });
      body(m);
    });
  }
}
