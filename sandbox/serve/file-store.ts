// The service's cached files (go-judge's /file and copyOutCached): in memory, bounded in bytes and in count,
// each under an id of 160 random bits, so one caller cannot guess another's file.
import { randomBytes } from 'node:crypto';

export interface FileStoreLimits {
  /** Most bytes held across all files. */
  maxBytes: number;
  /** Most files held. */
  maxFiles: number;
}

export class FileStoreFullError extends Error {
  override name = 'FileStoreFullError';
}

const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';

/** 32 characters of base32 from 20 random bytes. */
function newId(): string {
  const bytes = randomBytes(20);
  let bits = 0;
  let value = 0;
  let out = '';
  for (const b of bytes) {
    value = (value << 8) | b;
    bits += 8;
    while (bits >= 5) {
      out += ALPHABET[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  return out;
}

export class FileStore {
  readonly #files = new Map<string, { name: string; data: Buffer }>();
  readonly #limits: FileStoreLimits;
  #bytes = 0;

  constructor(limits: FileStoreLimits) {
    this.#limits = limits;
  }

  /** Stores a file; throws FileStoreFullError (naming the bound) when it does not fit. */
  add(name: string, data: Buffer): string {
    if (this.#files.size >= this.#limits.maxFiles)
      throw new FileStoreFullError(`the file store holds its maximum of ${this.#limits.maxFiles} files; delete some (DELETE /file/ID)`);
    if (this.#bytes + data.length > this.#limits.maxBytes)
      throw new FileStoreFullError(
        `the file store would exceed its ${this.#limits.maxBytes} bytes with ${data.length} more (${this.#bytes} held); ` +
          'delete some (DELETE /file/ID)',
      );
    let id = newId();
    while (this.#files.has(id)) id = newId();
    this.#files.set(id, { name, data });
    this.#bytes += data.length;
    return id;
  }

  get(id: string): { name: string; data: Buffer } | undefined {
    return this.#files.get(id);
  }

  delete(id: string): boolean {
    const f = this.#files.get(id);
    if (!f) return false;
    this.#files.delete(id);
    this.#bytes -= f.data.length;
    return true;
  }

  /** id -> original name, as go-judge's GET /file answers. */
  list(): Record<string, string> {
    const out: Record<string, string> = {};
    for (const [id, f] of this.#files) out[id] = f.name;
    return out;
  }

  get stats(): { files: number; bytes: number } {
    return { files: this.#files.size, bytes: this.#bytes };
  }
}
