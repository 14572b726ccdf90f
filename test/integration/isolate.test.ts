// `cubicle isolate`, driven exactly as Judge0 drives isolate: --init, files written into the box, a compile and a
// run through /bin/bash with the shell's redirections, the meta file, a time limit (status:TO, exit 1), --cleanup.
import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { identities, skipBecause, worldReadableTmp } from '../helpers/env.js';
import { CLI } from '../helpers/cli.js';

const JUDGE0_ENV = '-E HOME=/tmp -E PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" -E LANG -E LANGUAGE -E LC_ALL';
const COMPILE_FLAGS =
  '--cg -s -b BOX -M META --stderr-to-stdout -i /dev/null -t 15.0 -x 0 -w 20.0 -k 128000 -p120 --cg-timing --cg-mem=512000 -f 4096 ' +
  `${JUDGE0_ENV} -d /etc:noexec`;
const RUN_FLAGS = (t: string) =>
  `--cg -s -b BOX -M META -t ${t} -x 0.2 -w 10.0 -k 64000 -p60 --cg-timing --cg-mem=128000 -f 1024 ${JUDGE0_ENV} -d /etc:noexec`;
const SOURCE =
  '#include <stdio.h>\nint main(void) { int a, b; if (scanf("%d %d", &a, &b) != 2) return 3; printf("%d\\n", a + b); return 0; }\n';

const meta = (file: string): Record<string, string> =>
  Object.fromEntries(
    readFileSync(file, 'utf8')
      .trim()
      .split('\n')
      .map((l) => [l.slice(0, l.indexOf(':')), l.slice(l.indexOf(':') + 1)]),
  );

for (const id of identities())
  describe(`cubicle isolate, ${id.label}`, function () {
    this.timeout(120_000);
    const user = id.spawnAs.runAs ?? { uid: process.geteuid!(), gid: process.getegid!() };
    let root: { dir: string; cleanup: () => void };
    const env = (): NodeJS.ProcessEnv => ({ PATH: process.env.PATH, LANG: 'C.UTF-8', CUBICLE_ISOLATE_ROOT: join(root.dir, 'boxes') });
    /** A command line as Judge0 writes it, `isolate` being this CLI, run by /bin/sh as the caller. */
    const sh = (line: string) =>
      spawnSync('/bin/sh', ['-c', line.replace(/^isolate /, `'${process.execPath}' '${CLI}' isolate `)], {
        encoding: 'utf8',
        env: env(),
        timeout: 60_000,
        ...user,
      });
    /** Writes a file as the caller would (owned by the identity that drives isolate). */
    const write = (path: string, data: string): void => {
      writeFileSync(path, data);
      if (id.spawnAs.runAs) chownSync(path, user.uid, user.gid);
    };
    const isolate = (args: string[]) =>
      spawnSync(process.execPath, [CLI, 'isolate', ...args], { encoding: 'utf8', env: env(), timeout: 60_000, ...user });

    before(function () {
      if (!existsSync('/usr/bin/gcc')) skipBecause(this, 'no gcc at /usr/bin/gcc for the compile step');
      root = worldReadableTmp('cubicle-isolate-');
      if (id.spawnAs.runAs) chownSync(root.dir, user.uid, user.gid);
    });
    after(() => root?.cleanup());

    it('compiles and runs a C program as Judge0 does; the meta file has time, memory and the exit code', () => {
      const init = isolate(['--cg', '-b', '7', '--init']);
      assert.equal(init.status, 0, init.stderr);
      const boxdir = init.stdout.trim();
      assert.equal(boxdir, join(root.dir, 'boxes', '7'));
      // The caller writes into the box before the run, as Judge0 does (touch, then the sources and scripts).
      for (const f of ['stdin.txt', 'stdout.txt', 'stderr.txt', 'compile_output.txt', 'metadata.txt']) write(join(boxdir, f), '');
      write(join(boxdir, 'box', 'main.c'), SOURCE);
      write(join(boxdir, 'box', 'compile'), '/usr/bin/gcc -O1 main.c -o a.out');
      write(join(boxdir, 'box', 'run'), './a.out');
      write(join(boxdir, 'stdin.txt'), '2 40\n');
      const fill = (flags: string) => flags.replace('BOX', '7').replace('META', `${boxdir}/metadata.txt`);

      const compile = sh(`isolate ${fill(COMPILE_FLAGS)} --run -- /bin/bash compile > ${boxdir}/compile_output.txt`);
      assert.equal(compile.status, 0, `${compile.stderr}${readFileSync(join(boxdir, 'compile_output.txt'), 'utf8')}`);
      const m1 = meta(join(boxdir, 'metadata.txt'));
      assert.equal(m1.exitcode, '0');
      assert.match(m1.time!, /^\d+\.\d{3}$/);
      assert.ok(m1['cg-mem'] !== undefined || m1['max-rss'] !== undefined, JSON.stringify(m1));
      assert.ok(existsSync(join(boxdir, 'box', 'a.out')), 'the compiler wrote into the box');

      const run = sh(
        `isolate ${fill(RUN_FLAGS('5.0'))} --run -- /bin/bash run < ${boxdir}/stdin.txt > ${boxdir}/stdout.txt 2> ${boxdir}/stderr.txt`,
      );
      assert.equal(run.status, 0, readFileSync(join(boxdir, 'stderr.txt'), 'utf8'));
      assert.equal(readFileSync(join(boxdir, 'stdout.txt'), 'utf8'), '42\n');
      const m2 = meta(join(boxdir, 'metadata.txt'));
      assert.equal(m2.exitcode, '0');
      assert.equal(m2.status, undefined, 'no status for a clean run');
      assert.ok(Number(m2['time-wall']) >= 0);

      // A program over its time limit: status TO, exit 1.
      write(join(boxdir, 'box', 'run'), 'while :; do :; done');
      const tle = sh(`isolate ${fill(RUN_FLAGS('0.3'))} --run -- /bin/bash run < ${boxdir}/stdin.txt > ${boxdir}/stdout.txt`);
      assert.equal(tle.status, 1, tle.stderr);
      const m3 = meta(join(boxdir, 'metadata.txt'));
      assert.equal(m3.status, 'TO');
      assert.equal(m3.killed, '1');

      // A compile error: exit 1, the compiler's complaint in compile_output.txt (stderr went to stdout).
      write(join(boxdir, 'box', 'main.c'), 'int main( {');
      const bad = sh(`isolate ${fill(COMPILE_FLAGS)} --run -- /bin/bash compile > ${boxdir}/compile_output.txt`);
      assert.equal(bad.status, 1);
      assert.match(readFileSync(join(boxdir, 'compile_output.txt'), 'utf8'), /error/);
      assert.equal(meta(join(boxdir, 'metadata.txt')).status, 'RE');

      // The caller can still write (and remove) what the payload made; then --cleanup removes the box.
      write(join(boxdir, 'box', 'a.out'), 'replaced by the caller');
      rmSync(join(boxdir, 'box', 'a.out'));
      assert.equal(isolate(['--cg', '-b', '7', '--cleanup']).status, 0);
      assert.ok(!existsSync(boxdir));
    });

    it('-d noexec binds refuse execution; -i/-o/-r are files in the box; -p alone lifts the process limit', () => {
      const boxdir = isolate(['-b', '8', '--init']).stdout.trim();
      try {
        write(join(boxdir, 'box', 'in'), 'from the box\n');
        const noexec = isolate(['-b', '8', '-d', '/bin2=/usr/bin:noexec', '--run', '--', '/bin2/true']);
        assert.equal(noexec.status, 2, 'nothing ran: setup failed');
        assert.match(noexec.stderr, /EACCES/);
        const io = isolate([
          '-b',
          '8',
          '-p',
          '-i',
          'in',
          '-o',
          'out',
          '-r',
          '/box/err',
          '--run',
          '--',
          '/bin/sh',
          '-c',
          'cat; echo e >&2; sh -c true',
        ]);
        assert.equal(io.status, 0, io.stderr);
        assert.match(io.stderr, /^OK \(\d+\.\d{3} sec real, \d+\.\d{3} sec wall\)\n$/);
        assert.equal(readFileSync(join(boxdir, 'box', 'out'), 'utf8'), 'from the box\n');
        assert.equal(readFileSync(join(boxdir, 'box', 'err'), 'utf8'), 'e\n');
        const outside = isolate(['-b', '8', '-o', '/etc/passwd', '--run', '--', '/bin/true']);
        assert.equal(outside.status, 2);
        assert.match(outside.stderr, /only files in the box/);
      } finally {
        isolate(['-b', '8', '--cleanup']);
      }
    });

    it('box ids are validated; refused and mistyped flags are errors (exit 2); --run needs --init first', () => {
      for (const bad of ['-1', '1e3', '007x', '../x', '2147483647', ' 1', '0x10']) {
        const r = isolate([`--box-id=${bad}`, '--init']);
        assert.equal(r.status, 2, bad);
        assert.match(r.stderr, /--box-id must be an integer/);
      }
      assert.ok(!existsSync(join(root.dir, 'boxes', '..', 'x')));
      assert.equal(isolate(['-b', '-1', '--init']).status, 2, 'a negative id is not even taken for a value');
      const refused = isolate(['-b', '9', '--share-net', '--run', '--', '/bin/true']);
      assert.equal(refused.status, 2);
      assert.match(refused.stderr, /--share-net is not supported/);
      assert.match(isolate(['-b', '9', '--tmie=1', '--run', '--', '/bin/true']).stderr, /did you mean --time\?/);
      const uninit = isolate(['-b', '9', '--run', '--', '/bin/true']);
      assert.equal(uninit.status, 2);
      assert.match(uninit.stderr, /not initialized; run --init first/);
    });

    it('a symlink planted in the box is not followed by -o or by --cleanup', () => {
      assert.equal(isolate(['-b', '10', '--init']).status, 0);
      const victim = join(root.dir, 'victim');
      write(victim, 'keep');
      chmodSync(victim, 0o666);
      mkdirSync(join(root.dir, 'victim-dir'));
      writeFileSync(join(root.dir, 'victim-dir', 'f'), 'keep');
      const plant = isolate(['-b', '10', '-p', '--run', '--', '/bin/sh', '-c', `ln -s ${victim} out; ln -s ${root.dir}/victim-dir d`]);
      assert.equal(plant.status, 0, plant.stderr);
      const r = isolate(['-b', '10', '-o', 'out', '--run', '--', '/bin/echo', 'overwrite']);
      assert.equal(r.status, 2);
      assert.match(r.stderr, /symlink/);
      assert.equal(isolate(['-b', '10', '--cleanup']).status, 0);
      assert.equal(readFileSync(victim, 'utf8'), 'keep');
      assert.equal(readFileSync(join(root.dir, 'victim-dir', 'f'), 'utf8'), 'keep');
      assert.ok(statSync(join(root.dir, 'victim-dir')).isDirectory());
    });
  });
