// Building one batch from a dataset: the pure function that the loader's worker thread runs, shared with the
// main thread so tests (and callers without threads) can rebuild any batch of any epoch directly.
// Not for: threads, prefetching or flow control (loader.ts, loader-worker.ts).

import type { AffineNormalization, AugmentOptions, ImageGeometry } from './transforms.js';
import { drawCropFlip, identityCropFlip, writeSample } from './transforms.js';

/** The sample data a batch is cut from (the loader passes SharedArrayBuffer-backed views to its worker). */
export interface BatchSource extends ImageGeometry {
  readonly images: Uint8Array | Float32Array; // (N, C, H, W) raw
  readonly labels: Int32Array; // (N)
  readonly count: number;
}

/** Everything besides the data and the epoch that decides a batch's content. */
export interface BatchPlan {
  readonly batchSize: number;
  readonly shuffle: boolean;
  /** null: no augmentation (every sample is taken as is). */
  readonly augment: AugmentOptions | null;
  readonly seed: number;
  readonly dropLast: boolean;
  readonly normalization: AffineNormalization;
}

/** A built batch as raw arrays (the form that crosses threads). */
export interface RawBatch {
  readonly images: Float32Array; // (B, C, H, W) normalized
  readonly labels: Int32Array; // (B)
  readonly indices: Int32Array; // (B) dataset index of each sample
}

/** Batches per epoch: floor(N / B) with dropLast, else ceil(N / B). */
export function stepsPerEpoch(count: number, batchSize: number, dropLast: boolean): number {
  return dropLast ? Math.floor(count / batchSize) : Math.ceil(count / batchSize);
}

/**
 * Build batch `step` of an epoch: positions [step * B, min((step + 1) * B, N)) of `order`.
 * @param order - Int32Array (N): the epoch's visiting order (see epochOrder in random.ts).
 */
export function buildBatch(source: BatchSource, plan: BatchPlan, order: Int32Array, epoch: number, step: number): RawBatch {
  const { channels, height, width } = source;
  const sampleSize = channels * height * width;
  const start = step * plan.batchSize;
  const size = Math.min(plan.batchSize, source.count - start);
  const images = new Float32Array(size * sampleSize);
  const labels = new Int32Array(size);
  const indices = new Int32Array(size);
  const padding = plan.augment?.padding ?? 0;
  const still = identityCropFlip(padding);
  for (let i = 0; i < size; i++) {
    const position = start + i;
    const index = order[position] as number;
    const cropFlip = plan.augment === null ? still : drawCropFlip(plan.seed, epoch, position, plan.augment);
    writeSample(source.images, index * sampleSize, source, padding, cropFlip, plan.normalization, images, i * sampleSize);
    labels[i] = source.labels[index] as number;
    indices[i] = index;
  }
  return { images, labels, indices };
}
