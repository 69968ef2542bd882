// Image-folder datasets (torchvision ImageFolder: one subfolder per class) and a loader with DataLoader's
// interface that decodes and augments on worker threads (RandomResizedCrop + flip, or pad-crop + flip for small
// images) and prefetches batches, each batch a function of (seed, epoch, step) only.
// Not for: decoding and the evaluation transform themselves (images.ts), or in-memory datasets (loader.ts).

import { readdir, stat } from 'node:fs/promises';
import type { Dirent } from 'node:fs';
import { join, resolve } from 'node:path';

import { ArgumentTypeError, ArgumentValueError, DisposedError, FormatError, RepvggError, describeValue } from '../errors.js';
import { hostTensor } from '../tensor.js';
import { stepsPerEpoch } from './batch.js';
import {
  DEFAULT_DECODE_CONCURRENCY,
  IMAGENET_MEAN,
  IMAGENET_STD,
  centerCropTransform,
  checkChannelStatistics,
  createLimiter,
  decodeWorkerPool,
  normalizationOf,
  outputSize,
  resolveTransform,
} from './images.js';
import type { DecodeWorkerPool, EvalPreprocess, ImageTransform, ResolvedTransform, SampleTask } from './images.js';
import type { Batch } from './loader.js';
import { STREAM_AUGMENT, deriveKey, epochOrder } from './random.js';
import type { Normalization } from './transforms.js';

// The training transforms live in images.ts (the decoding workers apply them); they are part of this module's API.
export { centerCropTransform, imagenetTrainTransform, randomResizedCropBox, smallImageTrainTransform } from './images.js';
export type { CenterCropTransform, ImageTransform, PadCropTransform, RandomResizedCropTransform } from './images.js';

// ---------------------------------------------------------------------------------------------------------------
// Scanning a folder

/** torchvision's IMG_EXTENSIONS (matched case-insensitively). Files sharp cannot decode fail when read. */
export const IMG_EXTENSIONS: readonly string[] = ['.jpg', '.jpeg', '.png', '.ppm', '.bmp', '.pgm', '.tif', '.tiff', '.webp'];

/** Default bounds of a folder scan: ImageNet's training set (1.28 M files, 1000 classes, depth 1) fits easily. */
export const DEFAULT_MAX_FILES = 5_000_000;
export const DEFAULT_MAX_CLASSES = 100_000;
export const DEFAULT_MAX_DEPTH = 8;

export interface ScanOptions {
  /** Most image files accepted in total. Default DEFAULT_MAX_FILES. */
  readonly maxFiles?: number;
  /** Most class folders accepted. Default DEFAULT_MAX_CLASSES. */
  readonly maxClasses?: number;
  /** Deepest folder level searched below a class folder (0: only its own files). Default DEFAULT_MAX_DEPTH. */
  readonly maxDepth?: number;
}

/** A folder of images by class, as torchvision's ImageFolder sees it. */
export interface ImageFolderDataset {
  /** The folder scanned (resolved to an absolute path). */
  readonly root: string;
  /** Class names (subfolder names) sorted: class i is classes[i]. */
  readonly classes: readonly string[];
  /** (N) image paths: classes in order, each class's files in torchvision's walk order. */
  readonly files: readonly string[];
  /** (N) class index of each file. */
  readonly labels: Int32Array;
  readonly count: number;
}

/** Code-unit order, as Python's sorted() orders these names (identical outside astral characters). */
function byName(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function positiveInteger(value: unknown, name: string): number {
  if (!Number.isSafeInteger(value) || (value as number) < 1) {
    throw new ArgumentValueError(`Expected a positive integer for ${name} but received ${describeValue(value)}`);
  }
  return value as number;
}

async function listFolder(path: string): Promise<Dirent[]> {
  try {
    return await readdir(path, { withFileTypes: true });
  } catch (error) {
    const wrapped = new FormatError(`Expected a readable folder for ${path} but received an error: ${(error as Error).message}`);
    wrapped.cause = error;
    throw wrapped;
  }
}

/** Dirent.isDirectory() is false for a link; torchvision follows links (os.walk followlinks=True), so stat those. */
async function isFolder(entry: Dirent, parent: string): Promise<boolean> {
  if (entry.isDirectory()) return true;
  if (!entry.isSymbolicLink()) return false;
  try {
    return (await stat(join(parent, entry.name))).isDirectory();
  } catch {
    return false; // a dangling link is neither a class nor an image
  }
}

function isImageFile(name: string): boolean {
  const lower = name.toLowerCase();
  return IMG_EXTENSIONS.some((extension) => lower.endsWith(extension));
}

/**
 * Scan `root` like torchvision's ImageFolder: every non-hidden subfolder is a class (sorted by name -> index);
 * a class's images are its files with an IMG_EXTENSIONS extension, found walking its subfolders (sorted by folder
 * path, files sorted by name), hidden files and folders ignored. Files are only listed here, not read.
 * @throws FormatError naming the folder when it is unreadable, has no class subfolders, a class has no images, or
 *   a bound (maxFiles, maxClasses) is exceeded; ArgumentValueError for bad options.
 * @example const train = await scanImageFolder('imagenet/train'); train.classes.length // 1000
 */
export async function scanImageFolder(root: string, options: ScanOptions = {}): Promise<ImageFolderDataset> {
  if (typeof root !== 'string' || root.length === 0) {
    throw new ArgumentTypeError(`Expected a folder path for root but received ${describeValue(root)}`);
  }
  const maxFiles = positiveInteger(options.maxFiles ?? DEFAULT_MAX_FILES, 'maxFiles');
  const maxClasses = positiveInteger(options.maxClasses ?? DEFAULT_MAX_CLASSES, 'maxClasses');
  const maxDepth = options.maxDepth ?? DEFAULT_MAX_DEPTH;
  if (!Number.isSafeInteger(maxDepth) || maxDepth < 0) {
    throw new ArgumentValueError(`Expected a non-negative integer for maxDepth but received ${describeValue(maxDepth)}`);
  }
  const folder = resolve(root);
  const classes: string[] = [];
  for (const entry of await listFolder(folder)) {
    if (!entry.name.startsWith('.') && (await isFolder(entry, folder))) classes.push(entry.name);
    if (classes.length > maxClasses) {
      throw new FormatError(`Expected at most ${maxClasses} class folders (maxClasses) in ${folder} but found more`);
    }
  }
  if (classes.length === 0) {
    throw new FormatError(`Expected one subfolder per class in ${folder} but received a folder without subfolders`);
  }
  classes.sort(byName);
  const files: string[] = [];
  const labels: number[] = [];
  const empty: string[] = [];
  for (let label = 0; label < classes.length; label++) {
    // torchvision: for root, _, names in sorted(os.walk(class_dir)): for name in sorted(names). Collect every
    // folder's images, then order the folders by path.
    const found: { path: string; images: string[] }[] = [];
    const pending: { path: string; depth: number }[] = [{ path: join(folder, classes[label] as string), depth: 0 }];
    let classFiles = 0;
    for (let next = pending.pop(); next !== undefined; next = pending.pop()) {
      const images: string[] = [];
      for (const entry of await listFolder(next.path)) {
        if (entry.name.startsWith('.')) continue;
        if (await isFolder(entry, next.path)) {
          if (next.depth < maxDepth) pending.push({ path: join(next.path, entry.name), depth: next.depth + 1 });
        } else if (isImageFile(entry.name)) {
          images.push(entry.name);
        }
      }
      classFiles += images.length;
      if (files.length + classFiles > maxFiles) {
        throw new FormatError(`Expected at most ${maxFiles} image files (maxFiles) in ${folder} but found more`);
      }
      found.push({ path: next.path, images: images.sort(byName) });
    }
    found.sort((a, b) => byName(a.path, b.path));
    for (const { path, images } of found) {
      for (const name of images) {
        files.push(join(path, name));
        labels.push(label);
      }
    }
    if (classFiles === 0) empty.push(classes[label] as string);
  }
  if (empty.length > 0) {
    throw new FormatError(
      `Expected image files (${IMG_EXTENSIONS.join(' ')}) in every class folder of ${folder} but received none in ` +
        `${empty.slice(0, 5).join(', ')}${empty.length > 5 ? ` and ${empty.length - 5} more` : ''}`,
    );
  }
  return { root: folder, classes, files, labels: Int32Array.from(labels), count: files.length };
}

// ---------------------------------------------------------------------------------------------------------------
// The loader

export interface ImageFolderLoaderOptions {
  /** Samples per batch; the last batch of an epoch is smaller unless dropLast. */
  readonly batchSize: number;
  /** Visit the files in a new seeded order every epoch; false: the dataset order. */
  readonly shuffle: boolean;
  /** Any safe integer; with the epoch index it decides the order and every augmentation. */
  readonly seed: number;
  /** imagenetTrainTransform(), smallImageTrainTransform(size) or centerCropTransform(resize, crop). */
  readonly transform: ImageTransform;
  /** Per-channel mean and std of Normalize. Default ImageNet's. */
  readonly mean?: readonly [number, number, number];
  readonly std?: readonly [number, number, number];
  /** Leave out the last, smaller batch of each epoch. Default false. */
  readonly dropLast?: boolean;
  /** Batches built ahead of the consumer. Default 3. */
  readonly prefetch?: number;
  /** Images decoded at once (each holds its decoded pixels). Default DEFAULT_DECODE_CONCURRENCY. */
  readonly concurrency?: number;
  /** Refuse images over this many pixels. Default images.ts DEFAULT_MAX_PIXELS. */
  readonly maxPixels?: number;
  /** After an epoch's last batch, start building the next epoch's first batches. Default true. */
  readonly prefetchNextEpoch?: boolean;
}

/** A pass over steps [startStep, stepsPerEpoch) of one epoch, with the batches being built ahead. */
interface Run {
  readonly epoch: number;
  readonly startStep: number;
  readonly order: Int32Array; // (N)
  /** Batches started, by step; each promise already has a rejection handler (errors surface when taken). */
  readonly building: Map<number, Promise<Batch>>;
  nextToStart: number;
  cancelled: boolean;
}

/**
 * Seeded, resumable, augmented mini-batches of an image folder, with the interface of DataLoader.
 *
 * Batch `step` of epoch `e` holds positions [step * B, (step + 1) * B) of the epoch's order (a permutation keyed
 * by (seed, e) when shuffling), and each sample's random crop and flip come from a generator keyed by (seed, e,
 * position): a batch depends on nothing else, so a resumed run sees the same batches.
 *
 * Each image is decoded, augmented and normalized on the decoding worker threads (images.ts decodeWorkerPool),
 * `concurrency` images at a time; the main thread only copies finished samples into the batch. `prefetch` batches
 * are in the making while the consumer works on the current one. A file that cannot be decoded fails its batch with the
 * decoder's FormatError, which names the file (never skipped).
 *
 * @example
 * const train = await scanImageFolder('imagenet/train');
 * const loader = new ImageFolderLoader(train, { batchSize: 64, shuffle: true, seed: 0, transform: imagenetTrainTransform() });
 * for await (const { images, labels, step } of loader.epoch(0)) { ... }
 * await loader.close();
 */
export class ImageFolderLoader {
  readonly dataset: ImageFolderDataset;
  readonly batchSize: number;
  readonly stepsPerEpoch: number;
  /** Side of the square images produced. */
  readonly imageSize: number;
  /** The normalization applied, as recorded in weights metadata. */
  readonly normalization: Normalization;
  private readonly transform: ResolvedTransform;
  private readonly mean: readonly number[];
  private readonly std: readonly number[];
  private readonly pool: DecodeWorkerPool;
  private readonly seed: number;
  private readonly shuffle: boolean;
  private readonly prefetch: number;
  private readonly prefetchNextEpoch: boolean;
  private readonly maxPixels: number | undefined;
  private readonly limit: <T>(task: () => Promise<T>) => Promise<T>;
  private speculative: Run | undefined;
  /** The run being iterated, if any. */
  private active: Run | undefined;
  private iterating = false;
  private closed = false;

  /** @throws ArgumentTypeError / ArgumentValueError naming the option at fault. */
  constructor(dataset: ImageFolderDataset, options: ImageFolderLoaderOptions) {
    const valid = typeof dataset === 'object' && dataset !== null && dataset.labels instanceof Int32Array;
    if (!valid || dataset.files.length !== dataset.labels.length) {
      throw new ArgumentTypeError(`Expected an ImageFolderDataset (scanImageFolder) for dataset but received ${describeValue(dataset)}`);
    }
    if (typeof options !== 'object' || options === null) {
      throw new ArgumentTypeError(`Expected an options object for ImageFolderLoader but received ${describeValue(options)}`);
    }
    const { batchSize, shuffle, seed, dropLast = false, prefetch = 3, prefetchNextEpoch = true } = options;
    positiveInteger(batchSize, 'batchSize');
    positiveInteger(prefetch, 'prefetch');
    for (const [name, value] of Object.entries({ shuffle, dropLast, prefetchNextEpoch })) {
      if (typeof value !== 'boolean') throw new ArgumentTypeError(`Expected a boolean for ${name} but received ${describeValue(value)}`);
    }
    if (!Number.isSafeInteger(seed)) throw new ArgumentValueError(`Expected an integer for seed but received ${describeValue(seed)}`);
    const mean = options.mean ?? IMAGENET_MEAN;
    const std = options.std ?? IMAGENET_STD;
    checkChannelStatistics(mean, std, 'options');
    const steps = stepsPerEpoch(dataset.count, batchSize, dropLast);
    if (steps === 0 && dataset.count > 0) {
      throw new ArgumentValueError(
        `Expected a batchSize of at most ${dataset.count} (the files in ${dataset.root}) with dropLast but received ${batchSize}`,
      );
    }
    this.dataset = dataset;
    this.batchSize = batchSize;
    this.stepsPerEpoch = steps;
    this.transform = resolveTransform(options.transform, 'options.transform');
    this.imageSize = outputSize(this.transform);
    this.normalization = normalizationOf(mean, std);
    this.mean = [...mean];
    this.std = [...std];
    this.pool = decodeWorkerPool();
    this.seed = seed;
    this.shuffle = shuffle;
    this.prefetch = prefetch;
    this.prefetchNextEpoch = prefetchNextEpoch;
    this.maxPixels = options.maxPixels;
    this.limit = createLimiter(options.concurrency ?? DEFAULT_DECODE_CONCURRENCY);
  }

  /**
   * The batches of epoch `epochIndex` from step `startStep` on. Only one epoch may be iterated at a time;
   * breaking out of a for-await loop ends the iteration and stops its prefetching.
   * @throws ArgumentValueError (synchronously) for a negative epoch or a startStep outside [0, stepsPerEpoch].
   * @throws DisposedError after close(); FormatError naming a file that cannot be decoded.
   */
  epoch(epochIndex: number, startStep = 0): AsyncGenerator<Batch, void, undefined> {
    if (!Number.isSafeInteger(epochIndex) || epochIndex < 0) {
      throw new ArgumentValueError(`Expected a non-negative integer for epochIndex but received ${describeValue(epochIndex)}`);
    }
    if (!Number.isSafeInteger(startStep) || startStep < 0 || startStep > this.stepsPerEpoch) {
      throw new ArgumentValueError(`Expected an integer in [0, ${this.stepsPerEpoch}] for startStep but received ${describeValue(startStep)}`);
    }
    if (this.closed) throw new DisposedError('ImageFolderLoader');
    return this.iterate(epochIndex, startStep);
  }

  /** Build one batch on its own (no prefetching): what epoch() yields for this (epoch, step). For tests and inspection. */
  async batchAt(epochIndex: number, step: number): Promise<Batch> {
    if (!Number.isSafeInteger(epochIndex) || epochIndex < 0) {
      throw new ArgumentValueError(`Expected a non-negative integer for epochIndex but received ${describeValue(epochIndex)}`);
    }
    if (!Number.isSafeInteger(step) || step < 0 || step >= this.stepsPerEpoch) {
      throw new ArgumentValueError(`Expected an integer in [0, ${this.stepsPerEpoch}) for step but received ${describeValue(step)}`);
    }
    const run = this.newRun(epochIndex, step);
    try {
      return await this.buildBatch(run, step);
    } finally {
      run.cancelled = true;
    }
  }

  /** Stop prefetching; further epoch() calls throw DisposedError. Decodes already running finish and are dropped. */
  async close(): Promise<void> {
    this.closed = true;
    for (const run of [this.active, this.speculative]) if (run !== undefined) run.cancelled = true;
    this.speculative = undefined;
  }

  // -------------------------------------------------------------------------------------------------------------

  private async *iterate(epochIndex: number, startStep: number): AsyncGenerator<Batch, void, undefined> {
    if (this.closed) throw new DisposedError('ImageFolderLoader');
    if (this.iterating) {
      throw new RepvggError(
        'ERR_DATA_LOADER',
        'ImageFolderLoader.epoch() was called while another epoch is being iterated; finish or break out of it first',
      );
    }
    if (startStep >= this.stepsPerEpoch) return;
    this.iterating = true;
    const run = this.adoptOrStart(epochIndex, startStep);
    this.active = run;
    let finished = false;
    try {
      for (let step = startStep; step < this.stepsPerEpoch; step++) {
        this.fill(run);
        const batch = await (run.building.get(step) as Promise<Batch>);
        run.building.delete(step);
        if (this.closed) throw new DisposedError('ImageFolderLoader');
        this.fill(run); // the next batch starts before the caller computes on this one
        yield batch;
      }
      finished = true;
    } finally {
      this.iterating = false;
      this.active = undefined;
      run.cancelled = true;
      if (finished && this.prefetchNextEpoch && !this.closed) {
        this.speculative = this.newRun(epochIndex + 1, 0);
        this.fill(this.speculative);
      }
    }
  }

  private newRun(epochIndex: number, startStep: number): Run {
    return {
      epoch: epochIndex,
      startStep,
      order: epochOrder(this.dataset.count, this.shuffle, this.seed, epochIndex),
      building: new Map(),
      nextToStart: startStep,
      cancelled: false,
    };
  }

  private adoptOrStart(epochIndex: number, startStep: number): Run {
    const speculative = this.speculative;
    this.speculative = undefined;
    if (speculative !== undefined) {
      if (speculative.epoch === epochIndex && speculative.startStep === startStep) return speculative;
      speculative.cancelled = true;
    }
    return this.newRun(epochIndex, startStep);
  }

  /** Keep `prefetch` batches of the run in the making (the one awaited next included). */
  private fill(run: Run): void {
    while (run.building.size < this.prefetch && run.nextToStart < this.stepsPerEpoch) {
      const step = run.nextToStart++;
      const promise = this.buildBatch(run, step);
      promise.catch(() => undefined); // surfaced when this step is taken; never an unhandled rejection
      run.building.set(step, promise);
    }
  }

  private async buildBatch(run: Run, step: number): Promise<Batch> {
    const size = this.imageSize;
    const sample = 3 * size * size;
    const start = step * this.batchSize;
    const count = Math.min(this.batchSize, this.dataset.count - start);
    const images = new Float32Array(count * sample); // (B, 3, S, S)
    const labels = new Int32Array(count);
    const indices = new Int32Array(count);
    const settled = await Promise.allSettled(
      Array.from({ length: count }, (_, i) => {
        const position = start + i;
        const index = run.order[position] as number;
        labels[i] = this.dataset.labels[index] as number;
        indices[i] = index;
        return this.limit(async () => {
          if (run.cancelled) return; // a dropped prefetch: skip the decode
          const task: SampleTask = {
            input: this.dataset.files[index] as string,
            transform: this.transform,
            key: deriveKey(this.seed, run.epoch, STREAM_AUGMENT, position),
            mean: this.mean,
            std: this.std,
            ...(this.maxPixels === undefined ? {} : { maxPixels: this.maxPixels }),
          };
          images.set(await this.pool.run(task), i * sample);
        });
      }),
    );
    for (const result of settled) if (result.status === 'rejected') throw result.reason;
    return { images: hostTensor(images, [count, 3, size, size], 'batch images'), labels, indices, step };
  }
}

/**
 * Every image of a folder once, in dataset order, through the evaluation transform, in batches of `batchSize`
 * (the last may be smaller), prefetched: an evaluation pass.
 * @param preprocess - resize / crop / mean / std, e.g. IMAGENET_PREPROCESS or imagenetPreprocess(73, 64).
 * @example for await (const { images, labels } of evalImageBatches(val, 100, IMAGENET_PREPROCESS)) { ... }
 */
export function evalImageBatches(
  folder: ImageFolderDataset,
  batchSize: number,
  preprocess: EvalPreprocess,
  options: { readonly prefetch?: number; readonly concurrency?: number; readonly maxPixels?: number } = {},
): AsyncGenerator<Batch, void, undefined> {
  const loader = new ImageFolderLoader(folder, {
    batchSize,
    shuffle: false,
    seed: 0,
    transform: centerCropTransform(preprocess.resize, preprocess.crop),
    mean: preprocess.mean,
    std: preprocess.std,
    prefetchNextEpoch: false,
    ...options,
  });
  return (async function* () {
    try {
      yield* loader.epoch(0);
    } finally {
      await loader.close();
    }
  })();
}
