// Input at the edge of what the kernel accepts runs; one byte past it is refused before anything runs. Limits
// longer than Node's timers can hold run as given instead of firing at once.
import { strict as assert } from 'node:assert';
import { SandboxOptionError } from '../../sandbox/index.js';
import { execSpace, MAX_ARG_STRLEN } from '../../sandbox/options/exec-size.js';
import { forEachIdentity } from '../helpers/env.js';

const cost = (s: string): number => Buffer.byteLength(s) + 1 + 8; // the string, its NUL, its pointer

forEachIdentity((_id, run) => {
  describe('bad input at the edge of execve', function () {
    this.timeout(120_000);
    const env = { PATH: '/usr/bin:/bin', HOME: '/tmp' };

    it(`an argument of ${MAX_ARG_STRLEN - 1} bytes (MAX_ARG_STRLEN with its NUL) runs; one more byte is refused`, async () => {
      const r = await run(['/bin/sh', '-c', 'echo ${#1}', 'x', 'a'.repeat(MAX_ARG_STRLEN - 1)], { env });
      assert.equal(r.stdout, `${MAX_ARG_STRLEN - 1}\n`);
      assert.throws(
        () => run(['/bin/sh', '-c', 'echo ${#1}', 'x', 'a'.repeat(MAX_ARG_STRLEN)], { env }),
        (e: unknown) => e instanceof SandboxOptionError && e.option === 'command' && /MAX_ARG_STRLEN/.test(e.message),
      );
    });

    it('arguments filling exactly a quarter of an 8M stack run (thousands of them); one byte more is refused', async () => {
      const space = execSpace(8 << 20);
      const head = ['/bin/sh', '-c', 'echo $#', 'x'];
      let used = head.reduce((s, a) => s + cost(a), 0) + Object.entries(env).reduce((s, [k, v]) => s + cost(`${k}=${v}`), 0);
      used += '/bin/sh'.length + 1; // execve copies the program's path too
      const args: string[] = [];
      const chunk = 'a'.repeat(200);
      while (used + 2 * cost(chunk) <= space) {
        args.push(chunk);
        used += cost(chunk);
      }
      args.push('b'.repeat(space - used - 9)); // the last argument takes exactly what is left
      assert.ok(args.length > 4000);
      const r = await run([...head, ...args], { env, limits: { stack: '8M' } });
      assert.equal(r.verdict, 'ok', r.setupFailure?.message);
      assert.equal(r.stdout, `${args.length}\n`);
      args[args.length - 1] += 'b';
      assert.throws(
        () => run([...head, ...args], { env, limits: { stack: '8M' } }),
        (e: unknown) => e instanceof SandboxOptionError && e.option === 'command' && e.code === 'ERR_SANDBOX_INVALID_OPTION',
      );
    });

    it('a wall-time limit of 1000h (past the 2^31 ms of a Node timer) lets a short run finish', async () => {
      const r = await run(['/bin/sleep', '0.3'], { limits: { wallTime: '1000h' } });
      assert.equal(r.verdict, 'ok');
      assert.ok(r.usage!.wallMs >= 250, String(r.usage!.wallMs));
    });
  });
});
