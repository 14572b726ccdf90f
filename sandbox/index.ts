// Public surface of the cubicle package.
export { runSandboxed, spawnSandboxed, type SandboxProcess } from './api/run.js';
export { listSandboxes, inspectSandbox, type LiveSandbox, type LiveUsage } from './api/list.js';
export { execInSandbox, type ExecOptions } from './api/exec.js';
export { stopSandbox, waitSandbox } from './api/stop-wait.js';
export type {
  AppliedLimit,
  CapturedOutput,
  HostIds,
  LimitOptions,
  Mechanism,
  MountSpec,
  PolicyObject,
  SandboxOptions,
  SandboxResult,
  SandboxUsage,
  SeccompReport,
  SeccompViolation,
  SetupFailure,
  StreamedResult,
  Verdict,
} from './types.js';
export {
  ErrorCode,
  isCubicleError,
  PolicyError,
  SandboxError,
  SandboxHostError,
  SandboxOptionError,
  type ErrorCodeValue,
} from './errors.js';
export { parseSize, parseDurationMs } from './units.js';
