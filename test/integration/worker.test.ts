// The queue worker on a real redis-server of its own (loopback, a free port, no persistence): a job round trip, a
// job with bad data, and a worker SIGKILLed mid-job: its sandbox dies with it and BullMQ's stalled-job handling
// gives the job to another worker.
import { strict as assert } from 'node:assert';
import { spawn, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { JudgeResult } from '../../sandbox/index.js';
import { alive, skipBecause, waitFor } from '../helpers/env.js';
import { missingForQueue, startRedis, type LocalRedis } from '../helpers/loopback.js';
import { CLI } from '../helpers/cli.js';

const API = fileURLToPath(new URL('../../sandbox/index.js', import.meta.url));

/** Every live descendant of `root` (by /proc's ppid links). */
function descendants(root: number): number[] {
  const children = new Map<number, number[]>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      children.set(ppid, [...(children.get(ppid) ?? []), Number(name)]);
    } catch {
      /* gone */
    }
  }
  const out: number[] = [];
  const walk = (pid: number): void => {
    for (const c of children.get(pid) ?? []) {
      out.push(c);
      walk(c);
    }
  };
  walk(root);
  return out;
}

const sleepJob = (seconds: number): unknown => ({
  cmd: [
    {
      args: ['/bin/sh', '-c', `sleep ${seconds}; echo done`],
      env: ['PATH=/usr/bin:/bin'],
      files: [{ content: '' }, { name: 'stdout', max: 1024 }, { name: 'stderr', max: 1024 }],
      clockLimit: 120e9,
    },
  ],
});

function startWorkerProcess(port: number, queue: string): Promise<ChildProcess> {
  const child = spawn(process.execPath, [CLI, 'worker', '--redis', `redis://127.0.0.1:${port}`, '--queue', queue, '--concurrency', '1'], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  return new Promise((resolve, reject) => {
    let err = '';
    child.stderr!.on('data', (d: Buffer) => {
      err += d.toString();
      if (err.includes('consuming')) resolve(child);
    });
    child.once('exit', (code) => reject(new Error(`worker exited ${code}: ${err}`)));
  });
}

async function stop(child: ChildProcess | undefined, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill(signal);
  await exited;
}

describe('a process running a sandbox dies: the sandbox dies with it (the worker relies on this)', () => {
  it('SIGKILL of the Node process mid-run leaves no sandbox process behind', async () => {
    const script = `import { spawnSandboxed } from ${JSON.stringify(API)};
      const p = spawnSandboxed(['/bin/sleep', '60'], { reject: false });
      setTimeout(() => console.log('started'), 300);`;
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise<void>((resolve) => child.stdout.on('data', () => resolve()));
    const tree = descendants(child.pid!);
    assert.ok(tree.length >= 2, `helper and sandbox processes are running (${tree.join(' ')})`);
    await stop(child, 'SIGKILL');
    assert.ok(await waitFor(() => tree.every((pid) => !alive(pid)), 10_000), `left behind: ${tree.filter(alive).join(' ')}`);
  });
});

describe('cubicle worker (BullMQ on a real redis-server)', function () {
  let redis: LocalRedis | undefined;
  let port = 0;
  const workers: ChildProcess[] = [];
  type Bull = typeof import('bullmq');
  let bull: Bull;

  before(async function () {
    const missing = missingForQueue();
    if (missing) skipBecause(this, missing);
    bull = await import('bullmq');
    redis = await startRedis();
    port = redis.port;
  });

  after(async () => {
    for (const w of workers) await stop(w, 'SIGKILL');
    await redis?.stop();
  });

  const connection = (): { url: string } => ({ url: `redis://127.0.0.1:${port}` });

  it('a job round trip: the data is a /run body, the return value the /run answer array', async () => {
    const queue = new bull.Queue('judge-rt', { connection: connection() });
    const events = new bull.QueueEvents('judge-rt', { connection: connection() });
    try {
      await events.waitUntilReady();
      workers.push(await startWorkerProcess(port, 'judge-rt'));
      const job = await queue.add('run', {
        cmd: [{ args: ['/bin/sh', '-c', 'read a b; echo $((a + b))'], files: [{ content: '2 3\n' }, { name: 'stdout', max: 100 }] }],
      });
      const result = (await job.waitUntilFinished(events, 60_000)) as JudgeResult[];
      assert.equal(result[0]!.status, 'Accepted', JSON.stringify(result));
      assert.equal(result[0]!.files!.stdout, '5\n');
      const bad = await queue.add('run', { cmd: [{ args: ['/bin/true'], bogus: 1 }] });
      await assert.rejects(bad.waitUntilFinished(events, 60_000), /bad job data: cmd\[0\]\.bogus: unknown field/);
      const failed = await queue.getJob(bad.id!);
      assert.equal(failed!.attemptsMade, 1, 'bad data is not retried');
      // an option the library refuses is bad data too, named by its field (not an Internal Error result)
      const refused = await queue.add('run', { cmd: [{ args: ['/bin/true'], memoryLimit: 1 }] });
      await assert.rejects(refused.waitUntilFinished(events, 60_000), /bad job data: cmd\[0\]\.memoryLimit: must be at least/);
      assert.equal((await queue.getJob(refused.id!))!.attemptsMade, 1, 'a refused option is not retried');
    } finally {
      await stop(workers.pop());
      await events.close();
      await queue.close();
    }
  });

  it('a worker SIGKILLed mid-job leaves no sandbox behind, and the job is retried by another worker', async () => {
    const queue = new bull.Queue('judge-kill', { connection: connection() });
    const events = new bull.QueueEvents('judge-kill', { connection: connection() });
    try {
      await events.waitUntilReady();
      const first = await startWorkerProcess(port, 'judge-kill');
      workers.push(first);
      const job = await queue.add('run', sleepJob(3));
      assert.ok(await waitFor(() => descendants(first.pid!).length >= 2, 20_000), 'the first worker started the sandbox');
      const tree = descendants(first.pid!);
      await stop(first, 'SIGKILL');
      assert.ok(await waitFor(() => tree.every((pid) => !alive(pid)), 10_000), `left behind: ${tree.filter(alive).join(' ')}`);
      // BullMQ's defaults: the dead worker's lock lapses (30 s) and the stalled check moves the job back to wait.
      workers.push(await startWorkerProcess(port, 'judge-kill'));
      const result = (await job.waitUntilFinished(events, 110_000)) as JudgeResult[];
      assert.equal(result[0]!.status, 'Accepted');
      assert.equal(result[0]!.files!.stdout, 'done\n');
    } finally {
      await stop(workers.pop());
      await events.close();
      await queue.close();
    }
  }).timeout(180_000);
});
