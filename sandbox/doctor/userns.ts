// The doctor's user-namespace diagnosis on its own: synchronous, no sandbox run. It is what the supervisor
// tells a caller whose sandbox the kernel refused its namespaces.
import type { SetupFailure } from '../types.js';
import { helperPathForMessages } from '../native/helper-path.js';
import { USERNS_FALLBACK_HINT, usernsFixFor, type NamespaceFacts } from './diagnose.js';
import { probeConfinement, probeEuid, probeHostNamespaces, probeSysctls } from './probe.js';

/** The failure the helper reports when clone refuses the sandbox's namespaces. */
export const cloneFailure = (errnoName?: string): SetupFailure => ({
  stage: 'parent',
  syscall: 'clone',
  ...(errnoName !== undefined ? { errnoName } : {}),
  message: 'creating the namespaces',
  hint: '',
});

/** This host's namespace facts, with `failure` as the caller's sandbox run. */
export function probeNamespaceFacts(failure: SetupFailure): NamespaceFacts {
  return {
    euid: probeEuid(),
    hostNamespaces: probeHostNamespaces(),
    sysctl: probeSysctls(),
    confinement: probeConfinement(),
    helperPath: helperPathForMessages(),
    sandbox: { run: { ok: true, value: { verdict: 'setup-error', exitCode: null, signal: null, setupFailure: failure } } },
  };
}

/**
 * Why the kernel refused the sandbox's namespaces (clone failed with `errnoName`, e.g. 'EPERM' or 'ENOSPC')
 * and the commands that fix it, as `cubicle doctor` would say. Never throws.
 */
export function usernsFix(errnoName?: string): string {
  try {
    return usernsFixFor(probeNamespaceFacts(cloneFailure(errnoName)));
  } catch {
    return USERNS_FALLBACK_HINT;
  }
}
