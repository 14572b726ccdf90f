// Helpers of the live-sandbox tests: the CLI run as a given user (asynchronously, so sandboxes this process
// supervises keep being served), unique names, named sandboxes a test starts and ends, and waiting for a
// sandbox to appear in or leave the registry.
import { spawn } from 'node:child_process';
import { findSandbox } from '../../sandbox/host/registry.js';
import { spawnSandboxed, type SandboxOptions, type SandboxProcess } from '../../sandbox/index.js';
import { waitFor, type Identity } from './env.js';
import { CLI } from './cli.js';

export { CLI };

export interface CliRun {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `cubicle ARGS` (as `as` when given) and collects its output; the process is killed after `timeoutMs`. */
export function cubicle(
  args: string[],
  o: { as?: { uid: number; gid: number }; input?: string; timeoutMs?: number } = {},
): Promise<CliRun> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [CLI, ...args], {
      stdio: ['pipe', 'pipe', 'pipe'],
      cwd: '/',
      ...(o.as ? { uid: o.as.uid, gid: o.as.gid, env: { ...process.env, HOME: '/tmp' } } : {}),
    });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    p.stdin.end(o.input ?? '');
    const t = setTimeout(() => p.kill('SIGKILL'), o.timeoutMs ?? 60_000);
    p.on('error', reject);
    p.on('close', (status) => {
      clearTimeout(t);
      resolve({ status, stdout, stderr });
    });
  });
}

let counter = 0;
/** A sandbox name no other test (or earlier run of this one) uses. */
export const uniqueName = (prefix: string): string => `${prefix}-${process.pid}-${++counter}`;

/**
 * Starts named sandboxes as `id` for the tests of the enclosing describe, each SIGKILLed after its test: `start`
 * resolves once the sandbox runs its payload (by default sleep 120), which exec proves with a first command.
 */
export function namedSandboxes(
  id: Identity,
  prefix: string,
  stdout: 'pipe' | 'ignore' = 'ignore',
): (o?: SandboxOptions, cmd?: string[]) => Promise<{ name: string; proc: SandboxProcess }> {
  const started: SandboxProcess[] = [];
  afterEach(async () => {
    for (const p of started.splice(0)) {
      p.kill('SIGKILL');
      await p.result.catch(() => undefined);
    }
  });
  return async (o = {}, cmd = ['sleep', '120']) => {
    const name = uniqueName(prefix);
    const proc = spawnSandboxed<SandboxOptions>(cmd, { ...o, ...id.spawnAs, name, reject: false, stdout, stderr: 'ignore' });
    started.push(proc);
    await proc.exec(['true']);
    return { name, proc };
  };
}

/** Waits until the named sandbox of this user runs (true) or `ms` pass (false). */
export const untilListed = (name: string, ms = 20_000): Promise<boolean> => waitFor(() => findSandbox(name)?.state === 'running', ms);
/** Waits until the named sandbox of this user is gone (true) or `ms` pass (false). */
export const untilGone = (name: string, ms = 20_000): Promise<boolean> => waitFor(() => findSandbox(name) === undefined, ms);
