// The inference server's dynamic batcher (Triton's semantics): coalesces requests from all clients into batches of
// up to maxBatch images for one engine, with a bounded queue, deadlines, cancellation and overlapped input preparation.
// Not for: HTTP, image decoding or metrics export (the server passes prepare() and reads the hooks and getters).

import {
  ArgumentTypeError,
  ArgumentValueError,
  CancelledError,
  ClosedError,
  DeadlineError,
  QueueFullError,
  ShapeError,
  describeValue,
  formatShape,
} from '../errors.js';
import type { HostTensor } from '../tensor.js';

/** Runs one batch (B, C, H, W) and returns its outputs (B, K); the server passes RepVGGNetwork.predict. */
export type RunBatch = (batch: HostTensor) => Promise<HostTensor>;
/** Computes one batch given as its requests' tensors, in order, plus zero rows up to `rows` images in all. */
export type RunBatchParts = (parts: HostTensor[], rows: number) => Promise<HostTensor>;

/** The time source and timers the batcher uses; injectable so that tests control time. */
export interface BatcherClock {
  /** Milliseconds on a monotonic clock. */
  now(): number;
  setTimeout(callback: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

/** One computed batch, reported after its run() resolved. */
export interface BatchEvent {
  /** Images in the batch. */
  size: number;
  /** Rows the engine ran (B >= size: the batch padded to paddedSize). */
  paddedSize: number;
  /** Requests in the batch. */
  requests: number;
  /** (B, C, H, W) the engine ran. */
  shape: readonly [number, number, number, number];
  /** Per request, in batch order: milliseconds from submit() to the start of the batch. */
  queueMs: number[];
  /** Milliseconds run() took. */
  computeMs: number;
}

/** Why a request ended without a result. */
export type RejectReason =
  | 'invalid' // bad arguments to submit()
  | 'queue_full'
  | 'deadline'
  | 'cancelled'
  | 'prepare_failed'
  | 'compute_failed'
  | 'closed'; // submitted while draining or closed, or pending at close()

export interface RejectEvent {
  reason: RejectReason;
  /** Images the request carried (0 when its shape itself was invalid). */
  images: number;
  error: Error;
}

export interface BatcherOptions {
  /** Computes one batch; at most one call runs at a time. */
  run: RunBatch;
  /**
   * Computes a batch of several requests (or one padded to more rows) from the requests' own tensors, instead of
   * run() on a copy of them in one buffer (RepVGGNetwork.predictParts: the copy then happens natively, off the
   * event loop). Optional; at most one call of run and runParts runs at a time.
   */
  runParts?: RunBatchParts;
  /** Most images in one batch (default 8). A request of more images is rejected at submit (as Triton does). */
  maxBatch?: number;
  /**
   * How long a partial batch may wait for more requests, counted from the arrival of its first request
   * (default 0: a batch starts as soon as the engine is free). A full batch starts at once.
   */
  maxDelayMs?: number;
  /** Most images waiting (queued, preparing or ready, not yet in a batch); default 8 * maxBatch, at least maxBatch. */
  maxQueue?: number;
  /** Default and longest deadline of a request, from its submit (default 30000 ms). */
  timeoutMs?: number;
  /** Most prepare() calls running at once (default 4). */
  maxConcurrentPrepares?: number;
  /** Time source and timers (default: performance.now and the global timers). */
  clock?: BatcherClock;
  /**
   * Rows the engine should run for a batch of `images` images of (C, H, W), from images to maxBatch (default:
   * `images`). An engine that
   * compiles one plan per batch size (RepVGGNetwork) answers the smallest prepared size that holds the batch: the
   * rows past the images are zeros and their outputs are dropped.
   */
  paddedSize?: (images: number, imageShape: readonly [number, number, number]) => number;
  /** Called after each successfully computed batch. */
  onBatch?: (event: BatchEvent) => void;
  /** Called for each request that ends without a result. */
  onReject?: (event: RejectEvent) => void;
}

/** One request: N images of one shape, given as data or as a prepare() that produces it. */
export interface BatchRequest {
  /** (N, C, H, W), known at submit so that the queue bound and shape grouping need no data. */
  shape: readonly number[];
  /** The N * C * H * W input values, when they are ready at submit. Exactly one of data and prepare. */
  data?: Float32Array;
  /** Produces the input values (decode + preprocess); started when the request is accepted, concurrency bounded. */
  prepare?: () => Promise<Float32Array>;
  /** Aborting removes the request while it waits; it has no effect once its batch started. */
  signal?: AbortSignal;
  /** This request's deadline from submit; only shortens the batcher's timeoutMs (the smaller one is used). */
  timeoutMs?: number;
}

/** Most elements one batch may hold (1 GiB of float32): bounds what a request's declared shape makes us allocate. */
export const MAX_BATCH_ELEMENTS = 2 ** 28;
/** Largest accepted maxBatch, maxQueue and maxConcurrentPrepares: far beyond any engine's useful batch. */
export const MAX_BATCHER_COUNT = 1_000_000;
/** Longest accepted timeoutMs or maxDelayMs (one day): setTimeout itself overflows past 2^31 - 1 ms. */
export const MAX_BATCHER_MS = 86_400_000;
/** Batch compute times remembered for the Retry-After estimate of QueueFullError. */
const RECENT_BATCHES = 16;

type Stage = 'waiting' | 'preparing' | 'ready';

/** A request from acceptance until it leaves the queue (into a batch, or rejected). */
interface Pending {
  readonly id: number;
  readonly images: number;
  readonly imageShape: readonly [number, number, number]; // (C, H, W)
  readonly groupKey: string;
  readonly arrivedAt: number;
  readonly timeoutMs: number; // this request's deadline is arrivedAt + timeoutMs
  readonly prepare: (() => Promise<Float32Array>) | undefined;
  readonly signal: AbortSignal | undefined;
  readonly resolve: (rows: HostTensor) => void;
  readonly reject: (error: Error) => void;
  stage: Stage;
  data: Float32Array | undefined; // (N, C, H, W) once ready
  deadlineTimer: unknown;
  onAbort: (() => void) | undefined;
}

/** The batch on the engine: its requests and whether close() already answered them. */
interface Running {
  readonly entries: Pending[];
  abandoned: boolean;
  readonly settled: Promise<void>;
}

const systemClock: BatcherClock = {
  now: () => performance.now(),
  setTimeout: (callback, ms) => setTimeout(callback, ms),
  clearTimeout: (handle) => clearTimeout(handle as ReturnType<typeof setTimeout>),
};

/**
 * Dynamic batcher for one engine. Semantics:
 * - FIFO per input shape: requests of different (C, H, W) never share a batch; a batch takes the oldest ready
 *   request, then later ready requests of its shape in arrival order until the next one does not fit (requests are
 *   never reordered within a shape and never split). Requests still preparing are passed over, so a slow decode
 *   does not hold up the others.
 * - Requests submitted in the same tick are coalesced; the first batch starts in a microtask after submit.
 * - maxQueue counts images. A request that does not fit is rejected at once with QueueFullError.
 * - A deadline that passes before the request's batch starts rejects it with DeadlineError; once its batch started,
 *   the request gets its result even if the deadline passes during the computation. Cancellation likewise.
 * - A failed prepare() or a prepare() with data of the wrong size rejects that request alone.
 * - While the oldest ready request's partial batch waits for maxDelayMs, batches of other shapes wait too (at most
 *   maxDelayMs): the engine always takes the oldest ready request next.
 * - A failed run() rejects the requests of that batch with its error; the batcher goes on with the next batch.
 * @example
 *   const batcher = new Batcher({ run: (x) => net.predict(x), maxBatch: 16, maxDelayMs: 2 });
 *   const logits = await batcher.submit({ shape: [1, 3, 224, 224], prepare: () => decode(body) }); // (1, K)
 */
export class Batcher {
  readonly maxBatch: number;
  readonly maxDelayMs: number;
  readonly maxQueue: number;
  readonly timeoutMs: number;
  readonly maxConcurrentPrepares: number;
  readonly #run: RunBatch;
  readonly #runParts: RunBatchParts | undefined;
  readonly #clock: BatcherClock;
  readonly #paddedSize: ((images: number, imageShape: readonly [number, number, number]) => number) | undefined;
  readonly #onBatch: ((event: BatchEvent) => void) | undefined;
  readonly #onReject: ((event: RejectEvent) => void) | undefined;
  #state: 'open' | 'draining' | 'closed' = 'open';
  readonly #queue: Pending[] = []; // arrival order
  #queuedImages = 0;
  #activePrepares = 0;
  #running: Running | undefined;
  #wakeTimer: unknown;
  #pumpScheduled = false;
  #nextId = 0;
  readonly #recentComputeMs: number[] = [];
  readonly #drainWaiters: Array<() => void> = [];
  /** The largest batch input buffer so far, free while no batch runs: every later batch uses a view of it. */
  #spareInput: Float32Array | undefined;

  /**
   * @throws ArgumentTypeError when run (or a given runParts) is not a function; ArgumentValueError for a bad count or
   *   duration.
   */
  constructor(options: BatcherOptions) {
    if (typeof options.run !== 'function') {
      throw new ArgumentTypeError(`Expected a function for run but received ${describeValue(options.run)}`);
    }
    this.#run = options.run;
    if (options.runParts !== undefined && typeof options.runParts !== 'function') {
      throw new ArgumentTypeError(`Expected a function for runParts but received ${describeValue(options.runParts)}`);
    }
    this.#runParts = options.runParts;
    this.maxBatch = checkCount(options.maxBatch ?? 8, 'maxBatch', 1);
    this.maxQueue = checkCount(options.maxQueue ?? Math.min(8 * this.maxBatch, MAX_BATCHER_COUNT), 'maxQueue', this.maxBatch);
    this.maxConcurrentPrepares = checkCount(options.maxConcurrentPrepares ?? 4, 'maxConcurrentPrepares', 1);
    this.maxDelayMs = checkMs(options.maxDelayMs ?? 0, 'maxDelayMs', true);
    this.timeoutMs = checkMs(options.timeoutMs ?? 30_000, 'timeoutMs', false);
    this.#clock = options.clock ?? systemClock;
    if (options.paddedSize !== undefined && typeof options.paddedSize !== 'function') {
      throw new ArgumentTypeError(`Expected a function for paddedSize but received ${describeValue(options.paddedSize)}`);
    }
    this.#paddedSize = options.paddedSize;
    this.#onBatch = options.onBatch;
    this.#onReject = options.onReject;
  }

  /** Images waiting for a batch (queued, preparing or ready). */
  get queuedImages(): number {
    return this.#queuedImages;
  }

  /** Requests waiting for a batch. */
  get queuedRequests(): number {
    return this.#queue.length;
  }

  /**
   * A QueueFullError when not even one more image fits (what any request would get at submit), else undefined: lets
   * a server refuse a request before reading its body.
   */
  fullError(): QueueFullError | undefined {
    return this.#state === 'open' ? this.#queueFullError(1) : undefined;
  }

  /** A QueueFullError when `images` more do not fit in the queue, else undefined. */
  #queueFullError(images: number): QueueFullError | undefined {
    if (this.#queuedImages + images <= this.maxQueue) return undefined;
    return new QueueFullError(
      `Expected room for ${images} images in the queue (maxQueue ${this.maxQueue}) but ${this.#queuedImages} are queued`,
      this.#retryAfterSeconds(images),
    );
  }

  /** Images in the batch being computed (0 when the engine is idle). */
  get inFlightImages(): number {
    return this.#running?.entries.reduce((sum, entry) => sum + entry.images, 0) ?? 0;
  }

  /** Requests in the batch being computed. */
  get inFlightRequests(): number {
    return this.#running?.entries.length ?? 0;
  }

  /** 'open' accepts requests; 'draining' finishes the accepted ones; 'closed' has answered everything. */
  get state(): 'open' | 'draining' | 'closed' {
    return this.#state;
  }

  /**
   * Queues N images for batched computation and resolves with their rows (N, K), equal to run() on them alone.
   * Never throws: every failure rejects the promise with a typed error.
   * @throws (rejects) ArgumentValueError / ArgumentTypeError / ShapeError for bad arguments, QueueFullError,
   *   DeadlineError, CancelledError, ClosedError, the error of a failed prepare() or run().
   */
  submit(request: BatchRequest): Promise<HostTensor> {
    return new Promise<HostTensor>((resolve, reject) => {
      let entry: Pending;
      try {
        entry = this.#accept(request, resolve, reject);
      } catch (error) {
        const shape: unknown = (request as Partial<BatchRequest> | null)?.shape;
        const images = Array.isArray(shape) && Number.isSafeInteger(shape[0]) ? (shape[0] as number) : 0;
        this.#report(reasonOf(error), images, error as Error);
        reject(error as Error);
        return;
      }
      this.#queue.push(entry);
      this.#queuedImages += entry.images;
      this.#startPrepares();
      this.#schedulePump();
    });
  }

  /** Checks the request against the batcher's state and bounds and builds its queue entry (timers, listeners). */
  #accept(request: BatchRequest, resolve: (rows: HostTensor) => void, reject: (error: Error) => void): Pending {
    if (this.#state !== 'open') throw new ClosedError(`Expected an open batcher for submit but it is ${this.#state}`);
    if (typeof request !== 'object' || request === null) {
      throw new ArgumentTypeError(`Expected an object for request but received ${describeValue(request)}`);
    }
    if (request.signal !== undefined && !(request.signal instanceof AbortSignal)) {
      throw new ArgumentTypeError(`Expected an AbortSignal for signal but received ${describeValue(request.signal)}`);
    }
    const [images, ...imageShape] = this.#checkShape(request.shape);
    const hasData = request.data !== undefined;
    const hasPrepare = request.prepare !== undefined;
    if (hasData === hasPrepare) {
      throw new ArgumentValueError(`Expected exactly one of data and prepare for a request but received ${hasData ? 'both' : 'neither'}`);
    }
    if (hasPrepare && typeof request.prepare !== 'function') {
      throw new ArgumentTypeError(`Expected a function for prepare but received ${describeValue(request.prepare)}`);
    }
    if (hasData) checkData(request.data, images * imageShape[0]! * imageShape[1]! * imageShape[2]!, 'data');
    const timeoutMs = Math.min(this.timeoutMs, checkMs(request.timeoutMs ?? this.timeoutMs, 'timeoutMs', false));
    if (request.signal?.aborted === true) throw new CancelledError('The request was cancelled before submit');
    const full = this.#queueFullError(images);
    if (full) throw full;
    const entry: Pending = {
      id: this.#nextId++,
      images,
      imageShape: imageShape as [number, number, number],
      groupKey: imageShape.join('x'),
      arrivedAt: this.#clock.now(),
      timeoutMs,
      prepare: request.prepare,
      signal: request.signal,
      resolve,
      reject,
      stage: hasData ? 'ready' : 'waiting',
      data: request.data,
      deadlineTimer: undefined,
      onAbort: undefined,
    };
    entry.deadlineTimer = this.#clock.setTimeout(() => {
      entry.deadlineTimer = undefined;
      this.#drop(entry, 'deadline', deadlineError(entry));
    }, timeoutMs);
    if (request.signal) {
      entry.onAbort = () => this.#drop(entry, 'cancelled', new CancelledError('The request was cancelled before its batch started'));
      request.signal.addEventListener('abort', entry.onAbort, { once: true });
    }
    return entry;
  }

  /** Validates (N, C, H, W): positive integers, N <= maxBatch, one batch of this shape within MAX_BATCH_ELEMENTS. */
  #checkShape(shape: unknown): [number, number, number, number] {
    if (!Array.isArray(shape) || shape.length !== 4 || !shape.every((d) => Number.isSafeInteger(d) && d > 0)) {
      throw new ArgumentValueError(`Expected shape [N, C, H, W] of positive integers but received ${describeValue(shape)}`);
    }
    const [images, c, h, w] = shape as [number, number, number, number];
    if (images > this.maxBatch) {
      throw new ArgumentValueError(`Expected at most maxBatch ${this.maxBatch} images in a request but received ${images}`);
    }
    if (this.maxBatch * c * h * w > MAX_BATCH_ELEMENTS) {
      throw new ArgumentValueError(
        `Expected images of at most ${Math.floor(MAX_BATCH_ELEMENTS / this.maxBatch)} values (a batch of ${this.maxBatch} within ${MAX_BATCH_ELEMENTS}) but received shape ${formatShape(shape)}`,
      );
    }
    return [images, c, h, w];
  }

  /** Seconds until enough queued images have been computed for images more to fit, from recent batch times. */
  #retryAfterSeconds(images: number): number {
    const recent = this.#recentComputeMs;
    if (recent.length === 0) return 1;
    const meanMs = recent.reduce((sum, ms) => sum + ms, 0) / recent.length;
    const batchesToWait = Math.ceil((this.#queuedImages + images - this.maxQueue) / this.maxBatch) + (this.#running ? 1 : 0);
    return Math.max(1, Math.ceil((batchesToWait * meanMs) / 1000));
  }

  /** Starts prepare() of waiting requests in arrival order while fewer than maxConcurrentPrepares run. */
  #startPrepares(): void {
    for (const entry of this.#queue) {
      if (this.#activePrepares >= this.maxConcurrentPrepares) return;
      if (entry.stage !== 'waiting') continue;
      entry.stage = 'preparing';
      this.#activePrepares++;
      const prepare = entry.prepare!;
      new Promise<Float32Array>((resolve) => resolve(prepare())).then(
        (data) => this.#prepared(entry, data, undefined),
        (error: unknown) => this.#prepared(entry, undefined, error instanceof Error ? error : new Error(String(error))),
      );
    }
  }

  /** A prepare() settled: the request becomes ready or is rejected alone; its slot goes to the next waiting one. */
  #prepared(entry: Pending, data: unknown, error: Error | undefined): void {
    this.#activePrepares--;
    if (this.#queue.includes(entry)) {
      const [c, h, w] = entry.imageShape;
      try {
        if (error) throw error;
        entry.data = checkData(data, entry.images * c * h * w, 'the data of prepare()');
        entry.stage = 'ready';
      } catch (failure) {
        this.#drop(entry, 'prepare_failed', failure as Error);
      }
    }
    this.#startPrepares();
    this.#schedulePump();
  }

  /** Removes a queued request (if still queued) and rejects it. */
  #drop(entry: Pending, reason: RejectReason, error: Error): void {
    if (!this.#remove(entry)) return;
    this.#report(reason, entry.images, error);
    entry.reject(error);
    this.#schedulePump();
  }

  /** Takes a request out of the queue and releases its timer and abort listener; false when it was not queued. */
  #remove(entry: Pending): boolean {
    const index = this.#queue.indexOf(entry);
    if (index < 0) return false;
    this.#queue.splice(index, 1);
    this.#queuedImages -= entry.images;
    if (entry.deadlineTimer !== undefined) this.#clock.clearTimeout(entry.deadlineTimer);
    entry.deadlineTimer = undefined;
    if (entry.onAbort) entry.signal?.removeEventListener('abort', entry.onAbort);
    return true;
  }

  /** Runs #pump once in a microtask: requests submitted in the same tick share a batch. */
  #schedulePump(): void {
    if (this.#pumpScheduled) return;
    this.#pumpScheduled = true;
    queueMicrotask(() => {
      this.#pumpScheduled = false;
      this.#pump();
    });
  }

  /** Starts the next batch when the engine is free and one is due; otherwise sets the one wake-up timer it needs. */
  #pump(): void {
    if (this.#wakeTimer !== undefined) this.#clock.clearTimeout(this.#wakeTimer);
    this.#wakeTimer = undefined;
    if (this.#running) return;
    if (this.#state === 'closed') {
      this.#resolveDrainIfIdle();
      return;
    }
    const now = this.#clock.now();
    // A deadline timer may not have fired yet although its time has come: such requests never take a slot.
    for (const entry of [...this.#queue]) {
      if (now >= entry.arrivedAt + entry.timeoutMs) {
        this.#drop(entry, 'deadline', deadlineError(entry));
      }
    }
    const head = this.#queue.find((entry) => entry.stage === 'ready');
    if (!head) {
      this.#resolveDrainIfIdle();
      return;
    }
    const batch: Pending[] = [];
    let size = 0;
    let full = false;
    for (const entry of this.#queue) {
      if (entry.stage !== 'ready' || entry.groupKey !== head.groupKey) continue;
      if (size + entry.images > this.maxBatch) {
        full = true;
        break;
      }
      batch.push(entry);
      size += entry.images;
    }
    full ||= size === this.maxBatch;
    const waitMs = head.arrivedAt + this.maxDelayMs - now;
    if (!full && waitMs > 0 && this.#state === 'open') {
      this.#wakeTimer = this.#clock.setTimeout(() => {
        this.#wakeTimer = undefined;
        this.#pump();
      }, waitMs);
      return;
    }
    this.#start(batch, size, now);
  }

  /** Runs one batch on the engine and answers its requests with their rows, in order. */
  #start(entries: Pending[], size: number, startedAt: number): void {
    for (const entry of entries) this.#remove(entry);
    const imageShape = entries[0]!.imageShape;
    const [c, h, w] = imageShape;
    const imageSize = c * h * w;
    let rows: number;
    try {
      rows = this.#paddedSize === undefined ? size : checkPaddedSize(this.#paddedSize(size, imageShape), size, this.maxBatch);
    } catch (error) {
      this.#failBatch(entries, error as Error);
      this.#schedulePump();
      return;
    }
    const joined = entries.length > 1 || rows > size;
    const runParts = this.#runParts;
    const ownsInput = joined && runParts === undefined;
    const input = ownsInput ? this.#takeInput(rows * imageSize) : entries[0]!.data!; // (rows, C, H, W)
    if (ownsInput) {
      let offset = 0;
      for (const entry of entries) {
        input.set(entry.data!, offset);
        offset += entry.images * imageSize;
      }
      input.fill(0, offset); // padding rows
    }
    const queueMs = entries.map((entry) => startedAt - entry.arrivedAt);
    const shape = [rows, c, h, w] as const;
    const computeStart = this.#clock.now();
    const compute = (): Promise<HostTensor> =>
      joined && runParts !== undefined
        ? runParts(entries.map((entry) => ({ shape: [entry.images, c, h, w], data: entry.data! })), rows)
        : this.#run({ shape: [...shape], data: input });
    const settled = new Promise<HostTensor>((resolve) => resolve(compute())).then(
      (output) => {
        const computeMs = this.#clock.now() - computeStart;
        if (running.abandoned) return;
        let split: HostTensor[];
        try {
          split = splitRows(output, rows, entries.map((entry) => entry.images));
        } catch (error) {
          this.#failBatch(entries, error as Error);
          return;
        }
        this.#recentComputeMs.push(computeMs);
        if (this.#recentComputeMs.length > RECENT_BATCHES) this.#recentComputeMs.shift();
        entries.forEach((entry, index) => entry.resolve(split[index]!));
        this.#emit(() => this.#onBatch?.({ size, paddedSize: rows, requests: entries.length, shape, queueMs, computeMs }));
      },
      (error: unknown) => {
        if (!running.abandoned) this.#failBatch(entries, error instanceof Error ? error : new Error(String(error)));
      },
    ).finally(() => {
      this.#running = undefined;
      if (ownsInput) this.#spareInput = new Float32Array(input.buffer); // run() has settled: the engine no longer reads it
      if (this.#state === 'closed') this.#resolveDrainIfIdle();
      else this.#schedulePump();
    });
    const running: Running = { entries, abandoned: false, settled };
    this.#running = running;
  }

  /**
   * `length` values for a batch's input (the caller overwrites every value): a view of the spare buffer when it is
   * large enough, else a new one. A new buffer costs the event loop its first-touch page faults (measured 57-97 ms
   * for 32 A0 images, 19 MB, on a 2-core VM), and batch sizes vary with the load: at 8 clients a buffer kept for
   * one size only was allocated anew for 55 of 330 batches, up to 20 ms each.
   */
  #takeInput(length: number): Float32Array {
    const spare = this.#spareInput;
    this.#spareInput = undefined;
    return spare !== undefined && spare.length >= length ? spare.subarray(0, length) : new Float32Array(length);
  }

  #failBatch(entries: Pending[], error: Error): void {
    for (const entry of entries) {
      this.#report('compute_failed', entry.images, error);
      entry.reject(error);
    }
  }

  #report(reason: RejectReason, images: number, error: Error): void {
    this.#emit(() => this.#onReject?.({ reason, images, error }));
  }

  /** Calls a hook; a throwing hook is the caller's bug and surfaces as an uncaught exception, not as our state's. */
  #emit(call: () => void): void {
    try {
      call();
    } catch (error) {
      queueMicrotask(() => {
        throw error;
      });
    }
  }

  #resolveDrainIfIdle(): void {
    if (this.#queue.length > 0 || this.#running) return;
    for (const resolve of this.#drainWaiters.splice(0)) resolve();
  }

  /**
   * Stops accepting requests (submit rejects with ClosedError) and resolves once every accepted request has been
   * answered. Partial batches no longer wait for maxDelayMs.
   */
  drain(): Promise<void> {
    if (this.#state === 'open') this.#state = 'draining';
    const done = new Promise<void>((resolve) => this.#drainWaiters.push(resolve));
    this.#schedulePump();
    return done;
  }

  /**
   * Rejects every request not yet answered with ClosedError (also those of the batch on the engine, whose results
   * are discarded), clears all timers, and resolves once that batch's run() has settled, so the engine may then be
   * disposed.
   */
  close(): Promise<void> {
    if (this.#state !== 'closed') {
      this.#state = 'closed';
      if (this.#wakeTimer !== undefined) this.#clock.clearTimeout(this.#wakeTimer);
      this.#wakeTimer = undefined;
      for (const entry of [...this.#queue]) this.#drop(entry, 'closed', new ClosedError('The batcher was closed before the request was computed'));
      const running = this.#running;
      if (running && !running.abandoned) {
        running.abandoned = true;
        for (const entry of running.entries) {
          const error = new ClosedError('The batcher was closed while the request was computed');
          this.#report('closed', entry.images, error);
          entry.reject(error);
        }
      }
    }
    const settled = this.#running?.settled ?? Promise.resolve();
    return settled.then(() => this.#resolveDrainIfIdle());
  }
}

/** Splits the first sum(N_i) of (B, K) rows into one (N_i, K) tensor per request (rows past them are padding). */
function splitRows(output: unknown, batch: number, imagesPerRequest: number[]): HostTensor[] {
  const candidate = output as Partial<HostTensor> | null | undefined;
  const shape = candidate?.shape;
  const data = candidate?.data;
  if (!Array.isArray(shape) || shape.length !== 2 || shape[0] !== batch || !Number.isSafeInteger(shape[1]) || shape[1] < 1) {
    throw new ShapeError(`Expected run() to return shape [${batch}, K] but received ${describeValue(shape)}`);
  }
  const classes = shape[1] as number;
  if (!(data instanceof Float32Array) || data.length !== batch * classes) {
    throw new ShapeError(`Expected run() to return a Float32Array of ${batch * classes} values but received ${describeValue(data)}`);
  }
  const rows: HostTensor[] = [];
  let start = 0;
  for (const images of imagesPerRequest) {
    rows.push({ shape: [images, classes], data: data.slice(start * classes, (start + images) * classes) });
    start += images;
  }
  return rows;
}

function checkPaddedSize(rows: unknown, images: number, maxBatch: number): number {
  if (!Number.isSafeInteger(rows) || (rows as number) < images || (rows as number) > maxBatch) {
    throw new ArgumentValueError(`Expected an integer from ${images} (the batch's images) to maxBatch ${maxBatch} from paddedSize but received ${describeValue(rows)}`);
  }
  return rows as number;
}

function deadlineError(entry: Pending): DeadlineError {
  return new DeadlineError(`The request's deadline of ${entry.timeoutMs} ms passed before its batch started`);
}

function checkData(data: unknown, expected: number, name: string): Float32Array {
  if (!(data instanceof Float32Array)) {
    throw new ArgumentTypeError(`Expected a Float32Array for ${name} but received ${describeValue(data)}`);
  }
  if (data.length !== expected) {
    throw new ShapeError(`Expected ${expected} values (the request's shape) for ${name} but received ${data.length}`);
  }
  return data;
}

function checkCount(value: unknown, name: string, min: number): number {
  if (!Number.isSafeInteger(value) || (value as number) < min || (value as number) > MAX_BATCHER_COUNT) {
    throw new ArgumentValueError(`Expected an integer from ${min} to ${MAX_BATCHER_COUNT} for ${name} but received ${describeValue(value)}`);
  }
  return value as number;
}

function checkMs(value: unknown, name: string, zeroAllowed: boolean): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0 || (!zeroAllowed && value === 0) || value > MAX_BATCHER_MS) {
    const range = zeroAllowed ? `from 0 to ${MAX_BATCHER_MS}` : `above 0 and at most ${MAX_BATCHER_MS}`;
    throw new ArgumentValueError(`Expected a number of milliseconds ${range} for ${name} but received ${describeValue(value)}`);
  }
  return value;
}

function reasonOf(error: unknown): RejectReason {
  if (error instanceof QueueFullError) return 'queue_full';
  if (error instanceof ClosedError) return 'closed';
  if (error instanceof CancelledError) return 'cancelled';
  return 'invalid';
}
