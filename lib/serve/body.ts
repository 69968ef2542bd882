// Reads an HTTP request body into one buffer for the inference server, laid out so that the binary part of a KServe
// binary-extension body starts 4-byte aligned: FP32 tensors are then read in place instead of copied again. The
// buffers of bodies with a Content-Length come from a BodyPool and go back to it once their request is done.
// Not for: parsing the body (protocol.ts) or multipart uploads (@fastify/multipart reads those itself).

import type { Readable } from 'node:stream';

import { SizedFreeList } from './free-list.js';

/** A body the server refuses before parsing it; statusCode is the HTTP status (400 or 413). */
export class BodyError extends Error {
  constructor(readonly statusCode: number, message: string) {
    super(message);
    this.name = 'BodyError';
  }
}

/**
 * Most bytes allocated before they arrive: a client that declares a large Content-Length and sends nothing holds
 * at most this much of our memory. Larger bodies grow by doubling as their bytes come in.
 */
export const MAX_BODY_PREALLOCATION = 4 * 1024 * 1024;

/** The first allocation for a body of unknown length (chunked transfer encoding). */
const CHUNKED_FIRST_ALLOCATION = 64 * 1024;

/** Pooled buffers come in multiples of this many bytes, so that bodies of nearly the same length share them. */
export const BODY_POOL_GRANULE = 64 * 1024;

/**
 * Reusable body buffers. A server under load reads one 600 KB body per 224x224 FP32 image; a new buffer each time is
 * external memory to V8, which then runs full mark-compacts much more often (docs/SERVING.md, "Request bodies and
 * V8's garbage collector").
 * A buffer is taken for a body (acquire) and given back (release) once nothing reads the request's data any more.
 */
export class BodyPool {
  /** Free buffers by byte length (a multiple of BODY_POOL_GRANULE). */
  readonly #free: SizedFreeList<ArrayBuffer>;
  /** Buffers this pool made: release() takes back only these, and each once. */
  readonly #made = new WeakSet<ArrayBuffer>();
  readonly #isFree = new WeakSet<ArrayBuffer>();

  /** maxRetainedBytes: most bytes the free buffers may hold; a buffer released beyond it is left to the GC. */
  constructor(readonly maxRetainedBytes: number) {
    this.#free = new SizedFreeList(maxRetainedBytes);
  }

  /** A Buffer over a whole ArrayBuffer (byteOffset 0) of at least `bytes` bytes: a free one, or a new one. */
  acquire(bytes: number): Buffer {
    const length = Math.max(1, Math.ceil(bytes / BODY_POOL_GRANULE)) * BODY_POOL_GRANULE;
    let buffer = this.#free.take(length);
    if (buffer === undefined) {
      buffer = new ArrayBuffer(length);
      this.#made.add(buffer);
    } else {
      this.#isFree.delete(buffer);
    }
    return Buffer.from(buffer);
  }

  /**
   * Takes back the buffer under `view` (any view of a buffer from acquire()) once nothing reads or writes it; views
   * of other buffers, and buffers already free, are ignored.
   */
  release(view: ArrayBufferView): void {
    const buffer = view.buffer;
    if (!(buffer instanceof ArrayBuffer) || !this.#made.has(buffer) || this.#isFree.has(buffer)) return;
    if (this.#free.give(buffer.byteLength, buffer)) this.#isFree.add(buffer);
  }

  /** Bytes held by free buffers now. */
  get retainedBytes(): number {
    return this.#free.retained;
  }
}

/** The request headers readBody looks at (node's IncomingHttpHeaders: lower-case names). */
export interface BodyHeaders {
  readonly 'content-length'?: string | undefined;
  readonly 'inference-header-content-length'?: string | string[] | undefined;
}

/**
 * Reads `payload` to its end and resolves with the body. Every byte is copied once, from the socket's chunks into a
 * buffer of this body's own (chunks may share the socket's read buffer with the next request). When the request
 * declares Inference-Header-Content-Length, the body is placed 0-3 bytes into that buffer so that the bytes after the
 * JSON header start at a multiple of 4 in its ArrayBuffer. With a `pool`, a body whose Content-Length is from 1 to
 * MAX_BODY_PREALLOCATION is read into a buffer from it: the caller releases the body's buffer to the pool when done
 * (a failed read gives it back itself).
 * @throws (rejects) BodyError 413 past bodyLimit (declared or received), 400 when the bytes received differ from
 *   Content-Length, or the stream's own error (a client that went away).
 */
export function readBody(headers: BodyHeaders, payload: Readable, bodyLimit: number, pool?: BodyPool): Promise<Buffer> {
  return new Promise<Buffer>((resolve, reject) => {
    const declared = byteCount(headers['content-length']);
    if (declared !== undefined && declared > bodyLimit) {
      reject(new BodyError(413, `Expected a body of at most ${bodyLimit} bytes but Content-Length says ${declared}`));
      return;
    }
    const jsonLength = byteCount(headers['inference-header-content-length']);
    const shift = jsonLength === undefined ? 0 : (4 - (jsonLength % 4)) % 4;
    // An ArrayBuffer of our own at byteOffset 0 (allocUnsafeSlow or the pool's), so that `shift` decides the alignment.
    const pooled = pool !== undefined && declared !== undefined && declared > 0 && declared <= MAX_BODY_PREALLOCATION ? pool.acquire(shift + declared) : undefined;
    let storage = pooled ?? Buffer.allocUnsafeSlow(shift + Math.min(declared ?? CHUNKED_FIRST_ALLOCATION, MAX_BODY_PREALLOCATION));
    let received = 0;

    const finish = (error: Error | undefined): void => {
      payload.off('data', onData);
      payload.off('end', onEnd);
      payload.off('error', onError);
      if (error) {
        if (pooled !== undefined) pool!.release(pooled);
        reject(error);
      } else {
        resolve(storage.subarray(shift, shift + received));
      }
    };
    const onData = (chunk: Buffer | string): void => {
      const bytes = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
      if (received + bytes.length > bodyLimit) {
        finish(new BodyError(413, `Expected a body of at most ${bodyLimit} bytes but received more`));
        return;
      }
      if (shift + received + bytes.length > storage.length) {
        const grown = Buffer.allocUnsafeSlow(shift + Math.min(bodyLimit, Math.max(2 * (storage.length - shift), received + bytes.length)));
        storage.copy(grown, shift, shift, shift + received);
        storage = grown;
      }
      bytes.copy(storage, shift + received);
      received += bytes.length;
    };
    const onEnd = (): void => {
      if (declared !== undefined && received !== declared) {
        finish(new BodyError(400, `Expected ${declared} bytes of body (Content-Length) but received ${received}`));
        return;
      }
      finish(undefined);
    };
    // A stream error (the client went away mid-body) is the request's fault, as fastify's own body reader treats it.
    const onError = (error: Error): void => finish(Object.assign(error, { statusCode: 400 }));
    payload.on('data', onData);
    payload.on('end', onEnd);
    payload.on('error', onError);
    payload.resume();
  });
}

/** A header's value as a byte count: a non-negative safe integer, or undefined when absent or not one. */
function byteCount(value: string | string[] | undefined): number | undefined {
  if (typeof value !== 'string' || !/^\d{1,15}$/.test(value.trim())) return undefined;
  return Number(value.trim());
}
