// Private networks, end to end through the CLI, as root and as an unprivileged user: the seed's experiment (two
// sandboxes on one network, one listening on TCP and UDP, the other pinging and connecting to it by name), isolation
// from other networks and from none, `network ls --json`, removal while in use, a crashed holder, and bad input.
import { strict as assert } from 'node:assert';
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { connect, createServer, type AddressInfo } from 'node:net';
import { networkInterfaces } from 'node:os';
import { egressProblems } from '../../sandbox/egress/egress.js';
import { HolderRequest } from '../../sandbox/protocol/opcodes.js';
import { runSandboxed, spawnSandboxed } from '../../sandbox/index.js';
import { createNetwork, removeNetwork } from '../../sandbox/network/manage.js';
import { runtimeDirPath } from '../../sandbox/host/runtime-dir.js';
import { IS_ROOT, skipBecause } from '../helpers/env.js';
import { CLI } from '../helpers/cli.js';
import { listeners } from '../helpers/loopback.js';

interface Caller {
  label: string;
  /** argv prefix that runs a command as this caller */
  as: string[];
  uid: number;
  gid: number;
}

function callers(): Caller[] {
  if (!IS_ROOT) return [{ label: `as uid ${process.geteuid!()}`, as: [], uid: process.geteuid!(), gid: process.getegid!() }];
  const list: Caller[] = [{ label: 'as root', as: [], uid: 0, gid: 0 }];
  const r = spawnSync('id', ['-u', 'tester'], { encoding: 'utf8' });
  const g = spawnSync('id', ['-g', 'tester'], { encoding: 'utf8' });
  // with subordinate ids (each sandbox a host uid of its own), and without (the caller's own ids)
  if (r.status === 0)
    list.push({
      label: 'as tester (rootless)',
      as: ['runuser', '-u', 'tester', '--'],
      uid: Number(r.stdout.trim()),
      gid: Number(g.stdout.trim()),
    });
  list.push({
    label: 'as nobody (rootless, no subordinate ids)',
    as: ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups', '--'],
    uid: 65534,
    gid: 65534,
  });
  return list;
}

interface Ran {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the CLI as the caller and waits for it. */
function cli(c: Caller, args: string[], timeoutMs = 30000): Ran {
  const argv = [...c.as, process.execPath, CLI, ...args];
  const r = spawnSync(argv[0]!, argv.slice(1), { encoding: 'utf8', cwd: '/', timeout: timeoutMs, stdio: ['ignore', 'pipe', 'pipe'] });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Starts the CLI in the background; resolves once its stdout has printed `marker`. */
function cliBackground(c: Caller, args: string[], marker: string): { ready: Promise<void>; done: Promise<Ran>; pid: number } {
  const argv = [...c.as, process.execPath, CLI, ...args];
  const p = spawn(argv[0]!, argv.slice(1), { cwd: '/', stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '',
    err = '';
  let onReady: () => void = () => {};
  let onFail: (e: Error) => void = () => {};
  const ready = new Promise<void>((resolve, reject) => ((onReady = resolve), (onFail = reject)));
  p.stdout.on('data', (d: Buffer) => {
    out += d.toString();
    if (out.includes(marker)) onReady();
  });
  p.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const done = new Promise<Ran>((resolve) =>
    p.on('close', (code) => {
      onFail(new Error(`background sandbox ended (${code}) before ${marker}: ${out}${err}`));
      resolve({ code, stdout: out, stderr: err });
    }),
  );
  return { ready, done, pid: p.pid! };
}

const lsJson = (c: Caller): { name: string; subnet: string; state: string; holderPid: number; sandboxes: number }[] => {
  const r = cli(c, ['network', 'ls', '--json']);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as ReturnType<typeof lsJson>;
};

/** Where a caller's networks are (a caller run through runuser/setpriv has no XDG_RUNTIME_DIR). */
const networksDirOf = (c: Caller): string => (c.as.length === 0 ? runtimeDirPath() + '/networks' : `/tmp/cubicle-run-${c.uid}/networks`);
const alive = (pid: number): boolean => existsSync(`/proc/${pid}`);
const netnsOf = (pid: number): number | undefined => {
  try {
    return statSync(`/proc/${pid}/ns/net`).ino;
  } catch {
    return undefined;
  }
};
/** Processes (that this test may inspect) in the network namespace with this inode. */
const inNetns = (ino: number): number[] =>
  readdirSync('/proc')
    .filter((d) => /^\d+$/.test(d))
    .map(Number)
    .filter((pid) => netnsOf(pid) === ino);

async function waitFor(what: string, fn: () => boolean, ms: number): Promise<void> {
  const end = Date.now() + ms;
  while (!fn()) {
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

// The listener: TCP and UDP echo servers on 8080/8081, up to 60 s, ended by a "quit" datagram.
const SERVER = `
import socket, select, time, os
t = socket.socket(); t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); t.bind(("0.0.0.0", 8080)); t.listen(8)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("0.0.0.0", 8081))
print("listening", os.getuid(), flush=True)
end = time.time() + 60
while time.time() < end:
    r, _, _ = select.select([t, u], [], [], 1)
    if u in r:
        data, peer = u.recvfrom(100)
        if data == b"quit": break
        u.sendto(b"udp:" + data, peer)
    if t in r:
        c, _ = t.accept(); c.settimeout(5); c.sendall(b"tcp:" + c.recv(100)); c.close()
`;

// The client: resolves srv, ICMP echo through a datagram socket (unprivileged ping), TCP and UDP round trips.
const CLIENT = `
import socket, json, struct, time, subprocess
out = {}
addr = socket.gethostbyname("srv"); out["addr"] = addr
try:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP); s.settimeout(2)
    s.sendto(struct.pack("!BBHHH", 8, 0, 0, 0, 1) + b"cubicle", (addr, 0))
    reply, _ = s.recvfrom(100); out["icmp"] = reply[0] == 0 and reply.endswith(b"cubicle")
except Exception as e:
    out["icmp"] = "error: %s" % e
p = subprocess.run(["ping", "-c", "1", "-W", "2", "srv"], capture_output=True, text=True)
out["ping"] = [p.returncode, p.stderr.strip()[-200:]]
c = socket.create_connection(("srv", 8080), timeout=5); c.sendall(b"hello"); out["tcp"] = c.recv(100).decode()
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.settimeout(5); u.sendto(b"hello", ("srv", 8081))
out["udp"] = u.recvfrom(100)[0].decode()
print(json.dumps(out))
`;

// From elsewhere: TCP connect and a UDP round trip to the address, each bounded by 2 s.
const PROBE = (addr: string): string => `
import socket, json, time
out = {}
t0 = time.time()
try:
    socket.create_connection(("${addr}", 8080), timeout=2); out["tcp"] = "connected"
except Exception as e:
    out["tcp"] = "error: %s" % e
out["tcpSeconds"] = time.time() - t0
t0 = time.time()
try:
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.settimeout(2)
    u.sendto(b"x", ("${addr}", 8081)); u.recvfrom(100); out["udp"] = "answered"
except Exception as e:
    out["udp"] = "error: %s" % e
out["udpSeconds"] = time.time() - t0
print(json.dumps(out))
`;

// A sandbox on the network with a published port: first talks to srv by name, then tries what must not leave
// through the stack (the stack's gateway, which would be the host's loopback; an outside address; the name
// host.cubicle.internal, which only egress has), then serves one connection on 9000.
const PUBLISHED = (hostPort: number): string => `
import socket, json, time
out = {}
c = socket.create_connection(("srv", 8080), timeout=5); c.sendall(b"peer"); out["peer"] = c.recv(100).decode()
for target in ["169.254.2.2:${hostPort}", "10.255.255.1:80", "host.cubicle.internal:${hostPort}"]:
    host, port = target.rsplit(":", 1)
    t0 = time.time()
    try:
        socket.create_connection((host, int(port)), timeout=5).recv(100); out[target] = "connected"
    except OSError as e:
        out[target] = e.__class__.__name__
    out[target + " s"] = time.time() - t0
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("0.0.0.0", 9000)); s.listen()
print(json.dumps(out), flush=True)
s.settimeout(30); c, _ = s.accept(); c.sendall(b"published\\n"); c.close()
`;

/** What a TCP connection to host:port on the host reads until the peer closes ('' when it fails). */
const readFrom = (host: string, port: number): Promise<string> =>
  new Promise((resolve) => {
    const sock = connect({ host, port });
    let data = '';
    sock.on('data', (d: Buffer) => (data += d.toString()));
    sock.on('end', () => resolve(data));
    sock.on('error', () => resolve(''));
  });

/** Subnets for this run: 10.93-95.N.0/24 from the pid, so concurrent runs of the suite do not collide. */
const n = process.pid % 200;

for (const [i, c] of callers().entries()) {
  describe(`private networks ${c.label}`, function () {
    this.timeout(120000);
    const tag = `t${process.pid}${i}`;
    const [A, B] = [`${tag}a`, `${tag}b`];
    const subnetA = `10.93.${n}.0/24`;

    before(function () {
      if (!existsSync('/usr/bin/python3')) {
        skipBecause(this, 'python3 is needed inside the sandbox');
      }
      const a = cli(c, ['network', 'create', A, '--subnet', subnetA]);
      assert.equal(a.code, 0, a.stderr);
      const b = cli(c, ['network', 'create', B]);
      assert.equal(b.code, 0, b.stderr);
    });
    after(() => {
      cli(c, ['network', 'rm', A]);
      cli(c, ['network', 'rm', B]);
    });

    it('network ls --json lists each network with the subnet exactly as given', () => {
      const list = lsJson(c);
      const a = list.find((x) => x.name === A);
      assert.deepEqual({ name: a?.name, subnet: a?.subnet, state: a?.state }, { name: A, subnet: subnetA, state: 'up' });
      const b = list.find((x) => x.name === B);
      assert.match(b?.subnet ?? '', /^\d+\.\d+\.\d+\.0\/24$/);
      assert.notEqual(b?.subnet, subnetA);
    });

    describe('with a listener on the network', () => {
      let server: ReturnType<typeof cliBackground>;
      let serverAddr = '';
      before(async () => {
        server = cliBackground(c, ['run', '--network', A, '--name', 'srv', '--', 'python3', '-c', SERVER], 'listening');
        await server.ready;
      });
      after(async () => {
        cli(c, [
          'run',
          '--network',
          A,
          '--',
          'python3',
          '-c',
          'import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"quit", ("srv", 8081))',
        ]);
        await server.done;
      });

      it('another sandbox on it resolves the name, pings it and talks TCP and UDP to it', () => {
        const r = cli(c, ['run', '--network', A, '--name', 'cli', '--', 'python3', '-c', CLIENT]);
        assert.equal(r.code, 0, r.stderr);
        const out = JSON.parse(r.stdout) as { addr: string; icmp: boolean | string; ping: [number, string]; tcp: string; udp: string };
        serverAddr = out.addr;
        assert.match(out.addr, new RegExp(`^10\\.93\\.${n}\\.\\d+$`), 'srv resolves to an address in the subnet');
        assert.equal(out.icmp, true, `ICMP echo by name (ping_group_range set inside): ${String(out.icmp)}`);
        if (out.ping[0] !== 0)
          console.log(
            `      note: /usr/bin/ping fails inside (${out.ping[1]}): it needs prctl(PR_SET_KEEPCAPS), which the locked ` +
              'securebits refuse; the ICMP echo above is the same request through an unprivileged socket',
          );
        assert.equal(out.tcp, 'tcp:hello');
        assert.equal(out.udp, 'udp:hello');
      });

      it('with --publish: 127.0.0.1:HOSTPORT only reaches it, srv still by name, nothing else leaves', async function () {
        const missing = egressProblems({ uid: c.uid, gid: c.gid });
        if (missing.length) skipBecause(this, `published ports need the stack here: ${missing.map((m) => m.detail).join('; ')}`);
        // a server on the host's loopback: what the stack's gateway would reach if anything were let through
        const bait = createServer((sock) => sock.end('leaked\n'));
        await new Promise<void>((res) => bait.listen(0, '127.0.0.1', res));
        const baitPort = (bait.address() as AddressInfo).port;
        const probe = createServer();
        await new Promise<void>((res) => probe.listen(0, '127.0.0.1', res));
        const hostPort = (probe.address() as AddressInfo).port;
        await new Promise((res) => probe.close(res));
        const pub = cliBackground(
          c,
          ['run', '--network', A, '--publish', `${hostPort}:9000`, '--', 'python3', '-c', PUBLISHED(baitPort)],
          '}',
        );
        try {
          await pub.ready;
          assert.deepEqual(listeners(hostPort), ['0100007F'], 'the published port is bound on the host, on 127.0.0.1 only');
          const other = Object.values(networkInterfaces())
            .flat()
            .find((a) => a?.family === 'IPv4' && !a.internal)?.address;
          if (other) assert.equal(await readFrom(other, hostPort), '', `nothing answers on ${other}:${hostPort}`);
          assert.equal(await readFrom('127.0.0.1', hostPort), 'published\n');
          const done = await pub.done;
          assert.equal(done.code, 0, done.stderr);
          const out = JSON.parse(done.stdout.trim().split('\n')[0]!) as Record<string, string | number>;
          assert.equal(out.peer, 'tcp:peer', 'srv by name, over the network');
          for (const target of [`169.254.2.2:${baitPort}`, '10.255.255.1:80']) {
            assert.equal(out[target], 'ConnectionRefusedError', `${target} is refused at connect: ${JSON.stringify(out)}`);
            assert.ok(Number(out[`${target} s`]) < 1, `${target} refused within a second: ${JSON.stringify(out)}`);
          }
          const alias = `host.cubicle.internal:${baitPort}`;
          assert.notEqual(out[alias], 'connected', `${alias} is only egress's`);
          assert.ok(Number(out[`${alias} s`]) < 1, `${alias} fails within a second: ${JSON.stringify(out)}`);
        } finally {
          bait.close();
          if (alive(pub.pid)) process.kill(pub.pid, 'SIGTERM');
          await pub.done;
        }
        await waitFor('the published port to close with the sandbox', () => listeners(hostPort).length === 0, 5000);
      });

      it('a sandbox on no network and one on another network cannot reach it (an error within 2 s)', () => {
        assert.ok(serverAddr, 'the address from the previous test');
        for (const net of [[], ['--network', B]]) {
          const t0 = Date.now();
          const r = cli(c, ['run', ...net, '--', 'python3', '-c', PROBE(serverAddr)]);
          assert.equal(r.code, 0, r.stderr);
          const out = JSON.parse(r.stdout) as { tcp: string; udp: string; tcpSeconds: number; udpSeconds: number };
          assert.match(out.tcp, /^error/, `TCP from ${net.join(' ') || 'no network'}: ${out.tcp}`);
          assert.match(out.udp, /^error/, `UDP from ${net.join(' ') || 'no network'}: ${out.udp}`);
          assert.ok(out.tcpSeconds < 2.5 && out.udpSeconds < 2.5, JSON.stringify(out));
          assert.ok(Date.now() - t0 < 30000);
        }
      });

      it('the name is resolvable only on its network, and a second live sandbox cannot take it', () => {
        const other = cli(c, ['run', '--network', B, '--', 'python3', '-c', 'import socket; socket.gethostbyname("srv")']);
        assert.notEqual(other.code, 0, 'srv is not resolvable on another network');
        const dup = cli(c, ['run', '--network', A, '--name', 'srv', '--', 'true']);
        assert.equal(dup.code, 125);
        assert.match(dup.stderr, /(already named|a sandbox named) "srv"( is already running)?/);
      });

      it("the listener's host uid is never root's", () => {
        const pids = readdirSync('/proc').filter((d) => /^\d+$/.test(d));
        const uids: number[] = [];
        for (const pid of pids) {
          try {
            if (readFileSync(`/proc/${pid}/comm`, 'utf8').trim() !== 'python3') continue;
            if (!readFileSync(`/proc/${pid}/cmdline`, 'latin1').includes('print("listening"')) continue;
            uids.push(Number(/^Uid:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]));
          } catch {
            /* gone, or not ours to read */
          }
        }
        assert.ok(uids.length >= 1, 'the listener was found');
        for (const u of uids) assert.notEqual(u, 0);
        if (c.uid === 0) for (const u of uids) assert.ok(u >= 65534, `root's sandbox maps to an unprivileged id of its own, got ${u}`);
      });
    });

    it("its holder serves only its owner: another user's join is refused", async function () {
      if (!IS_ROOT || c.uid === 0) {
        skipBecause(this, "needs root to connect to an unprivileged user's holder socket");
      }
      const sock = `/tmp/cubicle-run-${c.uid}/networks/${A}/sock`;
      if (!existsSync(sock)) {
        skipBecause(this, `${sock} is not where this caller's runtime directory is`);
      }
      const answer = await new Promise<string>((resolve, reject) => {
        const s = connect(sock);
        // nothing is sent: a peer that is not the owner is refused before its request is read
        s.on('data', (d: Buffer) => (resolve(d.toString('latin1', 0, 1)), s.destroy()));
        s.on('error', reject);
      });
      assert.equal(answer, HolderRequest.no, 'root is not the owner of this holder (it sees root as an unmapped id)');
    });

    it('rm while a sandbox runs: no new run can join; the holder and its netns are gone once the last sandbox ends', async () => {
      const C = `${tag}c`;
      assert.equal(cli(c, ['network', 'create', C]).code, 0);
      const holder = lsJson(c).find((x) => x.name === C)!.holderPid;
      const ns = netnsOf(holder);
      const member = cliBackground(c, ['run', '--network', C, '--', 'sh', '-c', 'echo started; sleep 2'], 'started');
      await member.ready;
      const rm = cli(c, ['network', 'rm', C]);
      assert.equal(rm.code, 0, rm.stderr);
      assert.match(rm.stderr, /1 sandbox on it keeps their links until they end/);
      assert.ok(alive(holder), 'the holder stays while a sandbox is on the network');
      const again = cli(c, ['run', '--network', C, '--', 'true']);
      assert.equal(again.code, 2);
      assert.match(again.stderr, new RegExp(`--network "${C}" does not exist for this user; create it with: cubicle network create ${C}`));
      assert.ok(!lsJson(c).some((x) => x.name === C), 'ls no longer shows it');
      assert.equal((await member.done).code, 0);
      await waitFor('the holder to exit', () => !alive(holder), 5000);
      if (ns !== undefined && IS_ROOT) await waitFor('no process left in its netns', () => inNetns(ns).length === 0, 5000);
    });

    it('rm of an unused network stops its holder at once; the holder keeps no capability while it serves', async () => {
      const D = `${tag}d`;
      assert.equal(cli(c, ['network', 'create', D]).code, 0);
      const holder = lsJson(c).find((x) => x.name === D)!.holderPid;
      // a root-made holder maps every id as itself: with its namespace's capabilities it could override host files
      const caps = readFileSync(`/proc/${holder}/status`, 'utf8')
        .split('\n')
        .filter((l) => /^Cap(Inh|Prm|Eff|Bnd|Amb):/.test(l))
        .map((l) => l.split(/\s+/)[1]);
      assert.deepEqual(caps, ['0000000000000000', '0000000000000000', '0000000000000000', '0000000000000000', '0000000000000000']);
      assert.equal(cli(c, ['network', 'rm', D]).code, 0);
      await waitFor('the holder to exit', () => !alive(holder), 3000);
    });

    it('a holder whose network directory vanished (a create that died, a cleaned runtime directory) exits', async function () {
      const F = `${tag}f`;
      assert.equal(cli(c, ['network', 'create', F]).code, 0);
      const holder = lsJson(c).find((x) => x.name === F)!.holderPid;
      const dir = `${networksDirOf(c)}/${F}`;
      if (!existsSync(dir)) {
        cli(c, ['network', 'rm', F]);
        skipBecause(this, `the runtime directory of this caller is not at ${networksDirOf(c)}`);
      }
      rmSync(dir, { recursive: true, force: true });
      await waitFor('the orphaned holder to exit', () => !alive(holder), 8000);
    });

    it('a crashed holder shows as down in ls; runs on it fail naming why; rm clears it', async () => {
      const E = `${tag}e`;
      assert.equal(cli(c, ['network', 'create', E]).code, 0);
      const holder = lsJson(c).find((x) => x.name === E)!.holderPid;
      process.kill(holder, 'SIGKILL');
      await waitFor('the holder to die', () => !alive(holder), 3000);
      assert.equal(lsJson(c).find((x) => x.name === E)?.state, 'down');
      const r = cli(c, ['run', '--network', E, '--', 'true']);
      assert.equal(r.code, 125);
      assert.match(r.stderr, /holder of network .* is gone/);
      const rm = cli(c, ['network', 'rm', E]);
      assert.equal(rm.code, 0, rm.stderr);
      assert.match(rm.stderr, /already gone/);
      assert.ok(!lsJson(c).some((x) => x.name === E));
    });

    it('bad input: names, subnets, overlaps, duplicates and unknown networks get clear errors', () => {
      const bad: [string[], number, RegExp][] = [
        [['network', 'create', '-bad'], 2, /Unknown option|unknown option|must be/i],
        [['network', 'create', 'a/b'], 2, /must be 1-63 of letters/],
        [['network', 'create', 'none'], 2, /reserved/],
        [['network', 'create', 'egress'], 2, /reserved/],
        [['network', 'create', `${tag}x`, '--subnet', '10.1.2.3/24'], 2, /host bits set; the network address is 10\.1\.2\.0\/24/],
        [['network', 'create', `${tag}x`, '--subnet', '300.1.1.0/24'], 2, /not an IPv4 CIDR/],
        [['network', 'create', `${tag}x`, '--subnet', '10.0.0.0/8'], 2, /prefix length must be from \/16 to \/30/],
        [['network', 'create', `${tag}x`, '--subnet', '127.0.0.0/24'], 2, /reserved/],
        [['network', 'create', `${tag}x`, '--subnet', `10.93.${n}.128/25`], 1, new RegExp(`overlaps network "${A}"`)],
        [['network', 'create', A], 1, new RegExp(`network "${A}" exists`)],
        [['network', 'create'], 2, /usage: cubicle network create NAME/],
        [['network', 'rm', `${tag}nope`], 1, /there is no network/],
        [['network', 'frob'], 2, /unknown network command "frob"/],
        [
          ['run', '--network', `${tag}nope`, '--', 'true'],
          2,
          /--network "t\d+nope" does not exist for this user; create it with: cubicle network create/,
        ],
        [['run', '--network', 'bad/name', '--', 'true'], 2, /--network/],
        [['run', '--name', '-x', '--', 'true'], 2, /name/],
      ];
      for (const [args, code, re] of bad) {
        const r = cli(c, args);
        assert.equal(r.code, code, `${args.join(' ')}: exit ${r.code}: ${r.stderr}`);
        assert.match(r.stderr, re, args.join(' '));
        assert.doesNotMatch(r.stderr, /internal error|\n\s+at /, 'no stack trace');
      }
      assert.ok(!lsJson(c).some((x) => x.name === `${tag}x`), 'nothing was created by the refused commands');
    });
  });
}

describe('private networks through the API (this process as the caller)', function () {
  this.timeout(120000);
  const name = `t${process.pid}api`;
  before(() => void createNetwork(name, `10.94.${n}.0/28`));
  after(async () => void (await removeNetwork(name).catch(() => undefined)));

  it('concurrent runs lease distinct addresses of the subnet (the lease is taken under a lock)', async () => {
    const runs = await Promise.all(
      Array.from({ length: 6 }, (_, i) =>
        runSandboxed(
          ['sh', '-c', 'sleep 0.5; cat /sys/class/net/eth0/address >/dev/null 2>&1; hostname -I 2>/dev/null || ip -4 -o addr show eth0'],
          {
            network: name,
            name: `w${i}`,
          },
        ),
      ),
    );
    const addrs = runs.map((r) => /10\.94\.\d+\.(\d+)/.exec(r.stdout)?.[0]);
    assert.ok(addrs.every(Boolean), JSON.stringify(runs.map((r) => r.stdout)));
    assert.equal(new Set(addrs).size, 6, `distinct addresses: ${addrs.join(' ')}`);
  });

  it('a /28 holds 14 sandboxes; the 15th at once fails naming the full subnet', async () => {
    const hold = Array.from({ length: 14 }, () => runSandboxed(['sleep', '3'], { network: name, reject: false }));
    await new Promise((r) => setTimeout(r, 1500));
    const extra = await runSandboxed(['true'], { network: name, reject: false });
    await Promise.all(hold);
    assert.equal(extra.verdict, 'setup-error');
    assert.match(extra.setupFailure?.message ?? '', /has no free address/);
    assert.equal(extra.setupFailure?.stage, 'network');
  });

  it('a create of the same name at once after rm gets a network of its own; rm leaves nothing aside', async () => {
    const R = `${name}r`;
    createNetwork(R, `10.94.${n}.16/28`);
    try {
      const removing = removeNetwork(R); // its part under the lock runs now, before the create below
      // the name is free at once: a create from another process meanwhile can no longer meet the old holder's directory
      assert.ok(!existsSync(`${runtimeDirPath()}/networks/${R}`), 'the directory was moved aside before the holder is told');
      const created = createNetwork(R, `10.94.${n}.32/28`);
      assert.equal((await removing).holder, 'stopped');
      const r = await runSandboxed(['sh', '-c', 'ip -4 -o addr show eth0 2>/dev/null || hostname -I'], { network: R, reject: false });
      assert.equal(r.verdict, 'ok', `${r.verdict} ${r.setupFailure?.message ?? ''} ${String(r.stderr)}`);
      assert.match(String(r.stdout), /10\.94\.\d+\.(3[3-9]|4[0-6])\b/, 'an address of the new subnet');
      assert.ok(existsSync(`/proc/${created.pid}`), 'the new holder still runs');
      assert.deepEqual(
        readdirSync(runtimeDirPath() + '/networks').filter((f) => f.startsWith('.removed-')),
        [],
        'the moved-aside directory is gone',
      );
    } finally {
      await removeNetwork(R).catch(() => undefined);
    }
  });

  it("a run ending after its network was removed and created again keeps the new network's record of its address", async () => {
    const R = `${name}m`;
    const subnet = `10.94.${n}.48/28`;
    const members = (): string[] => {
      try {
        return readdirSync(`${runtimeDirPath()}/networks/${R}/members`);
      } catch {
        return [];
      }
    };
    createNetwork(R, subnet);
    try {
      const first = spawnSandboxed(['sh', '-c', 'echo up; sleep 2'], { network: R, reject: false });
      // its payload runs, so it has joined the holder (a fixed wait raced the join on a busy machine)
      const said = await new Promise<string>((r) => {
        first.stdout!.once('data', (d: Buffer) => r(d.toString()));
        first.stdout!.once('end', () => r(''));
      });
      assert.equal(said, 'up\n');
      const [address] = members();
      assert.ok(address, 'the first run is a member');
      await removeNetwork(R);
      createNetwork(R, subnet); // the same subnet: the next run gets the same first address
      const second = runSandboxed(['sleep', '4'], { network: R, reject: false });
      for (let i = 0; i < 100 && members().length === 0; i++) await new Promise((r) => setTimeout(r, 20));
      assert.deepEqual(members(), [address], 'the second run holds the same address on the new network');
      const r1 = await first.result; // it ends now, and gives back its own address only
      assert.equal(r1.verdict, 'ok', `${r1.verdict} ${r1.setupFailure?.message ?? ''}`);
      assert.deepEqual(members(), [address], "the second run's member record is still there");
      assert.equal((await second).verdict, 'ok');
      assert.deepEqual(members(), [], 'and goes with it');
    } finally {
      await removeNetwork(R).catch(() => undefined);
    }
  });

  it('planted member entries (a fifo, a directory, a record naming a hosts line) neither hang a join nor reach /etc/hosts', async () => {
    const dir = `${runtimeDirPath()}/networks/${name}/members`;
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const a = `10.94.${n}.9`;
    spawnSync('mkfifo', [`${dir}/10.94.${n}.7`]);
    mkdirSync(`${dir}/10.94.${n}.8`);
    // a live record (this process's pid and start) whose name carries a second hosts line
    const start = Number(readFileSync(`/proc/${process.pid}/stat`, 'utf8').split(') ')[1]!.split(' ')[19]);
    writeFileSync(`${dir}/${a}`, JSON.stringify({ name: 'x\n1.2.3.4\tplanted.example', address: a, pid: process.pid, start }));
    const r = await runSandboxed(['cat', '/etc/hosts'], { network: name, name: 'reader', reject: false });
    assert.equal(r.verdict, 'ok', `${r.verdict} ${r.setupFailure?.message ?? ''}`);
    assert.doesNotMatch(String(r.stdout), /planted/);
    assert.match(String(r.stdout), /\treader\n/);
    assert.deepEqual(readdirSync(dir), [], 'every planted entry was dropped as not a record');
  });

  it('a runtime directory open to others is refused by network commands with the fix, never used', () => {
    const xdg = mkdtempSync('/tmp/cubicle-xdg-');
    try {
      chmodSync(xdg, 0o700);
      mkdirSync(`${xdg}/cubicle`, { mode: 0o755 });
      chmodSync(`${xdg}/cubicle`, 0o755);
      const r = spawnSync(process.execPath, [CLI, 'network', 'create', `${name}x`], {
        encoding: 'utf8',
        env: { ...process.env, XDG_RUNTIME_DIR: xdg },
      });
      assert.equal(r.status, 1, r.stderr);
      assert.match(r.stderr, /is open to other users .*remove it/);
      assert.ok(!existsSync(`${xdg}/cubicle/networks`));
    } finally {
      rmSync(xdg, { recursive: true, force: true });
    }
  });

  it('an unknown network is refused before anything runs; network and name are validated', () => {
    assert.throws(() => runSandboxed(['true'], { network: `${name}nope` }), /does not exist for this user/);
    assert.throws(() => runSandboxed(['true'], { name: '.hidden' }), /name ".hidden" must be 1-63/);
    assert.throws(() => runSandboxed(['true'], { network: 'a b' }), /network "a b" must be 'none', 'egress' or a network's name/);
  });
});
