// Reads an HTTP request body into one buffer for the inference server, laid out so that the binary part of a KServe
// binary-extension body starts 4-byte aligned: FP32 tensors are then read in place instead of copied again.
// Not for: parsing the body (protocol.ts) or multipart uploads (@fastify/multipart reads those itself).

import type { Readable } from 'node:stream';

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

/** The request headers readBody looks at (node's IncomingHttpHeaders: lower-case names). */
export interface BodyHeaders {
  readonly 'content-length'?: string | undefined;
  readonly 'inference-header-content-length'?: string | string[] | undefined;
}

/**
 * Reads `payload` to its end and resolves with the body. Every byte is copied once, from the socket's chunks into a
 * buffer of this body's own (chunks may share the socket's read buffer with the next request). When the request
 * declares Inference-Header-Content-Length, the body is placed 0-3 bytes into that buffer so that the bytes after the
 * JSON header start at a multiple of 4 in its ArrayBuffer.
 * @throws (rejects) BodyError 413 past bodyLimit (declared or received), 400 when the bytes received differ from
 *   Content-Length, or the stream's own error (a client that went away).
 */
export function readBody(headers: BodyHeaders, payload: Readable, bodyLimit: number): Promise<Buffer> {
  return new Promise<Buffer>((resolve, reject) => {
    const declared = byteCount(headers['content-length']);
    if (declared !== undefined && declared > bodyLimit) {
      reject(new BodyError(413, `Expected a body of at most ${bodyLimit} bytes but Content-Length says ${declared}`));
      return;
    }
    const jsonLength = byteCount(headers['inference-header-content-length']);
    const shift = jsonLength === undefined ? 0 : (4 - (jsonLength % 4)) % 4;
    // allocUnsafeSlow: an ArrayBuffer of our own at byteOffset 0, so that `shift` decides the alignment.
    let storage = Buffer.allocUnsafeSlow(shift + Math.min(declared ?? CHUNKED_FIRST_ALLOCATION, MAX_BODY_PREALLOCATION));
    let received = 0;

    const finish = (error: Error | undefined): void => {
      payload.off('data', onData);
      payload.off('end', onEnd);
      payload.off('error', onError);
      if (error) reject(error);
      else resolve(storage.subarray(shift, shift + received));
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
