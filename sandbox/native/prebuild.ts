#!/usr/bin/env node
// Builds the helpers the package ships (`npm pack` runs it): static binaries for each Linux architecture, so a
// project that installs cubicle with scripts disabled runs without a compiler. Needs each target's compiler
// (Debian/Ubuntu: gcc-x86-64-linux-gnu, gcc-aarch64-linux-gnu with libc6-dev-<arch>-cross).
// Usage: node dist/sandbox/native/prebuild.js [x64] [arm64]   (default: both)
import { spawnSync } from 'node:child_process';
import { mkdirSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { compileHelper, HelperCompileError } from './compile.js';
import { PREBUILT_HELPER } from './helper-path.js';
import { expectedStamp, helperMismatch } from './stamp.js';

/** The compilers tried for each target, native first when the host is that architecture. */
const TARGETS: Record<string, { triplet: string }> = {
  x64: { triplet: 'x86_64-linux-gnu' },
  arm64: { triplet: 'aarch64-linux-gnu' },
};

const prebuildsDir = dirname(dirname(PREBUILT_HELPER));
const wanted = process.argv.slice(2).length ? process.argv.slice(2) : Object.keys(TARGETS);
let failed = false;
for (const arch of wanted) {
  const t = TARGETS[arch];
  if (!t) {
    console.error(`cubicle prebuild: unknown architecture "${arch}" (known: ${Object.keys(TARGETS).join(', ')})`);
    process.exit(2);
  }
  const compilers = [`${t.triplet}-gcc`, ...(arch === process.arch ? [process.env.CC ?? 'cc'] : [])];
  const cc = compilers.find((c) => !spawnSync(c, ['--version'], { stdio: 'ignore' }).error);
  if (!cc) {
    console.error(
      `cubicle prebuild: no compiler for linux-${arch} (tried ${compilers.join(', ')}); install gcc-${t.triplet.replace(/_/g, '-')}`,
    );
    failed = true;
    continue;
  }
  const dir = join(prebuildsDir, `linux-${arch}`);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  try {
    // static-pie: no shared library to find on the target, and still position-independent (ASLR)
    compileHelper({ outDir: dir, stamp: expectedStamp(), cc, extraFlags: ['-static-pie', '-s'], stdio: 'inherit' });
  } catch (e) {
    if (!(e instanceof HelperCompileError)) throw e;
    console.error(`cubicle prebuild: linux-${arch}: ${e.message}`);
    failed = true;
    continue;
  }
  rmSync(join(dir, 'protocol.h'));
  rmSync(join(dir, 'protocol.c'));
  const wrong = helperMismatch(join(dir, 'cubicle-helper'), arch);
  if (wrong) {
    console.error(`cubicle prebuild: linux-${arch}: the binary is unusable: ${wrong}`);
    failed = true;
  } else console.log(`cubicle prebuild: linux-${arch} ready (${cc})`);
}
process.exit(failed ? 1 : 0);
