// DataLoader: seeded, resumable mini-batches of a Dataset, built ahead of time on a worker thread and handed to
// the main thread as ready float32 tensors. Same (seed, epoch, step) -> same batch, however the epoch was entered.
// Not for: the per-sample transforms (transforms.ts) or reading datasets (datasets.ts).

import { MessageChannel, Worker, receiveMessageOnPort } from 'node:worker_threads';
import type { MessagePort, WorkerOptions } from 'node:worker_threads';

import { ArgumentTypeError, ArgumentValueError, DisposedError, RepvggError, describeValue } from '../errors.js';
import { hostTensor } from '../tensor.js';
import type { HostTensor } from '../tensor.js';
import { buildBatch, stepsPerEpoch } from './batch.js';
import type { BatchPlan, BatchSource, RawBatch } from './batch.js';
import { checkDataset } from './datasets.js';
import type { Dataset } from './datasets.js';
import type { BatchMessage, FromWorker, ToWorker, WorkerData, WorkerInit } from './loader-protocol.js';
import { epochOrder } from './random.js';
import { DEFAULT_AUGMENT, affineNormalization, checkAugment, checkNormalization } from './transforms.js';
import type { AugmentOptions, Normalization } from './transforms.js';

export interface DataLoaderOptions {
  /** Samples per batch; the last batch of an epoch is smaller unless dropLast. */
  readonly batchSize: number;
  /** Visit the samples in a new seeded order every epoch; false: dataset order. */
  readonly shuffle: boolean;
  /** true: DEFAULT_AUGMENT (crop with padding 4, flip with p = 0.5); false: none; or your own settings. */
  readonly augment: boolean | AugmentOptions;
  /** Any safe integer; with the epoch index it decides the order and every augmentation. */
  readonly seed: number;
  /** Leave out the last, smaller batch of each epoch. Default false. */
  readonly dropLast?: boolean;
  /** How many batches the worker builds ahead of the consumer. Default 3. */
  readonly prefetch?: number;
  /** Overrides the dataset's normalization (see Dataset.normalization for the default). */
  readonly normalization?: Normalization;
  /**
   * When an epoch has been consumed to its end, start building the first batches of the next epoch at once, so
   * that the next epoch(e + 1) call finds them ready. Default true; evaluation passes turn it off.
   */
  readonly prefetchNextEpoch?: boolean;
}

/** One mini-batch. */
export interface Batch {
  /** (B, C, H, W) float32, normalized (and augmented when enabled). */
  readonly images: HostTensor;
  /** (B) class of each sample. */
  readonly labels: Int32Array;
  /** (B) dataset index of each sample. */
  readonly indices: Int32Array;
  /** Position of this batch in its epoch: 0 .. stepsPerEpoch - 1. */
  readonly step: number;
}

/** Views of `array`'s content on a SharedArrayBuffer, made once per array and reused by every later loader. */
const sharedCopies = new WeakMap<object, Uint8Array | Float32Array | Int32Array>();

function sharedCopy<T extends Uint8Array | Float32Array | Int32Array>(array: T): T {
  if (array.buffer instanceof SharedArrayBuffer) return array;
  const cached = sharedCopies.get(array);
  if (cached !== undefined && cached.length === array.length) return cached as T;
  const buffer = new SharedArrayBuffer(array.byteLength);
  const copy = (
    array instanceof Uint8Array ? new Uint8Array(buffer) : array instanceof Float32Array ? new Float32Array(buffer) : new Int32Array(buffer)
  ) as T;
  copy.set(array as never);
  sharedCopies.set(array, copy);
  return copy;
}

/**
 * Starts a worker thread from one of our files, with the parent's Node flags. By default a worker inherits them, V8
 * flags included (`node --max-old-space-size=4096 app.js`), whereas an explicit execArgv holding a V8 flag throws
 * ERR_WORKER_INVALID_EXEC_ARGV. Only flags that describe the parent's own script (`node --input-type=module -e ...`),
 * which an ES module worker refuses, make us pass them explicitly without those; and should the worker then refuse
 * some (V8 flags: they apply to every thread anyway), with none.
 */
export function startWorker(file: URL, options: WorkerOptions = {}): Worker {
  const inherited = process.execArgv;
  const isInputType = (arg: string): boolean => arg === '--input-type' || arg.startsWith('--input-type=');
  if (!inherited.some(isInputType)) return new Worker(file, options);
  const execArgv: string[] = [];
  for (let i = 0; i < inherited.length; i++) {
    const arg = inherited[i] as string;
    if (arg === '--input-type') i++; // its value is the next argument
    else if (!isInputType(arg)) execArgv.push(arg);
  }
  try {
    return new Worker(file, { ...options, execArgv });
  } catch (error) {
    // Thrown before the worker starts or anything in options.transferList moves.
    if ((error as { code?: unknown }).code !== 'ERR_WORKER_INVALID_EXEC_ARGV') throw error;
    return new Worker(file, { ...options, execArgv: [] });
  }
}

function resolveAugment(augment: boolean | AugmentOptions): AugmentOptions | null {
  if (augment === true) return DEFAULT_AUGMENT;
  if (augment === false) return null;
  return checkAugment(augment, 'options.augment');
}

/** The main thread's view of a run (a pass over steps [startStep, stepsPerEpoch) of one epoch). */
interface Run {
  readonly id: number;
  readonly epoch: number;
  readonly startStep: number;
  readonly queue: BatchMessage[];
  waiter: { resolve: (message: BatchMessage) => void; reject: (error: Error) => void } | undefined;
}

/**
 * Seeded, resumable mini-batches of a Dataset, prefetched on a worker thread.
 *
 * Batch `step` of epoch `e` holds positions [step * B, (step + 1) * B) of the epoch's order (the dataset order
 * when shuffle is off, else a permutation keyed by (seed, e)), each sample augmented with choices keyed by
 * (seed, e, position). So a batch depends only on (seed, e, step): resuming an epoch at startStep yields exactly
 * the batches an uninterrupted epoch would have yielded from there.
 *
 * The dataset is copied once into SharedArrayBuffers that the worker reads; each built batch's buffers are
 * transferred back, not copied. The worker does not keep the process alive unless a batch is being awaited.
 *
 * @example
 * const loader = new DataLoader(train, { batchSize: 128, shuffle: true, augment: true, seed: 0 });
 * for await (const { images, labels, step } of loader.epoch(0)) { ... }
 * await loader.close();
 */
export class DataLoader {
  readonly dataset: Dataset;
  readonly batchSize: number;
  readonly stepsPerEpoch: number;
  private readonly init: WorkerInit;
  private readonly prefetch: number;
  private readonly prefetchNextEpoch: boolean;
  private worker: Worker | undefined;
  /** The main thread's end of the channel to the worker. */
  private port: MessagePort | undefined;
  private readonly runs = new Map<number, Run>();
  private nextRunId = 1;
  private iterating = false;
  private speculative: Run | undefined;
  private failure: Error | undefined;
  private closed = false;
  /** batchAt's last epoch order, so inspecting several batches of one epoch shuffles once. */
  private batchAtOrder: { readonly epoch: number; readonly order: Int32Array } | undefined;

  /**
   * @throws ArgumentTypeError / ArgumentValueError / ShapeError naming the option or dataset field at fault.
   */
  constructor(dataset: Dataset, options: DataLoaderOptions) {
    this.dataset = checkDataset(dataset);
    if (typeof options !== 'object' || options === null) {
      throw new ArgumentTypeError(`Expected an options object for DataLoader but received ${describeValue(options)}`);
    }
    const { batchSize, shuffle, augment, seed, dropLast = false, prefetch = 3, prefetchNextEpoch = true } = options;
    if (!Number.isSafeInteger(batchSize) || batchSize < 1) {
      throw new ArgumentValueError(`Expected a positive integer for batchSize but received ${describeValue(batchSize)}`);
    }
    for (const [name, value] of Object.entries({ shuffle, dropLast, prefetchNextEpoch })) {
      if (typeof value !== 'boolean') throw new ArgumentTypeError(`Expected a boolean for ${name} but received ${describeValue(value)}`);
    }
    if (typeof augment !== 'boolean' && (typeof augment !== 'object' || augment === null)) {
      throw new ArgumentTypeError(`Expected a boolean or { padding, flipProbability } for augment but received ${describeValue(augment)}`);
    }
    if (!Number.isSafeInteger(seed)) throw new ArgumentValueError(`Expected an integer for seed but received ${describeValue(seed)}`);
    if (!Number.isSafeInteger(prefetch) || prefetch < 1) {
      throw new ArgumentValueError(`Expected a positive integer for prefetch but received ${describeValue(prefetch)}`);
    }
    const steps = stepsPerEpoch(dataset.count, batchSize, dropLast);
    if (steps === 0 && dataset.count > 0) {
      throw new ArgumentValueError(
        `Expected a batchSize of at most ${dataset.count} (the size of ${dataset.name}) with dropLast but received ${batchSize}`,
      );
    }
    const normalization = checkNormalization(
      options.normalization ??
        dataset.normalization ?? { scale: dataset.images instanceof Uint8Array ? 1 / 255 : 1, mean: [0], std: [1] },
      dataset.channels,
      options.normalization === undefined ? `${dataset.name} normalization` : 'options.normalization',
    );
    this.batchSize = batchSize;
    this.stepsPerEpoch = steps;
    this.prefetch = prefetch;
    this.prefetchNextEpoch = prefetchNextEpoch;
    this.init = {
      images: sharedCopy(dataset.images),
      labels: sharedCopy(dataset.labels),
      count: dataset.count,
      channels: dataset.channels,
      height: dataset.height,
      width: dataset.width,
      batchSize,
      shuffle,
      augment: resolveAugment(augment),
      seed,
      dropLast,
      normalization: { scale: normalization.scale, mean: [...normalization.mean], std: [...normalization.std] },
    };
  }

  /**
   * The batches of epoch `epochIndex` from step `startStep` on, built ahead on the worker thread.
   * Only one epoch may be iterated at a time; breaking out of a for-await loop ends the iteration.
   * @throws ArgumentValueError (synchronously) for a negative epoch or a startStep outside [0, stepsPerEpoch].
   * @throws DisposedError after close(); RepvggError 'ERR_DATA_LOADER' when the worker fails.
   */
  epoch(epochIndex: number, startStep = 0): AsyncGenerator<Batch, void, undefined> {
    if (!Number.isSafeInteger(epochIndex) || epochIndex < 0) {
      throw new ArgumentValueError(`Expected a non-negative integer for epochIndex but received ${describeValue(epochIndex)}`);
    }
    if (!Number.isSafeInteger(startStep) || startStep < 0 || startStep > this.stepsPerEpoch) {
      throw new ArgumentValueError(
        `Expected an integer in [0, ${this.stepsPerEpoch}] for startStep but received ${describeValue(startStep)}`,
      );
    }
    if (this.closed) throw new DisposedError('DataLoader');
    return this.iterate(epochIndex, startStep);
  }

  /**
   * Build one batch synchronously on the calling thread, bypassing the worker: the same content epoch() yields
   * for this (epoch, step). For tests and one-off inspection; training should iterate epoch().
   */
  batchAt(epochIndex: number, step: number): Batch {
    if (!Number.isSafeInteger(step) || step < 0 || step >= this.stepsPerEpoch) {
      throw new ArgumentValueError(`Expected an integer in [0, ${this.stepsPerEpoch}) for step but received ${describeValue(step)}`);
    }
    if (!Number.isSafeInteger(epochIndex) || epochIndex < 0) {
      throw new ArgumentValueError(`Expected a non-negative integer for epochIndex but received ${describeValue(epochIndex)}`);
    }
    const source: BatchSource = this.init;
    const plan: BatchPlan = { ...this.init, normalization: affineNormalization(this.init.normalization, this.init.channels) };
    if (this.batchAtOrder?.epoch !== epochIndex) {
      this.batchAtOrder = { epoch: epochIndex, order: epochOrder(this.init.count, this.init.shuffle, this.init.seed, epochIndex) };
    }
    return this.toBatch(buildBatch(source, plan, this.batchAtOrder.order, epochIndex, step), step);
  }

  /** Stop the worker. Awaiting iterations fail with DisposedError; further epoch() calls throw it. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.failAll(new DisposedError('DataLoader'));
    const worker = this.worker;
    this.worker = undefined;
    this.port?.close();
    this.port = undefined;
    if (worker !== undefined) await worker.terminate();
  }

  // -------------------------------------------------------------------------------------------------------------

  private async *iterate(epochIndex: number, startStep: number): AsyncGenerator<Batch, void, undefined> {
    if (this.closed) throw new DisposedError('DataLoader');
    if (this.iterating) {
      throw new RepvggError(
        'ERR_DATA_LOADER',
        'DataLoader.epoch() was called while another epoch is being iterated; finish or break out of it first',
      );
    }
    if (startStep >= this.stepsPerEpoch) return;
    this.iterating = true;
    let run: Run | undefined;
    let finished = false;
    try {
      run = this.adoptOrStart(epochIndex, startStep);
      for (let step = startStep; step < this.stepsPerEpoch; step++) {
        const message = await this.take(run);
        if (message.step !== step) {
          throw new RepvggError('ERR_DATA_LOADER', `DataLoader worker sent step ${message.step} where step ${step} was due`);
        }
        // Hand the worker a credit before yielding, so it builds the next batch while the caller computes.
        if (step + this.prefetch < this.stepsPerEpoch) this.post({ type: 'credit', runId: run.id, credits: 1 });
        yield this.toBatch(
          { images: new Float32Array(message.images), labels: new Int32Array(message.labels), indices: new Int32Array(message.indices) },
          step,
        );
      }
      finished = true;
    } finally {
      this.iterating = false;
      if (run !== undefined) {
        this.runs.delete(run.id);
        if (!finished && !this.closed) this.post({ type: 'cancel', runId: run.id });
      }
      if (finished && this.prefetchNextEpoch && !this.closed && this.failure === undefined) {
        this.speculative = this.startRun(epochIndex + 1, 0);
      }
    }
  }

  private toBatch(raw: RawBatch, step: number): Batch {
    const { channels, height, width } = this.init;
    return {
      images: hostTensor(raw.images, [raw.labels.length, channels, height, width], 'batch images'),
      labels: raw.labels,
      indices: raw.indices,
      step,
    };
  }

  /** Use the next epoch's batches prefetched at the end of the previous one when they fit, else start afresh. */
  private adoptOrStart(epochIndex: number, startStep: number): Run {
    const speculative = this.speculative;
    this.speculative = undefined;
    if (speculative !== undefined) {
      if (speculative.epoch === epochIndex && speculative.startStep === startStep) return speculative;
      this.runs.delete(speculative.id);
      this.post({ type: 'cancel', runId: speculative.id });
    }
    return this.startRun(epochIndex, startStep);
  }

  private startRun(epochIndex: number, startStep: number): Run {
    const run: Run = { id: this.nextRunId++, epoch: epochIndex, startStep, queue: [], waiter: undefined };
    this.runs.set(run.id, run);
    this.post({ type: 'start', runId: run.id, epoch: epochIndex, startStep, credits: this.prefetch });
    return run;
  }

  /** The next batch of a run: at once when the worker has delivered it, else when it arrives. */
  private take(run: Run): Promise<BatchMessage> {
    if (run.queue.length === 0) this.drainPort();
    const ready = run.queue.shift();
    if (ready !== undefined) return Promise.resolve(ready);
    if (this.failure !== undefined) return Promise.reject(this.failure);
    const port = this.ensurePort();
    // Only an awaited batch keeps the process alive; an idle, forgotten loader does not.
    port.ref();
    return new Promise<BatchMessage>((resolve, reject) => {
      run.waiter = { resolve, reject };
    }).finally(() => {
      run.waiter = undefined;
      if (this.port === port) port.unref();
    });
  }

  /**
   * Take the batches that reached the port while the main thread was busy: they would otherwise wait for the
   * next event-loop turn, and compute would wait with them.
   */
  private drainPort(): void {
    if (this.port === undefined) return;
    for (let received = receiveMessageOnPort(this.port); received !== undefined; received = receiveMessageOnPort(this.port)) {
      this.onMessage(received.message as FromWorker);
    }
  }

  private post(message: ToWorker): void {
    if (this.failure !== undefined) return;
    this.ensurePort().postMessage(message);
  }

  /** Start the worker on first use; its channel's port is returned (unreferenced while nobody waits). */
  private ensurePort(): MessagePort {
    if (this.port !== undefined) return this.port;
    const { port1, port2 } = new MessageChannel();
    const workerData: WorkerData = { ...this.init, port: port2 };
    const worker = startWorker(new URL('./loader-worker.js', import.meta.url), { workerData, transferList: [port2] });
    worker.unref();
    port1.on('message', (message: FromWorker) => this.onMessage(message));
    port1.unref();
    worker.on('error', (error: Error) => {
      const wrapped = new RepvggError('ERR_DATA_LOADER', `DataLoader worker failed: ${error.message}`);
      wrapped.cause = error;
      this.failAll(wrapped);
    });
    worker.on('exit', (code) => {
      if (!this.closed && this.failure === undefined) {
        this.failAll(new RepvggError('ERR_DATA_LOADER', `DataLoader worker exited unexpectedly with code ${code}`));
      }
    });
    this.worker = worker;
    this.port = port1;
    return port1;
  }

  private onMessage(message: FromWorker): void {
    const run = this.runs.get(message.runId);
    if (run === undefined) return; // a cancelled run's batch that was already on its way
    if (run.waiter !== undefined) run.waiter.resolve(message);
    else run.queue.push(message);
  }

  private failAll(error: Error): void {
    this.failure ??= error;
    for (const run of this.runs.values()) run.waiter?.reject(error);
    this.runs.clear();
    this.speculative = undefined;
  }
}

export interface EvalBatchesOptions {
  /** Overrides the dataset's normalization. */
  readonly normalization?: Normalization;
  /** Default 3. */
  readonly prefetch?: number;
}

/**
 * Every sample of a dataset once, in order, unaugmented, in batches of `batchSize` (the last may be smaller):
 * an evaluation pass. The worker it uses is closed when the iteration ends or is broken out of.
 * @example for await (const { images, labels } of evalBatches(test, 500)) { ... }
 */
export function evalBatches(dataset: Dataset, batchSize: number, options: EvalBatchesOptions = {}): AsyncGenerator<Batch, void, undefined> {
  const loader = new DataLoader(dataset, {
    batchSize,
    shuffle: false,
    augment: false,
    seed: 0,
    prefetchNextEpoch: false,
    ...(options.prefetch === undefined ? {} : { prefetch: options.prefetch }),
    ...(options.normalization === undefined ? {} : { normalization: options.normalization }),
  });
  return (async function* () {
    try {
      yield* loader.epoch(0);
    } finally {
      await loader.close();
    }
  })();
}
