// Prometheus metrics of one inference server, on that server's own prom-client Registry (no process-wide state):
// request outcomes, request/queue/compute latency, batch sizes, queue depth, in-flight images, images classified.
// Not for: HTTP routing or the batcher's logic (server.ts wires the batcher's hooks and getters to these).

import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/** How an inference request ended; 'error' is a server fault (HTTP 500). */
export type RequestOutcome = 'success' | 'rejected' | 'timed_out' | 'cancelled' | 'bad_input' | 'error';

/** Seconds: from a sub-millisecond batch on a tiny network to a 30 s deadline. */
const LATENCY_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

export interface ServerMetrics {
  readonly registry: Registry;
  readonly requests: Counter<'outcome'>;
  readonly requestSeconds: Histogram<'outcome'>;
  readonly queueSeconds: Histogram;
  readonly computeSeconds: Histogram;
  readonly batchSize: Histogram;
  readonly images: Counter;
}

/**
 * Creates the metrics on a new Registry. queueDepth and inFlight are read at scrape time.
 * @param maxBatch the batcher's maxBatch: the batch-size histogram has one bucket per power of two up to it.
 */
export function createServerMetrics(maxBatch: number, queueDepth: () => number, inFlight: () => number): ServerMetrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const batchBuckets: number[] = [];
  for (let size = 1; size < maxBatch; size *= 2) batchBuckets.push(size);
  batchBuckets.push(maxBatch);
  const registers = [registry];
  new Gauge({
    name: 'repvgg_queue_images',
    help: 'Images waiting for a batch (queued, decoding or ready)',
    registers,
    collect() {
      this.set(queueDepth());
    },
  });
  new Gauge({
    name: 'repvgg_in_flight_images',
    help: 'Images in the batch being computed',
    registers,
    collect() {
      this.set(inFlight());
    },
  });
  return {
    registry,
    requests: new Counter({ name: 'repvgg_requests_total', help: 'Inference requests by outcome', labelNames: ['outcome'], registers }),
    requestSeconds: new Histogram({
      name: 'repvgg_request_duration_seconds',
      help: 'Inference request latency, from arrival to response, by outcome',
      labelNames: ['outcome'],
      buckets: LATENCY_BUCKETS,
      registers,
    }),
    queueSeconds: new Histogram({
      name: 'repvgg_queue_duration_seconds',
      help: 'Time a request waited (including decoding) before its batch started',
      buckets: LATENCY_BUCKETS,
      registers,
    }),
    computeSeconds: new Histogram({ name: 'repvgg_compute_duration_seconds', help: 'Network time per batch', buckets: LATENCY_BUCKETS, registers }),
    batchSize: new Histogram({ name: 'repvgg_batch_size', help: 'Images per computed batch', buckets: batchBuckets, registers }),
    images: new Counter({ name: 'repvgg_images_total', help: 'Images classified successfully', registers }),
  };
}
