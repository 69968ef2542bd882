// Timing inference engines fairly: warm-up runs, then timed runs until a time budget is spent (at least a few),
// summarized as the median and the 10th/90th percentiles of images per second. Engines compared with each other are
// timed in interleaved rounds (measureInterleaved) and compared round by round (pairedRatio), so that a machine whose
// speed drifts by 10-20% within a minute (seen on the shared 2-core machines) slows all of them alike instead of
// whichever ran during a slow moment. Shared by `repvgg bench` and the developer benchmarks in bench/. Not for: what is
// timed (lib/bench/speed.ts builds the engines).

import { performance } from 'node:perf_hooks';

import { ArgumentValueError } from '../errors.js';

/** Images per second of one engine at one batch size. */
export interface Throughput {
  medianImagesPerSecond: number;
  p10ImagesPerSecond: number;
  p90ImagesPerSecond: number;
  timedRuns: number;
  /** measureInterleaved: the median images per second of each round, for ratios of paired rounds (pairedRatio). */
  roundMedians?: number[];
}

export interface MeasureOptions {
  /** Time budget for the timed runs (they continue until both this and minRuns are reached). */
  seconds: number;
  /** Untimed runs first (lazy allocation, caches, algorithm choice). Default 2. */
  warmupRuns?: number;
  /** Timed runs at least. Default 5. */
  minRuns?: number;
  /** Milliseconds clock (tests pass their own). Default performance.now. */
  now?: () => number;
}

/** Linear interpolation between order statistics of an ascending array (q in [0, 1]). */
export function quantile(ascending: readonly number[], q: number): number {
  const position = (ascending.length - 1) * q;
  const below = Math.floor(position);
  const above = Math.min(below + 1, ascending.length - 1);
  return ascending[below]! + (ascending[above]! - ascending[below]!) * (position - below);
}

export interface InterleavedOptions extends MeasureOptions {
  /** Rounds; in each, every engine runs for seconds / rounds (and at least minRuns / rounds times). Default 5. */
  rounds?: number;
}

/** Most rounds accepted: far beyond any useful interleaving, and a bound on the loop. */
export const MAX_ROUNDS = 1000;

/** Times `run` (one batch of `batch` images per call) as MeasureOptions says. */
export async function measureThroughput(run: () => Promise<unknown>, batch: number, options: MeasureOptions): Promise<Throughput> {
  return (await measureInterleaved({ run }, batch, { ...options, rounds: 1 })).run;
}

/**
 * Times several engines on the same work in turns: each one's warm-up runs, then `rounds` rounds in which every
 * engine runs for `seconds / rounds`, in the given order in even rounds and in reverse in odd ones (so that neither
 * the engine run first nor the one run after a given other is favoured). Each engine's statistics come from all
 * its timed runs.
 * @throws ArgumentValueError for rounds outside 1..MAX_ROUNDS or no engines.
 */
export async function measureInterleaved<K extends string>(
  runs: Readonly<Record<K, () => Promise<unknown>>>, batch: number, options: InterleavedOptions,
): Promise<Record<K, Throughput>> {
  const keys = Object.keys(runs) as K[];
  const rounds = options.rounds ?? 5;
  if (!Number.isInteger(rounds) || rounds < 1 || rounds > MAX_ROUNDS) {
    throw new ArgumentValueError(`Expected an integer from 1 to ${MAX_ROUNDS} for rounds but received ${rounds}`);
  }
  if (keys.length === 0) throw new ArgumentValueError('Expected at least one engine to time but received none');
  const now = options.now ?? (() => performance.now());
  for (const key of keys) {
    for (let i = 0; i < (options.warmupRuns ?? 2); i++) await runs[key]();
  }
  const runsPerRound = Math.ceil((options.minRuns ?? 5) / rounds);
  const roundMs = (options.seconds * 1000) / rounds;
  const runSeconds = new Map<K, number[][]>(keys.map((key) => [key, []])); // [round][run]
  for (let round = 0; round < rounds; round++) {
    for (const key of round % 2 === 0 ? keys : [...keys].reverse()) {
      const times: number[] = [];
      const start = now();
      for (let count = 0; count < runsPerRound || now() - start < roundMs; count++) {
        const runStart = now();
        await runs[key]();
        times.push((now() - runStart) / 1000);
      }
      runSeconds.get(key)!.push(times);
    }
  }
  const result = {} as Record<K, Throughput>;
  for (const key of keys) {
    const perRound = runSeconds.get(key)!;
    result[key] = summarize(perRound.flat(), batch);
    if (rounds > 1) result[key].roundMedians = perRound.map((times) => summarize(times, batch).medianImagesPerSecond);
  }
  return result;
}

/**
 * How many times faster `a` ran than `b`, from interleaved rounds: the median over rounds of the ratio of their
 * round medians, so that each ratio compares two turns a few seconds apart. Without round medians (a single round),
 * the ratio of the overall medians.
 */
export function pairedRatio(a: Throughput, b: Throughput): number {
  const rounds = a.roundMedians?.length ?? 0;
  if (rounds === 0 || rounds !== b.roundMedians?.length) return a.medianImagesPerSecond / b.medianImagesPerSecond;
  const ratios = a.roundMedians!.map((value, round) => value / b.roundMedians![round]!).sort((x, y) => x - y);
  return quantile(ratios, 0.5);
}

/** Median and 10th/90th percentiles of images per second over runs of `batch` images that took `runSeconds`. */
function summarize(runSeconds: readonly number[], batch: number): Throughput {
  const imagesPerSecond = runSeconds.map((s) => batch / s).sort((a, b) => a - b);
  return {
    medianImagesPerSecond: quantile(imagesPerSecond, 0.5),
    p10ImagesPerSecond: quantile(imagesPerSecond, 0.1),
    p90ImagesPerSecond: quantile(imagesPerSecond, 0.9),
    timedRuns: runSeconds.length,
  };
}
