// Filters of the shipped policies compiled at build time (`npm run build`, `npm pack`) into the package's own
// dist/, keyed by the profile's content: a run of a shipped policy needs neither libseccomp nor koffi. Only the
// build writes here, and dist/ is protected like the code (no read-write bind may reach it), so a sandbox
// cannot plant a weaker filter; a profile this cache does not hold is compiled at run time as before.
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { NotifyMode, SeccompProfile } from '../types.js';

/** dist/seccomp-filters (beside dist/sandbox). */
export const PREBUILT_FILTER_DIR = fileURLToPath(new URL('../../seccomp-filters/', import.meta.url));
const FORMAT = 1;

export interface PrebuiltFilter {
  bpf: Buffer;
  notify: NotifyMode;
  architectures: string[];
  unknownSyscalls: string[];
}

/** The key of a compiled profile: its content, mode, whether user notifications exist, and the architecture. */
export function prebuiltKey(profile: SeccompProfile, mode: 'enforce' | 'log', notifyOk: boolean, arch = process.arch): string {
  return createHash('sha256').update(JSON.stringify({ FORMAT, profile, mode, notifyOk, arch })).digest('hex');
}

/** The filter the build compiled for this key, or undefined. */
export function readPrebuilt(key: string): PrebuiltFilter | undefined {
  let text: string;
  try {
    text = readFileSync(join(PREBUILT_FILTER_DIR, `${key}.json`), 'utf8');
  } catch {
    return undefined;
  }
  const j = JSON.parse(text) as { bpf: string; notify: NotifyMode; architectures: string[]; unknownSyscalls: string[] };
  return { bpf: Buffer.from(j.bpf, 'base64'), notify: j.notify, architectures: j.architectures, unknownSyscalls: j.unknownSyscalls };
}

/** Stores a compiled filter under its key (the build only). */
export function writePrebuilt(key: string, f: PrebuiltFilter): void {
  mkdirSync(PREBUILT_FILTER_DIR, { recursive: true });
  const j = { bpf: f.bpf.toString('base64'), notify: f.notify, architectures: f.architectures, unknownSyscalls: f.unknownSyscalls };
  writeFileSync(join(PREBUILT_FILTER_DIR, `${key}.json`), JSON.stringify(j));
}
