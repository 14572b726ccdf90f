// Subnets of private networks: parsing exactly as given, refusals that say how to fix them, overlap, leases.
import { strict as assert } from 'node:assert';
import { holderId } from '../../sandbox/network/member.js';
import { defaultSubnet, hostAddress, hostCount, overlaps, parseSubnet } from '../../sandbox/network/subnet.js';

describe('network subnets', () => {
  it('keeps a valid CIDR exactly as written', () => {
    const s = parseSubnet('192.168.7.0/24');
    assert.deepEqual(
      [s.text, s.prefix, hostCount(s), hostAddress(s, 0), hostAddress(s, 253)],
      ['192.168.7.0/24', 24, 254, '192.168.7.1', '192.168.7.254'],
    );
  });

  it('refuses host bits, bad numbers, leading zeros, prefixes out of range and reserved ranges, naming the fix', () => {
    assert.throws(() => parseSubnet('10.1.2.3/24'), /host bits set; the network address is 10\.1\.2\.0\/24/);
    for (const bad of ['10.1.2/24', '10.1.2.256/24', '010.1.2.0/24', '10.1.2.0', '10.1.2.0/', ' 10.1.2.0/24', '10.1.2.0/24x'])
      assert.throws(() => parseSubnet(bad), /not an IPv4 CIDR/, bad);
    assert.throws(() => parseSubnet('10.0.0.0/15'), /from \/16 to \/30/);
    assert.throws(() => parseSubnet('10.0.0.0/31'), /from \/16 to \/30/);
    for (const r of ['127.0.0.0/24', '0.0.0.0/16', '224.0.0.0/24', '169.254.0.0/16']) assert.throws(() => parseSubnet(r), /reserved/, r);
  });

  it('overlap is any shared address; the default subnet skips taken ones', () => {
    assert.ok(overlaps(parseSubnet('10.0.0.0/16'), parseSubnet('10.0.200.0/24')));
    assert.ok(!overlaps(parseSubnet('10.0.0.0/25'), parseSubnet('10.0.0.128/25')));
    assert.equal(defaultSubnet([]).text, '10.89.0.0/24');
    assert.equal(defaultSubnet([parseSubnet('10.89.0.0/23')]).text, '10.89.2.0/24');
  });

  it("host ids translate into the holder's user namespace only where its map holds them", () => {
    const maps: [number, number, number][] = [
      [0, 1001, 1],
      [1, 100000, 65536],
    ];
    assert.equal(holderId(maps, 1001), 0);
    assert.equal(holderId(maps, 100000), 1);
    assert.equal(holderId(maps, 165535), 65536);
    assert.equal(holderId(maps, 165536), undefined);
    assert.equal(holderId(maps, 0), undefined);
    assert.equal(holderId([[0, 0, 4294967295]], 1000000000), 1000000000);
  });
});
