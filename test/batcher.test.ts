// lib/serve/batcher.ts: batching, FIFO, maxBatch/maxDelayMs/maxQueue, deadlines, cancellation, prepare(), shape
// groups, drain/close, hooks, no leftover timers (fake run() and clock), and batched rows against a real network.
// Not for: the HTTP server or the engine's numerics (test/models.test.ts).

import test from 'ava';
import type { ExecutionContext } from 'ava';

import { ArgumentTypeError, ArgumentValueError, CancelledError, ClosedError, DeadlineError, FormatError, QueueFullError, ShapeError } from '../lib/errors.js';
import { RepVGGNetwork } from '../lib/engine.js';
import { customSpec } from '../lib/models/repvgg.js';
import { reparameterize } from '../lib/reparam/reparam.js';
import { Batcher, type BatchEvent, type BatchRequest, type BatcherClock, type BatcherOptions, type RejectEvent } from '../lib/serve/batcher.js';
import type { HostTensor } from '../lib/tensor.js';
import { makeRng, randomArray, randomTrainState, type Rng } from './helpers/reference.js';
import { OP_FP32, checkClose } from './helpers/tolerances.js';

/** Lets every pending promise callback and microtask run. */
const flush = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/** A clock whose time moves only in advance(); counts its pending timers. */
class FakeClock implements BatcherClock {
  time = 1000;
  readonly #timers = new Map<number, { at: number; callback: () => void }>();
  #nextId = 1;
  now(): number {
    return this.time;
  }
  setTimeout(callback: () => void, ms: number): unknown {
    const id = this.#nextId++;
    this.#timers.set(id, { at: this.time + ms, callback });
    return id;
  }
  clearTimeout(handle: unknown): void {
    this.#timers.delete(handle as number);
  }
  get pendingTimers(): number {
    return this.#timers.size;
  }
  /** Moves time forward by ms, firing due timers in time order with their callbacks' promise work in between. */
  async advance(ms: number): Promise<void> {
    const target = this.time + ms;
    for (;;) {
      let next: [number, { at: number; callback: () => void }] | undefined;
      for (const timer of this.#timers) if (timer[1].at <= target && (!next || timer[1].at < next[1].at)) next = timer;
      if (!next) break;
      this.#timers.delete(next[0]);
      this.time = next[1].at;
      next[1].callback();
      await flush();
    }
    this.time = target;
    await flush();
  }
}

/** Per image: its sum, first and last value, its sum of squares. Depends only on the image, never on its batch position. */
const CLASSES = 4;
function fakeForward(x: HostTensor): HostTensor {
  const [n, c, h, w] = x.shape as [number, number, number, number];
  const size = c * h * w;
  const out = new Float32Array(n * CLASSES);
  for (let i = 0; i < n; i++) {
    const image = x.data.subarray(i * size, (i + 1) * size);
    let sum = 0;
    let squares = 0;
    for (const v of image) {
      sum += v;
      squares += v * v;
    }
    out.set([sum, image[0]!, image[size - 1]!, squares], i * CLASSES);
  }
  return { shape: [n, CLASSES], data: out };
}

/** A run() whose batches finish only when the test says so. */
class ManualEngine {
  readonly calls: Array<{ batch: HostTensor; resolve: (out: HostTensor) => void; reject: (error: Error) => void }> = [];
  readonly run = (batch: HostTensor): Promise<HostTensor> =>
    new Promise((resolve, reject) => this.calls.push({ batch: { shape: [...batch.shape], data: batch.data.slice() }, resolve, reject }));
  /** Finishes call index with the fake forward of its batch. */
  async finish(index: number): Promise<void> {
    const call = this.calls[index]!;
    call.resolve(fakeForward(call.batch));
    await flush();
  }
  sizes(): number[] {
    return this.calls.map((call) => call.batch.shape[0]!);
  }
}

interface Harness {
  batcher: Batcher;
  engine: ManualEngine;
  clock: FakeClock;
  batches: BatchEvent[];
  rejects: RejectEvent[];
}

function harness(options: Partial<BatcherOptions> = {}): Harness {
  const engine = new ManualEngine();
  const clock = new FakeClock();
  const batches: BatchEvent[] = [];
  const rejects: RejectEvent[] = [];
  const batcher = new Batcher({
    run: engine.run, clock, onBatch: (event) => batches.push(event), onReject: (event) => rejects.push(event), ...options,
  });
  return { batcher, engine, clock, batches, rejects };
}

let seed = 1;
/** A fresh random request tensor (N, C, H, W). */
function images(shape: [number, number, number, number], rng: Rng = makeRng(seed++)): HostTensor {
  return { shape, data: randomArray(shape[0] * shape[1] * shape[2] * shape[3], rng, 1) };
}

/** Records how a promise ended, without leaving a rejection unhandled. */
function track<T>(promise: Promise<T>): { result?: T; error?: unknown; done: boolean } {
  const state: { result?: T; error?: unknown; done: boolean } = { done: false };
  promise.then(
    (result) => Object.assign(state, { result, done: true }),
    (error: unknown) => Object.assign(state, { error, done: true }),
  );
  return state;
}

/** Asserts the request's rows are exactly those of the fake forward of its images alone. */
function assertRowsAlone(t: ExecutionContext, rows: HostTensor | undefined, request: HostTensor, name: string): void {
  const alone = fakeForward(request);
  t.deepEqual(rows?.shape, alone.shape, `${name}: shape`);
  t.deepEqual(rows?.data, alone.data, `${name}: rows equal the request computed alone`);
}

const busyShape: [number, number, number, number] = [1, 2, 3, 3];

/** Occupies the engine with one request so that the next ones queue; returns its tracker. */
async function occupy(h: Harness): Promise<ReturnType<typeof track<HostTensor>>> {
  const x = images(busyShape);
  const state = track(h.batcher.submit({ shape: x.shape, data: x.data }));
  await flush();
  return state;
}

test('requests submitted in the same tick share one batch and each gets exactly its own rows', async (t) => {
  const h = harness();
  const requests = [images([1, 2, 3, 3]), images([2, 2, 3, 3]), images([1, 2, 3, 3])];
  const results = requests.map((x) => track(h.batcher.submit({ shape: x.shape, data: x.data })));
  await flush();
  t.deepEqual(h.engine.sizes(), [4]);
  t.deepEqual(h.engine.calls[0]!.batch.data, Float32Array.from(requests.flatMap((x) => [...x.data])), 'batch = requests in order');
  await h.engine.finish(0);
  requests.forEach((x, i) => assertRowsAlone(t, results[i]!.result, x, `request ${i}`));
  t.is(h.batches.length, 1);
  t.like(h.batches[0], { size: 4, requests: 3, shape: [4, 2, 3, 3], queueMs: [0, 0, 0] });
  t.is(h.clock.pendingTimers, 0, 'no timer left when idle');
});

test('while the engine is busy, queued requests coalesce into batches of at most maxBatch, in FIFO order', async (t) => {
  const h = harness({ maxBatch: 3 });
  const first = await occupy(h);
  const requests = [images([2, 2, 3, 3]), images([1, 2, 3, 3]), images([2, 2, 3, 3]), images([1, 2, 3, 3]), images([3, 2, 3, 3])];
  const results = requests.map((x) => track(h.batcher.submit({ shape: x.shape, data: x.data })));
  await flush();
  t.deepEqual(h.engine.sizes(), [1], 'one batch at a time');
  t.is(h.batcher.queuedImages, 9);
  t.is(h.batcher.queuedRequests, 5);
  t.is(h.batcher.inFlightImages, 1);
  t.is(h.batcher.inFlightRequests, 1);
  await h.engine.finish(0);
  t.true(first.done);
  t.deepEqual(h.engine.sizes(), [1, 3]);
  await h.engine.finish(1);
  await h.engine.finish(2);
  await h.engine.finish(3);
  t.deepEqual(h.engine.sizes(), [1, 3, 3, 3], 'batches [2,1], [2,1], [3]');
  requests.forEach((x, i) => assertRowsAlone(t, results[i]!.result, x, `request ${i}`));
  t.is(h.batcher.queuedImages, 0);
  t.is(h.batcher.inFlightImages, 0);
});

test('batches of any size reuse the largest input buffer so far; every request still gets exactly its own rows', async (t) => {
  const buffers: ArrayBufferLike[] = [];
  const batcher = new Batcher({
    maxBatch: 4,
    run: async (batch) => {
      buffers.push(batch.data.buffer);
      return fakeForward({ shape: [...batch.shape], data: batch.data.slice() });
    },
  });
  // Two requests per batch, so the batcher gathers them into its own buffer: 3, 2, 4, then 2 images.
  for (const [a, b] of [[2, 1], [1, 1], [2, 2], [1, 1]] as const) {
    const requests = [images([a, 2, 3, 3]), images([b, 2, 3, 3])];
    const results = await Promise.all(requests.map((x) => batcher.submit({ shape: x.shape, data: x.data })));
    requests.forEach((x, i) => assertRowsAlone(t, results[i], x, `${a}+${b} images, request ${i}`));
  }
  t.is(buffers.length, 4);
  t.is(buffers[1], buffers[0], 'the 2-image batch used the 3-image buffer');
  t.not(buffers[2], buffers[0], 'the 4-image batch needed a larger one');
  t.is(buffers[3], buffers[2], 'the next 2-image batch used the 4-image buffer');
  await batcher.close();
});

test('with runParts, a batch of several requests (or a padded one) is handed over as the requests\' own tensors', async (t) => {
  const calls: { parts: HostTensor[]; rows: number }[] = [];
  let runs = 0;
  const batcher = new Batcher({
    maxBatch: 4,
    paddedSize: (size) => (size === 3 ? 4 : size),
    run: async (batch) => {
      runs++;
      return fakeForward(batch);
    },
    runParts: async (parts, rows) => {
      calls.push({ parts, rows });
      const joined = new Float32Array(rows * 2 * 3 * 3);
      let offset = 0;
      for (const part of parts) {
        joined.set(part.data, offset);
        offset += part.data.length;
      }
      return fakeForward({ shape: [rows, 2, 3, 3], data: joined });
    },
  });
  const requests = [images([2, 2, 3, 3]), images([1, 2, 3, 3])];
  const results = await Promise.all(requests.map((x) => batcher.submit({ shape: x.shape, data: x.data })));
  requests.forEach((x, i) => assertRowsAlone(t, results[i], x, `request ${i}`));
  t.is(calls.length, 1);
  t.is(calls[0]!.rows, 4, 'three images padded to the 4 rows paddedSize asks for');
  t.deepEqual(calls[0]!.parts.map((p) => p.shape), [[2, 2, 3, 3], [1, 2, 3, 3]]);
  t.true(calls[0]!.parts.every((p, i) => p.data === requests[i]!.data), 'the requests\' own arrays, not copies');
  const alone = images([2, 2, 3, 3]);
  assertRowsAlone(t, await batcher.submit({ shape: alone.shape, data: alone.data }), alone, 'one request, no padding');
  t.is(runs, 1, 'a lone unpadded request still goes to run() as it is');
  t.throws(() => new Batcher({ run: fakeForward as never, runParts: 42 as never }), { instanceOf: ArgumentTypeError, message: /runParts but received number 42/ });
  await batcher.close();
});

test('a request that does not fit the batch is not overtaken by a later smaller one', async (t) => {
  const h = harness({ maxBatch: 3 });
  await occupy(h);
  const requests = [images([2, 2, 3, 3]), images([2, 2, 3, 3]), images([1, 2, 3, 3])];
  const results = requests.map((x) => track(h.batcher.submit({ shape: x.shape, data: x.data })));
  await h.engine.finish(0);
  t.deepEqual(h.engine.calls[1]!.batch.data, requests[0]!.data, 'the first [2] alone: [1] waits behind the second [2]');
  await h.engine.finish(1);
  t.deepEqual(h.engine.calls[2]!.batch.data, Float32Array.from([...requests[1]!.data, ...requests[2]!.data]));
  await h.engine.finish(2);
  requests.forEach((x, i) => assertRowsAlone(t, results[i]!.result, x, `request ${i}`));
});

test('a request of more than maxBatch images is rejected at submit; maxBatch images fill a batch alone', async (t) => {
  const h = harness({ maxBatch: 4 });
  const big = images([5, 2, 3, 3]);
  const error = await t.throwsAsync(h.batcher.submit({ shape: big.shape, data: big.data }), { instanceOf: ArgumentValueError });
  t.regex(error!.message, /at most maxBatch 4 images .* received 5/);
  t.like(h.rejects[0], { reason: 'invalid', images: 5 });
  const full = images([4, 2, 3, 3]);
  const rows = h.batcher.submit({ shape: full.shape, data: full.data });
  await flush();
  t.deepEqual(h.engine.sizes(), [4]);
  await h.engine.finish(0);
  assertRowsAlone(t, await rows, full, 'four images');
});

test('maxDelayMs holds a partial batch from its first arrival, then starts it; a full batch starts at once', async (t) => {
  const h = harness({ maxBatch: 3, maxDelayMs: 10 });
  const a = images([1, 2, 3, 3]);
  const b = images([1, 2, 3, 3]);
  const ra = track(h.batcher.submit({ shape: a.shape, data: a.data }));
  await h.clock.advance(6);
  t.deepEqual(h.engine.sizes(), [], 'waiting for more');
  const rb = track(h.batcher.submit({ shape: b.shape, data: b.data }));
  await h.clock.advance(3);
  t.deepEqual(h.engine.sizes(), [], 'still within 10 ms of the first arrival');
  await h.clock.advance(1);
  t.deepEqual(h.engine.sizes(), [2], 'started 10 ms after the first request, holding both');
  await h.engine.finish(0);
  assertRowsAlone(t, ra.result, a, 'a');
  assertRowsAlone(t, rb.result, b, 'b');
  t.deepEqual(h.batches[0]!.queueMs, [10, 4]);

  const c = images([1, 2, 3, 3]);
  const d = images([2, 2, 3, 3]);
  const rc = track(h.batcher.submit({ shape: c.shape, data: c.data }));
  await flush();
  t.deepEqual(h.engine.sizes(), [2]);
  const rd = track(h.batcher.submit({ shape: d.shape, data: d.data }));
  await flush();
  t.deepEqual(h.engine.sizes(), [2, 3], 'full: no waiting');
  await h.engine.finish(1);
  assertRowsAlone(t, rc.result, c, 'c');
  assertRowsAlone(t, rd.result, d, 'd');
  t.is(h.clock.pendingTimers, 0);
});

test('a request that overflows maxQueue images is rejected at once with a Retry-After estimate', async (t) => {
  const h = harness({ maxBatch: 2, maxQueue: 4 });
  const x = images(busyShape);
  const first = track(h.batcher.submit({ shape: x.shape, data: x.data }));
  await flush();
  const noHistory = images([2, 2, 3, 3]);
  const queued = [track(h.batcher.submit({ shape: noHistory.shape, data: noHistory.data }))];
  queued.push(track(h.batcher.submit({ shape: noHistory.shape, data: noHistory.data })));
  const over = images([1, 2, 3, 3]);
  const early = await t.throwsAsync(h.batcher.submit({ shape: over.shape, data: over.data }), { instanceOf: QueueFullError });
  t.is(early!.code, 'ERR_QUEUE_FULL');
  t.is(early!.retryAfterSeconds, 1, 'no batch finished yet: 1 second');
  t.regex(early!.message, /room for 1 images .*maxQueue 4.* 4 are queued/);
  // One batch of 3 s: the overflowing request needs one queued batch plus the running one to finish.
  await h.clock.advance(3000);
  await h.engine.finish(0);
  t.true(first.done);
  const second = track(h.batcher.submit({ shape: noHistory.shape, data: noHistory.data }));
  const estimated = await t.throwsAsync(h.batcher.submit({ shape: over.shape, data: over.data }), { instanceOf: QueueFullError });
  t.is(estimated!.retryAfterSeconds, 6);
  t.deepEqual(h.rejects.map((r) => r.reason), ['queue_full', 'queue_full']);
  await h.engine.finish(1);
  await h.engine.finish(2);
  await h.engine.finish(3);
  t.true([...queued, second].every((q) => q.done && q.error === undefined));
});

test('an expired request is dropped before compute and never takes a batch slot; per-request timeouts only shorten', async (t) => {
  const h = harness({ maxBatch: 2, timeoutMs: 100 });
  await occupy(h);
  const short = images([1, 2, 3, 3]);
  const longer = images([1, 2, 3, 3]);
  const clamped = images([1, 2, 3, 3]);
  const rShort = track(h.batcher.submit({ shape: short.shape, data: short.data, timeoutMs: 50 }));
  const rLonger = track(h.batcher.submit({ shape: longer.shape, data: longer.data }));
  await h.clock.advance(50);
  t.true(rShort.error instanceof DeadlineError, 'rejected at its deadline, while the engine is still busy');
  t.is((rShort.error as DeadlineError).code, 'ERR_DEADLINE');
  t.is(h.batcher.queuedRequests, 1);
  const rClamped = track(h.batcher.submit({ shape: clamped.shape, data: clamped.data, timeoutMs: 10_000 }));
  await h.engine.finish(0);
  t.deepEqual(h.engine.calls[1]!.batch.data, Float32Array.from([...longer.data, ...clamped.data]), 'the expired request took no slot');
  // Its deadline passes while its batch computes: it still gets its result.
  await h.clock.advance(200);
  t.false(rLonger.done);
  await h.engine.finish(1);
  assertRowsAlone(t, rLonger.result, longer, 'deadline passed during compute');
  await occupy(h);
  const late = track(h.batcher.submit({ shape: clamped.shape, data: clamped.data, timeoutMs: 10_000 }));
  await h.clock.advance(100);
  t.true(late.error instanceof DeadlineError, 'a longer per-request timeout is clamped to timeoutMs');
  t.true(rClamped.done);
  t.deepEqual(h.rejects.map((r) => r.reason), ['deadline', 'deadline']);
  await h.engine.finish(2);
  t.is(h.clock.pendingTimers, 0);
});

test('cancellation removes a queued request; aborting after its batch started changes nothing', async (t) => {
  const h = harness({ maxBatch: 4 });
  await occupy(h);
  const cancelled = images([1, 2, 3, 3]);
  const kept = images([2, 2, 3, 3]);
  const controller = new AbortController();
  const rCancelled = track(h.batcher.submit({ shape: cancelled.shape, data: cancelled.data, signal: controller.signal }));
  const lateController = new AbortController();
  const rKept = track(h.batcher.submit({ shape: kept.shape, data: kept.data, signal: lateController.signal }));
  controller.abort();
  await flush();
  t.true(rCancelled.error instanceof CancelledError);
  t.is((rCancelled.error as CancelledError).code, 'ERR_CANCELLED');
  t.is(h.batcher.queuedImages, 2);
  await h.engine.finish(0);
  t.deepEqual(h.engine.calls[1]!.batch.data, kept.data, 'the cancelled request is not computed');
  lateController.abort();
  await h.engine.finish(1);
  assertRowsAlone(t, rKept.result, kept, 'aborted after start');
  const aborted = AbortSignal.abort();
  await t.throwsAsync(h.batcher.submit({ shape: kept.shape, data: kept.data, signal: aborted }), { instanceOf: CancelledError });
  t.deepEqual(h.rejects.map((r) => r.reason), ['cancelled', 'cancelled']);
});

test('prepare() runs bounded and concurrently; a failing or unready request does not hold up the others', async (t) => {
  const h = harness({ maxBatch: 8, maxConcurrentPrepares: 2 });
  const inputs = [images([1, 2, 3, 3]), images([1, 2, 3, 3]), images([1, 2, 3, 3]), images([2, 2, 3, 3])];
  const releases: Array<(data: Float32Array) => void> = [];
  const failures: Array<(error: Error) => void> = [];
  const results = inputs.map((x) =>
    track(h.batcher.submit({
      shape: x.shape,
      prepare: () => new Promise<Float32Array>((resolve, reject) => {
        releases.push(resolve);
        failures.push(reject);
      }),
    })),
  );
  await flush();
  t.is(releases.length, 2, 'at most maxConcurrentPrepares prepare() calls at once');
  failures[0]!(new FormatError('Expected an image for body but received 3 bytes'));
  releases[1]!(inputs[1]!.data);
  await flush();
  t.true(results[0]!.error instanceof FormatError, 'the failed prepare rejects its request with its own error');
  t.deepEqual(h.engine.sizes(), [1], 'the ready request started without waiting');
  t.deepEqual(h.engine.calls[0]!.batch.data, inputs[1]!.data);
  t.is(releases.length, 4, 'freed slots went to the waiting requests');
  releases[3]!(inputs[3]!.data);
  await h.engine.finish(0);
  t.deepEqual(h.engine.calls[1]!.batch.data, inputs[3]!.data, 'the unready third request does not block the fourth');
  releases[2]!(new Float32Array(5));
  await h.engine.finish(1);
  t.true(results[2]!.error instanceof ShapeError, 'prepare() data of the wrong size fails that request');
  assertRowsAlone(t, results[1]!.result, inputs[1]!, 'second');
  assertRowsAlone(t, results[3]!.result, inputs[3]!, 'fourth');
  t.deepEqual(h.rejects.map((r) => r.reason), ['prepare_failed', 'prepare_failed']);
  t.is(h.clock.pendingTimers, 0);
});

test('requests of different input shapes go in different batches, FIFO within each shape', async (t) => {
  const h = harness({ maxBatch: 8 });
  await occupy(h);
  const small = (): HostTensor => images([1, 3, 4, 4]);
  const large = (): HostTensor => images([1, 3, 8, 8]);
  const requests = [small(), large(), small(), large(), small()];
  const results = requests.map((x) => track(h.batcher.submit({ shape: x.shape, data: x.data })));
  await h.engine.finish(0);
  await h.engine.finish(1);
  await h.engine.finish(2);
  t.deepEqual(h.engine.calls.slice(1).map((c) => c.batch.shape), [[3, 3, 4, 4], [2, 3, 8, 8]]);
  t.deepEqual(h.engine.calls[1]!.batch.data, Float32Array.from([0, 2, 4].flatMap((i) => [...requests[i]!.data])));
  t.deepEqual(h.engine.calls[2]!.batch.data, Float32Array.from([1, 3].flatMap((i) => [...requests[i]!.data])));
  requests.forEach((x, i) => assertRowsAlone(t, results[i]!.result, x, `request ${i}`));
});

test('drain() refuses new requests, skips maxDelayMs and resolves when queued and running work is done', async (t) => {
  const h = harness({ maxBatch: 4, maxDelayMs: 1000 });
  const a = images([2, 2, 3, 3]);
  const b = images([1, 2, 3, 3]);
  const ra = track(h.batcher.submit({ shape: a.shape, data: a.data }));
  await flush();
  t.deepEqual(h.engine.sizes(), [], 'waiting for maxDelayMs');
  const drained = track(h.batcher.drain());
  t.is(h.batcher.state, 'draining');
  await flush();
  t.deepEqual(h.engine.sizes(), [2], 'started at once when draining');
  await t.throwsAsync(h.batcher.submit({ shape: b.shape, data: b.data }), { instanceOf: ClosedError });
  t.false(drained.done);
  await h.engine.finish(0);
  t.true(drained.done);
  assertRowsAlone(t, ra.result, a, 'drained request');
  t.is(h.clock.pendingTimers, 0);
});

test('close() rejects queued and running requests and resolves once the running batch settled', async (t) => {
  const h = harness({ maxBatch: 2 });
  const running = await occupy(h);
  const x = images([2, 2, 3, 3]);
  const queued = track(h.batcher.submit({ shape: x.shape, data: x.data }));
  const preparing = track(h.batcher.submit({ shape: x.shape, prepare: () => new Promise<Float32Array>(() => undefined) }));
  await flush();
  const closed = track(h.batcher.close());
  await flush();
  for (const request of [running, queued, preparing]) t.true(request.error instanceof ClosedError);
  t.false(closed.done, 'waits for the batch on the engine');
  t.is(h.clock.pendingTimers, 0);
  await h.engine.finish(0);
  t.true(closed.done);
  t.deepEqual(h.engine.sizes(), [1], 'nothing else ran');
  await t.throwsAsync(h.batcher.submit({ shape: x.shape, data: x.data }), { instanceOf: ClosedError });
  t.is(h.batcher.state, 'closed');
  await h.batcher.drain();
  t.deepEqual(h.rejects.map((r) => r.reason), ['closed', 'closed', 'closed', 'closed']);
});

test('a failed run() rejects its batch only; a malformed output is a ShapeError', async (t) => {
  const h = harness({ maxBatch: 2 });
  await occupy(h);
  const x = images([2, 2, 3, 3]);
  const failing = track(h.batcher.submit({ shape: x.shape, data: x.data }));
  const malformed = track(h.batcher.submit({ shape: x.shape, data: x.data }));
  const fine = track(h.batcher.submit({ shape: x.shape, data: x.data }));
  await h.engine.finish(0);
  h.engine.calls[1]!.reject(new Error('engine failed'));
  await flush();
  t.is((failing.error as Error).message, 'engine failed');
  h.engine.calls[2]!.resolve({ shape: [1, CLASSES], data: new Float32Array(CLASSES) });
  await flush();
  t.true(malformed.error instanceof ShapeError);
  await h.engine.finish(3);
  assertRowsAlone(t, fine.result, x, 'after failures');
  t.deepEqual(h.rejects.map((r) => r.reason), ['compute_failed', 'compute_failed']);
});

test('bad options and requests are typed errors naming the argument and value', async (t) => {
  const run = async (x: HostTensor): Promise<HostTensor> => fakeForward(x);
  t.throws(() => new Batcher({ run, maxBatch: 0 }), { instanceOf: ArgumentValueError, message: /for maxBatch but received number 0/ });
  t.throws(() => new Batcher({ run, maxBatch: 8, maxQueue: 4 }), { instanceOf: ArgumentValueError, message: /from 8 .* for maxQueue/ });
  t.throws(() => new Batcher({ run, maxDelayMs: -1 }), { instanceOf: ArgumentValueError, message: /maxDelayMs but received number -1/ });
  t.throws(() => new Batcher({ run, timeoutMs: Number.NaN }), { instanceOf: ArgumentValueError, message: /timeoutMs/ });
  t.throws(() => new Batcher({ run: 'predict' as unknown as BatcherOptions['run'] }), { instanceOf: ArgumentTypeError });
  const batcher = new Batcher({ run, maxBatch: 4 });
  const x = images([1, 2, 3, 3]);
  await t.throwsAsync(batcher.submit({ shape: [1, 2, 3], data: x.data }), { instanceOf: ArgumentValueError, message: /shape \[N, C, H, W\]/ });
  await t.throwsAsync(batcher.submit({ shape: [1, 2, 3, 3.5], data: x.data }), { instanceOf: ArgumentValueError });
  await t.throwsAsync(batcher.submit({ shape: [1, 2, 3, 3] }), { instanceOf: ArgumentValueError, message: /neither/ });
  await t.throwsAsync(batcher.submit({ shape: [1, 2, 3, 3], data: x.data, prepare: async () => x.data }), { message: /both/ });
  await t.throwsAsync(batcher.submit({ shape: [1, 2, 3, 4], data: x.data }), { instanceOf: ShapeError, message: /24 values .* received 18/ });
  await t.throwsAsync(batcher.submit({ shape: [1, 2, 3, 3], data: x.data, timeoutMs: 0 }), { instanceOf: ArgumentValueError });
  await t.throwsAsync(batcher.submit({ shape: [1, 4096, 4096, 4096], data: x.data }), { instanceOf: ArgumentValueError, message: /at most/ });
  await t.throwsAsync(batcher.submit(null as unknown as BatchRequest), { instanceOf: ArgumentTypeError, message: /object for request but received null/ });
  await t.throwsAsync(batcher.submit({ shape: x.shape, data: x.data, signal: {} as AbortSignal }), { instanceOf: ArgumentTypeError, message: /AbortSignal/ });
  assertRowsAlone(t, await batcher.submit({ shape: x.shape, data: x.data }), x, 'still serving after bad requests');
});

test.serial('a throwing hook surfaces as an uncaught error without breaking the batcher', async (t) => {
  const h = harness({ onBatch: () => { throw new Error('hook bug'); } });
  const caught: unknown[] = [];
  const original = process.listeners('uncaughtException');
  process.removeAllListeners('uncaughtException');
  process.on('uncaughtException', (error) => caught.push(error));
  try {
    const x = images([1, 2, 3, 3]);
    const rows = h.batcher.submit({ shape: x.shape, data: x.data });
    await flush();
    await h.engine.finish(0);
    assertRowsAlone(t, await rows, x, 'result delivered');
    t.is((caught[0] as Error | undefined)?.message, 'hook bug');
  } finally {
    process.removeAllListeners('uncaughtException');
    for (const listener of original) process.on('uncaughtException', listener);
  }
});

test.serial('with the real timers, an idle batcher leaves no timer behind', async (t) => {
  const timeouts = (): number => process.getActiveResourcesInfo().filter((name) => name === 'Timeout').length;
  const before = timeouts();
  const engine = new ManualEngine();
  // A delay long enough that its timer is surely still pending when counted below, even on a loaded machine.
  const batcher = new Batcher({ run: engine.run, maxDelayMs: 1000, timeoutMs: 60_000 });
  const x = images([1, 2, 3, 3]);
  const rows = batcher.submit({ shape: x.shape, data: x.data });
  await flush();
  t.true(timeouts() > before, 'deadline and delay timers while queued');
  while (engine.calls.length === 0) await new Promise((resolve) => setTimeout(resolve, 1));
  await engine.finish(0);
  assertRowsAlone(t, await rows, x, 'real timers');
  t.is(timeouts(), before, 'no timer left once idle');
});

test('rows of a batch run through a real RepVGGNetwork match predict() on each request alone', async (t) => {
  const spec = customSpec({
    inChannels: 3, numClasses: 5, stemChannels: 8, stemStride: 1,
    stageChannels: [8, 16, 16, 32], stageDepths: [2, 1, 2, 1], stageStrides: [1, 2, 1, 2],
  });
  const net = RepVGGNetwork.fromDeployed(reparameterize(spec, randomTrainState(spec, makeRng(11))), { backend: 'cpu' });
  try {
    const sizes: number[] = [];
    const batcher = new Batcher({ run: (x) => (sizes.push(x.shape[0]!), net.predict(x)), maxBatch: 6 });
    const requests = [images([1, 3, 16, 16]), images([2, 3, 16, 16]), images([3, 3, 16, 16])];
    const batched = await Promise.all(requests.map((x) => batcher.submit({ shape: x.shape, data: x.data })));
    t.deepEqual(sizes, [6], 'one batch of all six images');
    let bitExact = true;
    let worst = 0;
    for (const [i, x] of requests.entries()) {
      const alone = await net.predict(x);
      t.deepEqual(batched[i]!.shape, alone.shape);
      bitExact &&= batched[i]!.data.every((v, j) => v === alone.data[j]);
      worst = Math.max(worst, checkClose(t, `request ${i} batched vs alone`, batched[i]!.data, alone.data, OP_FP32));
    }
    t.log(`batched rows ${bitExact ? 'are' : 'are not'} bit-identical to predict() alone (max relative error ${worst.toExponential(2)})`);
    await batcher.drain();
  } finally {
    net.dispose();
  }
});
