/*
 * The per-user runtime directory that holds what lives only while something runs: the registry of named live
 * sandboxes and the networks a user made. It is $XDG_RUNTIME_DIR/cubicle when XDG_RUNTIME_DIR names a directory
 * of this user's own that no one else can enter (as systemd-logind makes it), else /tmp/cubicle-run-UID. Every
 * component cubicle creates is 0700 and owned by the effective uid; one that is not (a squatter's directory, a
 * symlink) is refused, never used.
 */

import { lstatSync } from 'node:fs';
import { isAbsolute, join } from 'node:path';
import { mkdirNoSymlinks } from '../safe-open.js';

export class RuntimeDirError extends Error {
  override name = 'RuntimeDirError';
  readonly code = 'ERR_SANDBOX_RUNTIME_DIR';
  constructor(
    message: string,
    readonly hint: string,
  ) {
    super(`${message}; ${hint}`);
  }
}

function ownPrivateDir(path: string): boolean {
  try {
    const st = lstatSync(path);
    return st.isDirectory() && !st.isSymbolicLink() && st.uid === process.geteuid!() && (st.mode & 0o077) === 0;
  } catch {
    return false;
  }
}

/** Where the runtime directory is (nothing is created). */
export function runtimeDirPath(env: NodeJS.ProcessEnv = process.env): string {
  const xdg = env.XDG_RUNTIME_DIR;
  if (xdg && isAbsolute(xdg) && ownPrivateDir(xdg)) return join(xdg, 'cubicle');
  return `/tmp/cubicle-run-${process.geteuid!()}`;
}

/**
 * The runtime directory, made if missing (0700, this user's), with `sub` (a relative path of plain names) made
 * below it the same way. Throws RuntimeDirError when a component exists but is not this user's private directory.
 */
export function runtimeDir(sub = '', env: NodeJS.ProcessEnv = process.env): string {
  const base = runtimeDirPath(env);
  const path = sub ? join(base, sub) : base;
  const uid = process.geteuid!();
  try {
    mkdirNoSymlinks(path, 0o700, (at, st) => {
      if (at.length < base.length) return;
      if (st.uid !== uid) throw new Error(`${at} is owned by uid ${st.uid}, not by this user (uid ${uid})`);
      if (st.mode & 0o077) throw new Error(`${at} is open to other users (mode ${(st.mode & 0o777).toString(8)}; it must be 0700)`);
    });
  } catch (e) {
    throw new RuntimeDirError(
      `cubicle's runtime directory ${path} cannot be used: ${(e as Error).message}`,
      'remove it (or set XDG_RUNTIME_DIR to a 0700 directory of your own) and try again',
    );
  }
  return path;
}
