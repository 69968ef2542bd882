// Public surface of the data pipeline: datasets (Fashion-MNIST, .npy), IDX files, transforms and the DataLoader.
// Not for: anything beyond re-exports (the worker file and the message protocol stay internal).

export { FASHION_MNIST_CLASSES, FASHION_MNIST_DIR, checkDataset, loadFashionMnist, loadNpyDataset } from './datasets.js';
export type { Dataset, NpyDatasetOptions } from './datasets.js';
export { decodeIdx, isGzip, readIdx } from './idx.js';
export type { IdxArray } from './idx.js';
export { DataLoader, evalBatches } from './loader.js';
export type { Batch, DataLoaderOptions, EvalBatchesOptions } from './loader.js';
export { buildBatch, stepsPerEpoch } from './batch.js';
export type { BatchPlan, BatchSource, RawBatch } from './batch.js';
export { Rng, deriveKey, epochOrder } from './random.js';
export {
  DEFAULT_AUGMENT,
  FASHION_MNIST_MEAN,
  FASHION_MNIST_NORMALIZATION,
  FASHION_MNIST_STD,
  affineNormalization,
  channelStatistics,
  checkAugment,
  checkNormalization,
  drawCropFlip,
  horizontalFlip,
  identityCropFlip,
  normalizeImage,
  padCrop,
  writeSample,
} from './transforms.js';
export type { AffineNormalization, AugmentOptions, CropFlip, ImageGeometry, Normalization } from './transforms.js';
