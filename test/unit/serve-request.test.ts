// go-judge requests checked before anything runs: what each field becomes, and the field each error names.
import { strict as assert } from 'node:assert';
import { parseRunRequest, RequestError } from '../../sandbox/serve/request.js';

const bounds = { maxCmds: 4, maxOutput: 1 << 20, srcDirs: ['/srv/data'] };
const fieldOf = (body: unknown): string => {
  try {
    parseRunRequest(body, bounds);
  } catch (e) {
    assert.ok(e instanceof RequestError, String(e));
    return e.field;
  }
  return '(accepted)';
};

describe('serve: go-judge request parsing', () => {
  it("maps go-judge's documented compile request", () => {
    const r = parseRunRequest(
      {
        requestId: 'r1',
        cmd: [
          {
            args: ['/usr/bin/g++', 'a.cc', '-o', 'a'],
            env: ['PATH=/usr/bin:/bin', 'X=a=b'],
            files: [{ content: '' }, { name: 'stdout', max: 10240 }, { name: 'stderr', max: 10240 }],
            cpuLimit: 10000000000,
            memoryLimit: 104857600,
            procLimit: 50,
            strictMemoryLimit: false,
            copyIn: { 'a.cc': { content: 'int main(){}' } },
            copyOut: ['stdout', 'stderr', 'extra?'],
            copyOutCached: ['a'],
          },
        ],
      },
      bounds,
    );
    const c = r.cmd[0]!;
    assert.equal(r.requestId, 'r1');
    assert.deepEqual({ ...c.env }, { PATH: '/usr/bin:/bin', X: 'a=b' });
    assert.deepEqual(c.stdout, { kind: 'collect', name: 'stdout', max: 10240 });
    assert.equal(c.cpuLimitNs, 10e9);
    assert.equal(c.clockLimitNs, undefined);
    assert.deepEqual(c.copyOut, [
      { name: 'stdout', optional: false },
      { name: 'stderr', optional: false },
      { name: 'extra', optional: true },
    ]);
    assert.deepEqual(c.copyOutCached, [{ name: 'a', optional: false }]);
    assert.equal(r.pipes.length, 0);
  });

  it('a zero limit means unset (as in go-judge), realCpuLimit stands for clockLimit', () => {
    const c = parseRunRequest({ cmd: [{ args: ['x'], cpuLimit: 0, realCpuLimit: 5e9 }] }, bounds).cmd[0]!;
    assert.equal(c.cpuLimitNs, undefined);
    assert.equal(c.clockLimitNs, 5e9);
  });

  it('each wrong field is named', () => {
    assert.equal(fieldOf(null), 'body');
    assert.equal(fieldOf({ cmd: [] }), 'cmd');
    assert.equal(fieldOf({ cmd: [{ args: ['x'] }, { args: ['y'] }, { args: ['z'] }, { args: ['w'] }, { args: ['v'] }] }), 'cmd');
    assert.equal(fieldOf({ cmd: [{ args: ['x', 1] }] }), 'cmd[0].args[1]');
    assert.equal(fieldOf({ cmd: [{ args: ['x'], memoryLimit: 1.5 }] }), 'cmd[0].memoryLimit');
    assert.equal(fieldOf({ cmd: [{ args: ['x'], cpuSetLimit: '0-1' }] }), 'cmd[0].cpuSetLimit');
    assert.equal(fieldOf({ cmd: [{ args: ['x'], copyOut: ['../etc/passwd'] }] }), 'cmd[0].copyOut[0]');
    assert.equal(fieldOf({ cmd: [{ args: ['x'], files: [{}, {}, {}, {}] }] }), 'cmd[0].files[3]');
    assert.equal(fieldOf({ cmd: [{ args: ['x'], files: [{ name: 'o', max: 1 }] }] }), 'cmd[0].files[0]');
    assert.equal(fieldOf({ cmd: [{ args: ['x'], files: [{ content: '' }, { name: 'o', max: 2 << 20 }] }] }), 'cmd[0].files[1].max');
    assert.equal(fieldOf({ cmd: [{ args: ['x'], copyIn: { a: { content: '', fileId: 'F' } } }] }), 'cmd[0].copyIn.a');
    assert.equal(fieldOf({ cmd: [{ args: ['x'], copyIn: { a: { symlink: '/etc' } } }] }), 'cmd[0].copyIn.a.symlink');
    assert.equal(fieldOf({ cmd: [{ args: ['x'], copyIn: { a: { src: '/srv/data/../../etc/passwd' } } }] }), 'cmd[0].copyIn.a.src');
    assert.equal(fieldOf({ cmd: [{ args: ['x'], copyIn: { a: { src: '/srv/database/x' } } }] }), 'cmd[0].copyIn.a.src');
    assert.equal(fieldOf({ cmd: [{ args: ['x'], copyIn: { a: { src: '/srv/data/x' } } }] }), '(accepted)');
  });

  it('pipeMapping: ends are checked, each fd is mapped once, and a null fd needs a pipe', () => {
    const two = (files0: unknown[], files1: unknown[]): Record<string, unknown>[] => [
      { args: ['a'], files: files0 },
      { args: ['b'], files: files1 },
    ];
    const cross = [
      { in: { index: 0, fd: 1 }, out: { index: 1, fd: 0 } },
      { in: { index: 1, fd: 1 }, out: { index: 0, fd: 0 } },
    ];
    const ok = parseRunRequest({ cmd: two([null, null], [null, null]), pipeMapping: cross }, bounds);
    assert.equal(ok.pipes.length, 2);
    assert.equal(fieldOf({ cmd: two([null, null], [null, null]), pipeMapping: [cross[0]] }), 'cmd[0].files[0]');
    assert.equal(fieldOf({ cmd: two([null, null], [null, null]), pipeMapping: [cross[0], cross[0]] }), 'pipeMapping[1].in');
    assert.equal(
      fieldOf({ cmd: two([null, { name: 'o', max: 1 }], [null, null]), pipeMapping: cross }),
      'cmd[0].files[1]',
      'a collector where a pipe is mapped',
    );
    assert.equal(
      fieldOf({ cmd: two([], []), pipeMapping: [{ in: { index: 0, fd: 0 }, out: { index: 1, fd: 0 } }] }),
      'pipeMapping[0].in.fd',
    );
    assert.equal(fieldOf({ cmd: two([], []), pipeMapping: [{ in: { index: 0, fd: 1 }, out: { index: 0, fd: 0 } }] }), 'pipeMapping[0]');
    assert.equal(
      fieldOf({ cmd: two([], []), pipeMapping: [{ in: { index: 0, fd: 1 }, out: { index: 1, fd: 0 }, bogus: 1 }] }),
      'pipeMapping[0].bogus',
    );
  });
});
