// `cubicle serve` (the go-judge-compatible HTTP service) and `cubicle worker` (a BullMQ consumer): both run until
// killed (SIGINT/SIGTERM close them cleanly).
import { realpathSync, statSync } from 'node:fs';
import { isIP } from 'node:net';
import { isAbsolute } from 'node:path';
import { UsageError } from './args.js';
import { parseFlags } from './usage.js';

export const SERVE_USAGE = `Usage: cubicle serve [--listen HOST:PORT] [--token T] [--pool N] [--parallelism N] [--src-dir DIR]...

A go-judge-compatible judge service: POST /run, GET|POST /file, GET|DELETE /file/ID, GET /version.
  --listen HOST:PORT  where to listen (default 127.0.0.1:5050); an address other than loopback needs --token
  --token T           /run and /file need "Authorization: Bearer T" (401 otherwise); /version never does
                      (the environment variable CUBICLE_SERVE_TOKEN is read when --token is not given)
  --pool N            sandboxes kept ready ahead of runs (reported by /version); default 0
  --parallelism N     commands running at once (default: 2); further requests wait in a bounded line
  --src-dir DIR       copyIn/stdin { src } may read host files under DIR (repeatable); without it src is refused
`;

export const WORKER_USAGE = `Usage: cubicle worker --redis URL --queue NAME [--concurrency N] [--src-dir DIR]...

Consumes jobs from a BullMQ queue: each job's data is a /run body, its return value the /run answer array.
  --redis URL         redis://[USER:PASSWORD@]HOST:PORT[/DB]
  --queue NAME        the queue's name
  --concurrency N     jobs run at once (default 1)
  --src-dir DIR       copyIn/stdin { src } may read host files under DIR (repeatable); without it src is refused
`;

function count(flag: string, v: string | undefined, dflt: number, min: number, max: number): number {
  if (v === undefined) return dflt;
  if (!/^\d+$/.test(v) || Number(v) < min || Number(v) > max)
    throw new UsageError(`${flag} must be a whole number from ${min} to ${max}, got "${v}"`);
  return Number(v);
}

/** HOST:PORT (an IPv6 host in brackets). */
export function parseListen(v: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d+)$/.exec(v);
  const host = m?.[1] ?? m?.[2];
  if (!m || !host || Number(m[3]) > 65535) throw new UsageError(`--listen must be HOST:PORT (e.g. 127.0.0.1:5050), got "${v}"`);
  return { host, port: Number(m[3]) };
}

/** --src-dir values: absolute directories whose path holds no symlink. */
function srcDirs(values: string[] | undefined): string[] {
  return (values ?? []).map((d) => {
    let real: string;
    try {
      real = realpathSync(d);
    } catch {
      throw new UsageError(`--src-dir ${d}: no such directory`);
    }
    if (!isAbsolute(d) || real !== d.replace(/\/+$/, '') || !statSync(real).isDirectory())
      throw new UsageError(`--src-dir ${d}: give an absolute directory path with no symlink in it (here: ${real})`);
    return real;
  });
}

/**
 * The flags of `serve` or `worker`: each of `names` takes a value, --src-dir DIR repeats, and -h/--help prints
 * `usage` (then the result is null: the command is done). Neither takes arguments.
 */
function serviceFlags<K extends string>(
  cmd: 'serve' | 'worker',
  argv: string[],
  names: readonly K[],
  usage: string,
): (Partial<Record<K, string>> & { 'src-dir'?: string[] }) | null {
  const options: Record<string, { type: 'string' | 'boolean'; multiple?: boolean; short?: string }> = {};
  for (const n of names) options[n] = { type: 'string' };
  options['src-dir'] = { type: 'string', multiple: true };
  options.help = { type: 'boolean', short: 'h' };
  const { values, positionals } = parseFlags(argv, options);
  if (values.help) {
    process.stdout.write(usage);
    return null;
  }
  if (positionals.length) throw new UsageError(`${cmd} takes no arguments, got "${positionals[0]}"`);
  return values as Partial<Record<K, string>> & { 'src-dir'?: string[] };
}

const isLoopback = (host: string): boolean => host === 'localhost' || host === '::1' || (isIP(host) === 4 && host.startsWith('127.'));

/** Closes `thing` on SIGINT/SIGTERM and resolves with the exit code. */
function untilSignal(close: () => Promise<void>): Promise<number> {
  return new Promise((resolve) => {
    const stop = (): void => {
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
      close().then(
        () => resolve(0),
        () => resolve(1),
      );
    };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
  });
}

export async function cmdServe(argv: string[]): Promise<number> {
  const values = serviceFlags('serve', argv, ['listen', 'token', 'pool', 'parallelism'], SERVE_USAGE);
  if (!values) return 0;
  const { host, port } = parseListen(values.listen ?? '127.0.0.1:5050');
  const token = values.token ?? process.env.CUBICLE_SERVE_TOKEN;
  if (token !== undefined && token.length < 8) throw new UsageError('--token must be at least 8 characters');
  if (!isLoopback(host) && token === undefined)
    throw new UsageError(`--listen ${host} is reachable from other machines: give --token so only callers holding it may run code`);
  const poolSize = count('--pool', values.pool, 0, 0, 64);
  const parallelism = count('--parallelism', values.parallelism, 2, 1, 1024);
  const { createServer } = await import('../serve/server.js');
  // --pool N: runs start from N sandboxes made ahead (a /box and the default memory limit, as the service's runs
  // have), each used once; a run that does not fit runs cold and /version's pool stats count it as a miss.
  let pool: import('../pool/pool.js').SandboxPool | undefined;
  if (poolSize > 0) {
    const { createPool } = await import('../pool/pool.js');
    pool = createPool({ size: poolSize, options: { files: {}, limits: { memory: 256 << 20 } } });
  }
  const server = createServer({
    ...(token !== undefined ? { token } : {}),
    ...(pool ? { runner: pool } : {}),
    poolSize,
    parallelism,
    srcDirs: srcDirs(values['src-dir']),
  });
  let addr;
  try {
    addr = await server.listen(port, host);
  } catch (e) {
    process.stderr.write(`cubicle: serve: cannot listen on ${host}:${port}: ${(e as Error).message}\n`);
    return 1;
  }
  const shown = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
  process.stderr.write(`cubicle serve: listening on http://${shown}:${addr.port}${token !== undefined ? ' (token required)' : ''}\n`);
  return untilSignal(async () => {
    await server.close();
    await pool?.close();
  });
}

export async function cmdWorker(argv: string[]): Promise<number> {
  const values = serviceFlags('worker', argv, ['redis', 'queue', 'concurrency'], WORKER_USAGE);
  if (!values) return 0;
  if (values.redis === undefined) throw new UsageError('--redis URL is required (e.g. redis://127.0.0.1:6379)');
  if (values.queue === undefined || values.queue === '') throw new UsageError('--queue NAME is required');
  const concurrency = count('--concurrency', values.concurrency, 1, 1, 1024);
  const { startWorker, checkRedisUrl, WorkerSetupError } = await import('../serve/worker.js');
  const { RequestError } = await import('../serve/request.js');
  try {
    checkRedisUrl(values.redis);
  } catch (e) {
    if (e instanceof RequestError) throw new UsageError(e.message);
    throw e;
  }
  const dirs = srcDirs(values['src-dir']);
  let worker;
  try {
    worker = await startWorker({ redis: values.redis, queue: values.queue, concurrency, srcDirs: dirs });
    await worker.ready;
  } catch (e) {
    if (!(e instanceof WorkerSetupError) && !/redis|ECONNREFUSED|connect/i.test((e as Error).message)) throw e;
    process.stderr.write(`cubicle: worker: ${(e as Error).message}\n`);
    return 1;
  }
  process.stderr.write(`cubicle worker: consuming queue "${values.queue}" (concurrency ${concurrency})\n`);
  return untilSignal(() => worker.close());
}
