// Timing one inference engine fairly: warm-up runs, then timed runs until a time budget is spent (at least a few),
// summarized as the median and the 10th/90th percentiles of images per second. Shared by `repvgg bench` and the
// developer benchmarks in bench/. Not for: what is timed (lib/bench/speed.ts builds the engines).

import { performance } from 'node:perf_hooks';

/** Images per second of one engine at one batch size. */
export interface Throughput {
  medianImagesPerSecond: number;
  p10ImagesPerSecond: number;
  p90ImagesPerSecond: number;
  timedRuns: number;
}

export interface MeasureOptions {
  /** Time budget for the timed runs (they continue until both this and minRuns are reached). */
  seconds: number;
  /** Untimed runs first (lazy allocation, caches, algorithm choice). Default 2. */
  warmupRuns?: number;
  /** Timed runs at least. Default 5. */
  minRuns?: number;
}

/** Linear interpolation between order statistics of an ascending array (q in [0, 1]). */
export function quantile(ascending: readonly number[], q: number): number {
  const position = (ascending.length - 1) * q;
  const below = Math.floor(position);
  const above = Math.min(below + 1, ascending.length - 1);
  return ascending[below]! + (ascending[above]! - ascending[below]!) * (position - below);
}

/** Times `run` (one batch of `batch` images per call) as MeasureOptions says. */
export async function measureThroughput(run: () => Promise<unknown>, batch: number, options: MeasureOptions): Promise<Throughput> {
  for (let i = 0; i < (options.warmupRuns ?? 2); i++) await run();
  const minRuns = options.minRuns ?? 5;
  const runSeconds: number[] = [];
  const start = performance.now();
  while (runSeconds.length < minRuns || performance.now() - start < options.seconds * 1000) {
    const runStart = performance.now();
    await run();
    runSeconds.push((performance.now() - runStart) / 1000);
  }
  const imagesPerSecond = runSeconds.map((s) => batch / s).sort((a, b) => a - b);
  return {
    medianImagesPerSecond: quantile(imagesPerSecond, 0.5),
    p10ImagesPerSecond: quantile(imagesPerSecond, 0.1),
    p90ImagesPerSecond: quantile(imagesPerSecond, 0.9),
    timedRuns: runSeconds.length,
  };
}
