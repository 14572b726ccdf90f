// Egress (--network egress): the outside through slirp4netns, only where the allowlist allows; published ports; the ci
// policy. Servers run on the host's loopback only; "refused" must come from cubicle's own allowlist.
import { createSocket } from 'node:dgram';
import { strict as assert } from 'node:assert';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { createConnection, createServer, type AddressInfo, type Server } from 'node:net';
import { networkInterfaces, tmpdir } from 'node:os';
import { join } from 'node:path';
import { runSandboxed, SandboxHostError, SandboxOptionError, spawnSandboxed, type SandboxOptions } from '../../sandbox/index.js';
import { prepareRun } from '../../sandbox/api/prepare.js';
import { judge } from '../../sandbox/outcome/judge.js';
import { encodePlan, makeOp, type PlanOp } from '../../sandbox/plan/ops.js';
import { supervise } from '../../sandbox/supervisor/supervisor.js';
import { alive, identities, skipBecause, waitFor } from '../helpers/env.js';
import { CLI } from '../helpers/cli.js';
import { freePort, listeners } from '../helpers/loopback.js';

/** A server on the host's loopback that greets each connection with `banner`. */
async function hostServer(banner: string): Promise<{ port: number; server: Server }> {
  const server = createServer((c) => c.end(`${banner}\n`));
  await new Promise<void>((res) => server.listen(0, '127.0.0.1', res));
  return { port: (server.address() as AddressInfo).port, server };
}

/** Python run inside: tries each HOST:PORT and prints one JSON line per attempt: ok/error, what came, seconds. */
const CONNECT_PY = `
import json, socket, sys, time
for target in sys.argv[1:]:
    host, port = target.rsplit(':', 1)
    t = time.monotonic()
    try:
        s = socket.create_connection((host, int(port)), timeout=5)
        data = s.recv(100).decode()
        print(json.dumps({'target': target, 'ok': True, 'data': data, 's': time.monotonic() - t}))
    except OSError as e:
        print(json.dumps({'target': target, 'ok': False, 'error': e.__class__.__name__, 's': time.monotonic() - t}))
`;

interface Attempt {
  target: string;
  ok: boolean;
  data?: string;
  error?: string;
  s: number;
}
const attempts = (stdout: string): Attempt[] =>
  stdout
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as Attempt);

/** The host's first non-loopback IPv4 address, if it has one. */
function hostAddress(): string | undefined {
  for (const list of Object.values(networkInterfaces()))
    for (const a of list ?? []) if (a.family === 'IPv4' && !a.internal) return a.address;
  return undefined;
}

/** Connects to 127.0.0.1:port until a banner comes (the sandbox's server may not listen yet). */
async function readFromHostPort(port: number, ms: number): Promise<string> {
  const end = Date.now() + ms;
  for (;;) {
    const got = await new Promise<string>((res) => {
      const c = createConnection({ host: '127.0.0.1', port });
      let data = '';
      c.on('data', (d) => (data += d.toString()));
      c.on('end', () => res(data));
      c.on('error', () => res(''));
    });
    if (got || Date.now() > end) return got;
    await new Promise((r) => setTimeout(r, 100));
  }
}

for (const id of identities())
  describe(`egress and published ports, ${id.label}`, function () {
    this.timeout(120_000);
    const run = (cmd: string | string[], o: SandboxOptions = {}) => runSandboxed(cmd, { ...o, ...id.spawnAs });
    let allowed: { port: number; server: Server };
    let other: { port: number; server: Server };

    before(async function () {
      try {
        await run(['true'], { network: 'egress' });
      } catch (e) {
        if (e instanceof SandboxHostError) skipBecause(this, `egress is not available here: ${e.message}`);
        throw e;
      }
      allowed = await hostServer('allowed');
      other = await hostServer('other');
    });
    after(() => {
      allowed?.server.close();
      other?.server.close();
    });

    it('reaches an allowed host:port; another port and another address are refused at connect, within a second', async () => {
      const targets = [
        `host.cubicle.internal:${allowed.port}`,
        `host.cubicle.internal:${other.port}`,
        '10.255.255.1:80', // this host accepts connections to arbitrary addresses: only the allowlist refuses it
        ...(hostAddress() ? [`${hostAddress()}:${allowed.port}`] : []),
      ];
      const r = await run(['python3', '-c', CONNECT_PY, ...targets], {
        network: 'egress',
        allowHosts: [`host.cubicle.internal:${allowed.port}`],
      });
      const [ok, ...refused] = attempts(String(r.stdout));
      assert.deepEqual([ok!.ok, ok!.data], [true, 'allowed\n'], String(r.stdout));
      for (const a of refused) {
        assert.equal(a.ok, false, `${a.target} must be refused: ${JSON.stringify(a)}`);
        assert.equal(a.error, 'ConnectionRefusedError', `${a.target}: refused, not accepted-then-closed or timed out`);
        assert.ok(a.s < 1, `${a.target} refused in ${a.s} s`);
      }
    });

    it('an allowed CIDR opens its addresses on every port, but never the host loopback behind host.cubicle.internal', async () => {
      const r = await run(['python3', '-c', CONNECT_PY, `host.cubicle.internal:${other.port}`], {
        network: 'egress',
        allowCidrs: ['0.0.0.0/0'],
      });
      const [a] = attempts(String(r.stdout));
      assert.equal(a!.error, 'ConnectionRefusedError', JSON.stringify(a));
    });

    it('UDP to 255.255.255.255 never reaches the host loopback, even with a host port and 0.0.0.0/0 allowed (regression)', async () => {
      const sock = createSocket('udp4');
      const got: string[] = [];
      sock.on('message', (m) => got.push(String(m)));
      await new Promise<void>((resolve) => sock.bind(0, '127.0.0.1', resolve));
      const port = (sock.address() as { port: number }).port;
      try {
        const send = `
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
for dst in ('255.255.255.255', '10.0.2.255', '10.0.2.2', '224.0.0.1'):
    try:
        s.sendto(b'leak ' + dst.encode(), (dst, ${port}))
        print(dst, 'sent')
    except OSError as e:
        print(dst, type(e).__name__)
`;
        const r = await run(['python3', '-c', send], {
          network: 'egress',
          allowHosts: [`host.cubicle.internal:${allowed.port}`],
          allowCidrs: ['0.0.0.0/0'],
        });
        assert.equal(r.exitCode, 0, String(r.stderr));
        assert.equal(String(r.stdout).trim().split('\n').length, 4, String(r.stdout));
        await new Promise((resolve) => setTimeout(resolve, 500));
        assert.deepEqual(got, [], 'no datagram reached the host');
      } finally {
        sock.close();
      }
    });

    it("127.0.0.1 inside is the sandbox's own loopback; resolv.conf names a nameserver; /etc/hosts has host.cubicle.internal", async () => {
      const script = `
import socket, subprocess, sys
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(('127.0.0.1', ${allowed.port})); srv.listen()
c = socket.create_connection(('127.0.0.1', ${allowed.port})); peer, _ = srv.accept(); peer.sendall(b'inside\\n')
print(c.recv(100).decode().strip())
print(open('/etc/resolv.conf').read().strip().splitlines()[0])
print([l for l in open('/etc/hosts') if 'host.cubicle.internal' in l][0].split()[0])
`;
      const r = await run(['python3', '-c', script], { network: 'egress', allowHosts: [`host.cubicle.internal:${allowed.port}`] });
      const [loop, ns, alias] = String(r.stdout).trim().split('\n');
      assert.equal(loop, 'inside', 'the host server on the same port is not what 127.0.0.1 reaches inside');
      assert.match(ns!, /^nameserver \d+\.\d+\.\d+\.\d+$/);
      assert.match(alias!, /^\d+\.\d+\.\d+\.\d+$/);
    });

    for (const network of ['none', 'egress'] as const)
      it(`--publish binds 127.0.0.1:HOSTPORT only, reaches a server inside (network ${network}), ends with the sandbox`, async () => {
        const port = await freePort();
        const server = `
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('0.0.0.0', 8000)); s.listen()
c, _ = s.accept(); c.sendall(b'from inside\\n'); c.close()
`;
        const proc = spawnSandboxed(['python3', '-c', server], { network, publish: [`${port}:8000`], timeout: 60_000, ...id.spawnAs });
        try {
          assert.ok(await waitFor(() => listeners(port).length > 0, 20_000), 'the published port is listened on');
          assert.deepEqual(listeners(port), ['0100007F'], 'bound on 127.0.0.1 only');
          assert.equal(await readFromHostPort(port, 20_000), 'from inside\n');
          const r = await proc.result;
          assert.equal(r.exitCode, 0);
        } finally {
          proc.kill('SIGKILL');
          await proc.result.catch(() => {});
        }
        assert.ok(await waitFor(() => listeners(port).length === 0, 5000), 'nothing listens on the port once the sandbox is gone');
      });

    it('the ci policy: npm ci and npm test of a real package pass inside as an unprivileged user', async () => {
      const dir = mkdtempSync(join(tmpdir(), 'cubicle-ci-pkg-'));
      try {
        // a dependency as a tarball: npm ci unpacks it through its cache in HOME, and nothing needs a registry
        mkdirSync(join(dir, 'dep'));
        writeFileSync(join(dir, 'dep', 'package.json'), JSON.stringify({ name: 'tiny-dep', version: '1.0.0', main: 'index.js' }));
        writeFileSync(join(dir, 'dep', 'index.js'), 'module.exports = (a, b) => a + b;\n');
        execFileSync('npm', ['pack', '--silent', './dep'], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
        const pkg = {
          name: 'tiny-app',
          version: '1.0.0',
          private: true,
          scripts: { test: 'node test.js' },
          dependencies: { 'tiny-dep': 'file:tiny-dep-1.0.0.tgz' },
        };
        writeFileSync(join(dir, 'package.json'), JSON.stringify(pkg));
        writeFileSync(
          join(dir, 'test.js'),
          "const add = require('tiny-dep');\nif (add(2, 40) !== 42) process.exit(1);\nconsole.log('tests pass');\n",
        );
        execFileSync('npm', ['install', '--package-lock-only', '--offline', '--no-audit', '--no-fund', '--silent'], {
          cwd: dir,
          stdio: 'pipe',
        });
        const files: Record<string, { path: string }> = {};
        for (const f of ['package.json', 'package-lock.json', 'test.js', 'tiny-dep-1.0.0.tgz']) files[f] = { path: join(dir, f) };
        const script =
          'set -e; echo "home=$HOME"; id -u; touch "$HOME/w"; df -k /tmp | tail -1 | tr -s " " | cut -d" " -f2; ' +
          'npm ci --offline --no-audit --no-fund --loglevel=error && npm test --silent';
        const r = await run(['sh', '-c', script], { policy: 'ci', files, reject: false });
        assert.equal(r.exitCode, 0, `${String(r.stdout)}\n${String(r.stderr)}`);
        const [home, uid, tmpKb, ...rest] = String(r.stdout).trim().split('\n');
        const h = home!.slice('home='.length);
        assert.ok(h !== '/' && h !== '/tmp' && h.startsWith('/'), `HOME is ${h}`);
        assert.notEqual(uid, '0');
        assert.ok(Number(tmpKb) >= 200 * 1024, `/tmp holds ${tmpKb} KiB`);
        assert.match(rest.join('\n'), /tests pass/);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });
  });

/** Runs a prepared sandbox whose plan `edit` changed (a host failure cubicle cannot be made to meet otherwise). */
async function runEdited(o: SandboxOptions, edit: (op: PlanOp) => PlanOp) {
  const p = prepareRun(['sh', '-c', 'echo payload ran'], { ...o, reject: false });
  const plan = p.plan.map(edit);
  const record = await supervise({ ...p.supervise, plan, planBytes: encodePlan(plan) }, true).record;
  return judge(record, { ...p.judge, plan });
}

for (const id of identities())
  describe(`egress fails closed, ${id.label}`, function () {
    this.timeout(60_000);
    before(async function () {
      try {
        await runSandboxed(['true'], { network: 'egress', ...id.spawnAs });
      } catch (e) {
        if (e instanceof SandboxHostError) skipBecause(this, `egress is not available here: ${e.message}`);
        throw e;
      }
    });

    it('nft that fails to load the allowlist is a setup error, and the payload never runs', async () => {
      const r = await runEdited({ network: 'egress', ...id.spawnAs }, (op) =>
        op.op === 'net-rules' ? makeOp('net-rules', { nft: '/bin/false', ruleset: op.args[1]! }) : op,
      );
      assert.equal(r.verdict, 'setup-error');
      assert.match(r.setupFailure!.message, /\/bin\/false could not load the allowlist/);
      assert.match(r.setupFailure!.hint, /nftables/);
      assert.equal(r.stdout, '');
    });

    it('a network stack that exits before its link is up is a setup error naming it', async () => {
      const r = await runEdited({ network: 'egress', ...id.spawnAs }, (op) =>
        op.op === 'net-stack' ? makeOp('net-stack', { program: '/bin/false', ifname: op.args[1]!, timeoutMs: op.args[2]! }) : op,
      );
      assert.equal(r.verdict, 'setup-error');
      assert.match(r.setupFailure!.message, /network stack \/bin\/false exited .*before its link came up/);
      assert.equal(r.stdout, '');
    });

    it('a helper killed with SIGKILL takes the network stack and its published port with it', async () => {
      const port = await freePort();
      const proc = spawnSandboxed(['sleep', '60'], { network: 'egress', publish: [`${port}:8000`], reject: false, ...id.spawnAs });
      assert.ok(await waitFor(() => listeners(port).length > 0, 20_000), 'the published port is listened on');
      const helperPid = proc.pid!;
      process.kill(helperPid, 'SIGKILL');
      await proc.result;
      assert.ok(await waitFor(() => listeners(port).length === 0, 5000), 'the published port is gone with the helper');
      assert.ok(!alive(helperPid));
    });
  });

describe('egress: bad input is refused before anything runs', () => {
  const bad: [SandboxOptions, string, RegExp][] = [
    [{ network: 'egress', allowHosts: ['no-port'] }, 'allowHosts', /must be HOST:PORT/],
    [{ network: 'egress', allowHosts: ['example.test:0'] }, 'allowHosts', /port must be a number from 1 to 65535/],
    [{ network: 'egress', allowHosts: ['localhost:80'] }, 'allowHosts', /host\.cubicle\.internal:80/],
    [{ network: 'egress', allowCidrs: ['10.0.0.1/8'] }, 'allowCidrs', /host bits/],
    [{ network: 'egress', allowCidrs: ['10.0.0.0/33'] }, 'allowCidrs', /IPv4 CIDR/],
    [{ allowHosts: ['host.cubicle.internal:80'] }, 'allowHosts', /needs network 'egress'/],
    [
      { network: 'no-such-network' },
      'network',
      /network "no-such-network" does not exist for this user; create it with: cubicle network create no-such-network/,
    ],
    [{ publish: ['80'] }, 'publish', /HOSTPORT:SANDBOXPORT/],
    // publish is not refused on a private network; only the missing network is
    [{ network: 'no-such-lab', publish: ['8080:80'] }, 'network', /network "no-such-lab" does not exist for this user/],
    [{ network: 'lab', allowHosts: ['10.1.2.3:80'] }, 'allowHosts', /needs network 'egress'/],
    [{ publish: ['8080:80', '8080:81'] }, 'publish', /twice/],
    // regression: an address of the stack's link (or a name resolving there) opened the host's loopback
    [{ network: 'egress', allowHosts: ['10.0.2.2:80'] }, 'allowHosts', /network stack's own link.*host\.cubicle\.internal:80/],
    [{ network: 'egress', allowHosts: ['255.255.255.255:53'] }, 'allowHosts', /broadcast/],
    // regression: a leading '-' reached getent as an option
    [{ network: 'egress', allowHosts: ['-sdns:80'] }, 'allowHosts', /must be HOST:PORT/],
  ];
  for (const [o, option, message] of bad)
    it(`${JSON.stringify(o)} is a SandboxOptionError on ${option}`, () => {
      assert.throws(
        () => runSandboxed(['true'], o),
        (e: unknown) => e instanceof SandboxOptionError && e.option === option && message.test(e.message),
      );
    });

  it('the CLI names the flag and exits 2', () => {
    const cases: [string[], RegExp][] = [
      [['--network', 'egress', '--allow-host', 'nope'], /--allow-host "nope" must be HOST:PORT/],
      [['--network', 'egress', '--allow-cidr', '1.2.3.4/40'], /--allow-cidr "1\.2\.3\.4\/40"/],
      [['--allow-cidr', '10.0.0.0/8'], /--allow-cidr needs --network egress|--allow-cidr needs network 'egress'/],
      [['--network', 'blue'], /--network "blue" does not exist for this user; create it with: cubicle network create blue/],
      [['--publish', 'x:1'], /--publish "x:1"/],
    ];
    for (const [flags, message] of cases) {
      const r = spawnSync(process.execPath, [CLI, 'run', ...flags, '--', 'true'], { encoding: 'utf8', timeout: 30_000 });
      assert.equal(r.status, 2, `${flags.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, message);
      assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
    }
  });
});
