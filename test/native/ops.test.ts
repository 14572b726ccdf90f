// Plan ops are built and read by the argument names declared in OPCODES, never by position.
import { strict as assert } from 'node:assert';
import { makeOp, Op, opArg, type PlanOp } from '../../sandbox/plan/ops.js';
import { OPCODES } from '../../sandbox/protocol/opcodes.js';

describe('plan ops by argument name', () => {
  it('constructors place each argument where OPCODES declares it', () => {
    const b = Op.bind('/host', '/inside', 'ro');
    assert.deepEqual(b.args, ['/host', '/inside', 'ro']);
    if (b.op !== 'bind') throw new Error('not a bind');
    assert.equal(opArg(b, 'hostPath'), '/host');
    assert.equal(opArg(b, 'path'), '/inside');
    assert.equal(opArg(b, 'access'), 'ro');
    const f = Op.file('/etc/x', 'content', 0o600);
    assert.equal(opArg(f, 'modeOctal'), '600');
    assert.equal(opArg(f, 'content'), 'content');
    const w = Op.watch(1000, 2, 3, 4, 5, true);
    assert.deepEqual(
      OPCODES.find((o) => o.name === 'watch')!.args.map((a) => opArg(w, a)),
      ['1000', '2', '3', '4', '5', '1'],
    );
    assert.equal(opArg(Op.env('K', 'v=1'), 'keyEqualsValue'), 'K=v=1');
  });

  it('makeOp orders named arguments as declared, and refuses names that are not declared', () => {
    assert.deepEqual(makeOp('rlimit', { hard: 'unlimited', soft: 10, resource: 'nofile' }).args, ['nofile', '10', 'unlimited']);
    assert.throws(() => makeOp('proc', { path: '/proc', extra: 1 } as never), /has no argument extra/);
  });

  it('opArg refuses a name the op does not declare', () => {
    const op: PlanOp = Op.proc('/proc');
    assert.throws(() => opArg(op, 'hostPath'), /proc has no argument hostPath/);
  });
});
