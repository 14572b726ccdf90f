// Host-side opens of caller-named files that a sandbox may have been able to tamper with: never follow a final
// symlink, never block on a fifo, and insist on a regular file. (Node opens every fd close-on-exec.)
import { closeSync, constants, fstatSync, openSync } from 'node:fs';

/** Opens a regular file for reading without following a final symlink; throws an Error naming the path. */
export function openRegularForRead(path: string): number {
  return openChecked(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK | constants.O_NOCTTY);
}

/** Creates or truncates a regular file for writing without following a final symlink. */
export function openRegularForWrite(path: string, mode = 0o644): number {
  return openChecked(
    path,
    constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC | constants.O_NOFOLLOW | constants.O_NONBLOCK | constants.O_NOCTTY,
    mode,
  );
}

function openChecked(path: string, flags: number, mode?: number): number {
  let fd: number;
  try {
    fd = openSync(path, flags, mode);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ELOOP') throw new Error(`${path} is a symlink; refusing to follow it (give the real path)`, { cause: e });
    throw new Error(`cannot open ${path}: ${code ?? (e as Error).message}`, { cause: e });
  }
  if (!fstatSync(fd).isFile()) {
    closeSync(fd);
    throw new Error(`${path} is not a regular file`);
  }
  return fd;
}
