// Public surface of the cubicle package.
export { runSandboxed, spawnSandboxed, type SandboxProcess } from './api/run.js';
export type { SandboxOptions, MountSpec } from './api/options.js';
export type { SandboxResult, SandboxUsage, SetupFailure, Verdict } from './api/result.js';
export { SandboxError, SandboxOptionError, ErrorCode } from './errors.js';
export { parseSize, parseDurationMs } from './units.js';
