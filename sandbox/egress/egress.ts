// The sandbox's network: `none` (only lo, the default), `egress` (a user-mode stack, slirp4netns, with an allowlist
// loaded into the sandbox's network namespace before the payload starts) or a private network, and published ports
// (the same stack with nothing allowed out). Validates the options, resolves allowed names to addresses on the host,
// and renders the stack's arguments and the ruleset.
import { accessSync, constants as fsConstants, statSync } from 'node:fs';
import { SandboxHostError, SandboxOptionError } from '../errors.js';
import { childProcess, nodeNet } from '../lazy-require.js';

/** The addresses of the egress link inside (slirp4netns's defaults, IPv4 only). */
export const EGRESS_LINK = {
  ifname: 'eth0',
  address: '10.0.2.100',
  prefix: 24,
  /** The gateway: the stack delivers connections to it to the host's loopback. */
  gateway: '10.0.2.2',
  /** The stack's DNS forwarder (to the host's nameservers). */
  dns: '10.0.2.3',
} as const;

/** The link of a stack that only publishes ports for a sandbox on a private network: an interface of its own beside
 *  the network's `eth0`, and link-local addresses, which a private network's subnet can never overlap (network subnets
 *  refuse 169.254.0.0/16). Its default route takes only what the subnet's own route does not, and the ruleset
 *  refuses all of that. */
export const PUBLISH_LINK = {
  ifname: 'pub0',
  cidr: '169.254.2.0/24',
  address: '169.254.2.100',
  prefix: 24,
  gateway: '169.254.2.2',
} as const;
/** A private network's link inside (made by stage 0 as a veth pair). */
export const NETWORK_IFNAME = 'eth0';

/** The name inside for the host's loopback (reachable only on allowed ports). */
export const HOST_ALIAS = 'host.cubicle.internal';
/** Reserved network names; any other name is a private network. */
export const NETWORK_NONE = 'none';
export const NETWORK_EGRESS = 'egress';
const MAX_RULES = 256;
/** How long the stack may take to bring its link up. */
const STACK_TIMEOUT_MS = 10_000;

export interface AllowRule {
  /** IPv4 network address and prefix length. */
  address: string;
  prefix: number;
  /** TCP and UDP destination port; undefined: every port. */
  port?: number;
  /** What the caller wrote. */
  given: string;
}

export interface PublishedPort {
  hostPort: number;
  sandboxPort: number;
}

export interface ResolvedNetwork {
  /** 'private': a private network (its name is in ResolvedOptions.network); a stack only for published ports. */
  mode: 'none' | 'egress' | 'private';
  allow: AllowRule[];
  publish: PublishedPort[];
  /** Host programs: the stack and nft (present when a stack runs: egress, or published ports). */
  stack?: { program: string; nft: string };
}

const fail = (option: string, message: string): never => {
  throw new SandboxOptionError(option, message);
};

const SEARCH = ['/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin'];

/** A host program by name in the system directories, or undefined. */
function hostProgram(name: string): string | undefined {
  for (const dir of SEARCH) {
    try {
      accessSync(`${dir}/${name}`, fsConstants.X_OK);
      return `${dir}/${name}`;
    } catch {
      /* next */
    }
  }
  return undefined;
}

/** Whether the user (uid/gid) that starts the stack may open /dev/net/tun (the stack makes its link with it). */
function tunUsable(uid: number, gid: number): boolean {
  try {
    const st = statSync('/dev/net/tun');
    if (uid === 0) return true;
    const rw = (bits: number): boolean => (st.mode & bits) === bits;
    if (st.uid === uid) return rw(0o600);
    if (st.gid === gid) return rw(0o060);
    return rw(0o006);
  } catch {
    return false;
  }
}

function checkPort(option: string, given: string, v: string): number {
  const n = /^\d{1,5}$/.test(v) ? Number(v) : NaN;
  if (!(n >= 1 && n <= 65535)) fail(option, `${option} "${given}": the port must be a number from 1 to 65535`);
  return n;
}

/** IPv4 addresses of a host name, resolved on the host now (NSS: /etc/hosts, DNS). */
function resolveName(option: string, given: string, host: string): string[] {
  let out = '';
  try {
    out = childProcess().execFileSync('getent', ['ahostsv4', host], {
      encoding: 'utf8',
      timeout: 5000,
      stdio: ['ignore', 'pipe', 'ignore'],
    });
  } catch {
    /* not found */
  }
  const addrs = [
    ...new Set(
      out
        .split('\n')
        .map((l) => l.split(/\s+/)[0]!)
        .filter((a) => nodeNet().isIPv4(a)),
    ),
  ];
  if (!addrs.length) fail(option, `${option} "${given}": ${host} does not resolve to an IPv4 address on this host`);
  return addrs;
}

const isLoopback = (a: string): boolean => a.startsWith('127.');
/** Destinations refused before any CIDR is allowed (the egress link's own /24, 0/8, multicast, broadcast). */
const STACK_RESERVED = ['10.0.2.0/24', '0.0.0.0/8', '224.0.0.0/4', '255.255.255.255'];
const isStackReserved = (a: string): boolean => {
  const o = a.split('.').map(Number) as [number, number, number, number];
  return (o[0] === 10 && o[1] === 0 && o[2] === 2) || o[0] === 0 || (o[0] >= 224 && o[0] <= 239) || a === '255.255.255.255';
};

/** HOST:PORT -> one rule per address (host.cubicle.internal: the gateway, which is the host's loopback). */
function allowHost(given: unknown): AllowRule[] {
  const option = 'allowHosts';
  if (typeof given !== 'string') return fail(option, `${option} entries must be "HOST:PORT" strings`);
  const m = /^([A-Za-z0-9][A-Za-z0-9._-]*):([^:]+)$/.exec(given);
  if (!m) return fail(option, `${option} "${given}" must be HOST:PORT (an IPv4 address or a name, and a port), e.g. registry.example:443`);
  const [, host, portText] = m as unknown as [string, string, string];
  const port = checkPort(option, given, portText);
  if (host === HOST_ALIAS) return [{ address: EGRESS_LINK.gateway, prefix: 32, port, given }];
  const addrs = nodeNet().isIPv4(host) ? [host] : resolveName(option, given, host);
  if (addrs.some(isLoopback))
    fail(option, `${option} "${given}": 127.0.0.1 inside is the sandbox's own loopback; allow ${HOST_ALIAS}:${port} to reach the host's`);
  // the stack's own link (its gateway is the host's loopback), broadcast, multicast and 0/8 are never a destination:
  // a name that resolves there (its DNS is not the caller's to trust) would open the host's loopback
  const reserved = addrs.find(isStackReserved);
  if (reserved)
    fail(
      option,
      `${option} "${given}": ${host === reserved ? '' : `${host} resolves to `}${reserved}, which is the network stack's own ` +
        `link, a broadcast, multicast or 0.0.0.0/8 address; allow ${HOST_ALIAS}:${port} to reach the host's loopback`,
    );
  return addrs.map((address) => ({ address, prefix: 32, port, given }));
}

/** A.B.C.D/N (host bits must be zero) or a bare address (/32). */
function allowCidr(given: unknown): AllowRule {
  const option = 'allowCidrs';
  if (typeof given !== 'string') return fail(option, `${option} entries must be "A.B.C.D/N" strings`);
  const m = /^([0-9.]+)(?:\/(\d{1,2}))?$/.exec(given);
  if (!m || !nodeNet().isIPv4(m[1]!) || (m[2] !== undefined && Number(m[2]) > 32))
    return fail(option, `${option} "${given}" must be an IPv4 CIDR like 10.1.0.0/16 (egress is IPv4 only)`);
  const prefix = m[2] === undefined ? 32 : Number(m[2]);
  const value = m[1]!.split('.').reduce((acc, o) => acc * 256 + Number(o), 0);
  const hostBits = prefix === 32 ? 0 : value % 2 ** (32 - prefix);
  if (hostBits !== 0) fail(option, `${option} "${given}" has host bits set; the network of /${prefix} starts lower`);
  if (isLoopback(m[1]!)) fail(option, `${option} "${given}": loopback inside is the sandbox's own; allow ${HOST_ALIAS}:PORT instead`);
  return { address: m[1]!, prefix, given };
}

function publishSpec(given: unknown): PublishedPort {
  const option = 'publish';
  if (typeof given === 'object' && given !== null) {
    const g = given as { hostPort?: unknown; sandboxPort?: unknown };
    return {
      hostPort: checkPort(option, JSON.stringify(given), String(g.hostPort)),
      sandboxPort: checkPort(option, JSON.stringify(given), String(g.sandboxPort)),
    };
  }
  if (typeof given !== 'string') return fail(option, `${option} entries must be "HOSTPORT:SANDBOXPORT"`);
  const m = /^(\d+):(\d+)$/.exec(given);
  if (!m) return fail(option, `${option} "${given}" must be HOSTPORT:SANDBOXPORT, e.g. 8080:80`);
  return { hostPort: checkPort(option, given, m[1]!), sandboxPort: checkPort(option, given, m[2]!) };
}

const list = (option: string, v: unknown): unknown[] => {
  if (v === undefined) return [];
  if (!Array.isArray(v)) return fail(option, `${option} must be an array`);
  return v;
};

/** What egress and published ports lack on this host for a user (empty: nothing), each with its fix. */
export function egressProblems(user: { uid: number; gid: number }): { detail: string; fix: string }[] {
  const out: { detail: string; fix: string }[] = [];
  if (!hostProgram('slirp4netns'))
    out.push({ detail: 'slirp4netns (the user-mode network stack) is not installed', fix: 'apt-get install slirp4netns   # as root' });
  if (!hostProgram('nft')) out.push({ detail: 'nft (for the allowlist) is not installed', fix: 'apt-get install nftables   # as root' });
  if (!tunUsable(user.uid, user.gid))
    out.push({
      detail: `/dev/net/tun is missing or not readable and writable by uid ${user.uid}`,
      fix: 'modprobe tun; chmod 0666 /dev/net/tun   # as root (udev makes it 0666 on Debian/Ubuntu)',
    });
  return out;
}

/** Validates the network options; resolves allowed names on the host. `stackUser` is who starts the stack. */
export function resolveNetwork(
  o: { network?: unknown; allowHosts?: unknown; allowCidrs?: unknown; publish?: unknown },
  stackUser: { uid: number; gid: number },
): ResolvedNetwork {
  const network = o.network === undefined ? NETWORK_NONE : o.network;
  if (typeof network !== 'string' || !network) return fail('network', 'network must be a name: none, egress, or a private network');
  const hosts = list('allowHosts', o.allowHosts);
  const cidrs = list('allowCidrs', o.allowCidrs);
  if (network !== NETWORK_EGRESS && (hosts.length || cidrs.length))
    fail(
      hosts.length ? 'allowHosts' : 'allowCidrs',
      `${hosts.length ? 'allowHosts' : 'allowCidrs'} needs network '${NETWORK_EGRESS}' (the allowlist is egress's)`,
    );
  const allow = [...hosts.flatMap(allowHost), ...cidrs.map(allowCidr)];
  if (allow.length > MAX_RULES) fail('allowHosts', `at most ${MAX_RULES} allowed addresses; give a CIDR for a range`);
  const publish = list('publish', o.publish).map(publishSpec);
  const seen = new Set<number>();
  for (const p of publish) {
    if (seen.has(p.hostPort)) fail('publish', `publish names host port ${p.hostPort} twice`);
    seen.add(p.hostPort);
  }
  // a private network (any other name, checked by the caller) gets a stack only for published ports
  const mode = network === NETWORK_EGRESS ? 'egress' : network === NETWORK_NONE ? 'none' : 'private';
  if (mode !== 'egress' && !publish.length) return { mode, allow, publish };
  const program = hostProgram('slirp4netns');
  if (!program)
    throw new SandboxHostError(
      'egress and published ports need slirp4netns, a user-mode network stack, which is not installed',
      'install it (Debian/Ubuntu: apt-get install slirp4netns)',
    );
  const nft = hostProgram('nft');
  if (!nft)
    throw new SandboxHostError(
      'egress and published ports need nft to load the allowlist into the sandbox (they never run without it), and it is not installed',
      'install it (Debian/Ubuntu: apt-get install nftables)',
    );
  if (!tunUsable(stackUser.uid, stackUser.gid))
    throw new SandboxHostError(
      `egress and published ports need /dev/net/tun readable and writable by uid ${stackUser.uid} (the stack makes its link with it)`,
      'make it 0666, as udev does on Debian/Ubuntu: chmod 0666 /dev/net/tun (and load the tun module if it is missing)',
    );
  return { mode, allow, publish, stack: { program, nft } };
}

/** The stack's interface inside: egress's `eth0`, or beside a private network's `eth0` its own. */
export const stackIfname = (n: ResolvedNetwork): string => (n.mode === 'private' ? PUBLISH_LINK.ifname : EGRESS_LINK.ifname);

/** slirp4netns's arguments; stage 0 replaces {init} (init's host pid) and {api} (the API socket's path). */
export function stackArgs(n: ResolvedNetwork): string[] {
  const args = ['--configure', '--mtu=65520', '--enable-seccomp'];
  if (n.mode !== 'egress') args.push('--disable-dns');
  // the host's loopback stays closed in the stack itself unless a HOST:PORT entry opens it (the rules close it too)
  if (!n.allow.some((a) => a.address === EGRESS_LINK.gateway)) args.push('--disable-host-loopback');
  // beside a private network: link-local addresses, which its subnet can never overlap
  if (n.mode === 'private') args.push(`--cidr=${PUBLISH_LINK.cidr}`);
  if (n.publish.length) args.push('--api-socket', '{api}');
  args.push('--userns-path=/proc/{init}/ns/user', '--netns-type=path', '/proc/{init}/ns/net', stackIfname(n));
  return args;
}

/** The API requests that publish ports: host 127.0.0.1:HOSTPORT to SANDBOXPORT on the link's address. */
export function stackRequests(n: ResolvedNetwork): string[] {
  return n.publish.map((p) =>
    JSON.stringify({
      execute: 'add_hostfwd',
      arguments: { proto: 'tcp', host_addr: '127.0.0.1', host_port: p.hostPort, guest_port: p.sandboxPort },
    }),
  );
}

/** The allowlist: loopback, segments after a connection's first, DNS to the forwarder, the allowed destinations;
 *  everything else is refused at once (TCP reset, ICMP administratively prohibited). The host's loopback (the
 *  gateway) only on allowed ports. On a private network: everything through the network's own link (its peers),
 *  and through the stack only the published ports' replies. */
export function egressRuleset(n: ResolvedNetwork): string {
  const L = EGRESS_LINK;
  // Stateless (no conntrack, whose TCP window tracking may call a segment of a healthy stream invalid, which would
  // end in the final reject): only a connection's first segment, a SYN without ACK, is judged; a later segment can
  // only belong to a connection that was allowed (the payload has no raw sockets), or accepted from a published port.
  const r: string[] = ['oifname "lo" accept'];
  if (n.mode === 'private') r.push(`oifname "${NETWORK_IFNAME}" accept`);
  // the stack carries IPv4 only: nothing of IPv6 leaves through it (not even a segment after a SYN)
  r.push('meta nfproto ipv6 reject with icmpx type admin-prohibited');
  r.push('tcp flags & (syn | ack) != syn accept');
  if (n.mode === 'egress') r.push(`ip daddr ${L.dns} meta l4proto { tcp, udp } th dport 53 accept`);
  const net = (a: AllowRule): string => (a.prefix === 32 ? a.address : `${a.address}/${a.prefix}`);
  for (const a of n.allow.filter((x) => x.port !== undefined))
    r.push(`ip daddr ${net(a)} meta l4proto { tcp, udp } th dport ${a.port} accept`);
  // a CIDR never opens the host's loopback or the forwarder: only HOST:PORT entries do
  // the stack's link (its gateway is the host's loopback), broadcast (which the stack delivers to the host's loopback
  // too), multicast and 0/8 are refused before any CIDR accepts
  if (n.mode !== 'private') {
    const reserved = `{ ${STACK_RESERVED.join(', ')} }`;
    r.push(`ip daddr ${reserved} meta l4proto tcp reject with tcp reset`);
    r.push(`ip daddr ${reserved} reject with icmpx type admin-prohibited`);
  }
  for (const a of n.allow.filter((x) => x.port === undefined)) r.push(`ip daddr ${net(a)} accept`);
  r.push('meta l4proto tcp reject with tcp reset', 'reject with icmpx type admin-prohibited');
  return [
    'table inet cubicle {',
    '  chain egress {',
    '    type filter hook output priority 0; policy drop;',
    ...r.map((x) => `    ${x}`),
    '  }',
    '}',
    '',
  ].join('\n');
}

export { STACK_TIMEOUT_MS };
