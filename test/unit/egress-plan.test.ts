// Egress planning (pure): the allowlist's order, the stack's arguments, the files a sandbox with egress gets.
import { strict as assert } from 'node:assert';
import { egressRuleset, stackArgs, stackIfname, stackRequests, type ResolvedNetwork } from '../../sandbox/egress/egress.js';
import { parseSubnet, SubnetError } from '../../sandbox/network/subnet.js';

const stack = { program: '/usr/bin/slirp4netns', nft: '/usr/sbin/nft' };
const rules = (n: ResolvedNetwork): string[] =>
  egressRuleset(n)
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !/[{}]$/.test(l) && !l.startsWith('type '));

describe('egress planning', () => {
  it('judges only first segments, lets DNS reach the forwarder, and refuses everything else with a reset or an ICMP error', () => {
    const r = rules({ mode: 'egress', allow: [], publish: [], stack });
    assert.deepEqual(r.slice(0, 4), [
      'oifname "lo" accept',
      'meta nfproto ipv6 reject with icmpx type admin-prohibited',
      'tcp flags & (syn | ack) != syn accept',
      'ip daddr 10.0.2.3 meta l4proto { tcp, udp } th dport 53 accept',
    ]);
    assert.deepEqual(r.slice(-2), ['meta l4proto tcp reject with tcp reset', 'reject with icmpx type admin-prohibited']);
    assert.match(egressRuleset({ mode: 'egress', allow: [], publish: [], stack }), /policy drop;/);
  });

  // regression: UDP to 255.255.255.255 reached the host loopback under host.cubicle.internal:PORT and 0.0.0.0/0
  it('HOST:PORT entries come before the refusal of the stack link, broadcast and multicast; CIDRs only after it', () => {
    const r = rules({
      mode: 'egress',
      allow: [
        { address: '10.0.2.2', prefix: 32, port: 4873, given: 'host.cubicle.internal:4873' },
        { address: '0.0.0.0', prefix: 0, given: '0.0.0.0/0' },
      ],
      publish: [],
      stack,
    });
    const host = r.indexOf('ip daddr 10.0.2.2 meta l4proto { tcp, udp } th dport 4873 accept');
    const refuse = r.indexOf('ip daddr { 10.0.2.0/24, 0.0.0.0/8, 224.0.0.0/4, 255.255.255.255 } reject with icmpx type admin-prohibited');
    const cidr = r.indexOf('ip daddr 0.0.0.0/0 accept');
    assert.ok(host >= 0 && refuse > host && cidr > refuse, r.join('\n'));
  });

  it('without egress: no DNS rule, no DNS in the stack; published ports go through the API socket on 127.0.0.1 only', () => {
    const n: ResolvedNetwork = { mode: 'none', allow: [], publish: [{ hostPort: 8080, sandboxPort: 80 }], stack };
    assert.doesNotMatch(egressRuleset(n), /dport 53/);
    const args = stackArgs(n);
    assert.ok(args.includes('--disable-dns'));
    assert.deepEqual(args.slice(args.indexOf('--api-socket'), args.indexOf('--api-socket') + 2), ['--api-socket', '{api}']);
    assert.deepEqual(
      stackRequests(n).map((r) => JSON.parse(r) as unknown),
      [{ execute: 'add_hostfwd', arguments: { proto: 'tcp', host_addr: '127.0.0.1', host_port: 8080, guest_port: 80 } }],
    );
    assert.deepEqual(stackArgs({ ...n, mode: 'egress', publish: [] }).includes('--api-socket'), false);
    // the stack keeps the host's loopback shut unless host.cubicle.internal:PORT is allowed (besides the rules)
    assert.ok(stackArgs({ ...n, mode: 'egress', publish: [] }).includes('--disable-host-loopback'));
    const open = stackArgs({
      ...n,
      mode: 'egress',
      allow: [{ address: '10.0.2.2', prefix: 32, port: 4873, given: 'host.cubicle.internal:4873' }],
    });
    assert.ok(!open.includes('--disable-host-loopback'));
  });

  it('on a private network: pub0 on a link-local /24 no subnet can take; eth0 (peers) open, the stack only answers', () => {
    const n: ResolvedNetwork = { mode: 'private', allow: [], publish: [{ hostPort: 8080, sandboxPort: 80 }], stack };
    assert.equal(stackIfname(n), 'pub0');
    assert.equal(stackIfname({ ...n, mode: 'egress' }), 'eth0');
    const args = stackArgs(n);
    assert.ok(args.includes('--cidr=169.254.2.0/24') && args.includes('--disable-host-loopback') && args.includes('--disable-dns'));
    assert.equal(args.at(-1), 'pub0');
    assert.throws(() => parseSubnet('169.254.2.0/24'), SubnetError, 'a network can never overlap the stack link');
    assert.deepEqual(rules(n), [
      'oifname "lo" accept',
      'oifname "eth0" accept',
      'meta nfproto ipv6 reject with icmpx type admin-prohibited',
      'tcp flags & (syn | ack) != syn accept',
      'meta l4proto tcp reject with tcp reset',
      'reject with icmpx type admin-prohibited',
    ]);
  });
});
