// Where a CLI call's time goes, for bench/cli.ts: with CUBICLE_TIMING=1 the executable (cli/main.cts) keeps a list
// under this key and prints it at exit; each mark is [name, ms since the process started]. Without it, a mark is
// one property lookup.
export const TIMING_KEY = Symbol.for('cubicle.timing');

type Marks = [string, number][];

export function mark(name: string): void {
  const marks = (globalThis as { [TIMING_KEY]?: Marks })[TIMING_KEY];
  if (marks) marks.push([name, performance.now()]);
}
