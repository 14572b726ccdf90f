// A go-judge /run request, checked whole before anything runs: every field is supported, mapped or refused, and an
// unknown or refused field is an error naming it (go-judge would ignore an unknown one). Pure: no I/O.
import { posix } from 'node:path';

/** Thrown for a request that cannot be run as given; `field` is the path of what was wrong (e.g. 'cmd[0].args'). */
export class RequestError extends Error {
  override name = 'RequestError';
  readonly field: string;
  constructor(field: string, message: string) {
    super(`${field}: ${message}`);
    this.field = field;
  }
}

/** Where a command's stdin comes from (content or a cached file; null when a pipe feeds it). */
export type StdinSource = CopyInSource | { kind: 'pipe' } | { kind: 'none' };
/** Where a command's stdout or stderr goes: a named collector with a byte cap, a pipe, or nowhere. */
export type OutputSink = { kind: 'collect'; name: string; max: number } | { kind: 'pipe' } | { kind: 'none' };
export type CopyInSource = { kind: 'content'; data: Buffer } | { kind: 'fileId'; id: string } | { kind: 'src'; path: string };

export interface JudgeCmd {
  /** argv as given; args[0] naming a copied-in file runs it from the work directory. */
  args: string[];
  env: Record<string, string>;
  stdin: StdinSource;
  stdout: OutputSink;
  stderr: OutputSink;
  cpuLimitNs: number | undefined;
  clockLimitNs: number | undefined;
  memoryLimit: number | undefined;
  stackLimit: number | undefined;
  procLimit: number | undefined;
  copyIn: Map<string, CopyInSource>;
  /** Names to return as content; optional ones (a trailing '?' in the request) give no error when missing. */
  copyOut: { name: string; optional: boolean }[];
  copyOutCached: { name: string; optional: boolean }[];
  copyOutMax: number | undefined;
}

export interface PipeEnd {
  index: number;
  fd: number;
}
export interface JudgePipe {
  /** The writing end: command `index`'s fd (1 or 2). */
  from: PipeEnd;
  /** The reading end: command `index`'s fd 0. */
  to: PipeEnd;
  /** With a name: the bytes that went through are also returned as files[name], at most `max`. */
  name: string | undefined;
  max: number;
}

export interface JudgeRequest {
  requestId: string | undefined;
  cmd: JudgeCmd[];
  pipes: JudgePipe[];
}

/** Bounds a service applies to each request. */
export interface RequestBounds {
  /** Most commands per request. */
  maxCmds: number;
  /** Largest collector `max` and copyOutMax (bytes). */
  maxOutput: number;
  /** Host directories (absolute, no symlinks) under which `src` may name files; none: `src` is refused. */
  srcDirs?: readonly string[];
}

type Obj = Record<string, unknown>;

const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

/** go-judge's documented Cmd fields, by how cubicle treats each. */
const CMD_SUPPORTED = [
  'args',
  'env',
  'files',
  'cpuLimit',
  'clockLimit',
  'realCpuLimit',
  'memoryLimit',
  'stackLimit',
  'procLimit',
  'copyIn',
  'copyOut',
  'copyOutCached',
  'copyOutMax',
] as const;
/** Refused unless given as their no-op value (false, 0 or ''), which some clients always send. */
const CMD_REFUSED: Record<string, string> = {
  tty: 'terminals are not offered by this service',
  cpuRateLimit: 'CPU rate limits are not offered; use cpuLimit',
  cpuSetLimit: 'CPU sets are not offered',
  strictMemoryLimit: 'memoryLimit counts everything the sandbox owns; an rlimit on the data segment is not offered',
  dataSegmentLimit: 'memoryLimit counts everything the sandbox owns; an rlimit on the data segment is not offered',
  addressSpaceLimit: 'memoryLimit counts everything the sandbox owns; an rlimit on the address space is not offered',
  copyOutDir: 'copy-out to a host directory is not offered; use copyOut or copyOutCached',
  copyOutTruncate: 'an over-size file is an error here (CopyOutSizeExceeded), never truncated',
};
const REQUEST_FIELDS = ['requestId', 'cmd', 'pipeMapping'];

function unknownField(where: string, key: string, known: readonly string[]): never {
  throw new RequestError(`${where}${where ? '.' : ''}${key}`, `unknown field (known: ${known.join(', ')})`);
}

function checkKeys(where: string, o: Obj, known: readonly string[]): void {
  for (const k of Object.keys(o)) if (!known.includes(k)) unknownField(where, k, known);
}

function nonNegInt(field: string, v: unknown, max = Number.MAX_SAFE_INTEGER): number | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0 || v > max)
    throw new RequestError(field, `must be a whole number from 0 to ${max}, got ${JSON.stringify(v)}`);
  return v;
}

function positiveOrUnset(field: string, v: unknown): number | undefined {
  const n = nonNegInt(field, v);
  return n === 0 ? undefined : n; // go-judge reads 0 as "not set"
}

function str(field: string, v: unknown): string {
  if (typeof v !== 'string') throw new RequestError(field, `must be a string, got ${JSON.stringify(v)}`);
  return v;
}

/** A flat file name in the work directory. */
function fileName(field: string, name: string): string {
  if (!name || Buffer.byteLength(name) > 255 || name.includes('/') || name.includes('\0') || name === '.' || name === '..')
    throw new RequestError(field, `${JSON.stringify(name)} must be a flat file name of 1-255 bytes (no '/', NUL, '.' or '..')`);
  return name;
}

const content = (field: string, v: unknown): Buffer => Buffer.from(str(field, v), 'utf8');

/** A host file named by `src`: only under a directory the service was started with, by a plain absolute path. */
function srcPath(field: string, v: unknown, bounds: RequestBounds): string {
  const dirs = bounds.srcDirs ?? [];
  if (!dirs.length)
    throw new RequestError(field, 'refused: this service reads no host files (start it with --src-dir DIR); send content or a fileId');
  const p = str(field, v);
  if (!p.startsWith('/') || posix.normalize(p) !== p || p.includes('\0') || p.split('/').includes('..'))
    throw new RequestError(field, `${JSON.stringify(p)} must be a plain absolute path (no '..', '//' or trailing '/')`);
  if (!dirs.some((d) => p.startsWith(d.endsWith('/') ? d : `${d}/`)))
    throw new RequestError(field, `${JSON.stringify(p)} is outside the directories this service reads (${dirs.join(', ')})`);
  return p;
}

function copyInSource(field: string, v: unknown, bounds: RequestBounds): CopyInSource {
  if (!isObj(v)) throw new RequestError(field, 'must be { content }, { fileId } or { src }');
  if ('symlink' in v) throw new RequestError(`${field}.symlink`, 'refused: symlinks are not created in the work directory');
  checkKeys(field, v, ['content', 'fileId', 'src']);
  if (Object.keys(v).length !== 1) throw new RequestError(field, 'give exactly one of content, fileId and src');
  if ('content' in v) return { kind: 'content', data: content(`${field}.content`, v.content) };
  if ('fileId' in v) return { kind: 'fileId', id: str(`${field}.fileId`, v.fileId) };
  return { kind: 'src', path: srcPath(`${field}.src`, v.src, bounds) };
}

function stdinOf(field: string, v: unknown, bounds: RequestBounds): StdinSource {
  if (v === null || v === undefined) return v === null ? { kind: 'pipe' } : { kind: 'none' };
  if (isObj(v) && ('name' in v || 'max' in v)) throw new RequestError(field, 'a collector { name, max } cannot be stdin');
  if (isObj(v) && 'streamIn' in v) throw new RequestError(`${field}.streamIn`, 'refused: streams are not offered (no /stream endpoint)');
  return copyInSource(field, v, bounds);
}

function sinkOf(field: string, v: unknown, bounds: RequestBounds): OutputSink {
  if (v === null || v === undefined) return v === null ? { kind: 'pipe' } : { kind: 'none' };
  if (!isObj(v)) throw new RequestError(field, 'must be a collector { name, max } or null');
  if ('src' in v) throw new RequestError(`${field}.src`, 'refused: output is never written to host files; use a collector { name, max }');
  if ('streamOut' in v) throw new RequestError(`${field}.streamOut`, 'refused: streams are not offered (no /stream endpoint)');
  if ('content' in v || 'fileId' in v) throw new RequestError(field, 'an input file cannot take output; use a collector { name, max }');
  checkKeys(field, v, ['name', 'max', 'pipe']);
  const name = fileName(`${field}.name`, str(`${field}.name`, v.name));
  const max = nonNegInt(`${field}.max`, v.max, bounds.maxOutput);
  if (max === undefined) throw new RequestError(`${field}.max`, 'is required: the most bytes to collect');
  if (v.pipe !== undefined && typeof v.pipe !== 'boolean') throw new RequestError(`${field}.pipe`, 'must be a boolean');
  return { kind: 'collect', name, max };
}

function nameList(field: string, v: unknown): { name: string; optional: boolean }[] {
  if (v === undefined) return [];
  if (!Array.isArray(v)) throw new RequestError(field, 'must be an array of file names');
  return v.map((n, i) => {
    const raw = str(`${field}[${i}]`, n);
    const optional = raw.endsWith('?');
    return { name: fileName(`${field}[${i}]`, optional ? raw.slice(0, -1) : raw), optional };
  });
}

function parseCmd(where: string, c: unknown, bounds: RequestBounds): JudgeCmd {
  if (!isObj(c)) throw new RequestError(where, 'must be an object');
  for (const [k, why] of Object.entries(CMD_REFUSED)) {
    const v = c[k];
    if (v !== undefined && v !== false && v !== 0 && v !== '') throw new RequestError(`${where}.${k}`, `refused: ${why}`);
  }
  checkKeys(where, c, [...CMD_SUPPORTED, ...Object.keys(CMD_REFUSED)]);
  if (!Array.isArray(c.args) || c.args.length === 0) throw new RequestError(`${where}.args`, 'must be a non-empty array of strings');
  const args = c.args.map((a, i) => str(`${where}.args[${i}]`, a));
  if (args.some((a) => a.includes('\0'))) throw new RequestError(`${where}.args`, 'an argument holds a NUL byte');
  const env: Record<string, string> = Object.create(null) as Record<string, string>;
  if (c.env !== undefined) {
    if (!Array.isArray(c.env)) throw new RequestError(`${where}.env`, 'must be an array of "NAME=value" strings');
    c.env.forEach((e, i) => {
      const s = str(`${where}.env[${i}]`, e);
      const eq = s.indexOf('=');
      if (eq <= 0 || s.includes('\0')) throw new RequestError(`${where}.env[${i}]`, `must be "NAME=value", got ${JSON.stringify(s)}`);
      env[s.slice(0, eq)] = s.slice(eq + 1);
    });
  }
  let files: unknown[] = [];
  if (c.files !== undefined) {
    if (!Array.isArray(c.files)) throw new RequestError(`${where}.files`, 'must be an array (index = fd)');
    if (c.files.length > 3) throw new RequestError(`${where}.files[3]`, 'refused: only fds 0-2 (stdin, stdout, stderr) are offered');
    files = c.files;
  }
  const copyIn = new Map<string, CopyInSource>();
  if (c.copyIn !== undefined) {
    if (!isObj(c.copyIn)) throw new RequestError(`${where}.copyIn`, 'must be an object of file name -> { content } or { fileId }');
    for (const [name, spec] of Object.entries(c.copyIn)) {
      const field = `${where}.copyIn.${name}`;
      copyIn.set(fileName(field, name), copyInSource(field, spec, bounds));
    }
  }
  const clock = positiveOrUnset(`${where}.clockLimit`, c.clockLimit) ?? positiveOrUnset(`${where}.realCpuLimit`, c.realCpuLimit);
  return {
    args,
    env,
    stdin: stdinOf(`${where}.files[0]`, files[0], bounds),
    stdout: sinkOf(`${where}.files[1]`, files[1], bounds),
    stderr: sinkOf(`${where}.files[2]`, files[2], bounds),
    cpuLimitNs: positiveOrUnset(`${where}.cpuLimit`, c.cpuLimit),
    clockLimitNs: clock,
    memoryLimit: positiveOrUnset(`${where}.memoryLimit`, c.memoryLimit),
    stackLimit: positiveOrUnset(`${where}.stackLimit`, c.stackLimit),
    procLimit: positiveOrUnset(`${where}.procLimit`, c.procLimit),
    copyIn,
    copyOut: nameList(`${where}.copyOut`, c.copyOut),
    copyOutCached: nameList(`${where}.copyOutCached`, c.copyOutCached),
    copyOutMax: positiveOrUnset(`${where}.copyOutMax`, c.copyOutMax),
  };
}

function pipeEnd(field: string, v: unknown, cmds: number): PipeEnd {
  if (!isObj(v)) throw new RequestError(field, 'must be { index, fd }');
  checkKeys(field, v, ['index', 'fd']);
  const index = nonNegInt(`${field}.index`, v.index, cmds - 1);
  const fd = nonNegInt(`${field}.fd`, v.fd, 2);
  if (index === undefined || fd === undefined) throw new RequestError(field, 'needs both index and fd');
  return { index, fd };
}

function parsePipes(v: unknown, cmd: JudgeCmd[], bounds: RequestBounds): JudgePipe[] {
  if (v !== undefined && !Array.isArray(v)) throw new RequestError('pipeMapping', 'must be an array of { in, out }');
  const used = new Set<string>();
  const pipes = ((v ?? []) as unknown[]).map((p, i): JudgePipe => {
    const field = `pipeMapping[${i}]`;
    if (!isObj(p)) throw new RequestError(field, 'must be { in, out }');
    checkKeys(field, p, ['in', 'out', 'proxy', 'name', 'max']);
    const from = pipeEnd(`${field}.in`, p.in, cmd.length);
    const to = pipeEnd(`${field}.out`, p.out, cmd.length);
    if (from.fd === 0) throw new RequestError(`${field}.in.fd`, 'the writing end must be fd 1 or 2');
    if (to.fd !== 0) throw new RequestError(`${field}.out.fd`, 'the reading end must be fd 0');
    if (from.index === to.index) throw new RequestError(field, 'a command cannot be piped into itself');
    for (const [end, e] of [
      ['in', from],
      ['out', to],
    ] as const) {
      const key = `${e.index}:${e.fd}`;
      if (used.has(key)) throw new RequestError(`${field}.${end}`, `cmd[${e.index}] fd ${e.fd} is already mapped`);
      used.add(key);
      const slot = e.fd === 0 ? cmd[e.index]!.stdin : e.fd === 1 ? cmd[e.index]!.stdout : cmd[e.index]!.stderr;
      if (slot.kind !== 'pipe' && slot.kind !== 'none')
        throw new RequestError(`cmd[${e.index}].files[${e.fd}]`, 'must be null: pipeMapping connects this fd');
    }
    if (p.proxy !== undefined && typeof p.proxy !== 'boolean') throw new RequestError(`${field}.proxy`, 'must be a boolean');
    const name = p.name === undefined ? undefined : fileName(`${field}.name`, str(`${field}.name`, p.name));
    const max = nonNegInt(`${field}.max`, p.max, bounds.maxOutput) ?? 0;
    return { from, to, name, max };
  });
  // A null fd that no pipe connects has nothing on its other side.
  cmd.forEach((c, i) => {
    ([0, 1, 2] as const).forEach((fd) => {
      const slot = fd === 0 ? c.stdin : fd === 1 ? c.stdout : c.stderr;
      if (slot.kind === 'pipe' && !used.has(`${i}:${fd}`))
        throw new RequestError(`cmd[${i}].files[${fd}]`, 'is null but no pipeMapping connects it; give a file or a collector');
    });
  });
  return pipes;
}

/** Checks a parsed JSON body against go-judge's Request; throws RequestError naming the first wrong field. */
export function parseRunRequest(body: unknown, bounds: RequestBounds): JudgeRequest {
  if (!isObj(body)) throw new RequestError('body', 'must be a JSON object { cmd: [...] }');
  checkKeys('', body, REQUEST_FIELDS);
  if (!Array.isArray(body.cmd) || body.cmd.length === 0) throw new RequestError('cmd', 'must be a non-empty array of commands');
  if (body.cmd.length > bounds.maxCmds) throw new RequestError('cmd', `holds ${body.cmd.length} commands; at most ${bounds.maxCmds}`);
  const cmd = body.cmd.map((c, i) => parseCmd(`cmd[${i}]`, c, bounds));
  const requestId = body.requestId === undefined ? undefined : str('requestId', body.requestId);
  return { requestId, cmd, pipes: parsePipes(body.pipeMapping, cmd, bounds) };
}
