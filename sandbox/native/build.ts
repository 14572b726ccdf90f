#!/usr/bin/env node
// Builds the C helper of a clone into dist/native (`npm run build`), stamped for this package version and
// protocol; skipped when nothing it is made from changed since the last build.
import { createHash } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { compileHelper, HELPER_CFLAGS, HelperCompileError, renderProtocolSource } from './compile.js';
import { BUILT_HELPER, NATIVE_SOURCE_DIR } from './helper-path.js';
import { expectedStamp, helperMismatch } from './stamp.js';
import { renderProtocolHeader } from '../protocol/c-header.js';

const out = dirname(BUILT_HELPER);
mkdirSync(out, { recursive: true });
const cc = process.env.CC ?? 'cc';
const inputs = createHash('sha256').update(
  JSON.stringify([cc, HELPER_CFLAGS, renderProtocolHeader(), renderProtocolSource(expectedStamp())]),
);
for (const f of readdirSync(NATIVE_SOURCE_DIR).sort())
  if (/\.[ch]$/.test(f)) inputs.update(f).update(readFileSync(join(NATIVE_SOURCE_DIR, f)));
const digest = inputs.digest('hex');
const digestFile = join(out, 'inputs.sha256');
let previous = '';
try {
  previous = readFileSync(digestFile, 'utf8');
} catch {
  /* first build */
}
if (previous !== digest || helperMismatch(BUILT_HELPER) !== null) {
  try {
    compileHelper({ outDir: out, stamp: expectedStamp(), cc, extraFlags: ['-g'], stdio: 'inherit' });
  } catch (e) {
    if (!(e instanceof HelperCompileError)) throw e;
    const fix = e.compilerMissing
      ? '. Install a C toolchain (Debian/Ubuntu: apt-get install gcc libc6-dev)'
      : ' (see the compiler output above)';
    console.error(`cubicle: ${e.message}${fix}`);
    process.exit(1);
  }
  writeFileSync(digestFile, digest);
}
