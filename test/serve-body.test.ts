// Tests of the inference server's body reader (lib/serve/body.ts): bytes kept exactly, the binary part of a KServe
// binary-extension body 4-byte aligned, and the 400/413 refusals. Not for: parsing the bodies (serve.test.ts).

import { PassThrough } from 'node:stream';

import test from 'ava';

import { BodyError, MAX_BODY_PREALLOCATION, readBody } from '../lib/serve/body.js';
import { makeRng } from './helpers/reference.js';

/** A stream that emits `bytes` in chunks of the given sizes (the last chunk takes the rest), then ends. */
function streamOf(bytes: Buffer, chunkSizes: readonly number[]): PassThrough {
  const stream = new PassThrough();
  let offset = 0;
  for (const size of chunkSizes) {
    stream.write(bytes.subarray(offset, offset + size));
    offset += size;
  }
  stream.end(bytes.subarray(offset));
  return stream;
}

function randomBytes(count: number, seed: number): Buffer {
  const rng = makeRng(seed);
  return Buffer.from(Array.from({ length: count }, () => Math.floor(rng() * 256)));
}

test('the body comes back byte for byte, with Content-Length or chunked, in one chunk or many', async (t) => {
  const bytes = randomBytes(300_000, 1);
  const withLength = await readBody({ 'content-length': String(bytes.length) }, streamOf(bytes, [1, 7, 65_536, 100_000]), 1 << 20);
  t.true(withLength.equals(bytes));
  const chunked = await readBody({}, streamOf(bytes, [1000, 70_000, 70_000, 70_000]), 1 << 20); // grows past its first 64 KiB
  t.true(chunked.equals(bytes));
  const empty = await readBody({ 'content-length': '0' }, streamOf(Buffer.alloc(0), []), 100);
  t.is(empty.length, 0);
});

test('the bytes after Inference-Header-Content-Length start 4-byte aligned in their ArrayBuffer', async (t) => {
  const bytes = randomBytes(1000, 2);
  for (const jsonLength of [0, 1, 2, 3, 4, 5, 102, 999]) {
    const body = await readBody(
      { 'content-length': String(bytes.length), 'inference-header-content-length': String(jsonLength) },
      streamOf(bytes, [13, 400]),
      1 << 20,
    );
    t.true(body.equals(bytes), `json length ${jsonLength}: bytes kept`);
    t.is((body.byteOffset + jsonLength) % 4, 0, `json length ${jsonLength}: binary part aligned`);
    const floats = new Float32Array(body.buffer, body.byteOffset + jsonLength, Math.floor((bytes.length - jsonLength) / 4));
    t.is(floats.length, Math.floor((bytes.length - jsonLength) / 4), 'a Float32Array view over it can be made');
  }
  const odd = await readBody({ 'content-length': '10', 'inference-header-content-length': 'ten' }, streamOf(randomBytes(10, 3), []), 100);
  t.is(odd.length, 10, 'a malformed header length only costs the alignment (protocol.ts refuses it)');
});

test('bodies past the limit get 413, bodies shorter than Content-Length 400, stream errors 400', async (t) => {
  const bytes = randomBytes(5000, 4);
  const declaredTooLarge = await t.throwsAsync(readBody({ 'content-length': '5000' }, streamOf(bytes, []), 4999), { instanceOf: BodyError });
  t.is(declaredTooLarge!.statusCode, 413);
  t.regex(declaredTooLarge!.message, /at most 4999 bytes but Content-Length says 5000/);
  const receivedTooMuch = await t.throwsAsync(readBody({}, streamOf(bytes, [1000, 1000]), 4999), { instanceOf: BodyError });
  t.is(receivedTooMuch!.statusCode, 413);
  const short = await t.throwsAsync(readBody({ 'content-length': String(2 * MAX_BODY_PREALLOCATION) }, streamOf(bytes, []), 1 << 30), { instanceOf: BodyError });
  t.is(short!.statusCode, 400);
  t.regex(short!.message, new RegExp(`Expected ${2 * MAX_BODY_PREALLOCATION} bytes .* but received 5000`));
  const long = await t.throwsAsync(readBody({ 'content-length': '10' }, streamOf(bytes, []), 1 << 20), { instanceOf: BodyError });
  t.is(long!.statusCode, 400);
  const broken = new PassThrough();
  broken.write(bytes.subarray(0, 100));
  setImmediate(() => broken.destroy(new Error('socket hang up')));
  const aborted = await t.throwsAsync(readBody({ 'content-length': '5000' }, broken, 1 << 20), { message: 'socket hang up' });
  t.is((aborted as Error & { statusCode?: number }).statusCode, 400);
});
