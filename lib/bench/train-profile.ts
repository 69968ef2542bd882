// Where a training step's time goes, op by op: wraps a TrainBackend so that every method call is counted and timed.
// Two modes: 'async' times each call from the call until its promise settles (on the GPU that is the host's cost of
// enqueueing the op: argument checks, the hand-off to the addon's FIFO thread and back); 'sync' also waits for the
// device after every op (a download of one value), so an op's time includes what the GPU spent on it. A step that
// takes about the async sum is host-bound; one that takes about the sync sum minus the syncs is device-bound.
// What `node dist/bench/train.js --profile` prints.
// Not for: timing whole steps (bench/train.ts), or inference (the plan report's per-layer profile).

import { PerformanceObserver, type PerformanceEntry } from 'node:perf_hooks';

import type { TrainBackend } from '../autograd/backend.js';

type Shaped = { readonly shape: readonly number[] };

export type ProfileMode = 'async' | 'sync';

/** Calls of one backend method and the milliseconds they took, summed. */
export interface OpTime {
  calls: number;
  ms: number;
  /** Device syncs included in ms ('sync' mode: one per call that returns a promise, downloads excepted). */
  syncs: number;
}

export interface ProfiledBackend<V extends Shaped, G> {
  /** Use this one for the model, the optimizer and the tape. */
  backend: TrainBackend<V, G>;
  /** Per method name, since the last reset(); in 'sync' mode each op's time includes the sync after it. */
  times: Map<string, OpTime>;
  /** Mean milliseconds of one device sync with nothing queued (over `runs` syncs): what 'sync' mode adds per op. */
  idleSyncMs(runs: number): Promise<number>;
  reset(): void;
}

/**
 * The backend with every method timed (see the file header for the modes). Methods a method calls on the inner
 * backend itself are not counted again.
 * @example const p = profiledBackend(cudaBackend(), 'sync'); ... train a step with p.backend ...; console.log(p.times);
 */
export function profiledBackend<V extends Shaped, G>(inner: TrainBackend<V, G>, mode: ProfileMode): ProfiledBackend<V, G> {
  const times = new Map<string, OpTime>();
  let token: V | undefined;
  const sync = async (): Promise<void> => {
    token ??= inner.scalar(0);
    await inner.download(token);
  };
  const record = (name: string, ms: number, synced: boolean): void => {
    const time = times.get(name) ?? { calls: 0, ms: 0, syncs: 0 };
    time.calls++;
    time.ms += ms;
    if (synced) time.syncs++;
    times.set(name, time);
  };
  const wrapped: Record<string, unknown> = {};
  for (const [name, value] of Object.entries(inner)) {
    if (typeof value !== 'function') {
      wrapped[name] = value;
      continue;
    }
    const method = value as (...args: unknown[]) => unknown;
    wrapped[name] = (...args: unknown[]): unknown => {
      const started = performance.now();
      const result = method.apply(inner, args);
      if (!(result instanceof Promise)) {
        record(name, performance.now() - started, false);
        return result;
      }
      return (async () => {
        const settled: unknown = await result;
        const synced = mode === 'sync' && name !== 'download' && name !== 'downloadGradient';
        if (synced) await sync();
        record(name, performance.now() - started, synced);
        return settled;
      })();
    };
  }
  return {
    backend: wrapped as unknown as TrainBackend<V, G>,
    times,
    idleSyncMs: async (runs) => {
      await sync();
      const started = performance.now();
      for (let i = 0; i < runs; i++) await sync();
      return (performance.now() - started) / runs;
    },
    reset: () => times.clear(),
  };
}

/** Garbage collections of this isolate while `work` ran: how many, and their summed pause in milliseconds. */
export async function garbageCollectionsDuring<T>(work: () => Promise<T>): Promise<{ result: T; collections: number; ms: number }> {
  const entries: PerformanceEntry[] = [];
  const observer = new PerformanceObserver((list) => entries.push(...list.getEntries()));
  observer.observe({ entryTypes: ['gc'] });
  try {
    const result = await work();
    await new Promise((resolve) => setImmediate(resolve)); // entries are delivered asynchronously
    entries.push(...observer.takeRecords());
    return { result, collections: entries.length, ms: entries.reduce((sum, e) => sum + e.duration, 0) };
  } finally {
    observer.disconnect();
  }
}
