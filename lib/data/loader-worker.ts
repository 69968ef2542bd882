// The DataLoader's worker thread: builds batches ahead of the consumer and transfers them to the main thread,
// so shuffling, cropping, flipping and normalizing never run on the event loop that drives compute.
// Not for: import from anywhere but `new Worker(...)` in loader.ts (it starts listening on import).

import { isMainThread, workerData } from 'node:worker_threads';

import { buildBatch, stepsPerEpoch } from './batch.js';
import type { BatchPlan, BatchSource } from './batch.js';
import type { BatchMessage, ToWorker, WorkerData } from './loader-protocol.js';
import { epochOrder } from './random.js';
import { affineNormalization } from './transforms.js';

interface Run {
  readonly epoch: number;
  readonly order: Int32Array; // (N)
  nextStep: number;
  credits: number;
}

if (isMainThread) throw new Error('loader-worker.js must be started as a worker thread by DataLoader');
const init = workerData as WorkerData;
const port = init.port;
const source: BatchSource = init;
const plan: BatchPlan = {
  batchSize: init.batchSize,
  shuffle: init.shuffle,
  augment: init.augment,
  seed: init.seed,
  dropLast: init.dropLast,
  normalization: affineNormalization(init.normalization, init.channels),
};
const steps = stepsPerEpoch(init.count, init.batchSize, init.dropLast);

const runs = new Map<number, Run>();
/** Recent epochs' orders: a resumed or repeated epoch does not reshuffle; two cover current + next epoch. */
const orders = new Map<number, Int32Array>();
let scheduled = false;

function orderOf(epoch: number): Int32Array {
  let order = orders.get(epoch);
  if (order === undefined) {
    order = epochOrder(init.count, init.shuffle, init.seed, epoch);
    orders.set(epoch, order);
    for (const key of orders.keys()) if (orders.size > 2 && key !== epoch) orders.delete(key);
  }
  return order;
}

/** The oldest run (lowest id: the one being consumed before any prefetched next epoch) that may build a batch. */
function nextRun(): [number, Run] | undefined {
  let best: [number, Run] | undefined;
  for (const entry of runs) {
    const run = entry[1];
    if (run.credits > 0 && run.nextStep < steps && (best === undefined || entry[0] < best[0])) best = entry;
  }
  return best;
}

/** Build one batch per macrotask, so that credit and cancel messages are handled between batches. */
function schedule(): void {
  if (scheduled || nextRun() === undefined) return;
  scheduled = true;
  setImmediate(work);
}

function work(): void {
  scheduled = false;
  const entry = nextRun();
  if (entry === undefined) return;
  const [runId, run] = entry;
  const step = run.nextStep;
  const batch = buildBatch(source, plan, run.order, run.epoch, step);
  run.nextStep++;
  run.credits--;
  if (run.nextStep >= steps) runs.delete(runId);
  const message: BatchMessage = {
    type: 'batch',
    runId,
    step,
    images: batch.images.buffer as ArrayBuffer,
    labels: batch.labels.buffer as ArrayBuffer,
    indices: batch.indices.buffer as ArrayBuffer,
  };
  port.postMessage(message, [message.images, message.labels, message.indices]);
  schedule();
}

port.on('message', (message: ToWorker) => {
  switch (message.type) {
    case 'start':
      runs.set(message.runId, {
        epoch: message.epoch,
        order: orderOf(message.epoch),
        nextStep: message.startStep,
        credits: message.credits,
      });
      break;
    case 'credit': {
      const run = runs.get(message.runId);
      if (run !== undefined) run.credits += message.credits;
      break;
    }
    case 'cancel':
      runs.delete(message.runId);
      break;
  }
  schedule();
});
