// Locates the built C helper next to the compiled library.
import { accessSync, constants } from 'node:fs';
import { fileURLToPath } from 'node:url';

/** Absolute path of the helper binary (dist/native/cubicle-helper). */
export const HELPER_PATH = fileURLToPath(new URL('../../native/cubicle-helper', import.meta.url));

let checked = false;

/** Throws a plain Error naming the fix when the helper was never built. */
export function assertHelperBuilt(): void {
  if (checked) return;
  try {
    accessSync(HELPER_PATH, constants.X_OK);
  } catch {
    throw new Error(
      `the sandbox helper is not built (${HELPER_PATH} is missing or not executable); ` +
        'run npm install, or npm run build, in the cubicle package',
    );
  }
  checked = true;
}
