// Real programs under the shipped policies: compiled C and C++, Python, Java, Node and shell scripts with coreutils
// run to the end with no violation (judge killed asyncio on getsockname and cp on its FICLONE ioctl).
import { strict as assert } from 'node:assert';
import { existsSync, chmodSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { forEachIdentity, worldReadableTmp, skipBecause } from '../helpers/env.js';

const SOURCES: Record<string, string> = {
  'a.c': `#include <pthread.h>
#include <stdio.h>
static void *f(void *a) { return a; }
int main(void) {
  pthread_t t[4];
  for (int i = 0; i < 4; i++) pthread_create(&t[i], 0, f, 0);
  for (int i = 0; i < 4; i++) pthread_join(t[i], 0);
  long s = 0;
  for (int i = 0; i < 1000; i++) s += i;
  printf("%ld\\n", s);
  return 0;
}
`,
  'b.cpp': `#include <algorithm>
#include <future>
#include <iostream>
#include <map>
#include <thread>
#include <vector>
int main() {
  std::vector<long> r(4);
  std::vector<std::thread> ts;
  for (int i = 0; i < 4; i++) ts.emplace_back([&r, i] { r[i] = i * i; });
  for (auto &t : ts) t.join();
  auto f = std::async(std::launch::async, [] { return 42; });
  std::map<std::string, int> m{{"a", 1}};
  std::vector<int> v{3, 1, 2};
  std::sort(v.begin(), v.end());
  std::cout << r[3] + f.get() + m["a"] + v[0] << std::endl;
}
`,
  'p.py': `import asyncio, concurrent.futures, json, multiprocessing as mp, os, socket, subprocess, tempfile, threading
def sq(x): return x * x
async def main():
    await asyncio.sleep(0.01)
    p = await asyncio.create_subprocess_exec('/bin/echo', 'async', stdout=asyncio.subprocess.PIPE)
    return (await p.communicate())[0].decode().strip()
if __name__ == '__main__':
    r = []
    t = threading.Thread(target=lambda: r.append('thread')); t.start(); t.join()
    for method in ('fork', 'spawn', 'forkserver'):
        with mp.get_context(method).Pool(2) as pool: r.append(sum(pool.map(sq, range(4))))
    with concurrent.futures.ProcessPoolExecutor(2) as ex: r.append(sum(ex.map(sq, range(3))))
    q = mp.Queue(); pr = mp.Process(target=q.put, args=(7,)); pr.start(); r.append(q.get()); pr.join()
    r.append(subprocess.run('echo sub | tr a-z A-Z', shell=True, capture_output=True, text=True).stdout.strip())
    r.append(asyncio.run(main()))
    a, b = socket.socketpair(); a.sendall(b'x'); r.append(b.recv(1).decode())
    with tempfile.TemporaryDirectory() as d: open(os.path.join(d, 'f'), 'w').write('x')
    print(json.dumps(r))
`,
  'Main.java': `import java.nio.file.*;
import java.util.*;
import java.util.concurrent.*;
public class Main {
  public static void main(String[] a) throws Exception {
    ExecutorService ex = Executors.newFixedThreadPool(4);
    List<Future<Integer>> fs = new ArrayList<>();
    for (int i = 0; i < 8; i++) { final int k = i; fs.add(ex.submit(() -> k * k)); }
    int s = 0;
    for (Future<Integer> f : fs) s += f.get();
    ex.shutdown();
    Path p = Files.createTempFile("x", ".txt");
    Files.writeString(p, "hi");
    s += Files.readString(p).length();
    Files.delete(p);
    System.out.println(s + " " + new TreeMap<>(Map.of("a", 1)).firstKey());
  }
}
`,
  'n.js': `const cp = require('child_process'), fs = require('fs'), os = require('os'), path = require('path');
const { Worker } = require('worker_threads');
if (process.argv[2] === 'child') process.on('message', (m) => { process.send(m * 2); process.disconnect(); });
else {
  const w = new Worker('require("worker_threads").parentPort.postMessage(6 * 7)', { eval: true });
  w.on('message', (m) => {
    const sub = cp.execFileSync('/bin/echo', ['sub']).toString().trim();
    const d = fs.mkdtempSync(path.join(os.tmpdir(), 'n'));
    fs.writeFileSync(d + '/f', 'x');
    fs.rmSync(d, { recursive: true });
    const c = cp.fork(__filename, ['child']);
    c.on('message', (x) => console.log(m, sub, x));
    c.send(21);
  });
}
`,
  's.sh': `set -e
cd /tmp
mkdir -p w/a w/b
for i in $(seq 1 20); do echo "line $((i * 7 % 13))" > w/a/f$i.txt; done
cp w/a/f1.txt w/b/; cp -r w/a w/c; cp -a w/a w/d; cp -p w/a/f2.txt w/b/p; mv w/b/p /dev/shm/p; mv /dev/shm/p w/b/p
cat w/a/*.txt | sort -r | uniq | sed 's/line/L/' | awk '{print $2}' | tr -d '\\n' | wc -c
seq 1 100000 | sort -R | sort -n --parallel=2 -S 1M -T /tmp | tail -1
find w -name '*.txt' -type f | sort | xargs wc -l | tail -1
find w -type f -print0 | xargs -0 -P 2 -n 5 sha256sum | wc -l
tar czf w.tgz w && mkdir x && tar xzf w.tgz -C x && tar tzf w.tgz | wc -l
gzip -k w/a/f1.txt && gunzip -c w/a/f1.txt.gz | md5sum | cut -c1-8
ln -s w/a lnk; readlink lnk; stat -c %s w/a/f1.txt; du -s w > /dev/null; ls -la w > /dev/null; touch -d 2020-01-01 w/t
chmod 600 w/t; split -l 1 w/a/f1.txt w/sp; install -m 644 w/a/f2.txt w/inst; truncate -s 1M w/inst; ln w/inst w/hard
timeout 5 sleep 0.01; nice -n 5 true; env -i A=1 env | wc -l; id -u; whoami; df -k /tmp > /dev/null; mktemp -d > /dev/null
dd if=/dev/zero of=w/dd bs=4k count=4 2> /dev/null; sync; sleep 0.01 & wait; rm -rf w x w.tgz lnk
echo done
`,
};

forEachIdentity((_id, run) => {
  let dir = '';
  let cleanup = () => {};
  before(() => {
    const t = worldReadableTmp();
    ({ dir, cleanup } = t);
    for (const [name, text] of Object.entries(SOURCES)) writeFileSync(join(dir, name), text, { mode: 0o644 });
    chmodSync(dir, 0o755);
  });
  after(() => cleanup());

  const programs: [string, string, string | RegExp, () => string | undefined][] = [
    ['C (gcc, threads)', 'gcc -O2 -pthread -o /tmp/a /job/a.c && /tmp/a', '499500\n', () => undefined],
    [
      'C++ (g++, threads, async)',
      'g++ -O2 -pthread -o /tmp/b /job/b.cpp && /tmp/b',
      '53\n',
      () => (existsSync('/usr/bin/g++') ? undefined : 'no g++'),
    ],
    [
      'Python (threads, multiprocessing fork/spawn/forkserver, asyncio, subprocess)',
      'python3 /job/p.py',
      '["thread", 14, 14, 14, 5, 7, "SUB", "async", "x"]\n',
      () => (existsSync('/usr/bin/python3') ? undefined : 'no /usr/bin/python3'),
    ],
    [
      'Java (javac, thread pool, files)',
      'mkdir /tmp/j && javac -d /tmp/j /job/Main.java && java -cp /tmp/j Main',
      '142 a\n',
      () => (existsSync('/usr/lib/jvm') && existsSync('/usr/bin/javac') ? undefined : 'no JDK (/usr/lib/jvm, javac)'),
    ],
    ['Node (worker, child_process exec and fork IPC, fs)', `${process.execPath} /job/n.js`, '42 sub 42\n', () => undefined],
    ['a shell script with coreutils, sort, find, xargs, tar, gzip, sed, awk', 'sh /job/s.sh', /\ndone\n$/, () => undefined],
  ];
  for (const policy of ['default', 'judge']) {
    for (const [name, cmd, want, missing] of programs) {
      it(`${policy}: ${name} runs with no violation`, async function () {
        this.timeout(120_000);
        const why = missing();
        if (why) {
          return skipBecause(this, `${why}`);
        }
        const r = await run(['/bin/sh', '-c', cmd], {
          policy,
          mounts: [{ type: 'bind', source: dir, target: '/job', readOnly: true }],
          limits: { memory: '1G' },
          tmpSize: '256M',
          reject: false,
        });
        const detail = `${r.verdict} ${JSON.stringify(r.violation)} ${r.stderr as string}`;
        assert.equal(r.verdict, 'ok', `${name} under ${policy}: ${detail}`);
        if (typeof want === 'string') assert.equal(r.stdout, want, name);
        else assert.match(r.stdout as string, want, name);
        assert.deepEqual(r.seccomp!.violations, []);
      });
    }
  }
});
