// The shape of the import graph: no module cycles, no cycles between top folders, and a bottom module
// (sandbox/types.ts) that depends on nothing else in the project. Reads the TypeScript sources, not dist/.
import { strict as assert } from 'node:assert';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';

/** Source trees whose imports are checked. */
const ROOTS = ['sandbox', 'rootfs-builder'];
/** The module every other one may import and that imports nothing above it. */
const BOTTOM = 'sandbox/types.ts';

type EdgeKind = 'value' | 'type' | 'dynamic';
interface Edge {
  to: string;
  kind: EdgeKind;
  line: number;
}
interface Module {
  /** Path from the repository root, with '/' separators. */
  path: string;
  edges: Edge[];
  /** Only interfaces, type aliases, declarations and type-only imports/exports: nothing survives compilation. */
  typeOnly: boolean;
}

/** The repository root: the nearest folder above this file whose package.json names cubicle. */
function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg) && (JSON.parse(readFileSync(pkg, 'utf8')) as { name?: string }).name === 'cubicle') return dir;
    const up = dirname(dir);
    if (up === dir) throw new Error('cannot find the repository root above the test');
    dir = up;
  }
}

const toPosix = (p: string) => p.split(sep).join('/');

function sourceFiles(root: string): string[] {
  const out: string[] = [];
  for (const top of ROOTS) {
    const abs = join(root, top);
    if (!existsSync(abs)) continue;
    for (const entry of readdirSync(abs, { recursive: true, encoding: 'utf8' })) {
      if (entry.endsWith('.ts') && !entry.endsWith('.d.ts')) out.push(toPosix(join(top, entry)));
    }
  }
  return out.sort();
}

/** Maps a relative specifier as NodeNext writes it ('./x.js') to the source file it names, if that file is known. */
function resolveSpecifier(from: string, spec: string, known: ReadonlySet<string>): string | undefined {
  const base = toPosix(join(dirname(from), spec));
  const candidates = [base.replace(/\.js$/, '.ts').replace(/\.mjs$/, '.mts'), base, `${base}.ts`, `${base}/index.ts`];
  return candidates.find((c) => known.has(c));
}

function isTypeOnlyImport(node: ts.ImportDeclaration): boolean {
  const clause = node.importClause;
  if (!clause) return false; // import './x.js' runs the module
  if (clause.isTypeOnly) return true;
  if (clause.name) return false;
  const named = clause.namedBindings;
  return named !== undefined && ts.isNamedImports(named) && named.elements.length > 0 && named.elements.every((e) => e.isTypeOnly);
}

function isTypeOnlyExport(node: ts.ExportDeclaration): boolean {
  if (node.isTypeOnly) return true;
  const clause = node.exportClause;
  return clause !== undefined && ts.isNamedExports(clause) && clause.elements.every((e) => e.isTypeOnly);
}

function isTypeLevelStatement(s: ts.Statement): boolean {
  if (ts.isInterfaceDeclaration(s) || ts.isTypeAliasDeclaration(s)) return true;
  if (ts.isImportDeclaration(s)) return isTypeOnlyImport(s);
  if (ts.isExportDeclaration(s)) return isTypeOnlyExport(s);
  if (ts.isEmptyStatement(s)) return true;
  return ts.canHaveModifiers(s) && (ts.getModifiers(s) ?? []).some((m) => m.kind === ts.SyntaxKind.DeclareKeyword);
}

/** Relative imports of one file: import (type) ... from, export ... from, import x = require(), import(), import('x').T. */
function parseModule(root: string, path: string, known: ReadonlySet<string>): Module {
  const text = readFileSync(join(root, path), 'utf8');
  const sf = ts.createSourceFile(path, text, ts.ScriptTarget.Latest, true, ts.ScriptKind.TS);
  const edges: Edge[] = [];
  const add = (specNode: ts.Node, kind: EdgeKind) => {
    if (!ts.isStringLiteralLike(specNode) || !specNode.text.startsWith('.')) return;
    const to = resolveSpecifier(path, specNode.text, known);
    const line = sf.getLineAndCharacterOfPosition(specNode.getStart(sf)).line + 1;
    assert.ok(to, `${path}:${line} imports '${specNode.text}', which is not a source file under ${ROOTS.join(' or ')}`);
    edges.push({ to, kind, line });
  };
  const visit = (node: ts.Node): void => {
    if (ts.isImportDeclaration(node)) add(node.moduleSpecifier, isTypeOnlyImport(node) ? 'type' : 'value');
    else if (ts.isExportDeclaration(node) && node.moduleSpecifier) add(node.moduleSpecifier, isTypeOnlyExport(node) ? 'type' : 'value');
    else if (ts.isImportEqualsDeclaration(node) && ts.isExternalModuleReference(node.moduleReference))
      add(node.moduleReference.expression, node.isTypeOnly ? 'type' : 'value');
    else if (ts.isCallExpression(node) && node.expression.kind === ts.SyntaxKind.ImportKeyword && node.arguments[0])
      add(node.arguments[0], 'dynamic');
    else if (ts.isImportTypeNode(node) && ts.isLiteralTypeNode(node.argument)) add(node.argument.literal, 'type');
    ts.forEachChild(node, visit);
  };
  visit(sf);
  return { path, edges, typeOnly: sf.statements.every(isTypeLevelStatement) };
}

/** Strongly connected components with more than one member, or with an edge to itself (Tarjan). */
function knots(nodes: readonly string[], next: (n: string) => readonly string[]): string[][] {
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const found: string[][] = [];
  let counter = 0;
  const strong = (v: string): void => {
    index.set(v, counter);
    low.set(v, counter);
    counter++;
    stack.push(v);
    onStack.add(v);
    for (const w of next(v)) {
      if (!index.has(w)) {
        strong(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) {
        low.set(v, Math.min(low.get(v)!, index.get(w)!));
      }
    }
    if (low.get(v) === index.get(v)) {
      const component: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        onStack.delete(w);
        component.push(w);
      } while (w !== v);
      if (component.length > 1 || next(v).includes(v)) found.push(component.sort());
    }
  };
  for (const n of nodes) if (!index.has(n)) strong(n);
  return found.sort((a, b) => (a[0]! < b[0]! ? -1 : 1));
}

/** One shortest cycle through start inside its component, as the list of nodes from start back to start. */
function cycleThrough(start: string, component: readonly string[], next: (n: string) => readonly string[]): string[] {
  const inside = new Set(component);
  const from = new Map<string, string>();
  const queue = [start];
  while (queue.length > 0) {
    const v = queue.shift()!;
    for (const w of next(v)) {
      if (!inside.has(w)) continue;
      if (w === start) {
        const path = [start];
        for (let u: string | undefined = v; u !== undefined && u !== start; u = from.get(u)) path.splice(1, 0, u);
        return [...path, start];
      }
      if (!from.has(w)) {
        from.set(w, v);
        queue.push(w);
      }
    }
  }
  return [start];
}

/** The shortest cycle through each member of a component, without repeats (a rotation is the same cycle), shortest first. */
function cyclesIn(component: readonly string[], next: (n: string) => readonly string[]): string[][] {
  const seen = new Map<string, string[]>();
  const found = component.map((start) => cycleThrough(start, component, next).slice(0, -1));
  // Every pair that imports each other, too: the shortest cycle through a member may hide them.
  for (const a of component) for (const b of next(a)) if (a < b && next(b).includes(a)) found.push([a, b]);
  for (const cycle of found) {
    const first = cycle.indexOf([...cycle].sort()[0]!);
    const rotated = [...cycle.slice(first), ...cycle.slice(0, first)];
    seen.set(rotated.join(' '), [...rotated, rotated[0]!]);
  }
  return [...seen.values()].sort((a, b) => a.length - b.length || a.join(' ').localeCompare(b.join(' ')));
}

/** The unit a file belongs to for the folder check: its top folder (sandbox/api), or the file itself when it sits at a root. */
function unitOf(path: string): string {
  const parts = path.split('/');
  return parts.length > 2 ? `${parts[0]}/${parts[1]}` : path;
}

describe('architecture: the import graph of sandbox/ and rootfs-builder/', () => {
  const root = repoRoot();
  const files = sourceFiles(root);
  const known = new Set(files);
  const modules = new Map(files.map((f) => [f, parseModule(root, f, known)] as const));
  const targets = (f: string) => [...new Set(modules.get(f)?.edges.map((e) => e.to) ?? [])];

  it('finds the sources', () => {
    assert.ok(files.length > 10, `only ${files.length} TypeScript files under ${ROOTS.join(', ')} in ${root}`);
    assert.ok(known.has('sandbox/index.ts'), 'sandbox/index.ts is missing');
  });

  it('has no module import cycle (import type and export ... from count too)', () => {
    // An arrow says how the left module imports the right one: '->' with a runtime import, '-(type)->' when erased.
    const arrow = (a: string, b: string) => {
      const kinds = [
        ...new Set(
          modules
            .get(a)!
            .edges.filter((e) => e.to === b)
            .map((e) => e.kind),
        ),
      ];
      return kinds.includes('value') ? ' -> ' : ` -(${kinds.join('/')})-> `;
    };
    const problems = knots(files, targets).map((component) => {
      const cycles = cyclesIn(component, targets).map(
        (c) => `    ${c.map((m, i) => (i === 0 ? m : `${arrow(c[i - 1]!, m)}${m}`)).join('')}`,
      );
      return `  ${component.length} modules in one knot: ${component.join(', ')}\n${cycles.join('\n')}`;
    });
    if (problems.length > 0) assert.fail(`${problems.length} import cycle knot(s):\n${problems.join('\n')}`);
  });

  it('has no cycle between top folders (sandbox/api, sandbox/plan, ..., rootfs-builder; a root-level file is its own unit)', () => {
    const units = [...new Set(files.map(unitOf))].sort();
    // For each pair of units, one import that links them, to name in the message.
    const witness = new Map<string, { from: string; edge: Edge }>();
    const unitEdges = new Map<string, Set<string>>(units.map((u) => [u, new Set<string>()]));
    for (const m of modules.values()) {
      for (const e of m.edges) {
        const a = unitOf(m.path);
        const b = unitOf(e.to);
        if (a === b) continue;
        unitEdges.get(a)!.add(b);
        const key = `${a} ${b}`;
        // Name a runtime import when there is one: it is the link that matters most.
        const seen = witness.get(key);
        if (!seen || (seen.edge.kind !== 'value' && e.kind === 'value')) witness.set(key, { from: m.path, edge: e });
      }
    }
    const next = (u: string) => [...unitEdges.get(u)!];
    const problems = knots(units, next).map((component) => {
      const cycles = cyclesIn(component, next).map((c) => {
        const steps = c.slice(1).map((u, i) => {
          const { from, edge } = witness.get(`${c[i]!} ${u}`)!;
          return `        ${from}:${edge.line} imports ${edge.to}${edge.kind === 'value' ? '' : ` (${edge.kind})`}`;
        });
        return `    ${c.join(' -> ')}\n${steps.join('\n')}`;
      });
      return `  ${component.length} folders in one knot: ${component.join(', ')}\n${cycles.join('\n')}`;
    });
    if (problems.length > 0) assert.fail(`${problems.length} folder cycle knot(s):\n${problems.join('\n')}`);
  });

  it(`keeps ${BOTTOM} at the bottom: it imports nothing from the project but type-only modules`, function () {
    const bottom = modules.get(BOTTOM);
    assert.ok(bottom, `${BOTTOM} is the bottom module every other module may import; it must exist`);
    // A module counts as type-only when it emits nothing and everything it imports is type-only too.
    // runtimeCode(m) names the first module with runtime code that m is or reaches, if any.
    const verdict = new Map<string, string | null>();
    const runtimeCode = (path: string): string | null => {
      const known = verdict.get(path);
      if (known !== undefined) return known;
      verdict.set(path, null); // a cycle among type-only modules is reported by the cycle test
      const m = modules.get(path)!;
      let found: string | null = m.typeOnly ? null : path;
      for (const e of m.edges) found ??= runtimeCode(e.to);
      verdict.set(path, found);
      return found;
    };
    const offending = bottom.edges.flatMap((e) => {
      const culprit = runtimeCode(e.to);
      if (culprit === null) return [];
      return [
        `  ${BOTTOM}:${e.line} imports ${e.to}` +
          `${culprit === e.to ? ', which has runtime code' : `, which reaches ${culprit} (runtime code)`}`,
      ];
    });
    if (offending.length > 0) assert.fail(`${BOTTOM} must import only type-only modules:\n${offending.join('\n')}`);
  });
});
