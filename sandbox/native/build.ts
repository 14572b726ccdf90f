#!/usr/bin/env node
// Builds the C helper from source: generates protocol.h from the TS protocol module, then runs make.
import { spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { renderProtocolHeader } from '../protocol/c-header.js';

const here = dirname(fileURLToPath(import.meta.url)); // dist/sandbox/native
const repo = resolve(here, '..', '..', '..');
const src = join(repo, 'sandbox', 'native');
const out = join(repo, 'dist', 'native');

mkdirSync(out, { recursive: true });
writeFileSync(join(out, 'protocol.h'), renderProtocolHeader());

const cc = process.env.CC ?? 'cc';
const make = spawnSync('make', ['-s', '-C', src, `OUT=${out}`, `CC=${cc}`], { stdio: 'inherit' });
if (make.error) {
  console.error(`cubicle: could not run make (${make.error.message}). Install a C toolchain: apt-get install build-essential`);
  process.exit(1);
}
if (make.status !== 0) {
  console.error('cubicle: building the C helper failed (see the compiler output above).');
  process.exit(make.status ?? 1);
}
