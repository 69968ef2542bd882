// Public surface of the data pipeline: datasets (Fashion-MNIST, .npy, image folders), IDX files, image decoding
// and preprocessing, transforms and the loaders.
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
export {
  DEFAULT_MAX_PIXELS,
  IMAGENET_MEAN,
  IMAGENET_PREPROCESS,
  IMAGENET_STD,
  decodeImage,
  imagenetClassNames,
  imagenetPreprocess,
  preprocessBatch,
  preprocessImage,
  readLabelsFile,
} from './images.js';
export type { DecodeOptions, EvalPreprocess, ImageInput, PreprocessBatchOptions, PreprocessOptions, RgbImage } from './images.js';
export {
  IMG_EXTENSIONS,
  ImageFolderLoader,
  centerCropTransform,
  evalImageBatches,
  imagenetTrainTransform,
  scanImageFolder,
  smallImageTrainTransform,
} from './image-folder.js';
export type { ImageFolderDataset, ImageFolderLoaderOptions, ImageTransform } from './image-folder.js';
