// Filters of the shipped policies compiled at build time (`npm run build`, `npm pack`) into the package's own
// dist/, keyed by the profile's content: a run of a shipped policy needs neither libseccomp nor koffi. Only the
// build writes here, and dist/ is protected like the code (no read-write bind may reach it), so a sandbox
// cannot plant a weaker filter; a profile this cache does not hold is compiled at run time as before.
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { fnv1a } from '../native/stamp.js';
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

/** What a compiled filter was made from: the profile's content, the mode, whether the kernel has user
 *  notifications, and the architecture. A stored filter is used only when this matches exactly. */
export const prebuiltSource = (profile: SeccompProfile, mode: 'enforce' | 'log', notifyOk: boolean, arch = process.arch): string =>
  JSON.stringify({ FORMAT, profile, mode, notifyOk, arch });

/** The file name a source is stored under: only to find it (the stored source is compared in full), so its
 *  length and a hash of its ends do, without hashing all of a long profile on every run. */
export const prebuiltKey = (source: string): string =>
  `${fnv1a(source.length > 2048 ? source.slice(0, 1024) + source.slice(-1024) : source)}-${source.length}`;

/** The filter the build compiled from exactly this source, or undefined. */
export function readPrebuilt(source: string): PrebuiltFilter | undefined {
  let text: string;
  try {
    text = readFileSync(join(PREBUILT_FILTER_DIR, `${prebuiltKey(source)}.json`), 'utf8');
  } catch {
    return undefined;
  }
  const j = JSON.parse(text) as { source: string; bpf: string; notify: NotifyMode; architectures: string[]; unknownSyscalls: string[] };
  if (j.source !== source) return undefined;
  return { bpf: Buffer.from(j.bpf, 'base64'), notify: j.notify, architectures: j.architectures, unknownSyscalls: j.unknownSyscalls };
}

/** Stores a compiled filter with its source (the build only). */
export function writePrebuilt(source: string, f: PrebuiltFilter): void {
  mkdirSync(PREBUILT_FILTER_DIR, { recursive: true });
  const j = { source, bpf: f.bpf.toString('base64'), notify: f.notify, architectures: f.architectures, unknownSyscalls: f.unknownSyscalls };
  writeFileSync(join(PREBUILT_FILTER_DIR, `${prebuiltKey(source)}.json`), JSON.stringify(j));
}
