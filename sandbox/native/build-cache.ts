#!/usr/bin/env node
// Compiles the helper into the directory given (the per-user cache's work directory), for helper-path.ts, which
// runs this in a child process. A failure is printed as one JSON line: { message, compilerMissing }.
import { compileHelper, HelperCompileError } from './compile.js';
import { expectedStamp } from './stamp.js';

const outDir = process.argv[2];
if (!outDir) {
  console.error('usage: build-cache.js OUT_DIR');
  process.exit(2);
}
try {
  compileHelper({ outDir, stamp: expectedStamp() });
} catch (e) {
  if (!(e instanceof HelperCompileError)) throw e;
  console.log(JSON.stringify({ message: e.message, compilerMissing: e.compilerMissing }));
  process.exit(1);
}
