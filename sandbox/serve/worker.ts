// The queue worker: consumes go-judge /run bodies from a BullMQ queue on Redis and returns the /run answer array
// as each job's return value. BullMQ's default lock and stalled-job settings apply: a worker that dies mid-job
// stops renewing its lock, and another worker takes the job again. The sandbox of a dead worker dies with it (its
// helper sees EOF on the control fd).
import { createRequire } from 'node:module';
import { runSandboxed } from '../api/run.js';
import { bullmq } from '../lazy-require.js';
import type { SandboxOptions } from '../types.js';
import { executeRequest, type ExecuteContext, type JudgeResult, type Runner } from './execute.js';
import { parseRunRequest, RequestError, type RequestBounds } from './request.js';

export interface WorkerOptions {
  /** redis://[user:password@]host:port[/db] */
  redis: string;
  queue: string;
  /** Jobs run at once by this worker. */
  concurrency: number;
  runner?: Runner;
  sandbox?: SandboxOptions;
  /** Host directories under which `src` may name files (see ServerOptions.srcDirs). */
  srcDirs?: readonly string[];
  defaultClockMs?: number;
  maxClockMs?: number;
  defaultMemoryBytes?: number;
  maxCmds?: number;
  maxOutputBytes?: number;
}

export interface JudgeWorker {
  /** Resolves once connected to Redis and taking jobs. */
  readonly ready: Promise<void>;
  /** Stops taking jobs, waits for the running ones, and disconnects. */
  close(): Promise<void>;
}

/** Thrown when the worker cannot start: Redis unreachable, or BullMQ's Redis client package missing. */
export class WorkerSetupError extends Error {
  override name = 'WorkerSetupError';
}

/** BullMQ needs a Redis client package (ioredis) beside it; say so plainly when it is missing. */
function checkRedisClient(): void {
  const require = createRequire(import.meta.url);
  const entry = require.resolve('bullmq');
  try {
    createRequire(entry).resolve('ioredis');
  } catch {
    throw new WorkerSetupError("BullMQ's Redis client package 'ioredis' is not installed beside it; install it (npm install ioredis)");
  }
}

/** Where a redis URL points, checked before anything connects. */
export function checkRedisUrl(url: string): URL {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new RequestError('--redis', `${JSON.stringify(url)} is not a URL; give redis://HOST:PORT`);
  }
  if (u.protocol !== 'redis:' && u.protocol !== 'rediss:')
    throw new RequestError('--redis', `${JSON.stringify(url)} must start with redis:// or rediss://`);
  return u;
}

/** Runs one job's data: a bad body fails the job for good (retrying it cannot help), naming the field. */
export async function processJob(
  data: unknown,
  ctx: ExecuteContext,
  bounds: { maxCmds: number; maxOutput: number },
): Promise<JudgeResult[]> {
  try {
    return await executeRequest(parseRunRequest(data, bounds), ctx);
  } catch (e) {
    if (!(e instanceof RequestError)) throw e;
    const { UnrecoverableError } = bullmq();
    throw new UnrecoverableError(`bad job data: ${e.message}`);
  }
}

/** Starts a worker on the queue; jobs' data are /run bodies, their return values the answer arrays. */
export function startWorker(options: WorkerOptions): Promise<JudgeWorker> {
  try {
    return Promise.resolve(newWorker(options));
  } catch (e) {
    return Promise.reject(e as Error); // a bad URL or a missing package rejects, as before
  }
}

function newWorker(options: WorkerOptions): JudgeWorker {
  checkRedisUrl(options.redis);
  checkRedisClient();
  const { Worker } = bullmq();
  const runner: Runner = options.runner ?? { run: (cmd, o) => runSandboxed(cmd, o) };
  const stopping = new AbortController();
  const ctx: ExecuteContext = {
    runner,
    store: undefined, // no cached files: a job's files travel in its data, and its results in its return value
    base: { ...options.sandbox, cancelSignal: stopping.signal },
    defaultClockMs: options.defaultClockMs ?? 10_000,
    maxClockMs: options.maxClockMs ?? 60_000,
    defaultMemory: options.defaultMemoryBytes ?? 256 << 20,
  };
  const bounds: RequestBounds = {
    maxCmds: options.maxCmds ?? 16,
    maxOutput: options.maxOutputBytes ?? 64 << 20,
    srcDirs: options.srcDirs ?? [],
  };
  const worker = new Worker(options.queue, (job) => processJob(job.data, ctx, bounds), {
    connection: { url: options.redis, maxRetriesPerRequest: null },
    concurrency: options.concurrency,
  });
  worker.on('error', (e) => process.stderr.write(`cubicle worker: ${e.message}\n`));
  return {
    ready: worker.waitUntilReady().then(() => undefined),
    close: async () => {
      await worker.close();
      stopping.abort();
    },
  };
}
