// IPv4 subnets of private networks: parsing a CIDR exactly as given, overlap, the addresses sandboxes get, and the
// default subnet a network gets when none is asked for.

export interface Subnet {
  /** Exactly as given (or chosen), e.g. "10.89.0.0/24". */
  text: string;
  /** The network address as an unsigned 32-bit number. */
  base: number;
  prefix: number;
}

/** The widest and narrowest subnets a network may have: a /16 holds 65534 sandboxes, a /30 two. */
export const MIN_PREFIX = 16;
export const MAX_PREFIX = 30;

export class SubnetError extends Error {
  override name = 'SubnetError';
}

const toText = (n: number): string => [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');

/** An address as a number, or undefined when `s` is not a dotted quad of decimal bytes without leading zeros. */
export function parseAddress(s: string): number | undefined {
  const parts = s.split('.');
  if (parts.length !== 4 || !parts.every((p) => /^(0|[1-9]\d{0,2})$/.test(p) && Number(p) <= 255)) return undefined;
  return parts.reduce((n, p) => n * 256 + Number(p), 0);
}

/** Parses "A.B.C.D/P"; throws SubnetError naming what is wrong and how to write it. */
export function parseSubnet(text: string): Subnet {
  const m = /^([^/]+)\/(\d{1,2})$/.exec(text);
  const base = m ? parseAddress(m[1]!) : undefined;
  if (!m || base === undefined) throw new SubnetError(`subnet "${text}" is not an IPv4 CIDR like 10.89.0.0/24`);
  const prefix = Number(m[2]);
  if (prefix < MIN_PREFIX || prefix > MAX_PREFIX)
    throw new SubnetError(
      `subnet "${text}": the prefix length must be from /${MIN_PREFIX} to /${MAX_PREFIX} (at least two addresses for sandboxes)`,
    );
  const mask = prefix === 0 ? 0 : (~0 << (32 - prefix)) >>> 0;
  if ((base & ~mask) >>> 0 !== 0)
    throw new SubnetError(`subnet "${text}" has host bits set; the network address is ${toText((base & mask) >>> 0)}/${prefix}`);
  const first = base >>> 24;
  if (first === 0 || first === 127 || first >= 224 || (first === 169 && ((base >>> 16) & 255) === 254))
    throw new SubnetError(
      `subnet "${text}" is reserved (this host, loopback, link-local, multicast or class E); ` +
        'use a private range such as 10.0.0.0/8, 172.16.0.0/12 or 192.168.0.0/16',
    );
  return { text, base, prefix };
}

/** Whether two subnets share an address. */
export function overlaps(a: Subnet, b: Subnet): boolean {
  const size = (s: Subnet): number => 2 ** (32 - s.prefix);
  return a.base < b.base + size(b) && b.base < a.base + size(a);
}

/** How many sandboxes fit: every address but the network and broadcast addresses. */
export const hostCount = (s: Subnet): number => 2 ** (32 - s.prefix) - 2;

/** The i-th sandbox address (i from 0), as text. */
export const hostAddress = (s: Subnet, i: number): string => toText(s.base + 1 + i);

/** The first 10.89.N.0/24 that overlaps none of `taken`. */
export function defaultSubnet(taken: readonly Subnet[]): Subnet {
  for (let n = 0; n < 256; n++) {
    const s = parseSubnet(`10.89.${n}.0/24`);
    if (!taken.some((t) => overlaps(t, s))) return s;
  }
  throw new SubnetError('every default subnet 10.89.0.0/24-10.89.255.0/24 is taken by a network; give one with --subnet');
}
