#!/usr/bin/env node
// Builds the C helper from source: generates protocol.h and protocol.c from the TS protocol modules, then runs make.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { renderProtocolHeader, renderStatusEmitters } from '../protocol/c-header.js';

const here = dirname(fileURLToPath(import.meta.url)); // dist/sandbox/native
const repo = resolve(here, '..', '..', '..');
const src = join(repo, 'sandbox', 'native');
const out = join(repo, 'dist', 'native');

mkdirSync(out, { recursive: true });
// Rewritten only when changed, so make rebuilds only what depends on a real change.
const generate = (name: string, text: string): void => {
  const path = join(out, name);
  if (!existsSync(path) || readFileSync(path, 'utf8') !== text) writeFileSync(path, text);
};
generate('protocol.h', renderProtocolHeader());
generate('protocol.c', renderStatusEmitters());

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
