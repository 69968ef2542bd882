// The trainer's view of its data: an in-memory Dataset (Fashion-MNIST, .npy pairs) or an image folder decoded on
// the fly, behind one set of functions (shape, seeded training batches, evaluation batches, the normalization to
// record with the weights). Not for: reading or augmenting images (lib/data/).

import { DataLoader, evalBatches, type AugmentOptions, type Batch, type Dataset } from '../data/index.js';
import { ImageFolderLoader, centerCropTransform, evalImageBatches, type ImageFolderDataset, type ImageTransform } from '../data/image-folder.js';
import type { EvalPreprocess } from '../data/images.js';
import type { InputNormalization } from '../io/weights.js';

/** An image folder prepared for training or evaluation: the scanned files plus how images become tensors. */
export interface ImageFolderData {
  readonly kind: 'image-folder';
  readonly folder: ImageFolderDataset;
  /** Training augmentation, used when the run augments. */
  readonly trainTransform: ImageTransform;
  /** Evaluation transform (resize, center crop, normalize); training uses it too when the run does not augment. */
  readonly evalPreprocess: EvalPreprocess;
}

export type TrainingData = Dataset | ImageFolderData;

/** What a network needs to know of the data: tensor shape, class count, names. */
export interface DataShape {
  count: number;
  channels: number;
  height: number;
  width: number;
  numClasses: number;
  name: string;
  classNames: readonly string[] | undefined;
}

export function isImageFolder(data: TrainingData): data is ImageFolderData {
  return 'kind' in data && data.kind === 'image-folder';
}

export function dataShape(data: TrainingData): DataShape {
  if (!isImageFolder(data)) {
    const { count, channels, height, width, numClasses, name, classNames } = data;
    return { count, channels, height, width, numClasses, name, classNames };
  }
  const side = data.evalPreprocess.crop;
  const { folder } = data;
  return { count: folder.count, channels: 3, height: side, width: side, numClasses: folder.classes.length, name: folder.root, classNames: folder.classes };
}

/** Seeded, resumable training batches: the interface DataLoader and ImageFolderLoader share. */
export interface TrainingLoader {
  readonly stepsPerEpoch: number;
  epoch(epoch: number, startStep?: number): AsyncIterable<Batch>;
  close(): void | Promise<void>;
}

/** Seeded training batches; `augment` is DataLoader's (in-memory data), image folders use their own trainTransform unless false. */
export function trainingLoader(data: TrainingData, o: { batchSize: number; shuffle: boolean; augment: boolean | AugmentOptions; seed: number }): TrainingLoader {
  if (!isImageFolder(data)) return new DataLoader(data, o);
  const { resize, crop, mean, std } = data.evalPreprocess;
  return new ImageFolderLoader(data.folder, {
    batchSize: o.batchSize, shuffle: o.shuffle, seed: o.seed, mean, std,
    transform: o.augment !== false ? data.trainTransform : centerCropTransform(resize, crop),
  });
}

/** Every sample once, in order, without augmentation: an evaluation pass. */
export function evaluationBatches(data: TrainingData, batchSize: number): AsyncIterable<{ images: Batch['images']; labels: Int32Array }> {
  return isImageFolder(data) ? evalImageBatches(data.folder, batchSize, data.evalPreprocess) : evalBatches(data, batchSize);
}

/** The normalization the data pipeline applied, recorded in the saved weights' metadata for inference. */
export function inputNormalization(data: TrainingData): InputNormalization {
  if (isImageFolder(data)) return { mean: [...data.evalPreprocess.mean], std: [...data.evalPreprocess.std] };
  const n = data.normalization;
  if (!n) return { mean: new Array<number>(data.channels).fill(0), std: new Array<number>(data.channels).fill(1), scale: 1 };
  return { mean: [...n.mean], std: [...n.std], scale: n.scale };
}
