// Compiles the C helper from its sources: one compiler call with the project's flags, the generated protocol
// files and the stamp that ties the binary to this package version and protocol. Used by the build of a clone,
// by the prebuilds shipped in the package, and at first use on a host without a prebuild.
import { spawnSync } from 'node:child_process';
import { chmodSync, readdirSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { renderProtocolHeader, renderStatusEmitters } from '../protocol/c-header.js';
import { NATIVE_SOURCE_DIR } from './helper-path.js';
import { STAMP_MARKER, STAMP_SECTION } from './stamp.js';

/** Flags every helper build uses; a static build adds `-static-pie`. */
export const HELPER_CFLAGS = [
  '-O2',
  '-std=gnu11',
  '-Wall',
  '-Wextra',
  '-Werror',
  '-Wno-unused-parameter',
  '-D_FORTIFY_SOURCE=2',
  '-fstack-protector-strong',
  '-Wl,-z,relro,-z,now',
];

/** The generated protocol.c with the stamp appended (a string the loader finds in the binary before running it). */
export function renderProtocolSource(stamp: string): string {
  const literal = JSON.stringify(STAMP_MARKER + stamp + ';');
  return (
    `${renderStatusEmitters()}\n/* Which package version and protocol this binary speaks; checked before it is ever run. */\n` +
    `__attribute__((used, section("${STAMP_SECTION}"))) const char cubicle_helper_stamp[] = ${literal};\n`
  );
}

export interface CompileRequest {
  /** The build directory: the generated protocol files go here, and the binary (written atomically). */
  outDir: string;
  stamp: string;
  cc?: string;
  extraFlags?: readonly string[];
  /** Where the compiler's own output goes: shown ('inherit') or kept for the error ('pipe'). */
  stdio?: 'inherit' | 'pipe';
}

export class HelperCompileError extends Error {
  override name = 'HelperCompileError';
  constructor(
    message: string,
    readonly compilerMissing: boolean,
  ) {
    super(message);
  }
}

/** Writes protocol.h/.c into `outDir` and compiles `outDir/cubicle-helper`; throws HelperCompileError. */
export function compileHelper(req: CompileRequest): string {
  writeFileSync(join(req.outDir, 'protocol.h'), renderProtocolHeader());
  writeFileSync(join(req.outDir, 'protocol.c'), renderProtocolSource(req.stamp));
  const sources = readdirSync(NATIVE_SOURCE_DIR)
    .filter((f) => f.endsWith('.c'))
    .sort()
    .map((f) => join(NATIVE_SOURCE_DIR, f));
  const out = join(req.outDir, 'cubicle-helper');
  const cc = req.cc ?? process.env.CC ?? 'cc';
  const args = [
    ...HELPER_CFLAGS,
    ...(req.extraFlags ?? []),
    `-I${req.outDir}`,
    `-I${NATIVE_SOURCE_DIR}`,
    '-o',
    `${out}.tmp`,
    ...sources,
    join(req.outDir, 'protocol.c'),
  ];
  const r = spawnSync(cc, args, { stdio: ['ignore', req.stdio ?? 'pipe', req.stdio ?? 'pipe'], encoding: 'utf8' });
  if (r.error)
    throw new HelperCompileError(`cannot run the C compiler "${cc}": ${(r.error as NodeJS.ErrnoException).code ?? r.error.message}`, true);
  if (r.status !== 0)
    throw new HelperCompileError(
      `the C compiler "${cc}" failed to build the helper (exit ${r.status ?? r.signal})${r.stderr ? `:\n${r.stderr.slice(-4000)}` : ''}`,
      false,
    );
  chmodSync(`${out}.tmp`, 0o755);
  renameSync(`${out}.tmp`, out);
  return out;
}
