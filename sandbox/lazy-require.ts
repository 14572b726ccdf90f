// Node modules and packages loaded when first used instead of when a module is imported: a CLI call then loads
// only what its run needs (child_process, crypto and tmp cost a few ms each and most runs never use them).
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const load = createRequire(import.meta.url);

/** node:child_process, loaded on first use. */
export const childProcess = (): typeof import('node:child_process') => load('node:child_process') as typeof import('node:child_process');

/** node:crypto, loaded on first use. */
export const nodeCrypto = (): typeof import('node:crypto') => load('node:crypto') as typeof import('node:crypto');

/** node:stream, loaded on first use (with node:net, ~6 ms a CLI call that pipes nothing through itself never pays). */
export const nodeStream = (): typeof import('node:stream') => load('node:stream') as typeof import('node:stream');

/** node:net, loaded on first use. */
export const nodeNet = (): typeof import('node:net') => load('node:net') as typeof import('node:net');

/** The tmp-promise package, loaded on first use. */
export const tmpPromise = (): typeof import('tmp-promise') => load('tmp-promise') as typeof import('tmp-promise');

/** The bullmq package (the queue worker's), loaded on first use; its entry point is CommonJS, as import() would load. */
export const bullmq = (): typeof import('bullmq') => load('bullmq') as typeof import('bullmq');

let koffiModule: typeof import('koffi') | undefined;

/** The koffi FFI package (throws when it cannot load). Every binding goes through this one loader. */
export function koffi(): typeof import('koffi') {
  return (koffiModule ??= koffiBinding() ?? (load('koffi') as typeof import('koffi')));
}

/** The first `node_modules/<name>` from `dir` upwards (where require would look, without NODE_PATH). */
function nodeModule(dir: string, name: string): string | undefined {
  for (let d = dir; ; d = dirname(d)) {
    if (existsSync(join(d, 'node_modules', name, 'package.json'))) return join(d, 'node_modules', name);
    if (dirname(d) === d) return undefined;
  }
}

const versionOf = (pkg: string): unknown => (JSON.parse(readFileSync(join(pkg, 'package.json'), 'utf8')) as { version?: unknown }).version;

/**
 * koffi's native binding, loaded directly: koffi's own entry point finds it by resolving two packages and reading
 * Node's ELF header (~10 ms, most of a CLI call's FFI cost); the binding alone loads in ~2.5 ms and has the same
 * functions. Only for koffi 3's layout (the binding in @koromix/koffi-<platform>-<arch>/<platform|musl>_<arch>/)
 * on x64 and arm64, and only when the binding's version is koffi's; anything else is left to koffi's entry point.
 */
function koffiBinding(): typeof import('koffi') | undefined {
  try {
    if (process.arch !== 'x64' && process.arch !== 'arm64') return undefined;
    const main = nodeModule(fileURLToPath(new URL('../..', import.meta.url)), 'koffi');
    if (main === undefined) return undefined;
    const version = versionOf(main);
    const bin = nodeModule(main, `@koromix/koffi-${process.platform}-${process.arch}`);
    if (bin === undefined || typeof version !== 'string' || !version.startsWith('3.') || versionOf(bin) !== version) return undefined;
    for (const libc of [process.platform, 'musl']) {
      const file = join(bin, `${libc}_${process.arch}`, 'koffi.node');
      if (!existsSync(file)) continue;
      const m = { exports: {} as { version?: unknown } };
      try {
        process.dlopen(m, file);
      } catch {
        continue; // built for the other libc
      }
      return m.exports.version === version ? (m.exports as typeof import('koffi')) : undefined;
    }
  } catch {
    /* koffi's entry point decides */
  }
  return undefined;
}

/** Where a package's entry point is, from where this package is installed. */
export const resolvePackage = (name: string): string => load.resolve(name);
