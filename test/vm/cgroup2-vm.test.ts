// Runs the cgroup v2 tests (./inside/) in a QEMU virtual machine with a pure cgroup v2 hierarchy, as root and as an
// unprivileged user in a systemd-style delegated subtree, with the VM script that sits beside the repository
// (../shared/vm/cgroup2-vm). Not part of `npm test` (it takes minutes); `.ci/run` runs it. Skips with the reason
// where the script cannot run: not root, no script, or a VM that does not boot (no QEMU to install, no kernel).
import { strict as assert } from 'node:assert';
import { spawn, spawnSync } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { IS_ROOT, skipBecause } from '../helpers/env.js';

const REPO = fileURLToPath(new URL('../../..', import.meta.url));
const VM_SCRIPT = process.env.CUBICLE_CGROUP2_VM ?? join(REPO, '..', 'shared', 'vm', 'cgroup2-vm');
/** The unprivileged user the VM delegates a subtree to; made for the run when it does not exist, removed after. */
const VM_USER = 'cubicle-vm';
/** The cgroup2-vm script's status when the VM itself could not run the command. */
const VM_DID_NOT_RUN = 125;
const VM_TIMEOUT_S = 900;

/** Runs `cmd` in the VM, streaming its output here; resolves with its exit status and the tail of its stderr. */
function inVm(cmd: string): Promise<{ status: number | null; stderr: string }> {
  return new Promise((resolve, reject) => {
    const vm = spawn(VM_SCRIPT, ['--delegate', VM_USER, '--timeout', String(VM_TIMEOUT_S), '--', 'sh', '-c', cmd], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    vm.stdout.on('data', (b: Buffer) => process.stdout.write(b));
    vm.stderr.on('data', (b: Buffer) => {
      stderr = (stderr + b.toString()).slice(-4000);
      process.stderr.write(b);
    });
    vm.on('error', reject);
    vm.on('close', (status) => resolve({ status, stderr }));
  });
}

describe('cgroup v2 in a virtual machine (root, and a delegated unprivileged user)', function () {
  let madeUser = false;
  before(function () {
    if (!IS_ROOT) skipBecause(this, 'the cgroup2-vm script runs as root (it installs QEMU and exports / to the VM)');
    try {
      accessSync(VM_SCRIPT, constants.X_OK);
    } catch {
      skipBecause(this, `no VM script at ${VM_SCRIPT} (set CUBICLE_CGROUP2_VM to its path)`);
    }
    if (spawnSync('id', ['-u', VM_USER]).status !== 0) {
      const made = spawnSync('useradd', ['--no-create-home', '--shell', '/usr/sbin/nologin', VM_USER], { encoding: 'utf8' });
      if (made.status !== 0) skipBecause(this, `cannot create the test user ${VM_USER}: ${made.stderr.trim()}`);
      madeUser = true;
    }
  });
  after(() => {
    if (madeUser) spawnSync('userdel', [VM_USER]);
  });

  it('every limit is exact for root and for the delegated user, and nothing is left behind', async function () {
    const file = join(REPO, 'dist', 'test', 'vm', 'inside', 'cgroup2-limits.test.js');
    const mocha = `node ${join(REPO, 'node_modules', '.bin', 'mocha')} --no-config --timeout 300000 --exit ${file}`;
    const cmd = [
      `cd ${REPO}`,
      `echo "== as root"`,
      `${mocha}`,
      `echo "== as ${VM_USER}, in the delegated subtree"`,
      `runuser -u ${VM_USER} -- env HOME=/tmp CGROUP2_VM_DELEGATED="$CGROUP2_VM_DELEGATED" ${mocha}`,
    ].join(' && ');
    const r = await inVm(cmd);
    if (r.status === VM_DID_NOT_RUN) skipBecause(this, `the VM did not run: ${r.stderr.trim().split('\n').slice(-3).join(' / ')}`);
    assert.equal(r.status, 0, 'the cgroup v2 tests passed in the VM (their output is above)');
  });
});
