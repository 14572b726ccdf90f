// TCP between two sandboxes on a private network against the same programs on the host's loopback: the round trip
// of small messages (latency) and a 100 MiB stream (throughput). The same Python server and client run in both.
// Usage: node dist/bench/network.js [--rounds N] [--mib N] [--json]
import { spawn, spawnSync } from 'node:child_process';
import { createNetwork, removeNetwork } from '../sandbox/network/manage.js';
import { spawnSandboxed, runSandboxed } from '../sandbox/index.js';
import { benchFlags } from './runner.js';

// Port 9000: answers each 64-byte message with itself; port 9001: reads everything, then answers the byte count.
const SERVER = `
import socket, threading
def echo(c):
    while True:
        d = c.recv(64)
        if not d: return
        c.sendall(d)
def sink(c):
    n = 0
    while True:
        d = c.recv(1 << 20)
        if not d: break
        n += len(d)
    c.sendall(str(n).encode()); c.close()
def serve(port, fn):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("0.0.0.0", port)); s.listen(4)
    while True:
        c, _ = s.accept(); c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=fn, args=(c,), daemon=True).start()
for port, fn in ((9000, echo), (9001, sink)): threading.Thread(target=serve, args=(port, fn), daemon=True).start()
print("ready", flush=True)
import sys; sys.stdin.read()
`;

const CLIENT = (host: string, rounds: number, mib: number): string => `
import socket, time, json
c = socket.create_connection(("${host}", 9000)); c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
msg = b"x" * 64
for _ in range(100): c.sendall(msg); c.recv(64)
t = time.perf_counter()
for _ in range(${rounds}):
    c.sendall(msg)
    got = 0
    while got < 64: got += len(c.recv(64 - got))
rtt = (time.perf_counter() - t) / ${rounds} * 1e6
s = socket.create_connection(("${host}", 9001)); chunk = b"y" * (1 << 20)
t = time.perf_counter()
for _ in range(${mib}): s.sendall(chunk)
s.shutdown(socket.SHUT_WR); n = int(s.recv(64))
secs = time.perf_counter() - t
print(json.dumps({"rttUs": rtt, "mibPerS": n / secs / 1048576}))
`;

interface Figures {
  rttUs: number;
  mibPerS: number;
}

function onHost(rounds: number, mib: number): Figures {
  const server = spawn('python3', ['-c', SERVER], { stdio: ['pipe', 'pipe', 'inherit'] });
  try {
    const deadline = Date.now() + 5000;
    while (Date.now() < deadline) {
      const r = spawnSync('python3', ['-c', 'import socket; socket.create_connection(("127.0.0.1", 9001)).close()']);
      if (r.status === 0) break;
    }
    const r = spawnSync('python3', ['-c', CLIENT('127.0.0.1', rounds, mib)], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`host client: ${r.stderr}`);
    return JSON.parse(r.stdout) as Figures;
  } finally {
    server.kill('SIGKILL');
  }
}

async function onNetwork(rounds: number, mib: number): Promise<Figures> {
  const name = `bench${process.pid}`;
  createNetwork(name);
  try {
    const server = spawnSandboxed(['python3', '-c', SERVER], { network: name, name: 'srv', stdin: 'pipe', limits: { wallTime: 600 } });
    await new Promise<void>((resolve, reject) => {
      let out = '';
      server.stdout.on('data', (d: Buffer) => (out += d.toString()).includes('ready') && resolve());
      server.result.then(() => reject(new Error(`server ended: ${out}`)), reject);
    });
    try {
      const r = await runSandboxed(['python3', '-c', CLIENT('srv', rounds, mib)], { network: name, limits: { wallTime: 600 } });
      return JSON.parse(r.stdout) as Figures;
    } finally {
      server.stdin.end();
      await server.result.catch(() => undefined);
    }
  } finally {
    await removeNetwork(name);
  }
}

async function main(): Promise<void> {
  const values = benchFlags('usage: node dist/bench/network.js [--rounds N (default 5000)] [--mib N (default 100)] [--json]', {
    rounds: { count: 5000 },
    mib: { count: 100 },
    json: { switch: true },
  });
  const { rounds, mib } = values;
  const host = onHost(rounds, mib);
  const net = await onNetwork(rounds, mib);
  if (values.json) {
    console.log(JSON.stringify({ rounds, mib, hostLoopback: host, privateNetwork: net }));
    return;
  }
  console.log(`TCP, ${rounds} round trips of 64 bytes and a ${mib} MiB stream (Python on both ends, TCP_NODELAY)`);
  console.log(`${'path'.padEnd(34)} ${'round trip'.padStart(12)} ${'throughput'.padStart(14)}`);
  for (const [label, f] of [
    ['host loopback', host],
    ['two sandboxes on a private network', net],
  ] as const)
    console.log(`${label.padEnd(34)} ${`${f.rttUs.toFixed(1)} µs`.padStart(12)} ${`${f.mibPerS.toFixed(0)} MiB/s`.padStart(14)}`);
}

await main();
