// The egress path's cost: latency (1-byte ping-pong round trips) and throughput (a one-way stream) of a TCP
// connection to a server on the host's loopback, from the host itself (the baseline) and from a sandbox with
// --network egress (through slirp4netns and the allowlist). Usage: node dist/bench/egress.js [--mib N] [--rounds N]
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { runSandboxed } from '../sandbox/index.js';
import { benchFlags } from './runner.js';

const values = benchFlags('usage: node dist/bench/egress.js [--mib N (default 256)] [--rounds N (default 2000)]', {
  mib: { count: 256 },
  rounds: { count: 2000 },
});
const MIB = values.mib;
const ROUNDS = values.rounds;

// Mode byte 'p': echo every byte back (ping-pong); 's': read to EOF, then answer with the byte count.
const SERVER = `
import socket, threading
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('127.0.0.1', 0)); s.listen(16)
print(s.getsockname()[1], flush=True)
def serve(c):
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    mode = c.recv(1)
    if mode == b'p':
        while True:
            b = c.recv(1)
            if not b: break
            c.sendall(b)
    else:
        n = 0
        while True:
            b = c.recv(1 << 20)
            if not b: break
            n += len(b)
        c.sendall(str(n).encode())
    c.close()
while True:
    c, _ = s.accept(); threading.Thread(target=serve, args=(c,), daemon=True).start()
`;

const CLIENT = `
import json, socket, sys, time
host, port, rounds, mib = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
c = socket.create_connection((host, port)); c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1); c.sendall(b'p')
rtts = []
for _ in range(rounds):
    t = time.perf_counter(); c.sendall(b'x'); c.recv(1); rtts.append(time.perf_counter() - t)
c.close()
rtts.sort()
c = socket.create_connection((host, port)); c.sendall(b's')
chunk = b'\\0' * (1 << 20)
t = time.perf_counter()
for _ in range(mib): c.sendall(chunk)
c.shutdown(socket.SHUT_WR); got = int(c.recv(64)); el = time.perf_counter() - t
assert got == mib << 20, got
print(json.dumps({'p50us': rtts[len(rtts) // 2] * 1e6, 'p95us': rtts[int(len(rtts) * 0.95)] * 1e6, 'mibps': mib / el}))
`;

interface Figures {
  p50us: number;
  p95us: number;
  mibps: number;
}

const server = spawn('python3', ['-c', SERVER], { stdio: ['ignore', 'pipe', 'inherit'] });
try {
  const [line] = (await once(createInterface({ input: server.stdout }), 'line')) as [string];
  const port = Number(line);
  const args = [String(port), String(ROUNDS), String(MIB)];
  const host = spawnSync('python3', ['-c', CLIENT, '127.0.0.1', ...args], { encoding: 'utf8' });
  if (host.status !== 0) throw new Error(`host client failed: ${host.stderr}`);
  const inside = await runSandboxed(['python3', '-c', CLIENT, 'host.cubicle.internal', ...args], {
    network: 'egress',
    allowHosts: [`host.cubicle.internal:${port}`],
    tmpSize: '16M',
  });
  const rows: [string, Figures][] = [
    ['host loopback (baseline)', JSON.parse(host.stdout) as Figures],
    ['sandbox --network egress (slirp4netns)', JSON.parse(inside.stdout) as Figures],
  ];
  console.log(`TCP to a server on the host's loopback: ${ROUNDS} 1-byte round trips, then a ${MIB} MiB stream (python3 both ends)`);
  console.log('path                                   rtt p50    rtt p95    throughput');
  for (const [name, f] of rows)
    console.log(
      `${name.padEnd(37)}  ${f.p50us.toFixed(0).padStart(5)} us   ${f.p95us.toFixed(0).padStart(5)} us   ` +
        `${f.mibps.toFixed(0).padStart(6)} MiB/s`,
    );
} finally {
  server.kill('SIGKILL');
}
