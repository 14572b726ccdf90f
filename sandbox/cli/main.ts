#!/usr/bin/env node
// The cubicle executable.
import { main } from './cli.js';

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    process.stderr.write(`cubicle: ${(e as Error).stack ?? String(e)}\n`);
    process.exitCode = 125;
  },
);
