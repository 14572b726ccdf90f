// Names of signal and errno numbers, from Node's own tables (the first name wins: 6 is SIGABRT, not SIGIOT).
import { constants } from 'node:os';

const SIGNALS = new Map<number, NodeJS.Signals>();
for (const [name, num] of Object.entries(constants.signals)) if (!SIGNALS.has(num)) SIGNALS.set(num, name as NodeJS.Signals);
const ERRNOS = new Map<number, string>();
for (const [name, num] of Object.entries(constants.errno)) if (!ERRNOS.has(num)) ERRNOS.set(num, name);

/** e.g. 11 -> 'SIGSEGV'; an unknown number -> 'SIG<n>'. */
export const signalName = (n: number): NodeJS.Signals => SIGNALS.get(n) ?? (`SIG${n}` as NodeJS.Signals);

/** e.g. 2 -> 'ENOENT'; an unknown number -> 'errno <n>'. */
export const errnoName = (n: number): string => ERRNOS.get(n) ?? `errno ${n}`;
