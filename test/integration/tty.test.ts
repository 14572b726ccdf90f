// Terminals inside (tty, cubicle run -t): a pty of the sandbox's own devpts as the payload's stdio and controlling
// terminal, its relay both ways, window sizes, Ctrl-C to the foreground process group, TIOCSTI still denied, and
// the caller's terminal restored. The interactive parts drive the CLI through tmux, on a server of their own.
import { strict as assert } from 'node:assert';
import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { runSandboxed, SandboxOptionError, spawnSandboxed, type SandboxOptions, type SandboxResult } from '../../sandbox/index.js';
import { identities, skipBecause, worldReadableTmp, type Identity } from '../helpers/env.js';
import { CLI } from '../helpers/cli.js';

const hasTmux = spawnSync('tmux', ['-V']).status === 0;

/** Collects a stream's text; `until` resolves once it matches (or rejects after ms, showing what came). */
function collect(s: Readable): { text: () => string; until: (re: RegExp, ms?: number) => Promise<void> } {
  let text = '';
  s.setEncoding('utf8');
  s.on('data', (c: string) => (text += c));
  return {
    text: () => text,
    until: async (re, ms = 20_000) => {
      const end = Date.now() + ms;
      while (!re.test(text)) {
        if (Date.now() > end) throw new Error(`waited ${ms} ms for ${re} in ${JSON.stringify(text.slice(-2000))}`);
        await new Promise((r) => setTimeout(r, 25));
      }
    },
  };
}

const PY_SIZE = [
  'import os, signal, time',
  "show = lambda *a: print('size', *os.get_terminal_size(0), flush=True)",
  'signal.signal(signal.SIGWINCH, show)',
  'show()',
  'while True: time.sleep(1)',
].join('\n');

/** The host pids below `pid` (children first, then theirs). */
function descendants(pid: number): number[] {
  let children: number[] = [];
  try {
    children = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    /* exited meanwhile */
  }
  return children.flatMap((c) => [c, ...descendants(c)]);
}

/** A tmux server of this test's own (its socket in a private directory), run as the identity's host user. */
class Tmux {
  readonly sock: string;
  readonly #as: { uid?: number; gid?: number };
  constructor(
    readonly dir: string,
    id: Identity,
  ) {
    this.sock = join(dir, 'tmux.sock');
    this.#as = id.spawnAs.runAs ?? {};
  }
  tmux(...args: string[]): string {
    return execFileSync('tmux', ['-S', this.sock, ...args], {
      encoding: 'utf8',
      env: { PATH: '/usr/bin:/bin', HOME: this.dir, SHELL: '/bin/sh', TERM: 'xterm-256color' },
      ...this.#as,
    });
  }
  /** A 100x30 window running a plain sh whose prompt is "host$ ". */
  start(): void {
    const env = `env -i PATH=/usr/bin:/bin HOME=${this.dir} TERM=xterm-256color PS1='host$ '`;
    this.tmux('new-session', '-d', '-x', '100', '-y', '30', `${env} sh`);
  }
  /** Types a line and Enter. */
  line(text: string): void {
    this.tmux('send-keys', '-l', text);
    this.tmux('send-keys', 'Enter');
  }
  keys(...keys: string[]): void {
    this.tmux('send-keys', ...keys);
  }
  screen(): string {
    return this.tmux('capture-pane', '-p', '-J', '-S', '-500');
  }
  /** Waits until the pane shell prompts again (the CLI has returned): its last line is a bare prompt. */
  async prompt(ms = 20_000): Promise<void> {
    const end = Date.now() + ms;
    while (!/host\$$/.test(this.screen().trimEnd().split('\n').pop()!.trimEnd())) {
      if (Date.now() > end) throw new Error(`waited ${ms} ms for the shell's prompt; the screen:\n${this.screen()}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  async waitFor(re: RegExp, ms = 20_000): Promise<RegExpExecArray> {
    const end = Date.now() + ms;
    for (;;) {
      const m = re.exec(this.screen());
      if (m) return m;
      if (Date.now() > end) throw new Error(`waited ${ms} ms for ${re}; the screen:\n${this.screen()}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  kill(): void {
    try {
      this.tmux('kill-server');
    } catch {
      /* already gone */
    }
  }
}

for (const id of identities())
  describe(`terminals inside, ${id.label}`, () => {
    // Every run here has a terminal (or fails): stdout is text, stderr is no stream of its own.
    const run = async (cmd: string | string[], o: SandboxOptions = {}) =>
      (await runSandboxed(cmd, { ...o, ...id.spawnAs })) as unknown as SandboxResult<{ tty: true }>;

    describe('the library ({ tty })', () => {
      it('gives the payload a pty of its own devpts as stdin, stdout, stderr and controlling terminal', async () => {
        const py =
          'import os; print(os.ttyname(0), os.ttyname(1), os.ttyname(2), os.getsid(0) == os.getpid(), ' +
          "os.tcgetpgrp(0) == os.getpgrp(), os.readlink('/dev/ptmx')); " +
          "t = open('/dev/tty', 'w'); t.write('via-dev-tty\\n'); t.close(); os.write(2, b'to-stderr\\n')";
        const r = await run(['python3', '-c', py], { tty: true });
        assert.equal(r.exitCode, 0);
        assert.match(r.stdout, /^\/dev\/pts\/0 \/dev\/pts\/0 \/dev\/pts\/0 True True pts\/ptmx\r\n/);
        assert.match(r.stdout, /via-dev-tty\r\n/, '/dev/tty opens the controlling terminal');
        assert.match(r.stdout, /to-stderr\r\n/, 'stderr is the terminal: it shows in stdout');
        assert.equal(r.stderr, undefined);
        const m = await run(['sh', '-c', 'grep " /dev/pts " /proc/self/mountinfo; stat -c "%a %g" "$(tty)"'], { tty: true, gid: 1234 });
        // (mountinfo names the group as the host sees it)
        assert.match(m.stdout, / \/dev\/pts rw,nosuid,noexec,\S* - devpts devpts rw,gid=\d+,mode=620,ptmxmode=666\r\n/);
        assert.match(m.stdout, /\r\n620 1234\r\n/, "the pty is the sandbox user's, mode 0620");
      });

      it('the window size given at the start, 80x24 by default', async () => {
        assert.equal((await run(['stty', 'size'], { tty: { columns: 100, rows: 30 } })).stdout, '30 100\r\n');
        assert.equal((await run(['stty', 'size'], { tty: true })).stdout, '24 80\r\n');
      });

      it('resize() changes the size inside, and the foreground process gets SIGWINCH', async () => {
        const p = spawnSandboxed(['python3', '-c', PY_SIZE], {
          ...id.spawnAs,
          tty: { columns: 90, rows: 20 },
          stdin: 'pipe',
          timeout: 60_000,
        });
        const out = collect(p.stdout!);
        try {
          await out.until(/size 90 20/);
          p.resize(132, 43);
          await out.until(/size 132 43/);
          // sizes whose bytes are the terminate and kill commands ('t' = 116, 'k' = 107) are sizes, nothing else
          p.resize(116, 107);
          await out.until(/size 116 107/);
          p.resize(120, 40);
          await out.until(/size 120 40/);
          assert.throws(
            () => p.resize(0, 10),
            (e: unknown) => e instanceof SandboxOptionError && /columns is 0/.test(e.message),
          );
          assert.throws(() => p.resize(70000, 10), SandboxOptionError);
        } finally {
          p.kill('SIGKILL');
          await p.result.catch(() => {});
        }
        const plain = spawnSandboxed(['true'], id.spawnAs);
        assert.throws(
          () => plain.resize(80, 24),
          (e: unknown) => e instanceof SandboxOptionError && /needs a terminal/.test(e.message),
        );
        await plain.result;
      });

      it('Ctrl-C typed interrupts a python3 statement (SIGINT to the foreground group); the prompt comes back', async () => {
        const p = spawnSandboxed(['python3', '-q'], { ...id.spawnAs, tty: true, stdin: 'pipe', timeout: 60_000 });
        const out = collect(p.stdout!);
        await out.until(/>>> $/);
        p.stdin!.write('while True: pass\r\r');
        await new Promise((r) => setTimeout(r, 500));
        p.stdin!.write('\x03');
        await out.until(/KeyboardInterrupt\r\n>>> $/);
        p.stdin!.write('print(6*7)\r');
        await out.until(/\r\n42\r\n>>> $/);
        p.stdin!.write('\x04'); // Ctrl-D at an empty line: the end
        const r = await p.result;
        assert.equal(r.exitCode, 0, 'python3 ended by Ctrl-D, not by a signal to the sandbox');
      });

      it('the end of stdin types the end-of-file character once what came before was read', async () => {
        const py = await run(['python3', '-q'], { tty: true, input: 'print(6*7)\n', timeout: 30_000 });
        assert.equal(py.exitCode, 0);
        assert.match(py.stdout, /\r\n42\r\n/);
        const cat = await run(['cat'], { tty: true, input: 'one line\n', timeout: 30_000 });
        assert.equal(cat.exitCode, 0);
        assert.equal(cat.stdout, 'one line\r\none line\r\n', 'the echo, then what cat read');
      });

      it('everything the terminal showed arrives, up to the last byte after the payload exits', async () => {
        const r = await run(['seq', '1', '30000'], { tty: true });
        const lines = r.stdout.split('\r\n');
        assert.equal(lines.length, 30001);
        assert.equal(lines[29999], '30000');
      });

      it('a payload flooding the terminal is bounded by maxBuffer and does not hang the caller', async () => {
        const r = await run(['yes'], { tty: true, maxBuffer: '1M', reject: false, timeout: 60_000 });
        assert.equal(r.verdict, 'output-limit');
        assert.equal(r.stdout.length, 1 << 20);
        assert.match(r.stdout, /^(y\r\n)+/);
      });

      it('TIOCSTI stays denied: EPERM under default and permissive, a seccomp kill under judge', async () => {
        const py =
          'import fcntl, termios\ntry:\n  fcntl.ioctl(0, termios.TIOCSTI, b"x")\n  print("injected")\n' +
          'except OSError as e:\n  print("denied", e.errno)';
        for (const policy of ['default', 'permissive']) {
          const r = await run(['python3', '-c', py], { tty: true, policy });
          assert.equal(r.stdout, 'denied 1\r\n', `policy ${policy}`);
        }
        const j = await run(['python3', '-c', py], { tty: true, policy: 'judge', reject: false });
        assert.equal(j.verdict, 'seccomp-violation');
        assert.equal(j.violation?.syscall, 'ioctl');
      });

      it('refuses options that conflict with a terminal, naming them', () => {
        const refuses = (o: SandboxOptions, option: string, re: RegExp): void =>
          assert.throws(
            () => runSandboxed('true', o),
            (e: unknown) => e instanceof SandboxOptionError && e.option === option && re.test(e.message),
          );
        refuses({ tty: true, stderr: 'pipe' }, 'stderr', /conflicts with tty.*arrives in stdout/);
        refuses({ tty: true, stderr: 'inherit' }, 'stderr', /conflicts with tty/);
        refuses({ tty: { columns: 0, rows: 24 } }, 'tty', /columns is 0/);
        refuses({ tty: { columns: 80, rows: 24, depth: 3 } as never }, 'tty', /"depth" is not one of them/);
        refuses({ tty: 'yes' as never }, 'tty', /tty must be true, false or \{ columns, rows \}/);
      });
    });

    describe('the CLI (cubicle run -t) through tmux', function () {
      this.timeout(120_000);
      let tmp: { dir: string; cleanup: () => void };
      let t: Tmux;
      let runs = 0;
      const cubicle = (args: string): string => `${process.execPath} ${CLI} run -t ${args}`;
      before(function () {
        if (!hasTmux) skipBecause(this, 'tmux is not installed (apt-get install tmux)');
      });
      beforeEach(() => {
        tmp = worldReadableTmp('cubicle-tty-');
        chmodSync(tmp.dir, 0o777);
        t = new Tmux(tmp.dir, id);
        t.start();
      });
      afterEach(() => {
        t?.kill();
        tmp?.cleanup();
      });
      /** Saves the caller's terminal settings, to compare after the run. */
      const saveTerminal = async (): Promise<void> => {
        t.line(`stty -g > ${tmp.dir}/before; echo saved`);
        await t.waitFor(/^saved$/m);
      };
      /** The exit status and whether the caller's terminal is as it was (stty -g) with icanon, echo, isig. */
      const afterRun = async (): Promise<{ rc: number; restored: boolean; flags: string }> => {
        await t.prompt(); // typed any earlier, it would go to the sandbox
        const n = ++runs; // each report is told apart from those of earlier runs on the screen
        t.line(
          `rc=$?; stty -a > ${tmp.dir}/after; echo host-rc-${n}=$rc; stty -g | cmp -s - ${tmp.dir}/before && echo RESTORED || echo CHANGED`,
        );
        const m = await t.waitFor(new RegExp(`^host-rc-${n}=(\\d+)\n(RESTORED|CHANGED)$`, 'm'));
        return { rc: Number(m[1]), restored: m[2] === 'RESTORED', flags: readFileSync(`${tmp.dir}/after`, 'utf8') };
      };
      const assertRestored = (a: { restored: boolean; flags: string }): void => {
        assert.ok(a.restored, `the terminal settings changed:\n${a.flags}`);
        for (const flag of ['icanon', 'echo', 'isig', 'icrnl', 'opost']) assert.match(a.flags, new RegExp(`(^|\\s)${flag}(\\s|$)`, 'm'));
      };

      it('bash: a /dev/pts terminal, the size and resizes, job control, Ctrl-C to the foreground job', async () => {
        await saveTerminal();
        t.line(cubicle(`--env 'PS1=SBX$ ' -- bash --norc --noprofile`));
        await t.waitFor(/^SBX\$ ?$/m);
        t.line('tty; stty size');
        await t.waitFor(/^\/dev\/pts\/\d+\n30 100$/m);
        t.tmux('resize-window', '-x', '120', '-y', '40');
        t.line('echo size=$(stty size)');
        await t.waitFor(/^size=40 120$/m);
        t.line('sleep 100 &');
        await t.waitFor(/^\[1\] \d+$/m);
        t.line('jobs');
        await t.waitFor(/^\[1\]\+\s+Running\s+sleep 100 &$/m);
        t.line('fg');
        await t.waitFor(/fg\nsleep 100$/m);
        await new Promise((r) => setTimeout(r, 300));
        t.keys('C-c');
        await t.waitFor(/^\^C\nSBX\$ ?$/m);
        t.line('echo job-rc=$?; jobs; echo no-jobs');
        await t.waitFor(/^job-rc=130\nno-jobs$/m);
        t.line('exit 3');
        const a = await afterRun();
        assert.equal(a.rc, 3, "the CLI exits with bash's status");
        assertRestored(a);
      });

      it('python3: Ctrl-C interrupts `while True: pass` with KeyboardInterrupt and the prompt comes back', async () => {
        await saveTerminal();
        t.line(cubicle('-- python3 -q'));
        await t.waitFor(/^>>> ?$/m);
        t.line('while True: pass');
        t.keys('Enter');
        await new Promise((r) => setTimeout(r, 700));
        t.keys('C-c');
        await t.waitFor(/KeyboardInterrupt\n>>> ?$/m);
        t.line('print(6*7)');
        await t.waitFor(/^42\n>>> ?$/m);
        t.keys('C-d');
        const a = await afterRun();
        assert.equal(a.rc, 0);
        assertRestored(a);
      });

      it('a payload flooding the terminal stops on Ctrl-C; the terminal is restored', async () => {
        await saveTerminal();
        t.line(cubicle('-- yes'));
        await t.waitFor(/^y\ny\ny$/m);
        t.keys('C-c');
        const a = await afterRun();
        assert.equal(a.rc, 130, 'yes died of SIGINT');
        assertRestored(a);
      });

      it('the terminal is restored after a setup error and after the CLI is killed by SIGTERM', async () => {
        await saveTerminal();
        t.line(cubicle('-- no-such-program-xyz'));
        const failed = await afterRun();
        assert.equal(failed.rc, 125);
        assertRestored(failed);
        t.line(cubicle('-- sleep 100'));
        await new Promise((r) => setTimeout(r, 1500));
        const cli = descendants(Number(t.tmux('display-message', '-p', '#{pane_pid}').trim())).find((pid) =>
          readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(CLI),
        );
        assert.ok(cli, 'the CLI runs in the pane');
        process.kill(cli, 'SIGTERM');
        const killed = await afterRun();
        assert.equal(killed.rc, 143, 'stopped by SIGTERM, reported as 128+15');
        assertRestored(killed);
      });

      it('-t with --stdin, --stdout, --stderr or --json is a usage error naming the flag', () => {
        for (const [flags, re] of [
          [['--stdout', '/dev/null'], /--stdout cannot be combined with -t/],
          [['--stderr', '/dev/null'], /--stderr cannot be combined with -t/],
          [['--stdin', '/dev/null'], /--stdin cannot be combined with -t/],
          [['--json'], /--json .* cannot be combined with -t/],
        ] as const) {
          const r = spawnSync(process.execPath, [CLI, 'run', '-t', ...flags, '--', 'true'], {
            encoding: 'utf8',
            ...(id.spawnAs.runAs ?? {}),
          });
          assert.equal(r.status, 2, r.stderr);
          assert.match(r.stderr, re);
        }
      });
    });
  });
