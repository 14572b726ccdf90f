// Node modules and packages loaded when first used instead of when a module is imported: a CLI call then loads
// only what its run needs (child_process, crypto and tmp cost a few ms each and most runs never use them).
import { createRequire } from 'node:module';

const load = createRequire(import.meta.url);

/** node:child_process, loaded on first use. */
export const childProcess = (): typeof import('node:child_process') => load('node:child_process') as typeof import('node:child_process');

/** node:crypto, loaded on first use. */
export const nodeCrypto = (): typeof import('node:crypto') => load('node:crypto') as typeof import('node:crypto');

/** The tmp-promise package, loaded on first use. */
export const tmpPromise = (): typeof import('tmp-promise') => load('tmp-promise') as typeof import('tmp-promise');

/** The koffi FFI package (throws when it cannot load). Every binding goes through this one loader, so koffi's
 *  package is resolved once per process, not once per module that binds a function. */
export const koffi = (): typeof import('koffi') => load('koffi') as typeof import('koffi');

/** Where a package's entry point is, from where this package is installed. */
export const resolvePackage = (name: string): string => load.resolve(name);
