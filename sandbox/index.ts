// Public surface of the cubicle package.
export { runSandboxed, spawnSandboxed, type SandboxProcess } from './api/run.js';
export { createPool, type PoolOptions, type PoolStats, type SandboxPool } from './pool/pool.js';
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
export { createServer, type JudgeServer, type ServerOptions } from './serve/server.js';
export { startWorker, type JudgeWorker, type WorkerOptions } from './serve/worker.js';
export type { JudgeResult, JudgeStatus, Runner } from './serve/execute.js';
