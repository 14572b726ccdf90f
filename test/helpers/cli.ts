// The cubicle executable as the tests run it: the package's bin (package.json "bin"), which runs the CLI bundle
// (or the compiled modules when the bundle is missing or stale). Every test that runs the CLI uses this path.
import { fileURLToPath } from 'node:url';

export const CLI = fileURLToPath(new URL('../../sandbox/cli/main.cjs', import.meta.url));
