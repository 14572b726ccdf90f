// The package as a dependency: packed, installed with scripts disabled into a project an unprivileged user owns,
// and used by that user without a build step (the shipped static helper), and without a prebuild (built once into
// the user's cache). A helper of another version or architecture is never run.
import { strict as assert } from 'node:assert';
import { execFileSync, spawnSync, type SpawnSyncReturns } from 'node:child_process';
import {
  chmodSync,
  chownSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { IS_ROOT, ROOTLESS_ID, skipBecause } from '../helpers/env.js';

const REPO = fileURLToPath(new URL('../../..', import.meta.url));
/** The user who owns and uses the project: a dedicated unprivileged uid when the suite runs as root. */
const USER = IS_ROOT ? ROOTLESS_ID : { uid: process.geteuid!(), gid: process.getegid!() };

const APP = `import { runSandboxed } from 'cubicle';
const r = await runSandboxed(['/bin/sh', '-c', 'echo "inside as $(id -u)"']);
console.log(r.stdout.trim(), r.usage.cpuMs >= 0);
`;

describe('the package, installed as a dependency with scripts disabled', function () {
  this.timeout(300_000);
  let work: string;
  let project: string;
  const env = (): NodeJS.ProcessEnv => ({
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    HOME: join(work, 'home'),
    XDG_CACHE_HOME: join(work, 'home', '.cache'),
    npm_config_cache: join(work, 'npm-cache'),
    npm_config_update_notifier: 'false',
  });
  const asUser = (cmd: string, args: string[], extra: NodeJS.ProcessEnv = {}): SpawnSyncReturns<string> =>
    spawnSync(cmd, args, { cwd: project, env: { ...env(), ...extra }, encoding: 'utf8', timeout: 240_000, uid: USER.uid, gid: USER.gid });

  before(function () {
    // Under dist/ (build output, never packed as such): /tmp may be a small tmpfs that npm's cache would fill.
    work = mkdtempSync(join(REPO, 'dist', 'package-test-'));
    chmodSync(work, 0o755);
    const prebuild = spawnSync(process.execPath, [join(REPO, 'dist/sandbox/native/prebuild.js'), process.arch], { encoding: 'utf8' });
    if (prebuild.status !== 0) skipBecause(this, `cannot build the static helper for linux-${process.arch}: ${prebuild.stderr.trim()}`);
    const pack = spawnSync('npm', ['pack', '--ignore-scripts', '--pack-destination', work], { cwd: REPO, encoding: 'utf8' });
    if (pack.status !== 0) throw new Error(`npm pack failed: ${pack.stderr}`);
    const tarball = readdirSync(work).find((f) => f.endsWith('.tgz'))!;
    project = join(work, 'app');
    for (const d of [project, join(work, 'home'), join(work, 'npm-cache')]) mkdirSync(d);
    writeFileSync(join(project, 'package.json'), JSON.stringify({ name: 'app', version: '1.0.0', type: 'module', private: true }));
    writeFileSync(join(project, 'app.mjs'), APP);
    if (IS_ROOT) for (const p of [work, project, join(work, 'home'), join(work, 'npm-cache')]) chownSync(p, USER.uid, USER.gid);
    if (IS_ROOT) for (const f of ['package.json', 'app.mjs']) chownSync(join(project, f), USER.uid, USER.gid);
    chmodSync(join(work, tarball), 0o644);
    const install = asUser('npm', ['install', '--ignore-scripts', '--no-audit', '--no-fund', join(work, tarball)]);
    if (install.status !== 0)
      skipBecause(this, `npm could not install the tarball and its dependencies: ${install.stderr.trim().split('\n').pop()}`);
  });

  after(() => {
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it('ships no tests, benches, objects, source maps or build info, and has LICENSE and CHANGELOG', () => {
    const pkg = join(project, 'node_modules', 'cubicle');
    const files = execFileSync('find', [pkg, '-type', 'f'], { encoding: 'utf8' }).split('\n').filter(Boolean);
    const bad = files.filter((f) => /\/dist\/(test|bench)\/|\.o$|\.map$|\.tsbuildinfo$|\/dist\/native\//.test(f));
    assert.deepEqual(bad, []);
    for (const f of ['LICENSE', 'CHANGELOG.md', `prebuilds/linux-${process.arch}/cubicle-helper`]) assert.ok(existsSync(join(pkg, f)), f);
    assert.ok((JSON.parse(readFileSync(join(pkg, 'package.json'), 'utf8')) as { repository?: unknown }).repository);
  });

  it('runSandboxed works for the unprivileged owner without a compiler (the shipped static helper)', () => {
    const r = asUser(process.execPath, ['app.mjs'], { PATH: '/nonexistent', CC: '/nonexistent/cc' });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, 'inside as 1000 true\n');
    assert.ok(!existsSync(join(work, 'home', '.cache', 'cubicle')), 'nothing was built');
  });

  it('the cubicle bin runs from its bundle and keeps its code cache private to the user', () => {
    const pkg = join(project, 'node_modules', 'cubicle');
    for (const f of ['dist/sandbox/cli/main.cjs', 'dist/sandbox/cli/cli.bundle.cjs', 'dist/sandbox/cli/cli.bundle.json'])
      assert.ok(existsSync(join(pkg, f)), f);
    for (let i = 0; i < 2; i++) {
      const r = asUser(join(project, 'node_modules', '.bin', 'cubicle'), ['run', '--', '/bin/echo', 'bundled'], { PATH: '/usr/bin:/bin' });
      assert.equal(r.status, 0, r.stderr);
      assert.equal(r.stdout, 'bundled\n');
    }
    const dir = join(work, 'home', '.cache', 'cubicle', 'code-cache');
    const [file, ...more] = readdirSync(dir);
    assert.equal(more.length, 0, 'one code cache file per install');
    const mode = execFileSync('stat', ['-c', '%a %u', dir, join(dir, file!)], { encoding: 'utf8' });
    assert.equal(mode, `700 ${USER.uid}\n600 ${USER.uid}\n`);
    rmSync(join(work, 'home', '.cache', 'cubicle'), { recursive: true, force: true }); // the next test starts without a cache
  });

  it('without a prebuild for the host, the helper is built once into a private cache; without a compiler, the error names the fix', () => {
    const pkg = join(project, 'node_modules', 'cubicle');
    const prebuilt = join(pkg, 'prebuilds', `linux-${process.arch}`, 'cubicle-helper');
    const kept = join(work, 'kept-helper');
    copyFileSync(prebuilt, kept);
    rmSync(prebuilt);
    try {
      const none = asUser(process.execPath, ['app.mjs'], { PATH: '/nonexistent', CC: '/nonexistent/cc' });
      assert.notEqual(none.status, 0);
      assert.match(none.stderr, /no prebuilt helper fits linux-/);
      assert.match(none.stderr, /install a C compiler/);
      const built = asUser(process.execPath, ['app.mjs']);
      assert.equal(built.status, 0, built.stderr);
      assert.equal(built.stdout, 'inside as 1000 true\n');
      const cache = join(work, 'home', '.cache', 'cubicle');
      const [dir] = readdirSync(cache);
      const mode = execFileSync('stat', ['-c', '%a %u', cache, join(cache, dir!)], { encoding: 'utf8' });
      assert.equal(mode, `700 ${USER.uid}\n700 ${USER.uid}\n`);
    } finally {
      copyFileSync(kept, prebuilt);
    }
  });

  it('a helper of another architecture or version in the prebuild slot is never run (regression: posix_spawn ENOEXEC)', () => {
    const pkg = join(project, 'node_modules', 'cubicle');
    const slot = join(pkg, 'prebuilds', `linux-${process.arch}`, 'cubicle-helper');
    const kept = join(work, 'kept-helper-2');
    copyFileSync(slot, kept);
    try {
      // A shell script where the helper should be: what a wrong-architecture binary became before (a syntax error).
      writeFileSync(slot, '#!/bin/sh\necho ran-the-wrong-helper >&2\nexit 99\n');
      // No compiler and an empty cache: nothing else can stand in for it.
      const noBuild = { PATH: '/nonexistent', CC: '/nonexistent/cc', XDG_CACHE_HOME: join(work, 'empty-cache') };
      const r = asUser(process.execPath, ['app.mjs'], noBuild);
      assert.doesNotMatch(r.stderr, /ran-the-wrong-helper/);
      assert.match(r.stderr, /not an ELF executable/);
      // The same binary with another version's stamp.
      const other = readFileSync(kept)
        .toString('latin1')
        .replace(/CUBICLE-HELPER-STAMP:[^;]+;/, (m) => m.replace(/\d+\.\d+\.\d+/, '9.9.9'));
      writeFileSync(slot, Buffer.from(other, 'latin1'), { mode: 0o755 });
      const v = asUser(process.execPath, ['app.mjs'], noBuild);
      assert.match(v.stderr, /stamped "9\.9\.9\//);
    } finally {
      copyFileSync(kept, slot);
    }
  });
});
