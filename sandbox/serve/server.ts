// The judge service: go-judge's REST API (/run, /file, /file/:id, /version) over the library. Routing by
// find-my-way (a radix tree: exact method + path matching, parameters, no regex surprises), multipart uploads by
// busboy (a streaming parser with byte and part limits, so an upload is never held whole before it is bounded).
import { createHash, timingSafeEqual } from 'node:crypto';
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import busboy from 'busboy';
import Router from 'find-my-way';
import { runSandboxed } from '../api/run.js';
import { packageVersion } from '../native/stamp.js';
import type { SandboxOptions } from '../types.js';
import { executeRequest, type ExecuteContext, type Runner } from './execute.js';
import { FileStore, FileStoreFullError } from './file-store.js';
import { parseRunRequest, RequestError, type RequestBounds } from './request.js';

export interface ServerOptions {
  /** Runs each command; default runSandboxed. A warm pool with the same signature plugs in here. */
  runner?: Runner;
  /** The pool size /version reports when the runner does not say (`--pool N`). */
  poolSize?: number;
  /** With a token, /run and /file need `Authorization: Bearer TOKEN` (401 otherwise); /version never does. */
  token?: string;
  /** Options every sandbox starts from (runAs, policy, cgroups ...). */
  sandbox?: SandboxOptions;
  /** Host directories under which copyIn and stdin `src` may name files (go-judge's src prefix); default none:
   *  `src` is refused. */
  srcDirs?: readonly string[];
  /** Commands running at once; more wait in line. Default: 2. */
  parallelism?: number;
  /** Requests waiting for a slot before new ones get 503. Default 64. */
  maxQueue?: number;
  /** Largest request body (bytes), JSON or upload. Default 64 MiB. */
  maxBodyBytes?: number;
  /** Most commands in one request. Default 16. */
  maxCmds?: number;
  /** Largest collector max / copyOutMax. Default 64 MiB. */
  maxOutputBytes?: number;
  /** The cached file store's bounds. Default 256 MiB and 4096 files. */
  maxStoreBytes?: number;
  maxStoreFiles?: number;
  /** Wall limit for a command without clockLimit, and the most one may ask (ms). Defaults 10 s and 60 s. */
  defaultClockMs?: number;
  maxClockMs?: number;
  /** Memory limit for a command without memoryLimit (bytes). Default 256 MiB. */
  defaultMemoryBytes?: number;
}

export interface JudgeServer {
  readonly http: Server;
  readonly store: FileStore;
  /** Starts listening (default 127.0.0.1, port 5050) and resolves with the address bound. */
  listen(port?: number, host?: string): Promise<AddressInfo>;
  /** Stops accepting, cancels running sandboxes (their results say Internal Error), and closes. */
  close(): Promise<void>;
}

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

/** A counting semaphore with a bounded line: acquire(n) waits for n slots, or throws 503 when the line is full. */
class Slots {
  #free: number;
  readonly #total: number;
  readonly #maxQueue: number;
  readonly #line: { n: number; go: () => void }[] = [];
  constructor(total: number, maxQueue: number) {
    this.#free = this.#total = total;
    this.#maxQueue = maxQueue;
  }
  async acquire(want: number): Promise<() => void> {
    const n = Math.min(want, this.#total); // a piped group larger than the service still runs, alone
    if (this.#line.length === 0 && this.#free >= n) this.#free -= n;
    else {
      if (this.#line.length >= this.#maxQueue)
        throw new HttpError(503, `busy: ${this.#line.length} requests are waiting for a free slot; retry later`);
      await new Promise<void>((go) => this.#line.push({ n, go }));
    }
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.#free += n;
      while (this.#line.length && this.#free >= this.#line[0]!.n) {
        const next = this.#line.shift()!;
        this.#free -= next.n;
        next.go();
      }
    };
  }
}

const digest = (s: string): Buffer => createHash('sha256').update(s).digest();

function sendJson(res: ServerResponse, status: number, value: unknown): void {
  const body = JSON.stringify(value);
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

/** Reads a body of at most `max` bytes (413 past it). */
async function readBody(req: IncomingMessage, max: number): Promise<Buffer> {
  const declared = Number(req.headers['content-length']);
  if (declared > max) throw new HttpError(413, `the body holds ${declared} bytes; at most ${max}`);
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > max) throw new HttpError(413, `the body holds more than ${max} bytes`);
    chunks.push(chunk);
  }
  return Buffer.concat(chunks, size);
}

/** One multipart upload (field `file`) into the store; resolves with its id. */
function receiveUpload(req: IncomingMessage, store: FileStore, max: number): Promise<string> {
  return new Promise((resolve, reject) => {
    let bb: busboy.Busboy;
    try {
      bb = busboy({ headers: req.headers, limits: { files: 1, fileSize: max, fields: 0, parts: 2 } });
    } catch (e) {
      reject(new HttpError(400, `body: a multipart/form-data upload with a field "file" is expected (${(e as Error).message})`));
      return;
    }
    let id: string | undefined;
    let failed: HttpError | undefined;
    const fail = (e: HttpError): void => {
      failed ??= e;
    };
    bb.on('file', (field, stream, info) => {
      if (field !== 'file') {
        fail(new HttpError(400, `multipart field "${field}": the file goes in a field named "file"`));
        stream.resume();
        return;
      }
      const chunks: Buffer[] = [];
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.on('limit', () => fail(new HttpError(413, `file: larger than ${max} bytes`)));
      stream.on('end', () => {
        if (failed) return;
        try {
          id = store.add(info.filename || 'file', Buffer.concat(chunks));
        } catch (e) {
          fail(e instanceof FileStoreFullError ? new HttpError(507, e.message) : new HttpError(500, (e as Error).message));
        }
      });
    });
    bb.on('field', (field) => fail(new HttpError(400, `multipart field "${field}": only a file field named "file" is taken`)));
    bb.on('filesLimit', () => fail(new HttpError(400, 'file: one file per upload')));
    bb.on('partsLimit', () => fail(new HttpError(400, 'body: one part (the field "file") per upload')));
    bb.on('fieldsLimit', () => fail(new HttpError(400, 'body: only a file field named "file" is taken')));
    bb.on('error', (e: Error) => reject(new HttpError(400, `body: malformed multipart data (${e.message})`)));
    bb.on('close', () => {
      if (failed) {
        if (id !== undefined) store.delete(id); // a refused upload leaves nothing behind
        reject(failed);
      } else if (id === undefined) reject(new HttpError(400, 'file: no field named "file" in the upload'));
      else resolve(id);
    });
    req.pipe(bb);
  });
}

/** A go-judge-compatible judge service over the library. */
export function createServer(options: ServerOptions = {}): JudgeServer {
  const runner: Runner = options.runner ?? { run: (cmd, o) => runSandboxed(cmd, o) };
  const maxBody = options.maxBodyBytes ?? 64 << 20;
  const bounds: RequestBounds = {
    maxCmds: options.maxCmds ?? 16,
    maxOutput: options.maxOutputBytes ?? 64 << 20,
    srcDirs: options.srcDirs ?? [],
  };
  const store = new FileStore({ maxBytes: options.maxStoreBytes ?? 256 << 20, maxFiles: options.maxStoreFiles ?? 4096 });
  const slots = new Slots(options.parallelism ?? 2, options.maxQueue ?? 64);
  const stopping = new AbortController();
  const ctx: ExecuteContext = {
    runner,
    store,
    base: { ...options.sandbox, cancelSignal: stopping.signal },
    defaultClockMs: options.defaultClockMs ?? 10_000,
    maxClockMs: options.maxClockMs ?? 60_000,
    defaultMemory: options.defaultMemoryBytes ?? 256 << 20,
  };
  const tokenDigest = options.token !== undefined ? digest(options.token) : undefined;
  const version = packageVersion();

  const authorized = (req: IncomingMessage): boolean => {
    if (!tokenDigest) return true;
    const m = /^Bearer (.+)$/.exec(req.headers.authorization ?? '');
    return !!m && timingSafeEqual(digest(m[1]!), tokenDigest);
  };

  type Handler = (req: IncomingMessage, res: ServerResponse, params: Record<string, string | undefined>) => Promise<void> | void;
  const guarded =
    (h: Handler): Handler =>
    (req, res, params) => {
      if (!authorized(req)) {
        res.setHeader('www-authenticate', 'Bearer');
        throw new HttpError(401, 'unauthorized: send Authorization: Bearer <token>');
      }
      return h(req, res, params);
    };

  const router = Router({
    defaultRoute: (req, res) => sendJson(res, 404, `no route ${req.method ?? ''} ${req.url ?? ''}`),
  });
  const on = (method: 'GET' | 'POST' | 'DELETE', path: string, h: Handler): void => {
    router.on(method, path, (req, res, params) => {
      Promise.resolve()
        .then(() => h(req, res, params as Record<string, string | undefined>))
        .catch((e: unknown) => {
          const status = e instanceof HttpError ? e.status : e instanceof RequestError ? 400 : 500;
          if (!res.headersSent) sendJson(res, status, status === 500 ? `internal error: ${(e as Error).message}` : (e as Error).message);
          else res.destroy();
          req.resume(); // an unread body must not hold the connection
        });
    });
  };

  const poolCounters = (st: ReturnType<NonNullable<Runner['stats']>>): Record<string, unknown> => ({
    maxStarting: st.maxStarting,
    refillIdleMs: st.refillIdleMs,
    ready: st.ready,
    starting: st.starting,
    hits: st.hits,
    misses: st.misses,
    missReasons: st.missReasons,
    failures: st.failures,
  });
  on('GET', '/version', (_req, res) =>
    sendJson(res, 200, {
      buildVersion: `cubicle ${version}`,
      os: process.platform,
      platform: process.arch,
      nodeVersion: process.version,
      copyOutOptional: true,
      pipeProxy: true,
      pool: runner.size ?? options.poolSize ?? 0,
      ...(runner.stats ? { poolStats: poolCounters(runner.stats()) } : {}),
    }),
  );
  on(
    'POST',
    '/run',
    guarded(async (req, res) => {
      // As go-judge, the body is read as JSON whatever its content-type says (some clients send none).
      const raw = await readBody(req, maxBody);
      let body: unknown;
      try {
        body = JSON.parse(raw.toString('utf8'));
      } catch (e) {
        throw new RequestError('body', `not valid JSON (${(e as Error).message})`);
      }
      const request = parseRunRequest(body, bounds);
      // A client that goes away before its answer cancels its run (and a run still waiting for a slot never starts).
      const gone = new AbortController();
      let left = false;
      const leave = (): void => {
        left = !res.writableFinished;
        if (left) gone.abort();
      };
      const stop = (): void => gone.abort();
      res.once('close', leave);
      stopping.signal.addEventListener('abort', stop, { once: true });
      try {
        const release = await slots.acquire(request.cmd.length);
        try {
          if (left) return;
          sendJson(res, 200, await executeRequest(request, { ...ctx, base: { ...ctx.base, cancelSignal: gone.signal } }));
        } finally {
          release();
        }
      } finally {
        res.off('close', leave);
        stopping.signal.removeEventListener('abort', stop);
      }
    }),
  );
  on(
    'GET',
    '/file',
    guarded((_req, res) => sendJson(res, 200, store.list())),
  );
  on(
    'POST',
    '/file',
    guarded(async (req, res) => sendJson(res, 200, await receiveUpload(req, store, maxBody))),
  );
  on(
    'GET',
    '/file/:id',
    guarded((_req, res, params) => {
      const f = store.get(params.id ?? '');
      if (!f) throw new HttpError(404, `file ${JSON.stringify(params.id)} not found`);
      res.writeHead(200, {
        'content-type': 'application/octet-stream',
        'content-length': f.data.length,
        'content-disposition': `attachment; filename*=UTF-8''${encodeURIComponent(f.name)}`,
      });
      res.end(f.data);
    }),
  );
  on(
    'DELETE',
    '/file/:id',
    guarded((_req, res, params) => {
      if (!store.delete(params.id ?? '')) throw new HttpError(404, `file ${JSON.stringify(params.id)} not found`);
      sendJson(res, 200, null);
    }),
  );

  const http = createHttpServer((req, res) => void router.lookup(req, res));
  http.requestTimeout = 0; // a run may take its whole clock limit; the limits bound it, not the socket
  http.headersTimeout = 30_000;
  http.maxConnections = 1024; // each holds a socket, and a waiting request its body (at most maxBodyBytes)
  return {
    http,
    store,
    listen: (port = 5050, host = '127.0.0.1') =>
      new Promise((resolve, reject) => {
        http.once('error', reject);
        http.listen(port, host, () => {
          http.off('error', reject);
          resolve(http.address() as AddressInfo);
        });
      }),
    close: () =>
      new Promise((resolve) => {
        stopping.abort();
        http.close(() => resolve());
        http.closeAllConnections();
      }),
  };
}
