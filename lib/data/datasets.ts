// Labelled image datasets in memory: Fashion-MNIST from Debian's dataset-fashion-mnist package and user data
// from a pair of .npy files (`--train-npy x.npy,y.npy`). Every check happens here, before any training work.
// Not for: batching, shuffling or augmentation (loader.ts, transforms.ts).

import { access } from 'node:fs/promises';
import { basename, join } from 'node:path';

import { ArgumentTypeError, ArgumentValueError, ShapeError, describeValue, formatShape } from '../errors.js';
import { readNpy } from '../io/npy.js';
import { MAX_CLASSES } from '../models/repvgg.js';
import { readIdx } from './idx.js';
import { FASHION_MNIST_NORMALIZATION } from './transforms.js';
import type { Normalization } from './transforms.js';

/** Labelled images held in memory. */
export interface Dataset {
  /** (N, C, H, W) raw values: uint8 pixels or float32 data, before normalization. */
  readonly images: Uint8Array | Float32Array;
  /** (N) class of each image, in [0, numClasses). */
  readonly labels: Int32Array;
  readonly count: number;
  readonly channels: number;
  readonly height: number;
  readonly width: number;
  readonly numClasses: number;
  /** For messages and summaries, e.g. 'fashion-mnist/train' or 'x.npy'. */
  readonly name: string;
  /** How the loader turns raw values into network input; absent: scale 1/255 for uint8, values as given for float32. */
  readonly normalization?: Normalization;
  /** Human names of the classes, when known. */
  readonly classNames?: readonly string[];
}

/** Where Debian's dataset-fashion-mnist package puts the files. */
export const FASHION_MNIST_DIR = '/usr/share/datasets/fashion-mnist';

export const FASHION_MNIST_CLASSES: readonly string[] = [
  'T-shirt/top',
  'Trouser',
  'Pullover',
  'Dress',
  'Coat',
  'Sandal',
  'Shirt',
  'Sneaker',
  'Bag',
  'Ankle boot',
];

const FASHION_MNIST_FILES = {
  train: { images: 'train-images-idx3-ubyte', labels: 'train-labels-idx1-ubyte', count: 60000 },
  test: { images: 't10k-images-idx3-ubyte', labels: 't10k-labels-idx1-ubyte', count: 10000 },
} as const;

async function exists(path: string): Promise<boolean> {
  try {
    await access(path);
    return true;
  } catch {
    return false;
  }
}

/** The gzipped file if present (as Debian ships it), else the uncompressed one, else undefined. */
async function findIdxFile(dir: string, stem: string): Promise<string | undefined> {
  for (const name of [`${stem}.gz`, stem]) {
    const path = join(dir, name);
    if (await exists(path)) return path;
  }
  return undefined;
}

/**
 * Load a split of Fashion-MNIST (28 x 28 grey images of 10 clothing classes) from gzipped or plain IDX files.
 * @param split - 'train' (60000 images) or 'test' (10000 images).
 * @param dir - the folder holding the four IDX files.
 * @throws ArgumentValueError when the files are missing, saying how to install them.
 * @throws FormatError when a file is corrupt, truncated or does not have the expected shape.
 * @example const train = await loadFashionMnist('train'); // train.images: Uint8Array (60000, 1, 28, 28)
 */
export async function loadFashionMnist(split: 'train' | 'test', dir = FASHION_MNIST_DIR): Promise<Dataset> {
  const files = FASHION_MNIST_FILES[split];
  if (files === undefined) {
    throw new ArgumentValueError(`Expected 'train' or 'test' for split but received ${describeValue(split)}`);
  }
  const imagesPath = await findIdxFile(dir, files.images);
  const labelsPath = await findIdxFile(dir, files.labels);
  if (imagesPath === undefined || labelsPath === undefined) {
    const missing = imagesPath === undefined ? files.images : files.labels;
    throw new ArgumentValueError(
      `Expected the Fashion-MNIST files for --dataset fashion-mnist but received a folder '${dir}' without ${missing}.gz; ` +
        'install the Debian package dataset-fashion-mnist (sudo apt-get install dataset-fashion-mnist) or run `npm run setup`',
    );
  }
  const [images, labels] = await Promise.all([readIdx(imagesPath, 'fashion-mnist images'), readIdx(labelsPath, 'fashion-mnist labels')]);
  const expectImages = [files.count, 28, 28];
  if (images.shape.length !== 3 || images.shape.some((d, i) => d !== expectImages[i])) {
    throw new ShapeError(`Expected images of shape ${formatShape(expectImages)} in ${imagesPath} but received ${formatShape(images.shape)}`);
  }
  if (labels.shape.length !== 1 || labels.shape[0] !== files.count) {
    throw new ShapeError(`Expected labels of shape [${files.count}] in ${labelsPath} but received ${formatShape(labels.shape)}`);
  }
  const numClasses = FASHION_MNIST_CLASSES.length;
  const labels32 = new Int32Array(files.count);
  for (let i = 0; i < files.count; i++) {
    const label = labels.data[i] as number;
    if (label >= numClasses) {
      throw new ArgumentValueError(`Expected labels in [0, ${numClasses}) in ${labelsPath} but received ${label} at index ${i}`);
    }
    labels32[i] = label;
  }
  return {
    images: images.data,
    labels: labels32,
    count: files.count,
    channels: 1,
    height: 28,
    width: 28,
    numClasses,
    name: `fashion-mnist/${split}`,
    normalization: FASHION_MNIST_NORMALIZATION,
    classNames: FASHION_MNIST_CLASSES,
  };
}

export interface NpyDatasetOptions {
  /** Labels must lie in [0, numClasses); without it, numClasses is the largest label + 1. */
  readonly numClasses?: number;
  /** How the user named the files, for error messages; default '--train-npy'. */
  readonly argName?: string;
}

/**
 * Load images and labels from two .npy files.
 * Images: float32 or uint8, (N, C, H, W), or (N, H, W) for one channel. float32 data is used as given (no
 * normalization), uint8 pixels are scaled by 1/255. Labels: int64 or int32, (N), each in [0, numClasses).
 * @throws ArgumentValueError when a file is missing, a label is out of range or an image value is not finite.
 * @throws ArgumentTypeError for another dtype (e.g. float64 labels or images).
 * @throws ShapeError for a wrong rank or when images and labels disagree in number.
 * @throws FormatError when a file is not a valid .npy file.
 * @example await loadNpyDataset('x.npy', 'y.npy', { numClasses: 10 })
 */
export async function loadNpyDataset(xPath: string, yPath: string, options: NpyDatasetOptions = {}): Promise<Dataset> {
  const argName = options.argName ?? '--train-npy';
  const numClasses = options.numClasses;
  if (numClasses !== undefined && (!Number.isSafeInteger(numClasses) || numClasses < 1 || numClasses > MAX_CLASSES)) {
    throw new ArgumentValueError(`Expected an integer in [1, ${MAX_CLASSES}] for numClasses but received ${describeValue(numClasses)}`);
  }
  const [x, y] = await Promise.all([readNpy(xPath, argName), readNpy(yPath, argName)]);

  if (x.dtype !== 'float32' && x.dtype !== 'uint8') {
    throw new ArgumentTypeError(
      `Expected float32 or uint8 images for ${argName} but received '${xPath}' of dtype ${x.dtype}; ` +
        'convert it with x.astype(np.float32)',
    );
  }
  if (x.shape.length !== 4 && x.shape.length !== 3) {
    throw new ShapeError(
      `Expected images of shape [N, C, H, W] (or [N, H, W]) for ${argName} but received '${xPath}' of shape ${formatShape(x.shape)}`,
    );
  }
  const dims = x.shape.length === 4 ? x.shape : [x.shape[0] ?? 0, 1, x.shape[1] ?? 0, x.shape[2] ?? 0];
  const [count = 0, channels = 0, height = 0, width = 0] = dims;
  if (channels < 1 || height < 1 || width < 1) {
    throw new ShapeError(`Expected non-empty images for ${argName} but received '${xPath}' of shape ${formatShape(x.shape)}`);
  }

  if (y.dtype !== 'int64' && y.dtype !== 'int32') {
    throw new ArgumentTypeError(
      `Expected int64 or int32 labels for ${argName} but received '${yPath}' of dtype ${y.dtype}; ` +
        'convert it with y.astype(np.int64)',
    );
  }
  if (y.shape.length !== 1) {
    throw new ShapeError(`Expected labels of shape [N] for ${argName} but received '${yPath}' of shape ${formatShape(y.shape)}`);
  }
  if (y.shape[0] !== count) {
    throw new ShapeError(
      `Expected as many labels as images for ${argName} but received ${count} images in '${xPath}' and ${y.shape[0]} labels in '${yPath}'`,
    );
  }
  if (count === 0) throw new ShapeError(`Expected at least one image for ${argName} but received '${xPath}' with none`);

  if (x.dtype === 'float32') {
    const data = x.data;
    for (let i = 0; i < data.length; i++) {
      if (!Number.isFinite(data[i])) {
        throw new ArgumentValueError(
          `Expected finite image values for ${argName} but received ${data[i]} at element ${i} of '${xPath}'`,
        );
      }
    }
  }

  // Labels: range-check in the source type (an int64 may not fit int32), then convert. Without numClasses the class
  // count is the largest label + 1, which sizes the classifier: bounded so one stray label cannot ask for 2^31 classes.
  const limit = numClasses ?? MAX_CLASSES;
  const labels = new Int32Array(count);
  let maxLabel = 0;
  for (let i = 0; i < count; i++) {
    const raw = y.data[i] as number | bigint;
    const value = typeof raw === 'bigint' ? (raw >= 0n && raw < BigInt(limit) ? Number(raw) : -1) : raw;
    if (value < 0 || value >= limit) {
      const range =
        numClasses !== undefined
          ? `labels in [0, ${numClasses})`
          : raw < 0
            ? 'non-negative labels'
            : `labels below ${MAX_CLASSES} (the most classes supported)`;
      throw new ArgumentValueError(`Expected ${range} for ${argName} but received ${String(raw)} at index ${i} of '${yPath}'`);
    }
    labels[i] = value;
    if (value > maxLabel) maxLabel = value;
  }

  const dataset: Dataset = {
    images: x.data,
    labels,
    count,
    channels,
    height,
    width,
    numClasses: numClasses ?? maxLabel + 1,
    name: basename(xPath),
  };
  return x.dtype === 'uint8' ? { ...dataset, normalization: { scale: 1 / 255, mean: [0], std: [1] } } : dataset;
}

/**
 * Check that a Dataset object is internally consistent (array types and lengths, label range), e.g. one built
 * by hand rather than by the loaders above.
 * @throws ArgumentTypeError / ShapeError / ArgumentValueError naming `name`.
 */
export function checkDataset(dataset: Dataset, name = 'dataset'): Dataset {
  if (typeof dataset !== 'object' || dataset === null) {
    throw new ArgumentTypeError(`Expected a Dataset object for ${name} but received ${describeValue(dataset)}`);
  }
  const { images, labels, count, channels, height, width, numClasses } = dataset;
  for (const [key, value] of Object.entries({ count, channels, height, width, numClasses })) {
    const min = key === 'count' ? 0 : 1;
    if (!Number.isSafeInteger(value) || value < min) {
      throw new ArgumentValueError(`Expected an integer >= ${min} for ${name}.${key} but received ${describeValue(value)}`);
    }
  }
  if (!(images instanceof Uint8Array) && !(images instanceof Float32Array)) {
    throw new ArgumentTypeError(`Expected a Uint8Array or Float32Array for ${name}.images but received ${describeValue(images)}`);
  }
  if (!(labels instanceof Int32Array)) {
    throw new ArgumentTypeError(`Expected an Int32Array for ${name}.labels but received ${describeValue(labels)}`);
  }
  const shape = [count, channels, height, width];
  if (images.length !== count * channels * height * width) {
    throw new ShapeError(
      `Expected ${name}.images of ${count * channels * height * width} elements for shape ${formatShape(shape)} ` +
        `but received ${images.length}`,
    );
  }
  if (labels.length !== count) {
    throw new ShapeError(`Expected ${name}.labels of ${count} elements but received ${labels.length}`);
  }
  for (let i = 0; i < count; i++) {
    const label = labels[i] as number;
    if (label < 0 || label >= numClasses) {
      throw new ArgumentValueError(`Expected labels in [0, ${numClasses}) for ${name}.labels but received ${label} at index ${i}`);
    }
  }
  return dataset;
}
