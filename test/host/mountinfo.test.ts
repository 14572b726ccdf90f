// The one mountinfo parser: field layout, escapes, malformed lines, and the cgroup lookups on real-looking tables.
import { strict as assert } from 'node:assert';
import { readFileSync } from 'node:fs';
import {
  cgroup2MountPoint,
  cgroupV1Controllers,
  parseMountinfo,
  parseMountinfoLine,
  readMountinfo,
  unescapeMountinfo,
} from '../../sandbox/host/mountinfo.js';

// In the tables below, a `\` at the end of a line continues it on the next: each mount is still one line of the string.

/** A systemd host in hybrid mode: v1 controllers under /sys/fs/cgroup, cgroup2 on .../unified with none. */
const HYBRID = `\
22 1 8:2 / / rw,relatime shared:1 - ext4 /dev/sda2 rw,errors=remount-ro
23 22 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
24 22 0:22 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
30 23 0:26 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
32 30 0:28 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,xattr,name=systemd
35 30 0:31 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,cpu,cpuacct
36 30 0:32 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:16 - cgroup cgroup rw,memory
37 30 0:33 / /sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime shared:17 - cgroup cgroup rw,pids
38 30 0:34 / /sys/fs/cgroup/net_cls,net_prio rw,nosuid,nodev,noexec,relatime shared:18 - cgroup cgroup rw,net_cls,net_prio
39 30 0:35 / /sys/fs/cgroup/cpuset rw,nosuid,nodev,noexec,relatime shared:19 - cgroup cgroup rw,cpuset,clone_children
`;

/** A current distribution in unified mode: only cgroup2, on /sys/fs/cgroup itself. */
const PURE_V2 = `\
24 1 259:2 / / rw,relatime shared:1 - btrfs /dev/nvme0n1p2 rw,seclabel,compress=zstd:1,ssd,space_cache=v2,subvolid=257,subvol=/root
25 24 0:22 / /proc rw,nosuid,nodev,noexec,relatime shared:5 - proc proc rw
26 24 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:6 - sysfs sysfs rw,seclabel
29 26 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,seclabel,nsdelegate,memory_recursiveprot
53 24 0:46 / /run/user/1000 rw,nosuid,nodev,relatime shared:271 - tmpfs tmpfs \
rw,seclabel,size=3256056k,nr_inodes=814014,mode=700,uid=1000,gid=1000
`;

/** Inside a Docker container: overlay root, masked /proc paths, a private cgroup2 of the container's own group. */
const CONTAINER = `\
612 540 0:52 / / rw,relatime master:279 - overlay overlay \
rw,lowerdir=/var/lib/docker/overlay2/l/ABC:/var/lib/docker/overlay2/l/DEF,upperdir=/var/lib/docker/overlay2/x/diff,\
workdir=/var/lib/docker/overlay2/x/work
613 612 0:55 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw
614 612 0:56 / /dev rw,nosuid - tmpfs tmpfs rw,size=65536k,mode=755
617 612 0:58 / /sys ro,nosuid,nodev,noexec,relatime - sysfs sysfs ro
618 617 0:30 /docker/0123abcd /sys/fs/cgroup ro,nosuid,nodev,noexec,relatime - cgroup2 cgroup rw,nsdelegate
619 612 8:1 /var/lib/docker/containers/0123abcd/resolv.conf /etc/resolv.conf rw,relatime - ext4 /dev/sda1 rw
541 613 0:55 /bus /proc/bus ro,nosuid,nodev,noexec,relatime - proc proc rw
542 613 0:56 /null /proc/kcore rw,nosuid - tmpfs tmpfs rw,size=65536k,mode=755
543 613 0:59 / /proc/acpi ro,relatime - tmpfs tmpfs ro
`;

describe('mountinfo', () => {
  it('parses every field of a line, optional fields included', () => {
    const e = parseMountinfoLine('36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 shared:4 - ext3 /dev/root rw,errors=continue');
    assert.deepEqual(e, {
      mountId: 36,
      parentId: 35,
      device: '98:0',
      root: '/mnt1',
      mountPoint: '/mnt2',
      options: ['rw', 'noatime'],
      optionalFields: ['master:1', 'shared:4'],
      fsType: 'ext3',
      source: '/dev/root',
      superOptions: ['rw', 'errors=continue'],
    });
    const bare = parseMountinfoLine('613 612 0:55 / /proc rw,nosuid - proc proc rw');
    assert.deepEqual(bare?.optionalFields, []);
    assert.equal(bare?.fsType, 'proc');
  });

  it('undoes octal escapes in paths, sources and options', () => {
    assert.equal(unescapeMountinfo('/my\\040dir'), '/my dir');
    assert.equal(unescapeMountinfo('a\\011b\\012c\\134d'), 'a\tb\nc\\d');
    assert.equal(unescapeMountinfo('/plain'), '/plain');
    const e = parseMountinfoLine(
      '605 600 0:55 /sub\\040dir /media/USB\\040Stick rw - fuse.sshfs me@host:/home/me\\040too rw,user_id=0,lowerdir=/a\\054b',
    );
    assert.equal(e?.root, '/sub dir');
    assert.equal(e?.mountPoint, '/media/USB Stick');
    assert.equal(e?.fsType, 'fuse.sshfs');
    assert.equal(e?.source, 'me@host:/home/me too');
    assert.deepEqual(e?.superOptions, ['rw', 'user_id=0', 'lowerdir=/a,b'], 'an escaped comma stays inside its option');
    // A mount point whose name is a lone dash is not the separator.
    assert.equal(parseMountinfoLine('70 22 0:40 / /- rw - tmpfs tmpfs rw')?.mountPoint, '/-');
  });

  it('keeps an empty source', () => {
    const e = parseMountinfoLine('80 22 0:41 / /x rw shared:3 - tmpfs  rw');
    assert.equal(e?.source, '');
    assert.deepEqual(e?.superOptions, ['rw']);
  });

  it('skips malformed lines without throwing', () => {
    const bad = [
      '',
      'garbage',
      '36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 ext3 /dev/root rw', // no separator
      '36 35 98:0 /mnt1 /mnt2 rw - ext3 /dev/root', // no super options
      '36 35 98:0 /mnt1 /mnt2 rw -', // nothing after the separator
      'x 35 98:0 / / rw - ext4 /dev/sda rw', // non-numeric mount id
      '36 35 nodev / / rw - ext4 /dev/sda rw', // device not major:minor
      '36 35 98:0 / - ext4 /dev/sda rw', // separator where the options belong
      '\\040 \\040 \\040',
    ];
    for (const line of bad) assert.equal(parseMountinfoLine(line), null, JSON.stringify(line));
    const text = [bad[2], '22 1 8:2 / / rw - ext4 /dev/sda2 rw', ...bad.slice(3), '24 22 0:22 / /proc rw - proc proc rw', ''].join('\n');
    assert.deepEqual(
      parseMountinfo(text).map((e) => e.mountPoint),
      ['/', '/proc'],
    );
    assert.deepEqual(parseMountinfo(''), []);
  });

  it('finds the v1 controllers and the unified mount on a hybrid host', () => {
    const t = parseMountinfo(HYBRID);
    assert.equal(t.length, 11);
    assert.equal(cgroup2MountPoint(t), '/sys/fs/cgroup/unified');
    const v1 = cgroupV1Controllers(t);
    assert.equal(v1.get('memory'), '/sys/fs/cgroup/memory');
    assert.equal(v1.get('pids'), '/sys/fs/cgroup/pids');
    assert.equal(v1.get('cpu'), '/sys/fs/cgroup/cpu,cpuacct');
    assert.equal(v1.get('cpuacct'), '/sys/fs/cgroup/cpu,cpuacct');
    assert.equal(v1.get('net_prio'), '/sys/fs/cgroup/net_cls,net_prio');
    assert.equal(v1.has('name=systemd'), false, 'a named hierarchy has no controller');
    assert.equal(v1.has('xattr'), false);
    assert.equal(v1.has('clone_children'), false);
    assert.deepEqual([...cgroupV1Controllers(t, ['memory', 'pids', 'cpuacct'])].sort(), [
      ['cpuacct', '/sys/fs/cgroup/cpu,cpuacct'],
      ['memory', '/sys/fs/cgroup/memory'],
      ['pids', '/sys/fs/cgroup/pids'],
    ]);
  });

  it('finds only cgroup2 on a pure-v2 host', () => {
    const t = parseMountinfo(PURE_V2);
    assert.equal(cgroup2MountPoint(t), '/sys/fs/cgroup');
    assert.equal(cgroupV1Controllers(t).size, 0);
    assert.equal(t[0]?.fsType, 'btrfs');
    assert.ok(t[0]?.superOptions.includes('subvol=/root'));
  });

  it('reads a container table: overlay root, masked /proc, a cgroup2 rooted at the container group', () => {
    const t = parseMountinfo(CONTAINER);
    assert.equal(t.find((e) => e.mountPoint === '/')?.fsType, 'overlay');
    assert.equal(cgroup2MountPoint(t), '/sys/fs/cgroup');
    assert.equal(t.find((e) => e.fsType === 'cgroup2')?.root, '/docker/0123abcd');
    assert.deepEqual(
      t.filter((e) => e.mountPoint.startsWith('/proc/')).map((e) => e.mountPoint),
      ['/proc/bus', '/proc/kcore', '/proc/acpi'],
    );
    assert.equal(t.find((e) => e.mountPoint === '/proc/kcore')?.root, '/null');
  });

  it('a controller mounted twice: the last mount wins', () => {
    const t = parseMountinfo(
      '36 30 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n90 22 0:32 / /mnt/memcg rw - cgroup cgroup rw,memory\n',
    );
    assert.equal(cgroupV1Controllers(t).get('memory'), '/mnt/memcg');
  });

  it("reads this process's real table, once", () => {
    const live = readMountinfo();
    assert.ok(
      live.some((e) => e.mountPoint === '/'),
      'the table has a root mount',
    );
    assert.equal(live.length, parseMountinfo(readFileSync('/proc/self/mountinfo', 'utf8')).length);
    assert.equal(readMountinfo(), live, 'served from the cache');
    const fresh = readMountinfo({ refresh: true });
    assert.notEqual(fresh, live);
    assert.equal(readMountinfo(), fresh);
    assert.ok(Object.isFrozen(fresh));
  });
});
