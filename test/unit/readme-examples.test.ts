// Every TypeScript example in the README compiles under `strict` against the package's own types, imported by
// its name ('cubicle') as a dependent project would.
import { strict as assert } from 'node:assert';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';

const REPO = fileURLToPath(new URL('../../..', import.meta.url));

/** The ```ts blocks of a Markdown text, with the line each starts on. */
export function tsBlocks(markdown: string): { line: number; code: string }[] {
  const blocks: { line: number; code: string }[] = [];
  const lines = markdown.split('\n');
  for (let i = 0; i < lines.length; i++) {
    if (lines[i]!.trim() !== '```ts') continue;
    const start = i + 1;
    while (++i < lines.length && lines[i]!.trim() !== '```');
    blocks.push({ line: start + 1, code: lines.slice(start, i).join('\n') });
  }
  return blocks;
}

describe('README examples', () => {
  it('every ```ts block compiles under strict, importing the package by name', function () {
    this.timeout(60_000);
    const blocks = tsBlocks(readFileSync(join(REPO, 'README.md'), 'utf8'));
    assert.ok(blocks.length >= 3, `the README has TypeScript examples (found ${blocks.length})`);
    // Inside the package, so 'cubicle' resolves to itself through package.json "exports" (a self-reference).
    const dir = join(REPO, 'dist', 'readme-examples');
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dir, { recursive: true });
    const files = blocks.map((b) => {
      const file = join(dir, `line-${b.line}.mts`);
      writeFileSync(file, `${b.code}\nexport {};\n`);
      return file;
    });
    const program = ts.createProgram(files, {
      strict: true,
      noEmit: true,
      target: ts.ScriptTarget.ES2022,
      module: ts.ModuleKind.NodeNext,
      moduleResolution: ts.ModuleResolutionKind.NodeNext,
      types: ['node'],
      typeRoots: [join(REPO, 'node_modules', '@types')],
      noUnusedLocals: false,
    });
    const problems = ts.getPreEmitDiagnostics(program).map((d) => {
      const where = d.file ? `${d.file.fileName.replace(/.*line-(\d+)\.mts$/, 'README.md block at line $1')}` : '';
      const at = d.file && d.start !== undefined ? `:${d.file.getLineAndCharacterOfPosition(d.start).line + 1}` : '';
      return `${where}${at}: TS${d.code}: ${ts.flattenDiagnosticMessageText(d.messageText, '\n')}`;
    });
    rmSync(dir, { recursive: true, force: true });
    assert.deepEqual(problems, []);
  });
});
