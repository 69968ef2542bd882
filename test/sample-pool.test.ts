// SharedSamplePool (lib/serve/sample-pool.ts): the server's reusable decode destinations.

import test from 'ava';

import { SharedSamplePool } from '../lib/serve/sample-pool.js';

test('acquire gives zeroed arrays on SharedArrayBuffers of their own; release hands the same array out again by length', (t) => {
  const pool = new SharedSamplePool(100);
  const a = pool.acquire(12);
  const b = pool.acquire(12);
  t.true(a.buffer instanceof SharedArrayBuffer && b.buffer instanceof SharedArrayBuffer);
  t.not(a.buffer, b.buffer, 'each array has a buffer of its own');
  t.is(a.length, 12);
  t.true(a.every((v) => v === 0));
  a.fill(3);
  pool.release(a);
  t.is(pool.retainedValues, 12);
  t.not(pool.acquire(7), a, 'another length gets another array');
  const again = pool.acquire(12);
  t.is(again, a, 'the released array of that length');
  t.true(again.every((v) => v === 3), 'with the values it had (the decoder overwrites every one)');
  t.is(pool.retainedValues, 0);
  t.not(pool.acquire(12), b, 'an array still in use is never handed out');
});

test('release keeps at most maxRetainedValues values; beyond that, arrays are left to the GC', (t) => {
  const pool = new SharedSamplePool(25);
  const arrays = [pool.acquire(10), pool.acquire(10), pool.acquire(10)];
  for (const array of arrays) pool.release(array);
  t.is(pool.retainedValues, 20, 'the third would pass 25');
  const reused = [pool.acquire(10), pool.acquire(10), pool.acquire(10)];
  t.is(reused.filter((array) => arrays.includes(array)).length, 2);
  t.is(pool.retainedValues, 0);
});
