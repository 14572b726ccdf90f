// Loopback services of the tests and the judge benchmark: a free port, waiting for a listener, and a redis-server
// of its own (no persistence) stopped by its pid. Plain Node (no test framework), so bench/ imports it too.
import { spawn, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { connect, createServer } from 'node:net';

/** A loopback port that was free a moment ago. */
export async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  const port = (srv.address() as { port: number }).port;
  await new Promise((resolve) => srv.close(resolve));
  return port;
}

/** Local addresses listening on TCP port `port` in this (the host's) network namespace. */
export function listeners(port: number): string[] {
  const hex = port.toString(16).toUpperCase().padStart(4, '0');
  const out: string[] = [];
  for (const file of ['/proc/net/tcp', '/proc/net/tcp6'])
    for (const line of readFileSync(file, 'utf8').split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f.length > 3 && f[3] === '0A' && f[1]!.endsWith(`:${hex}`)) out.push(f[1]!.split(':')[0]!);
    }
  return out;
}

/** Whether something accepts connections on the loopback port within `ms`. */
export async function portOpen(port: number, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = connect(port, '127.0.0.1');
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  return false;
}

/** Why this host cannot run BullMQ on a redis-server of its own, if it cannot. */
export function missingForQueue(): string | undefined {
  if (spawnSync('redis-server', ['--version']).error) return 'redis-server is not installed (Debian package redis-server)';
  try {
    createRequire(createRequire(import.meta.url).resolve('bullmq')).resolve('ioredis');
  } catch {
    return "BullMQ's Redis client package 'ioredis' is not installed beside bullmq";
  }
  return undefined;
}

export interface LocalRedis {
  readonly port: number;
  /** redis://127.0.0.1:PORT */
  readonly url: string;
  readonly pid: number;
  /** SIGTERMs the server by its pid and resolves once it has exited. */
  stop(): Promise<void>;
}

/** Starts redis-server on a free loopback port and waits (up to `ms`) until it accepts connections; throws if it does not. */
export async function startRedis(ms = 10_000): Promise<LocalRedis> {
  const port = await freePort();
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], {
    stdio: 'ignore',
  });
  const exited = new Promise<void>((resolve) => child.once('close', () => resolve()));
  child.once('error', () => undefined); // not installed: the port never opens, and that is the error below
  const stop = async (): Promise<void> => {
    if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
    try {
      process.kill(child.pid, 'SIGTERM');
    } catch {
      /* already gone */
    }
    await exited;
  };
  if (!(await portOpen(port, ms))) {
    await stop();
    throw new Error(`redis-server did not listen on 127.0.0.1:${port}`);
  }
  return { port, url: `redis://127.0.0.1:${port}`, pid: child.pid!, stop };
}
