// Ending a named sandbox from anywhere (stop) and waiting for its end (wait), through the registry and the helper's
// join socket; and the final result a named run leaves for wait.
import { setTimeout as sleep } from 'node:timers/promises';
import { ErrorCode } from '../errors.js';
import { nodeNet } from '../lazy-require.js';
import { resultJsonChunks } from '../outcome/render.js';
import { JoinRequest } from '../protocol/opcodes.js';
import type { SandboxResult } from '../types.js';
import {
  checkSandboxName,
  entryIsLive,
  findSandbox,
  readResult,
  SandboxNameError,
  writeResult,
  type SandboxEntry,
} from '../host/registry.js';

/** Writes a named run's result (the JSON `run --json` prints) for `cubicle wait`; best effort. */
export function recordResult(name: string, r: SandboxResult): void {
  try {
    writeResult(name, [...resultJsonChunks(r)].join('') + '\n');
  } catch {
    /* the runtime directory went away: the result still reaches the caller */
  }
}

/** Resolves false once the named sandbox runs, true if `ended` settles first. */
export async function untilRunning(name: string, ended: Promise<unknown>): Promise<boolean> {
  let done = false;
  ended.then(
    () => (done = true),
    () => (done = true),
  );
  for (let delay = 2; !done; delay = Math.min(delay * 2, 50)) {
    if (findSandbox(name)?.state === 'running') return false;
    await sleep(delay);
  }
  return true;
}

/** Sends one request byte to the sandbox's join socket (the helper checks that the caller is its owner). */
function request(entry: SandboxEntry, byte: string): Promise<void> {
  return new Promise((resolve) => {
    const s = nodeNet().connect(entry.join.socket);
    s.on('error', () => resolve()); // the sandbox ended meanwhile
    s.on('connect', () => s.end(byte));
    s.on('close', () => resolve());
  });
}

async function goneWithin(entry: SandboxEntry, ms: number): Promise<boolean> {
  const until = Date.now() + ms;
  for (;;) {
    if (!entryIsLive(entry)) return true;
    if (Date.now() >= until) return false;
    await sleep(20);
  }
}

/** Ends a named sandbox: SIGTERM to everything inside, SIGKILL after its forceKillAfterDelay (or `graceMs`). */
export async function stopSandbox(name: string, graceMs?: number): Promise<void> {
  const entry = findSandbox(checkSandboxName(name));
  if (!entry) throw new SandboxNameError(`no sandbox named "${name}" is running for this user (cubicle ps lists them)`, ErrorCode.notFound);
  if (entry.state === 'running') {
    await request(entry, JoinRequest.terminate);
    if (await goneWithin(entry, graceMs ?? entry.forceKillAfterDelay)) return;
    await request(entry, JoinRequest.kill);
    if (await goneWithin(entry, 3000)) return;
  }
  // Last resort: the helper (whose end takes init and the whole sandbox), or a supervisor stuck while starting.
  for (const p of [entry.helper, entry.supervisor])
    if (p && entryIsLive(entry))
      try {
        process.kill(p.pid, 'SIGKILL');
      } catch {
        /* gone */
      }
  await goneWithin(entry, 3000);
}

/** Waits until the named sandbox has ended and returns its final result as JSON (as `run --json` prints it). */
export async function waitSandbox(name: string): Promise<string> {
  checkSandboxName(name);
  let seen = false;
  for (;;) {
    const entry = findSandbox(name);
    if (!entry) break;
    seen = true;
    await sleep(50);
  }
  // The entry goes when the helper has ended; the result is written just after, by the run's supervisor.
  for (let i = 0; i < 100; i++) {
    const r = readResult(name);
    if (r !== undefined) return r;
    if (!seen && i === 0) break;
    await sleep(30);
  }
  throw new SandboxNameError(
    seen
      ? `the sandbox "${name}" ended without a recorded result (its supervisor was killed?)`
      : `no sandbox named "${name}" is running, and none left a result`,
    ErrorCode.notFound,
  );
}
