// Tests of the inference server's body reader (lib/serve/body.ts): bytes kept exactly, the binary part of a KServe
// binary-extension body 4-byte aligned, the 400/413 refusals, and the pool of body buffers. Not for: parsing the
// bodies, or the server releasing a body only once its batch is done (serve.test.ts).

import { PassThrough } from 'node:stream';

import test from 'ava';

import { BODY_POOL_GRANULE, BodyError, BodyPool, MAX_BODY_PREALLOCATION, readBody } from '../lib/serve/body.js';
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

test('the body pool hands out whole buffers in granules, reuses released ones and keeps at most its bound', (t) => {
  const pool = new BodyPool(3 * BODY_POOL_GRANULE);
  const first = pool.acquire(BODY_POOL_GRANULE + 1);
  t.is(first.byteOffset, 0);
  t.is(first.length, 2 * BODY_POOL_GRANULE, 'rounded up to a whole number of granules');
  t.is(first.buffer.byteLength, first.length, 'the whole ArrayBuffer');
  t.is(pool.acquire(0).length, BODY_POOL_GRANULE);
  pool.release(first.subarray(5, 10)); // any view of it gives it back
  t.is(pool.retainedBytes, 2 * BODY_POOL_GRANULE);
  pool.release(first);
  t.is(pool.retainedBytes, 2 * BODY_POOL_GRANULE, 'a second release of a free buffer is ignored');
  t.not(pool.acquire(10).buffer, first.buffer, 'another size class gets another buffer');
  const again = pool.acquire(2 * BODY_POOL_GRANULE - 100);
  t.is(again.buffer, first.buffer, 'the same size class reuses the released buffer');
  t.is(pool.retainedBytes, 0);

  pool.release(Buffer.alloc(BODY_POOL_GRANULE));
  pool.release(new Uint8Array(BODY_POOL_GRANULE));
  t.is(pool.retainedBytes, 0, 'buffers the pool did not make are not taken');
  const [a, b] = [pool.acquire(2 * BODY_POOL_GRANULE), pool.acquire(2 * BODY_POOL_GRANULE)];
  pool.release(a);
  pool.release(b);
  t.is(pool.retainedBytes, 2 * BODY_POOL_GRANULE, 'the second buffer would pass the bound: left to the GC');
  t.is(pool.acquire(2 * BODY_POOL_GRANULE).buffer, a.buffer);
  t.not(pool.acquire(2 * BODY_POOL_GRANULE).buffer, b.buffer);
});

test('with a pool, a body with Content-Length is read into a pooled buffer, and a failed read gives it back', async (t) => {
  const pool = new BodyPool(16 * BODY_POOL_GRANULE);
  const bytes = randomBytes(100_000, 5);
  const headers = { 'content-length': String(bytes.length), 'inference-header-content-length': '7' };
  const body = await readBody(headers, streamOf(bytes, [10, 70_000]), 1 << 20, pool);
  t.true(body.equals(bytes));
  t.is((body.byteOffset + 7) % 4, 0, 'aligned as without a pool');
  t.is(pool.retainedBytes, 0);
  pool.release(body);
  t.is(pool.retainedBytes, 2 * BODY_POOL_GRANULE, 'the body was in a pooled buffer');
  const next = await readBody(headers, streamOf(randomBytes(100_000, 6), [50_000]), 1 << 20, pool);
  t.is(next.buffer, body.buffer, 'the next body of that size reuses it');

  const chunked = await readBody({}, streamOf(bytes, [1000]), 1 << 20, pool);
  pool.release(chunked);
  t.is(pool.retainedBytes, 0, 'a body without Content-Length is not pooled');
  const empty = await readBody({ 'content-length': '0' }, streamOf(Buffer.alloc(0), []), 1 << 20, pool);
  pool.release(empty);
  t.is(pool.retainedBytes, 0, 'nor an empty one');
  const large = randomBytes(MAX_BODY_PREALLOCATION + 1, 7);
  const unpooled = await readBody({ 'content-length': String(large.length) }, streamOf(large, [1 << 20]), 1 << 30, pool);
  t.true(unpooled.equals(large));
  pool.release(unpooled);
  t.is(pool.retainedBytes, 0, 'nor one above MAX_BODY_PREALLOCATION');

  await t.throwsAsync(readBody({ 'content-length': '5000' }, streamOf(bytes.subarray(0, 4000), []), 1 << 20, pool), { instanceOf: BodyError });
  t.is(pool.retainedBytes, BODY_POOL_GRANULE, 'a short body\'s buffer is back in the pool');
  const broken = new PassThrough();
  broken.write(bytes.subarray(0, 100));
  setImmediate(() => broken.destroy(new Error('socket hang up')));
  await t.throwsAsync(readBody({ 'content-length': '70000' }, broken, 1 << 20, pool), { message: 'socket hang up' });
  t.is(pool.retainedBytes, 3 * BODY_POOL_GRANULE, 'so is an aborted one\'s');
});
