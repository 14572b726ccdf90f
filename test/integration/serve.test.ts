// The judge service over real HTTP on a loopback port, driven with go-judge's documented request shapes: a C++
// compile whose binary is cached (copyOutCached), runs that reference it by fileId (one per status), an
// interactive pair joined by pipeMapping, the token, malformed bodies, and /file.
import { strict as assert } from 'node:assert';
import { spawn, spawnSync } from 'node:child_process';
import { readdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import { createPool, createServer, type JudgeResult, type JudgeServer, type ServerOptions } from '../../sandbox/index.js';
import { alive, identities, skipBecause, waitFor, worldReadableTmp } from '../helpers/env.js';
import { freePort } from '../helpers/loopback.js';
import { CLI } from '../helpers/cli.js';

const PROGRAM = `#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <csignal>
#include <unistd.h>
#include <sys/syscall.h>
int main(int argc, char **argv) {
  const char *mode = argc > 1 ? argv[1] : "sum";
  if (!strcmp(mode, "sum")) { long a, b; if (scanf("%ld %ld", &a, &b) != 2) return 9; printf("%ld\\n", a + b); return 0; }
  if (!strcmp(mode, "spin")) { volatile unsigned long n = 0; for (;;) n++; }
  if (!strcmp(mode, "hog"))
    for (int i = 0; i < 64; i++) { char *p = (char *)malloc(16 << 20); if (!p) return 7; memset(p, 1, 16 << 20); }
  if (!strcmp(mode, "flood")) { for (;;) fputs("flood flood flood flood flood flood flood flood\\n", stdout); }
  if (!strcmp(mode, "exit3")) return 3;
  if (!strcmp(mode, "segv")) { raise(SIGSEGV); return 0; }
  if (!strcmp(mode, "kexec")) { syscall(SYS_kexec_load, 0, 0, 0, 0); return 0; }
  if (!strcmp(mode, "write")) { FILE *f = fopen("out.txt", "w"); fputs("written", f); fclose(f); return 0; }
  if (!strcmp(mode, "guess")) {
    int lo = 1, hi = 1000; char reply[8];
    while (lo <= hi) {
      int mid = (lo + hi) / 2; printf("%d\\n", mid); fflush(stdout);
      if (scanf("%7s", reply) != 1) return 5;
      if (reply[0] == '=') return 0;
      if (reply[0] == '<') lo = mid + 1; else hi = mid - 1;
    }
    return 4;
  }
  return 2;
}
`;

// Reads guesses, answers < > =, says on stderr how many it took.
const INTERACTOR = `secret=$1; n=0
while read g; do
  n=$((n + 1))
  if [ "$g" -lt "$secret" ]; then echo '<'; elif [ "$g" -gt "$secret" ]; then echo '>'; else echo '='; echo "OK $n" >&2; exit 0; fi
done
echo "no answer after $n guesses" >&2; exit 1
`;

const ENV = ['PATH=/usr/bin:/bin'];
const collectors = (): unknown[] => [{ content: '' }, { name: 'stdout', max: 10240 }, { name: 'stderr', max: 10240 }];

class Client {
  constructor(
    readonly base: string,
    readonly token?: string,
  ) {}
  headers(extra: Record<string, string> = {}): Record<string, string> {
    return { ...extra, ...(this.token ? { authorization: `Bearer ${this.token}` } : {}) };
  }
  async post(body: unknown, raw?: string): Promise<{ status: number; json: unknown }> {
    const r = await fetch(`${this.base}/run`, {
      method: 'POST',
      headers: this.headers({ 'content-type': 'application/json' }),
      body: raw ?? JSON.stringify(body),
    });
    return { status: r.status, json: await r.json() };
  }
  async run(body: unknown): Promise<JudgeResult[]> {
    const r = await this.post(body);
    assert.equal(r.status, 200, JSON.stringify(r.json));
    return r.json as JudgeResult[];
  }
}

for (const id of identities()) {
  describe(`cubicle serve (go-judge API), ${id.label}`, function () {
    let server: JudgeServer;
    let client: Client;
    let binary: string;
    const start = async (o: ServerOptions = {}): Promise<{ server: JudgeServer; client: Client }> => {
      const s = createServer({ sandbox: id.spawnAs, ...o });
      const a = await s.listen(0, '127.0.0.1');
      return { server: s, client: new Client(`http://127.0.0.1:${a.port}`, o.token) };
    };
    const runBinary = async (args: string[], extra: Record<string, unknown> = {}, stdin = ''): Promise<JudgeResult> => {
      const [r] = await client.run({
        cmd: [
          {
            args: ['a', ...args],
            env: ENV,
            files: [{ content: stdin }, { name: 'stdout', max: 10240 }, { name: 'stderr', max: 10240 }],
            cpuLimit: 2e9,
            clockLimit: 10e9,
            memoryLimit: 256 << 20,
            procLimit: 50,
            strictMemoryLimit: false,
            copyIn: { a: { fileId: binary } },
            ...extra,
          },
        ],
      });
      return r!;
    };

    before(async function () {
      if (spawnSync('g++', ['--version']).status !== 0) skipBecause(this, 'g++ is not installed on this host');
      ({ server, client } = await start());
      // go-judge's documented compile request: collectors for stdout/stderr, the binary kept in the file store.
      const [r] = await client.run({
        cmd: [
          {
            args: ['/usr/bin/g++', 'a.cc', '-O1', '-o', 'a'],
            env: ENV,
            files: collectors(),
            cpuLimit: 20e9,
            clockLimit: 60e9,
            memoryLimit: 512 << 20,
            procLimit: 50,
            copyIn: { 'a.cc': { content: PROGRAM } },
            copyOut: ['stdout', 'stderr'],
            copyOutCached: ['a'],
          },
        ],
      });
      assert.equal(r!.status, 'Accepted', JSON.stringify(r));
      assert.equal(typeof r!.fileIds?.a, 'string');
      assert.ok(r!.fileIds!.a!.length >= 26, 'ids are long enough not to be guessed');
      binary = r!.fileIds!.a!;
      assert.ok(r!.time > 0 && r!.runTime > 0 && r!.memory > 0, 'usage in ns and bytes');
    });
    after(async () => server?.close());

    it('Accepted: args ["a"] runs the cached binary from the work directory with stdin content', async () => {
      const r = await runBinary(['sum'], {}, '20 22');
      assert.equal(r.status, 'Accepted', JSON.stringify(r));
      assert.equal(r.exitStatus, 0);
      assert.deepEqual(r.files, { stdout: '42\n', stderr: '' });
    });

    it('Time Limit Exceeded: a spinning program under cpuLimit', async () => {
      const r = await runBinary(['spin'], { cpuLimit: 300e6, clockLimit: 5e9 });
      assert.equal(r.status, 'Time Limit Exceeded', JSON.stringify(r));
      assert.ok(r.time >= 250e6, `time ${r.time} ns`);
    });

    it('Memory Limit Exceeded: 1 GiB touched under a 64 MiB memoryLimit', async () => {
      const r = await runBinary(['hog'], { memoryLimit: 64 << 20 });
      assert.equal(r.status, 'Memory Limit Exceeded', JSON.stringify(r));
    });

    it('Output Limit Exceeded: stdout past its collector max', async () => {
      const r = await runBinary(['flood'], { files: [{ content: '' }, { name: 'stdout', max: 1000 }, { name: 'stderr', max: 10240 }] });
      assert.equal(r.status, 'Output Limit Exceeded', JSON.stringify(r).slice(0, 500));
      assert.ok(r.files!.stdout!.length <= 1000);
    });

    it('Nonzero Exit Status: exitStatus is the exit code', async () => {
      const r = await runBinary(['exit3']);
      assert.equal(r.status, 'Nonzero Exit Status');
      assert.equal(r.exitStatus, 3);
    });

    it('Signalled: exitStatus is the signal number', async () => {
      const r = await runBinary(['segv']);
      assert.equal(r.status, 'Signalled');
      assert.equal(r.exitStatus, 11);
    });

    it('File Error: a missing copyOut file is CopyOutOpen; with a trailing ? it is optional', async () => {
      const missing = await runBinary(['sum'], { copyOut: ['stdout', 'out.txt'] }, '1 2');
      assert.equal(missing.status, 'File Error', JSON.stringify(missing));
      assert.deepEqual(
        missing.fileError!.map(({ name, type }) => ({ name, type })),
        [{ name: 'out.txt', type: 'CopyOutOpen' }],
      );
      const optional = await runBinary(['sum'], { copyOut: ['stdout', 'out.txt?'] }, '1 2');
      assert.equal(optional.status, 'Accepted', JSON.stringify(optional));
      assert.equal(optional.fileError, undefined);
      const written = await runBinary(['write'], { copyOut: ['out.txt?'] });
      assert.equal(written.files!['out.txt'], 'written');
    });

    it('File Error: an unknown fileId in copyIn is CopyInOpenFile and nothing runs', async () => {
      const r = await runBinary(['sum'], { copyIn: { a: { fileId: 'NOSUCHFILEIDNOSUCHFILEIDNOSUCHFI' } } });
      assert.equal(r.status, 'File Error');
      assert.equal(r.fileError![0]!.type, 'CopyInOpenFile');
    });

    it('Dangerous Syscall: a call the judge policy kills for', async () => {
      const t = await start({ sandbox: { ...id.spawnAs, policy: 'judge' } });
      try {
        const form = new FormData();
        form.append('file', new Blob([Buffer.from(await (await fetch(`${client.base}/file/${binary}`)).arrayBuffer())]), 'a');
        const fileId = (await (await fetch(`${t.client.base}/file`, { method: 'POST', body: form })).json()) as string;
        const [r] = await t.client.run({
          cmd: [{ args: ['a', 'kexec'], env: ENV, files: collectors(), copyIn: { a: { fileId } } }],
        });
        assert.equal(r!.status, 'Dangerous Syscall', JSON.stringify(r));
        assert.match(r!.error!, /kexec_load|unknown/);
      } finally {
        await t.server.close();
      }
    });

    it('Internal Error: a program that does not exist says why', async () => {
      const [r] = await client.run({ cmd: [{ args: ['/no/such/program'], env: ENV, files: collectors() }] });
      assert.equal(r!.status, 'Internal Error');
      assert.match(r!.error!, /no\/such\/program/);
    });

    it('an interactive pair through pipeMapping: solution and interactor in two sandboxes, stdio crossed', async () => {
      const rs = await client.run({
        cmd: [
          {
            args: ['a', 'guess'],
            env: ENV,
            files: [null, null, { name: 'stderr', max: 10240 }],
            cpuLimit: 2e9,
            clockLimit: 10e9,
            memoryLimit: 64 << 20,
            copyIn: { a: { fileId: binary } },
          },
          {
            args: ['/bin/sh', 'interactor.sh', '437'],
            env: ENV,
            files: [null, null, { name: 'stderr', max: 10240 }],
            cpuLimit: 2e9,
            clockLimit: 10e9,
            memoryLimit: 64 << 20,
            copyIn: { 'interactor.sh': { content: INTERACTOR } },
          },
        ],
        pipeMapping: [
          { in: { index: 0, fd: 1 }, out: { index: 1, fd: 0 } },
          { in: { index: 1, fd: 1 }, out: { index: 0, fd: 0 }, proxy: true, name: 'answers', max: 4096 },
        ],
      });
      assert.equal(rs[0]!.status, 'Accepted', JSON.stringify(rs));
      assert.equal(rs[1]!.status, 'Accepted', JSON.stringify(rs));
      assert.match(rs[1]!.files!.stderr!, /^OK \d+\n$/);
      assert.match(rs[0]!.files!.answers!, /=\n$/, 'the proxied pipe is returned by name');
    });

    it('a piped pair where each waits for the other (deadlock) ends at the clock limit, not in a hang', async () => {
      const rs = await client.run({
        cmd: [0, 1].map(() => ({ args: ['/bin/sh', '-c', 'read x; echo $x'], env: ENV, files: [null, null], clockLimit: 1e9 })),
        pipeMapping: [
          { in: { index: 0, fd: 1 }, out: { index: 1, fd: 0 } },
          { in: { index: 1, fd: 1 }, out: { index: 0, fd: 0 } },
        ],
      });
      // The first to reach its limit is killed; its peer then reads EOF and may end on its own first.
      const statuses = rs.map((r) => r.status);
      assert.ok(statuses.includes('Time Limit Exceeded'), statuses.join());
      assert.ok(
        statuses.every((s) => s === 'Time Limit Exceeded' || s === 'Accepted'),
        statuses.join(),
      );
    });

    it('a piped stream far larger than any buffer flows through with backpressure', async () => {
      const rs = await client.run({
        cmd: [
          { args: ['/bin/sh', '-c', 'head -c 20000000 /dev/zero'], env: ENV, files: [{ content: '' }, null], clockLimit: 20e9 },
          { args: ['/bin/sh', '-c', 'wc -c'], env: ENV, files: [null, { name: 'stdout', max: 100 }], clockLimit: 20e9 },
        ],
        pipeMapping: [{ in: { index: 0, fd: 1 }, out: { index: 1, fd: 0 } }],
      });
      assert.deepEqual(
        rs.map((r) => r.status),
        ['Accepted', 'Accepted'],
      );
      assert.equal(rs[1]!.files!.stdout!.trim(), '20000000');
    });

    it('in a piped group, a collector past its max stops that command with Output Limit Exceeded', async () => {
      const rs = await client.run({
        cmd: [
          {
            args: ['/bin/sh', '-c', 'echo hi; yes >&2'],
            env: ENV,
            files: [{ content: '' }, null, { name: 'stderr', max: 100 }],
            clockLimit: 20e9,
          },
          { args: ['/bin/cat'], env: ENV, files: [null, { name: 'stdout', max: 100 }], clockLimit: 20e9 },
        ],
        pipeMapping: [{ in: { index: 0, fd: 1 }, out: { index: 1, fd: 0 } }],
      });
      assert.equal(rs[0]!.status, 'Output Limit Exceeded', JSON.stringify(rs).slice(0, 400));
      assert.equal(rs[0]!.files!.stderr!.length, 100);
      assert.equal(rs[1]!.files!.stdout, 'hi\n');
    });

    it('malformed requests get 400 naming the field', async () => {
      const cases: [unknown, RegExp][] = [
        [undefined, /^body: not valid JSON/],
        [{}, /^cmd: /],
        [{ cmd: [{ args: 'a' }] }, /^cmd\[0\]\.args: /],
        [{ cmd: [{ args: ['a'], bogus: 1 }] }, /^cmd\[0\]\.bogus: unknown field/],
        [{ cmd: [{ args: ['a'] }], extra: true }, /^extra: unknown field/],
        [{ cmd: [{ args: ['a'], tty: true }] }, /^cmd\[0\]\.tty: refused/],
        [{ cmd: [{ args: ['a'], cpuLimit: -1 }] }, /^cmd\[0\]\.cpuLimit: /],
        [{ cmd: [{ args: ['a'], env: ['NOEQUALS'] }] }, /^cmd\[0\]\.env\[0\]: /],
        [{ cmd: [{ args: ['a'], copyIn: { 'd/x': { content: '' } } }] }, /^cmd\[0\]\.copyIn\.d\/x: /],
        [{ cmd: [{ args: ['a'], copyIn: { x: { src: '/etc/passwd' } } }] }, /^cmd\[0\]\.copyIn\.x\.src: refused/],
        [{ cmd: [{ args: ['a'], files: [{ src: '/etc/passwd' }] }] }, /^cmd\[0\]\.files\[0\]\.src: refused/],
        [{ cmd: [{ args: ['a'], files: [{ content: '' }, { name: 'stdout' }] }] }, /^cmd\[0\]\.files\[1\]\.max: /],
        [{ cmd: [{ args: ['a'], files: [null] }] }, /^cmd\[0\]\.files\[0\]: is null but no pipeMapping/],
        [
          { cmd: [{ args: ['a'] }], pipeMapping: [{ in: { index: 3, fd: 1 }, out: { index: 0, fd: 0 } }] },
          /^pipeMapping\[0\]\.in\.index: /,
        ],
      ];
      for (const [body, want] of cases) {
        const r = await client.post(body, body === undefined ? '{"cmd": [' : undefined);
        assert.equal(r.status, 400, `${JSON.stringify(body)} -> ${r.status} ${JSON.stringify(r.json)}`);
        assert.match(String(r.json), want);
      }
    });

    it('/file: upload (multipart field "file") answers the id as a JSON string; list, download, use, delete', async () => {
      const form = new FormData();
      form.append('file', new Blob(['5 6']), 'input.txt');
      const up = await fetch(`${client.base}/file`, { method: 'POST', body: form });
      assert.equal(up.status, 200);
      const fileId = (await up.json()) as string;
      assert.equal(typeof fileId, 'string');
      const list = (await (await fetch(`${client.base}/file`)).json()) as Record<string, string>;
      assert.equal(list[fileId], 'input.txt');
      assert.equal(list[binary], 'a');
      const got = await fetch(`${client.base}/file/${fileId}`);
      assert.equal(await got.text(), '5 6');
      const [r] = await client.run({
        cmd: [{ args: ['a'], env: ENV, files: [{ fileId }, { name: 'stdout', max: 100 }], copyIn: { a: { fileId: binary } } }],
      });
      assert.equal(r!.files!.stdout, '11\n');
      assert.equal((await fetch(`${client.base}/file/${fileId}`, { method: 'DELETE' })).status, 200);
      assert.equal((await fetch(`${client.base}/file/${fileId}`)).status, 404);
      assert.equal((await fetch(`${client.base}/file/${fileId}`, { method: 'DELETE' })).status, 404);
      const wrongField = new FormData();
      wrongField.append('upload', new Blob(['x']), 'x');
      const bad = await fetch(`${client.base}/file`, { method: 'POST', body: wrongField });
      assert.equal(bad.status, 400);
      assert.match(String(await bad.json()), /"file"/);
    });

    it('a token guards /run and /file (401 without it or with a wrong one); /version answers anyone and names the pool', async () => {
      const t = await start({ token: 'sesame-sesame', poolSize: 3 });
      try {
        const base = t.client.base;
        const body = JSON.stringify({ cmd: [{ args: ['/bin/true'] }] });
        const json = { 'content-type': 'application/json' };
        assert.equal((await fetch(`${base}/run`, { method: 'POST', headers: json, body })).status, 401);
        assert.equal(
          (await fetch(`${base}/run`, { method: 'POST', headers: { ...json, authorization: 'Bearer nope' }, body })).status,
          401,
        );
        assert.equal((await fetch(`${base}/file`)).status, 401);
        const ok = await t.client.run({ cmd: [{ args: ['/bin/true'] }] });
        assert.equal(ok[0]!.status, 'Accepted');
        const v = await fetch(`${base}/version`);
        assert.equal(v.status, 200);
        const version = (await v.json()) as Record<string, unknown>;
        assert.equal(version.pool, 3);
        assert.equal(version.copyOutOptional, true);
      } finally {
        await t.server.close();
      }
    });

    it('src reads host files only under --src-dir, by a plain path, never through a symlink', async () => {
      const t = worldReadableTmp();
      const s = await start({ srcDirs: [t.dir] });
      try {
        writeFileSync(join(t.dir, 'in.txt'), '4 5');
        symlinkSync('/etc/passwd', join(t.dir, 'link'));
        const body = (src: string): unknown => ({
          cmd: [{ args: ['a'], env: ENV, files: [{ src }, { name: 'stdout', max: 100 }], copyIn: { a: { fileId: binary } } }],
        });
        // The binary is in the other server's store: this one gets it by src too.
        const binFile = join(t.dir, 'a');
        writeFileSync(binFile, Buffer.from(await (await fetch(`${client.base}/file/${binary}`)).arrayBuffer()));
        const withSrc = (src: string): unknown => {
          const b = body(src) as { cmd: { copyIn: unknown }[] };
          b.cmd[0]!.copyIn = { a: { src: binFile } };
          return b;
        };
        const ok = await s.client.run(withSrc(join(t.dir, 'in.txt')));
        assert.equal(ok[0]!.files!.stdout, '9\n', JSON.stringify(ok));
        const viaLink = await s.client.run(withSrc(join(t.dir, 'link')));
        assert.equal(viaLink[0]!.status, 'File Error');
        assert.equal(viaLink[0]!.fileError![0]!.type, 'CopyInOpenFile');
        for (const src of ['/etc/passwd', `${t.dir}/../etc/passwd`, 'in.txt']) {
          const r = await s.client.post(withSrc(src));
          assert.equal(r.status, 400, src);
          assert.match(String(r.json), /^cmd\[0\]\.files\[0\]\.src: /);
        }
      } finally {
        await s.server.close();
        t.cleanup();
      }
    });

    it('request size is bounded: a body past maxBodyBytes gets 413 before it is parsed', async () => {
      const t = await start({ maxBodyBytes: 1024 });
      try {
        const r = await t.client.post({ cmd: [{ args: ['/bin/true'], copyIn: { big: { content: 'x'.repeat(4096) } } }] });
        assert.equal(r.status, 413);
      } finally {
        await t.server.close();
      }
    });
  });

  describe(`cubicle serve: options the library refuses, and clients that leave, ${id.label}`, function () {
    it('a command option the library refuses (memoryLimit 1, stackLimit 1, procLimit 10^12) is a 400 naming the field', async () => {
      const server = createServer({ sandbox: id.spawnAs });
      const client = new Client(`http://127.0.0.1:${(await server.listen(0, '127.0.0.1')).port}`);
      try {
        const cases: [Record<string, unknown>, RegExp][] = [
          [{ memoryLimit: 1 }, /^cmd\[0\]\.memoryLimit: must be at least \d+ bytes/],
          [{ stackLimit: 1 }, /^cmd\[0\]\.stackLimit: must be at least \d+ bytes/],
          [{ procLimit: 1e12 }, /^cmd\[0\]\.procLimit: must be /],
        ];
        for (const [extra, want] of cases) {
          const r = await client.post({ cmd: [{ args: ['/bin/true'], ...extra }] });
          assert.equal(r.status, 400, `${JSON.stringify(extra)} -> ${r.status} ${JSON.stringify(r.json)}`);
          assert.match(String(r.json), want);
        }
        // the second command's field is named, in a piped pair too
        const second = await client.post({ cmd: [{ args: ['/bin/true'] }, { args: ['/bin/true'], memoryLimit: 1 }] });
        assert.equal(second.status, 400);
        assert.match(String(second.json), /^cmd\[1\]\.memoryLimit: /);
        const piped = await client.post({
          cmd: [
            { args: ['/bin/echo', 'x'], files: [{ content: '' }, null] },
            { args: ['/bin/cat'], stackLimit: 1, files: [null] },
          ],
          pipeMapping: [{ in: { index: 0, fd: 1 }, out: { index: 1, fd: 0 } }],
        });
        assert.equal(piped.status, 400, JSON.stringify(piped.json));
        assert.match(String(piped.json), /^cmd\[1\]\.stackLimit: /);
        // the service still runs a good request afterwards
        assert.equal((await client.run({ cmd: [{ args: ['/bin/true'] }] }))[0]!.status, 'Accepted');
      } finally {
        await server.close();
      }
    });

    for (const poolSize of [0, 1]) {
      it(`a client that disconnects mid-run cancels it: sleep 30 under a 60 s clockLimit ends in seconds (pool ${poolSize})`, async () => {
        const pool = poolSize
          ? createPool({ size: poolSize, options: { ...id.spawnAs, files: {}, limits: { memory: 256 << 20 } } })
          : undefined;
        const server = createServer({ sandbox: id.spawnAs, ...(pool ? { runner: pool } : {}) });
        const port = (await server.listen(0, '127.0.0.1')).port;
        try {
          if (pool) assert.ok(await waitFor(() => pool.stats().ready === poolSize, 20_000), 'the pool made its sandbox');
          const marker = `30.0${process.pid}${poolSize}`; // a sleep of ~30 s no other process runs
          const body = JSON.stringify({ cmd: [{ args: ['/bin/sleep', marker], clockLimit: 60e9 }] });
          const req = request({ host: '127.0.0.1', port, method: 'POST', path: '/run', headers: { 'content-type': 'application/json' } });
          req.on('error', () => undefined); // destroyed below
          req.end(body);
          let pid: number | undefined;
          assert.ok(await waitFor(() => (pid = pidRunning(['/bin/sleep', marker])) !== undefined, 20_000), 'the command started');
          const t0 = Date.now();
          req.destroy();
          assert.ok(await waitFor(() => !alive(pid!), 10_000), `the command (pid ${pid}) still runs 10 s after its client left`);
          const took = Date.now() - t0;
          assert.ok(took < 10_000, `ended ${took} ms after the client left`);
          if (pool) assert.ok(pool.stats().hits >= 1, `the run used the pool: ${JSON.stringify(pool.stats())}`);
          // its slot is free again: a next request runs
          const client = new Client(`http://127.0.0.1:${port}`);
          assert.equal((await client.run({ cmd: [{ args: ['/bin/true'] }] }))[0]!.status, 'Accepted');
        } finally {
          await server.close();
          await pool?.close();
        }
      });
    }
  });
}

/** The pid of a process whose argv is exactly `argv`, if one runs. */
function pidRunning(argv: string[]): number | undefined {
  const want = `${argv.join('\0')}\0`;
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      if (readFileSync(`/proc/${name}/cmdline`, 'utf8') === want) return Number(name);
    } catch {
      /* gone, or not ours to read */
    }
  }
  return undefined;
}

describe('cubicle serve (the command)', () => {
  it('serve --listen --token --pool: /version open and naming the pool, /run behind the token, SIGTERM stops it', async function () {
    const port = await freePort();
    const child = spawn(process.execPath, [CLI, 'serve', '--listen', `127.0.0.1:${port}`, '--token', 'open-sesame', '--pool', '2'], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    try {
      let err = '';
      await new Promise<void>((resolve, reject) => {
        child.stderr.on('data', (d: Buffer) => {
          err += d.toString();
          if (err.includes('listening')) resolve();
        });
        child.on('exit', (code) => reject(new Error(`serve exited ${code}: ${err}`)));
      });
      const version = (await (await fetch(`http://127.0.0.1:${port}/version`)).json()) as Record<string, unknown>;
      assert.equal(version.pool, 2);
      const body = JSON.stringify({ cmd: [{ args: ['/bin/true'] }] });
      const headers = { 'content-type': 'application/json' };
      assert.equal((await fetch(`http://127.0.0.1:${port}/run`, { method: 'POST', headers, body })).status, 401);
      const ok = await fetch(`http://127.0.0.1:${port}/run`, {
        method: 'POST',
        headers: { ...headers, authorization: 'Bearer open-sesame' },
        body,
      });
      assert.equal(ok.status, 200);
      assert.equal(((await ok.json()) as JudgeResult[])[0]!.status, 'Accepted');
      const after = (await (await fetch(`http://127.0.0.1:${port}/version`)).json()) as { poolStats?: Record<string, number> };
      assert.ok(after.poolStats, '/version reports the pool counters');
      assert.equal(after.poolStats.hits! + after.poolStats.misses!, 1, 'the one run is counted as a hit or a miss');
      assert.ok(after.poolStats.ready! + after.poolStats.starting! <= 2);
      assert.equal(after.poolStats.refillIdleMs, 30, 'the refill settings are reported');
      assert.equal(after.poolStats.maxStarting, 1);
    } finally {
      const exited = new Promise((resolve) => child.once('exit', (code) => resolve(code)));
      child.kill('SIGTERM');
      assert.equal(await exited, 0);
    }
  });

  it('usage errors exit 2 naming the flag: a non-loopback address without --token, a bad --pool, a bad --listen', () => {
    const cases: [string[], RegExp][] = [
      [['serve', '--listen', '0.0.0.0:5050'], /--token/],
      [['serve', '--pool', 'many'], /--pool/],
      [['serve', '--listen', 'localhost'], /--listen must be HOST:PORT/],
      [['serve', '--tokn', 'x'], /did you mean --token/],
      [['worker', '--queue', 'q'], /--redis/],
      [['worker', '--redis', 'http://x:1', '--queue', 'q'], /redis:\/\//],
      [['worker', '--redis', 'redis://127.0.0.1:1', '--queue', 'q', '--concurrency', '0'], /--concurrency/],
    ];
    for (const [args, want] of cases) {
      const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 30_000 });
      assert.equal(r.status, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, want);
    }
  });
});
