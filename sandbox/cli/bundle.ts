#!/usr/bin/env node
// Bundles the compiled CLI (dist/sandbox/cli/cli.js and everything it imports, subcommands included) into one
// CommonJS file, dist/sandbox/cli/cli.bundle.cjs, for `npm run build`: a call then loads one file instead of ~45
// modules, and modules only a subcommand needs (tar for images, the doctor's probes) stay unevaluated, their
// packages unloaded, until that subcommand runs. A new subcommand is picked up by following cli.ts's imports.
// Packages stay outside (required from node_modules at run time). Each module's import.meta.url is rewritten to
// its own compiled file's URL, so the paths it builds from it (policies, prebuilt filters, the helper) are the
// same as unbundled. The list of bundled files goes beside the bundle: main.cts runs the modules unbundled when
// one of them is newer than the bundle (after a `tsc` without this step).
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { expectedStamp } from '../native/stamp.js';

const here = dirname(fileURLToPath(import.meta.url));
export const BUNDLE = `${here}/cli.bundle.cjs`;
export const BUNDLE_INPUTS = `${here}/cli.bundle.json`;

async function bundle(): Promise<void> {
  let esbuild: typeof import('esbuild');
  try {
    esbuild = await import('esbuild');
  } catch (e) {
    // An installed package without its dev dependencies: the CLI runs its modules unbundled.
    rmSync(BUNDLE, { force: true });
    rmSync(BUNDLE_INPUTS, { force: true });
    console.error(`cubicle: the CLI is not bundled (esbuild: ${(e as Error).message}); it runs unbundled, slower to start`);
    return;
  }
  const result = await esbuild.build({
    absWorkingDir: here,
    entryPoints: ['./cli.js'],
    outfile: BUNDLE,
    bundle: true,
    format: 'cjs',
    platform: 'node',
    target: 'node20',
    packages: 'external',
    // The helper stamp, so a call does not hash the protocol's declarations (package.json is among the inputs).
    define: { CUBICLE_BUNDLED_STAMP: JSON.stringify(expectedStamp()) },
    metafile: true,
    logLevel: 'warning',
    // Less to read and hand to V8 on every call (~40% of the bytes); names stay, so stack traces still read.
    minifyWhitespace: true,
    minifySyntax: true,
    // Each module's own URL, as if it had been loaded from its compiled file.
    banner: {
      js:
        '"use strict";\n' +
        "const __cubicleBundleUrl = require('node:url').pathToFileURL(__filename).href;\n" +
        'const __cubicleModuleUrl = (p) => new URL(p, __cubicleBundleUrl).href;',
    },
    plugins: [
      {
        name: 'module-url',
        setup(build) {
          build.onLoad({ filter: /\.js$/ }, (args) => {
            const source = readFileSync(args.path, 'utf8');
            const url = `__cubicleModuleUrl(${JSON.stringify(relative(here, args.path))})`;
            return { contents: source.replaceAll('import.meta.url', url), loader: 'js' };
          });
        },
      },
    ],
  });
  for (const [file, out] of Object.entries(result.metafile.outputs))
    for (const i of out.imports)
      if (i.kind === 'dynamic-import' && i.external)
        // main.cts runs the bundle as a vm.Script, which has no loader for import(): require it instead.
        throw new Error(`${file}: import("${i.path}") of a package cannot run from the bundle; use createRequire (see lazy-require.ts)`);
  const inputs = [...Object.keys(result.metafile.inputs), relative(here, fileURLToPath(new URL('../../../package.json', import.meta.url)))];
  writeFileSync(BUNDLE_INPUTS, JSON.stringify(inputs) + '\n');
}

await bundle();
