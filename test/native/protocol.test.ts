// The helper refuses malformed plans (never ignores them) and reports exactly one terminal event.
import { strict as assert } from 'node:assert';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import type { Readable, Writable } from 'node:stream';
import { Op, encodePlan, type PlanOp } from '../../sandbox/plan/ops.js';
import { renderProtocolHeader, renderStatusEmitters } from '../../sandbox/protocol/c-header.js';
import { NAMESPACE_NAMES } from '../../sandbox/protocol/events.js';
import { PLAN_MAGIC, PROTOCOL_VERSION, ProtocolLimits } from '../../sandbox/protocol/opcodes.js';
import { renderProtocolSource } from '../../sandbox/native/compile.js';
import { helperPath } from '../../sandbox/native/helper-path.js';
import { expectedStamp } from '../../sandbox/native/stamp.js';
import { StatusReader } from '../../sandbox/protocol/status.js';

interface Run {
  events: Record<string, unknown>[];
  code: number | null;
  raw: Buffer;
}

/** Starts the helper by hand with raw plan and bpf bytes; collects status events. */
function helper(plan: Uint8Array, bpf: Uint8Array = Buffer.alloc(0)): Promise<Run> {
  return new Promise((resolve, reject) => {
    const c = spawn(helperPath(), [], { stdio: ['ignore', 'ignore', 'pipe', 'pipe', 'pipe', 'pipe', 'pipe'], env: {} });
    const st = c.stdio as unknown as (Readable & Writable)[];
    const chunks: Buffer[] = [];
    st[5]!.on('data', (d: Buffer) => chunks.push(d));
    for (const i of [3, 4, 6]) st[i]!.on('error', () => {});
    st[3]!.end(plan);
    st[4]!.end(bpf);
    c.on('error', reject);
    c.on('close', (code) => {
      const raw = Buffer.concat(chunks);
      resolve({
        events: raw
          .toString('latin1')
          .trim()
          .split('\n')
          .filter(Boolean)
          .map((l) => JSON.parse(l)),
        code,
        raw,
      });
    });
  });
}

const raw = (...tokens: string[]): Buffer => Buffer.from(tokens.map((t) => `${t}\0`).join(''));
const V = String(PROTOCOL_VERSION);
const minimal = (extra: PlanOp[] = [], argv = ['/bin/true']): PlanOp[] => [
  Op.userns(1000, 1000, process.geteuid!() === 0 ? 65534 : process.geteuid!(), process.geteuid!() === 0 ? 65534 : process.getegid!()),
  Op.root(1 << 20),
  Op.bind('/usr', '/usr', 'ro'),
  Op.symlink('usr/bin', '/bin'),
  Op.symlink('usr/lib', '/lib'),
  Op.symlink('usr/lib64', '/lib64'),
  ...extra,
  ...argv.map(Op.arg),
  Op.exec(argv[0]!),
  Op.end(),
];

async function refused(plan: Uint8Array, re: RegExp, bpf?: Uint8Array): Promise<void> {
  const r = await helper(plan, bpf);
  const terminal = r.events.filter((e) => e.ev === 'error' || e.ev === 'exit');
  assert.equal(terminal.length, 1, `exactly one terminal event: ${JSON.stringify(r.events)}`);
  assert.equal(terminal[0]!.ev, 'error');
  assert.match(String(terminal[0]!.msg), re);
  assert.equal(r.code, 125);
}

describe('helper protocol', () => {
  it('the C header and emitters are generated from the TS protocol modules', () => {
    assert.equal(readFileSync(new URL('../../native/protocol.h', import.meta.url), 'utf8'), renderProtocolHeader());
    assert.equal(readFileSync(new URL('../../native/protocol.c', import.meta.url), 'utf8'), renderProtocolSource(expectedStamp()));
    assert.ok(renderProtocolSource(expectedStamp()).startsWith(renderStatusEmitters()));
  });

  it('runs a minimal well-formed plan: hello, ready, exit, each as declared', async () => {
    const r = await helper(encodePlan(minimal()));
    assert.deepEqual(
      r.events.map((e) => e.ev),
      ['hello', 'ready', 'exit'],
    );
    const reader = new StatusReader();
    reader.push(r.raw); // validates every line against events.ts
    const [hello, ready, exit] = reader.events;
    assert.deepEqual(hello, { ev: 'hello', v: PROTOCOL_VERSION });
    assert.ok(ready?.ev === 'ready' && NAMESPACE_NAMES.every((n) => ready.ns[n] > 0), JSON.stringify(ready));
    assert.ok(exit?.ev === 'exit');
    assert.equal(exit.code, 0);
    assert.equal(exit.signal, undefined);
    assert.equal(exit.initSignal, undefined);
    assert.ok(exit.wallUs !== undefined && exit.wallUs > 0);
    assert.ok(
      exit.init && exit.init.sinceForkUs >= 0 && exit.rusage.utimeUs + exit.rusage.stimeUs >= exit.init.utimeUs + exit.init.stimeUs,
      'wait4 of init includes init',
    );
    assert.equal(exit.sample, undefined, 'nothing was watched');
    assert.deepEqual(exit.stops, []);
    assert.deepEqual(exit.violations, []);
    assert.equal(r.code, 0);
  });

  it("a sampler limit is reported as a stop on the fork's time axis, with raw usage", async () => {
    const r = await helper(encodePlan(minimal([Op.watch(2000, 0, 200_000, 0, 0, false)], ['/bin/sleep', '5'])));
    const exit = new StatusReader().push(r.raw).find((e) => e.ev === 'exit');
    assert.ok(exit?.ev === 'exit', JSON.stringify(r.events));
    assert.equal(exit.signal, 9);
    assert.equal(exit.stops.length, 1);
    const [stop] = exit.stops;
    assert.equal(stop!.kind, 'wall');
    assert.ok(stop!.atUs > 200_000 && stop!.atUs <= exit.wallUs!, JSON.stringify(exit));
    assert.ok(exit.sample && exit.sample.samples > 0);
  });

  it('refuses an unknown opcode', () =>
    refused(Buffer.concat([raw(PLAN_MAGIC, V, 'userns', '1', '1', '1', '1', 'frobnicate')]), /unknown plan opcode 'frobnicate'/));
  it('refuses a wrong arity (truncated op)', () => refused(raw(PLAN_MAGIC, V, 'userns', '1', '1'), /needs 4 arguments/));
  it('refuses relative paths and .. components', async () => {
    await refused(encodePlan(minimal([Op.tmpfs('relative', 65536, 0o755, 4096)])), /must be absolute/);
    await refused(encodePlan(minimal([Op.tmpfs('/a/../b', 65536, 0o755, 4096)])), /must be absolute without '\.', '\.\.'/);
    await refused(encodePlan(minimal([Op.bind('/usr/../etc', '/x', 'ro')])), /must be absolute/);
  });
  it('refuses a plan without end, or with tokens after it', async () => {
    await refused(encodePlan(minimal()).subarray(0, -4), /no 'end'/);
    await refused(Buffer.concat([encodePlan(minimal()), raw('arg', 'x')]), /tokens after 'end'/);
  });
  it('refuses another protocol version or magic', async () => {
    await refused(raw(PLAN_MAGIC, '999', 'end'), /version '999' is not supported/);
    await refused(raw('not-a-plan', V, 'end'), /does not start with/);
  });
  it('refuses an oversize plan', () =>
    refused(Buffer.concat([raw(PLAN_MAGIC, V), Buffer.alloc(ProtocolLimits.planMaxBytes + 10, 0x61), Buffer.from([0])]), /larger than/));
  it('refuses a seccomp program whose length is not a multiple of 8', () =>
    refused(encodePlan(minimal()), /not a multiple of 8/, Buffer.alloc(12)));
  it('refuses a plan missing userns, root or exec', async () => {
    await refused(raw(PLAN_MAGIC, V, 'root', '65536', 'arg', 'x', 'exec', '/x', 'end'), /no userns/);
    await refused(raw(PLAN_MAGIC, V, 'userns', '1', '1', '1', '1', 'arg', 'x', 'exec', '/x', 'end'), /no root/);
    await refused(raw(PLAN_MAGIC, V, 'userns', '1', '1', '1', '1', 'root', '65536', 'arg', 'x', 'end'), /no exec/);
  });
  it('refuses a holder plan that carries run ops, holder-map in a run, and malformed network and holder ops', async () => {
    const holder = (...ops: PlanOp[]): Buffer => encodePlan([Op.holder('/tmp/nowhere/sock'), ...ops, Op.end()]);
    await refused(holder(Op.holderMap('uid', 0, 0, 1), Op.exec('/bin/true')), /a holder plan cannot carry 'exec'/);
    await refused(holder(), /needs its holder-map lines/);
    await refused(holder({ op: 'holder-map', args: ['pid', '0', '0', '1'] }), /kind 'pid' is not uid or gid/);
    await refused(holder(Op.holderMap('uid', 0, 4294967294, 2)), /out of bounds/);
    await refused(encodePlan([Op.holder('relative/sock'), Op.holderMap('uid', 0, 0, 1), Op.end()]), /must be absolute/);
    await refused(encodePlan(minimal([Op.holderMap('uid', 0, 0, 1)])), /holder-map belongs to a holder plan/);
    await refused(encodePlan(minimal([Op.network('/tmp/x/sock', '10.0.0.300', 24, 1)])), /'10\.0\.0\.300' is not an IPv4 address/);
    await refused(encodePlan(minimal([Op.network('/tmp/x/sock', '10.0.0.1', 31, 1)])), /prefix length 31 is out of range/);
    await refused(encodePlan(minimal([Op.network(`/tmp/${'x'.repeat(120)}`, '10.0.0.1', 24, 1)])), /longer than 107 bytes/);
  });
  it('a network op without a valid holder pid is refused', async () => {
    await refused(encodePlan(minimal([{ op: 'network', args: ['/tmp/x/sock', '10.0.0.2', '24', '0'] }])), /holder pid must be positive/);
    await refused(encodePlan(minimal([{ op: 'network', args: ['/tmp/x/sock', '10.0.0.2', '24', '-5'] }])), /holder pid/);
  });
  it("a network's socket served by another process than the record's holder is a setup error (removed and created again)", async () => {
    // This process listens where the holder would; the plan names another pid (1): the helper must not join.
    const dir = mkdtempSync('/tmp/cubicle-holder-test-');
    const server = createServer((c) => c.on('error', () => undefined));
    try {
      await new Promise<void>((r) => server.listen(`${dir}/sock`, r));
      const r = await helper(encodePlan(minimal([Op.network(`${dir}/sock`, '10.0.0.2', 24, 1)])));
      const terminal = r.events.filter((e) => e.ev === 'error' || e.ev === 'exit');
      assert.equal(terminal.length, 1);
      assert.equal(terminal[0]!.ev, 'error');
      assert.match(String(terminal[0]!.msg), new RegExp(`holder is pid ${process.pid}, not 1 .*removed and created again`));
      assert.equal(r.code, 125);
    } finally {
      server.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
  it('a network whose holder is gone is a setup error naming the fix, never a run', async () => {
    const r = await helper(encodePlan(minimal([Op.network('/tmp/cubicle-no-such-holder/sock', '10.0.0.2', 24, 1)])));
    const terminal = r.events.filter((e) => e.ev === 'error' || e.ev === 'exit');
    assert.equal(terminal.length, 1);
    assert.equal(terminal[0]!.ev, 'error');
    assert.equal(terminal[0]!.syscall, 'connect');
    assert.match(String(terminal[0]!.msg), /reaching the network's holder .*it is gone/);
    assert.equal(r.code, 125);
  });
  it('refuses a network stack without its allowlist, and an allowlist without a stack (egress never runs unguarded)', async () => {
    await refused(encodePlan(minimal([Op.netStack('/usr/bin/slirp4netns', 'eth0', 1000)])), /net-stack and net-rules come together/);
    await refused(encodePlan(minimal([Op.netRules('/usr/sbin/nft', 'table inet t {}')])), /net-stack and net-rules come together/);
    await refused(encodePlan(minimal([Op.netStack('/usr/bin/slirp4netns', 'a/b', 1000)])), /interface name/);
    const stack = [Op.netStack('/usr/bin/slirp4netns', 'eth0', 1000), Op.netRules('/usr/sbin/nft', 'table inet t {}')];
    await refused(encodePlan(minimal([...stack, Op.network('/tmp/x/sock', '10.0.0.2', 24, 1)])), /net-stack interface cannot be eth0/);
  });
  it('a published port on a network whose holder is gone: the error, and no stack watchdog or API directory left', async () => {
    const apiDirs = (): string[] => readdirSync('/tmp').filter((d) => d.startsWith('cubicle-net-'));
    const before = new Set(apiDirs());
    const plan = minimal([
      Op.netStack('/usr/bin/slirp4netns', 'pub0', 1000),
      Op.netStackArg('--api-socket'),
      Op.netStackArg('{api}'),
      Op.netRules('/usr/sbin/nft', 'table inet t {}'),
      Op.network('/tmp/cubicle-no-such-holder/sock', '10.0.0.2', 24, 1),
    ]);
    // the watchdog (forked before the holder join) holds the status pipe: the helper's close means it is gone too
    const r = await helper(encodePlan(plan));
    const terminal = r.events.filter((e) => e.ev === 'error' || e.ev === 'exit');
    assert.deepEqual([terminal.length, terminal[0]!.syscall], [1, 'connect']);
    assert.match(String(terminal[0]!.msg), /reaching the network's holder/);
    // a new directory that is still empty was this run's (a live stack elsewhere has its socket in its own)
    const empty = (d: string): boolean => {
      try {
        return readdirSync(`/tmp/${d}`).length === 0;
      } catch {
        return false; // another user's
      }
    };
    const left = apiDirs().filter((d) => !before.has(d) && empty(d));
    assert.deepEqual(left, [], 'the watchdog removed the API directory it never used');
  });
  it('refuses a bad bind access mode and non-octal modes', async () => {
    await refused(encodePlan(minimal([{ op: 'bind', args: ['/usr', '/x', 'rwx'] }])), /bind access 'rwx'/);
    await refused(encodePlan(minimal([{ op: 'dir', args: ['/x', '999'] }])), /not octal/);
  });
  it('refuses an image op anywhere but right after root, and an image root that is both or neither read-only and writable', async () => {
    await refused(encodePlan(minimal([Op.image('/tmp', false)])), /image must come right after root/);
    const imagePlan = (writable: boolean, rootRo: boolean): PlanOp[] => {
      const [userns, root] = minimal();
      return [userns!, root!, Op.image('/tmp', writable), ...(rootRo ? [Op.rootReadOnly()] : []), Op.arg('/x'), Op.exec('/x'), Op.end()];
    };
    await refused(encodePlan(imagePlan(true, true)), /never both/);
    await refused(encodePlan(imagePlan(false, false)), /never both/);
    await refused(
      raw(PLAN_MAGIC, V, 'userns', '1', '1', '1', '1', 'root', '65536', 'image', '/tmp', 'yes', 'arg', 'x', 'exec', '/x', 'end'),
      /0 or 1/,
    );
  });
  it('a missing image directory is a setup error naming it, never a run', async () => {
    const [userns, root] = minimal();
    const r = await helper(
      encodePlan([userns!, root!, Op.image('/no/such/image', false), Op.rootReadOnly(), Op.arg('/x'), Op.exec('/x'), Op.end()]),
    );
    const terminal = r.events.filter((e) => e.ev === 'error' || e.ev === 'exit');
    assert.equal(terminal.length, 1);
    assert.equal(terminal[0]!.ev, 'error');
    assert.match(String(terminal[0]!.msg), /\/no\/such\/image/);
    assert.equal(terminal[0]!.errno, 2);
    assert.equal(r.code, 125);
  });
  it('a failing op is reported with its index, syscall and errno', async () => {
    const plan = minimal([Op.bind('/no/such/source', '/x', 'rw')]);
    const r = await helper(encodePlan(plan));
    const err = r.events.find((e) => e.ev === 'error')!;
    assert.equal(err.stage, 'init');
    assert.equal(err.op, 'bind');
    assert.equal(plan[err.opIndex as number]!.args[0], '/no/such/source');
    assert.equal(err.syscall, 'openat2');
    assert.equal(err.errno, 2);
    assert.equal(r.events.filter((e) => e.ev === 'exit').length, 0);
  });
  it('started by hand without its fds, it explains itself and exits 126', () => {
    const r = spawnSync(helperPath(), [], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    assert.equal(r.status, 126);
    assert.match(r.stderr, /started by the cubicle library/);
  });
});
