#!/usr/bin/env node
// The cubicle executable (CommonJS: Node starts a CommonJS entry faster than an ES module). It runs the CLI
// bundle that `npm run build` writes (see bundle.ts), or the compiled modules when there is no bundle or one of
// the files it was made from has changed since.
import { readFileSync, statSync } from 'node:fs';

type Main = (argv: string[]) => Promise<number>;

/** The bundle's main, when the bundle exists and no file it was made from is newer than it. */
function bundledMain(): Main | undefined {
  try {
    const built = statSync(`${__dirname}/cli.bundle.cjs`).mtimeMs;
    const inputs = JSON.parse(readFileSync(`${__dirname}/cli.bundle.json`, 'utf8')) as string[];
    if (inputs.some((f) => statSync(`${__dirname}/${f}`).mtimeMs > built)) return undefined;
  } catch {
    return undefined;
  }
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- a build output, not a module tsc knows
  return (require('./cli.bundle.cjs') as { main: Main }).main;
}

async function start(): Promise<number> {
  const main = bundledMain() ?? (await import('./cli.js')).main;
  return main(process.argv.slice(2));
}

start().then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    process.stderr.write(`cubicle: ${(e as Error).stack ?? String(e)}\n`);
    process.exitCode = 125;
  },
);
