// `repvgg train` and `repvgg eval`: flag parsing and validation (everything is checked before any work starts),
// then the trainer (lib/train/trainer.ts). `train --dataset fashion-mnist --out DIR` with no other flags is the
// default configuration that `npm start` runs.

import { access, mkdir, rm, writeFile } from 'node:fs/promises';
import { constants } from 'node:fs';
import { dirname, join } from 'node:path';
import { DEFAULT_AUGMENT, loadFashionMnist, loadNpyDataset } from '../data/index.js';
import { imagenetTrainTransform, scanImageFolder, smallImageTrainTransform } from '../data/image-folder.js';
import { imagenetPreprocess, preprocessWithNormalization } from '../data/images.js';
import { dataShape, type DataShape, type ImageFolderData, type TrainingData } from '../train/data.js';
import type { BackendName, Precision } from '../engine.js';
import { ArgumentValueError, FormatError, ShapeError, UsageError } from '../errors.js';
import { loadWeights, recordedClassNames, recordedNormalization, saveWeights, type LoadedWeights } from '../io/weights.js';
import { canonicalArchName, officialSpec, totalStride, type RepVGGSpec } from '../models/repvgg.js';
import { latestCheckpoint, readCheckpoint } from '../train/checkpoint.js';
import { TrainableRepVGG, withNewHead } from '../train/model.js';
import { cudaBackend, type DeviceTensor } from '../autograd/cuda-backend.js';
import { cudaStatus, type TrainPrecision } from '../backend/cuda.js';
import { DEFAULT_KEEP_CHECKPOINTS, evaluateWithSpeed, train, type TrainConfig, type TrainHistory } from '../train/trainer.js';
import { miniSpec } from '../train/presets.js';
import { checkOutputDistinct, choiceFlag, intFlag, numberFlag, optionalFlag, type Flags } from './flags.js';

export const TRAIN_FLAGS = {
  arch: { type: 'string' }, dataset: { type: 'string' }, 'train-npy': { type: 'string' }, 'test-npy': { type: 'string' },
  epochs: { type: 'string' }, steps: { type: 'string' }, 'batch-size': { type: 'string' }, lr: { type: 'string' },
  momentum: { type: 'string' }, nesterov: { type: 'boolean' }, 'weight-decay': { type: 'string' },
  'label-smoothing': { type: 'string' }, 'warmup-epochs': { type: 'string' }, 'custom-l2': { type: 'boolean' },
  ema: { type: 'string' }, seed: { type: 'string' }, init: { type: 'string' }, 'no-shuffle': { type: 'boolean' },
  'no-augment': { type: 'boolean' }, backend: { type: 'string' }, out: { type: 'string' }, resume: { type: 'string' },
  'num-classes': { type: 'string' }, 'freeze-backbone': { type: 'boolean' }, 'keep-checkpoints': { type: 'string' },
  'train-dir': { type: 'string' }, 'val-dir': { type: 'string' }, 'image-size': { type: 'string' }, block: { type: 'string' },
  precision: { type: 'string' }, 'crop-padding': { type: 'string' },
} as const;

export const EVAL_FLAGS = {
  arch: { type: 'string' }, weights: { type: 'string' }, dataset: { type: 'string' }, 'test-npy': { type: 'string' },
  backend: { type: 'string' }, batch: { type: 'string' }, 'val-dir': { type: 'string' }, resize: { type: 'string' }, crop: { type: 'string' },
  precision: { type: 'string' },
} as const;

/** The default recipe: what `repvgg train --dataset fashion-mnist --out DIR` runs with no other flags. */
export const DEFAULT_RECIPE = {
  epochs: 8, batchSize: 128, lr: 0.1, momentum: 0.9, nesterov: true, weightDecay: 5e-4, labelSmoothing: 0.1,
  warmupEpochs: 0.5, emaDecay: 0, seed: 0,
  /**
   * Random-crop padding for Fashion-MNIST: 0, flips only. In 8 epochs the crops cost accuracy (validation accuracy
   * on a 50k/10k split of the training set: padding 4 92.89%, 2 93.72%, 0 94.27%). Other in-memory data keeps
   * DEFAULT_AUGMENT's 4 (the CIFAR recipe).
   */
  cropPadding: 0,
};

function npyPair(flags: Flags, name: string): [string, string] | undefined {
  const value = optionalFlag(flags, name);
  if (value === undefined) return undefined;
  const parts = value.split(',');
  if (parts.length !== 2 || parts.some((p) => p === '')) throw new UsageError(`Expected x.npy,y.npy for --${name} but received '${value}'`);
  return [parts[0]!, parts[1]!];
}

/**
 * Where a run's data comes from, recorded in its checkpoints so that `--resume DIR` needs no other flag.
 * Paths are stored as given (relative to the directory the run was started in).
 */
export type DataSource =
  | { kind: 'fashion-mnist' }
  | { kind: 'npy'; train: [string, string]; test?: [string, string] }
  | { kind: 'image-folder'; trainDir: string; valDir?: string; imageSize: number };

/** Side of the training crops of `--train-dir` unless --image-size says otherwise (the official recipe's). */
const DEFAULT_IMAGE_SIZE = 224;
/** From this side down, image-folder training uses the light augmentation (resize, padded random crop, flip). */
const SMALL_IMAGE_MAX = 64;

/**
 * An image folder with the official transforms scaled to `imageSize`: evaluation resizes the short side to
 * imageSize * 256/224 and center-crops imageSize; training uses RandomResizedCrop + flip, or for small images
 * (<= 64 px, where crops of 8% of the area leave nothing to recognize) a padded random crop + flip.
 */
async function imageFolderData(dir: string, imageSize: number): Promise<ImageFolderData> {
  const folder = await scanImageFolder(dir);
  return {
    kind: 'image-folder',
    folder,
    trainTransform: imageSize <= SMALL_IMAGE_MAX ? smallImageTrainTransform(imageSize) : imagenetTrainTransform(imageSize),
    evalPreprocess: imagenetPreprocess(Math.round((imageSize * 256) / 224), imageSize, '--image-size'),
  };
}

function dataSourceFromFlags(flags: Flags): DataSource | undefined {
  const dataset = optionalFlag(flags, 'dataset');
  const trainNpy = npyPair(flags, 'train-npy');
  const testNpy = npyPair(flags, 'test-npy');
  if (dataset !== undefined && dataset !== 'fashion-mnist') throw new UsageError(`Expected 'fashion-mnist' for --dataset but received '${dataset}'`);
  const trainDir = optionalFlag(flags, 'train-dir');
  const valDir = optionalFlag(flags, 'val-dir');
  if ([dataset, trainNpy, trainDir].filter((v) => v !== undefined).length > 1) {
    throw new UsageError('Expected one of --dataset fashion-mnist, --train-npy x.npy,y.npy or --train-dir DIR, not several');
  }
  if (valDir !== undefined && trainDir === undefined) throw new UsageError('Expected --train-dir with --val-dir (for .npy data use --test-npy)');
  if (dataset === 'fashion-mnist') return { kind: 'fashion-mnist' };
  if (trainDir !== undefined) {
    const imageSize = intFlag(flags, 'image-size', DEFAULT_IMAGE_SIZE, 8);
    return { kind: 'image-folder', trainDir, ...(valDir !== undefined && { valDir }), imageSize };
  }
  if (trainNpy !== undefined) return { kind: 'npy', train: trainNpy, ...(testNpy && { test: testNpy }) };
  return undefined;
}

/** A recorded data source read back from a checkpoint (untrusted: it is checked like flags would be). */
function recordedDataSource(value: unknown, path: string): DataSource | undefined {
  const v = value as { kind?: unknown; train?: unknown; test?: unknown } | undefined;
  const pair = (p: unknown): p is [string, string] => Array.isArray(p) && p.length === 2 && p.every((x) => typeof x === 'string' && x !== '');
  if (v === undefined) return undefined;
  if (v.kind === 'fashion-mnist') return { kind: 'fashion-mnist' };
  if (v.kind === 'npy' && pair(v.train) && (v.test === undefined || pair(v.test))) return { kind: 'npy', train: v.train, ...(v.test !== undefined && { test: v.test }) };
  const f = value as { trainDir?: unknown; valDir?: unknown; imageSize?: unknown };
  const text = (x: unknown): x is string => typeof x === 'string' && x !== '';
  if (v.kind === 'image-folder' && text(f.trainDir) && (f.valDir === undefined || text(f.valDir)) && Number.isSafeInteger(f.imageSize) && (f.imageSize as number) >= 8) {
    return { kind: 'image-folder', trainDir: f.trainDir, ...(f.valDir !== undefined && { valDir: f.valDir }), imageSize: f.imageSize as number };
  }
  throw new ArgumentValueError(`Expected a recorded data source in the checkpoint ${path} but received ${JSON.stringify(value).slice(0, 120)}`);
}

/**
 * Loads the data. `numClasses`, when known (from --num-classes or --init weights), bounds the labels of .npy
 * data; otherwise the largest training label + 1 decides.
 */
async function loadData(source: DataSource, numClasses: number | undefined): Promise<{ train: TrainingData; test: TrainingData | undefined }> {
  if (source.kind === 'fashion-mnist') return { train: await loadFashionMnist('train'), test: await loadFashionMnist('test') };
  if (source.kind === 'image-folder') {
    const train = await imageFolderData(source.trainDir, source.imageSize);
    const test = source.valDir === undefined ? undefined : await imageFolderData(source.valDir, source.imageSize);
    const [trainClasses, valClasses] = [train.folder.classes, test?.folder.classes];
    if (valClasses !== undefined && valClasses.join('\n') !== trainClasses.join('\n')) {
      throw new ArgumentValueError(
        `Expected the class folders of --val-dir to equal those of --train-dir (${trainClasses.length} classes) but received ${valClasses.length}: ` +
          `${valClasses.slice(0, 5).join(', ')}${valClasses.length > 5 ? ', ...' : ''}`,
      );
    }
    return { train, test };
  }
  const train = await loadNpyDataset(source.train[0], source.train[1], { argName: '--train-npy', ...(numClasses !== undefined && { numClasses }) });
  const test = source.test
    ? await loadNpyDataset(source.test[0], source.test[1], { argName: '--test-npy', numClasses: train.numClasses })
    : undefined;
  return { train, test };
}

/** Largest batch a recorded run may ask for (bounds what a hostile checkpoint can make us allocate). */
const MAX_BATCH_SIZE = 65_536;
/** Largest random-crop padding a recorded run may ask for (the image side bounds it further once the data is loaded). */
const MAX_CROP_PADDING = 4096;

/**
 * The run configuration recorded in a checkpoint, checked field by field like the flags it came from (its spec
 * was checked by readCheckpoint).
 * @throws FormatError naming the checkpoint and the field.
 */
function recordedConfig(value: unknown, path: string): TrainConfig & { seconds: number } {
  const c = value as Record<string, unknown>;
  const fail = (field: string, expected: string): never => {
    throw new FormatError(`${path}: recorded config field '${field}' is ${JSON.stringify(c[field])?.slice(0, 60)}; expected ${expected}`);
  };
  const int = (field: string, min: number, max: number, optional = false): void => {
    if (optional && c[field] === undefined) return;
    if (!Number.isSafeInteger(c[field]) || (c[field] as number) < min || (c[field] as number) > max) fail(field, `an integer in [${min}, ${max}]`);
  };
  const num = (field: string, min: number, max: number): void => {
    if (typeof c[field] !== 'number' || !Number.isFinite(c[field]) || (c[field] as number) < min || (c[field] as number) > max) fail(field, `a number in [${min}, ${max}]`);
  };
  const bool = (field: string, optional = false): void => {
    if (!(optional && c[field] === undefined) && typeof c[field] !== 'boolean') fail(field, 'true or false');
  };
  int('epochs', 1, 1e6);
  int('maxSteps', 1, Number.MAX_SAFE_INTEGER, true);
  int('batchSize', 1, MAX_BATCH_SIZE);
  num('lr', 0, Number.MAX_VALUE);
  num('momentum', 0, 1);
  num('weightDecay', 0, Number.MAX_VALUE);
  num('labelSmoothing', 0, 1);
  num('warmupEpochs', 0, 1e6);
  num('emaDecay', 0, 0.99999);
  num('seconds', 0, Number.MAX_VALUE);
  int('seed', 0, Number.MAX_SAFE_INTEGER);
  int('keepCheckpoints', 1, 1e6, true);
  int('cropPadding', 0, MAX_CROP_PADDING, true);
  for (const field of ['nesterov', 'customL2', 'shuffle', 'augment']) bool(field);
  bool('freezeBackbone', true);
  if (!['cpu', 'cuda', 'auto'].includes(c.backend as string)) fail('backend', "'cpu', 'cuda' or 'auto'");
  if (c.precision !== undefined && !['fp32', 'fp16', 'bf16'].includes(c.precision as string)) fail('precision', "'fp32', 'fp16' or 'bf16'");
  return c as unknown as TrainConfig & { seconds: number };
}

/** True when the data itself says how many classes there are (not only which labels occur). */
const classCountKnown = (source: DataSource): boolean => source.kind !== 'npy';

/**
 * --crop-padding: the random crop's zero padding for in-memory data (DEFAULT_RECIPE.cropPadding for Fashion-MNIST,
 * DEFAULT_AUGMENT's for .npy data); less than the image side so that every crop keeps part of the image. Image folders
 * have their own transforms, so it is refused there, as with --no-augment.
 */
function cropPaddingFor(flags: Flags, source: DataSource, shape: DataShape): number | undefined {
  const given = flags['crop-padding'] !== undefined;
  if (source.kind === 'image-folder') {
    if (given) throw new UsageError('Expected no --crop-padding with --train-dir: image folders use RandomResizedCrop (at 64 px and below a random crop with padding 4)');
    return undefined;
  }
  if (given && flags['no-augment'] === true) throw new UsageError('Expected no --crop-padding with --no-augment');
  const padding = intFlag(flags, 'crop-padding', source.kind === 'fashion-mnist' ? DEFAULT_RECIPE.cropPadding : DEFAULT_AUGMENT.padding, 0);
  checkCropPadding(padding, shape, '--crop-padding');
  return padding;
}

/** A crop padding (a flag's or a checkpoint's) must leave every crop part of the image: below the image side. */
function checkCropPadding(padding: number, shape: DataShape, what: string): void {
  const side = Math.min(shape.height, shape.width);
  if (padding >= side) throw new ArgumentValueError(`Expected ${what} below the image side ${side} but received ${padding}`);
}

/** --arch for training: 'mini' (the default small network) or an official variant; undefined when not given. */
/** --block repvgg (default) or qa (QARepVGG training-time blocks). */
function blockFlag(flags: Flags): 'qa' | undefined {
  return choiceFlag(flags, 'block', ['repvgg', 'qa'] as const, 'repvgg') === 'qa' ? 'qa' : undefined;
}

function archOrMini(flags: Flags): string | undefined {
  const arch = optionalFlag(flags, 'arch');
  if (arch === undefined || arch === 'mini' || canonicalArchName(arch) !== undefined) return arch;
  throw new UsageError(`Expected mini or an official variant (A0, A1, A2, B0, B1, B1g2, B1g4, B2, B2g2, B2g4, B3, B3g2, B3g4, D2se) for --arch but received '${arch}'`);
}

function specFor(arch: string | undefined, data: DataShape, block: 'qa' | undefined): RepVGGSpec {
  const spec = arch === undefined || arch === 'mini'
    ? miniSpec(data.channels, data.numClasses, block)
    : officialSpec(arch, { numClasses: data.numClasses, inChannels: data.channels, ...(block && { block }) });
  checkImageSize(spec, data);
  return spec;
}

function checkImageSize(spec: RepVGGSpec, data: DataShape): void {
  const minSide = totalStride(spec);
  if (data.height < minSide || data.width < minSide) {
    throw new ShapeError(`Expected images of at least ${minSide}x${minSide} for --arch ${spec.arch} (its total stride) but the training data is ${data.height}x${data.width}`);
  }
}

/** Fails early when --out cannot be written: creates the folder (or the file's folder) and probes it. */
async function checkWritable(out: string): Promise<void> {
  const dir = out.endsWith('.safetensors') ? dirname(out) : out;
  try {
    await mkdir(dir, { recursive: true });
    await access(dir, constants.W_OK);
    const probe = join(dir, `.repvgg-write-probe-${process.pid}`);
    await writeFile(probe, '');
    await rm(probe);
  } catch (err) {
    throw new ArgumentValueError(`Expected a writable path for --out but received '${out}' (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
}

/** The model to start from: --init weights (head replaced when the class count differs) or a fresh init. */
async function initialModel(
  flags: Flags, arch: string | undefined, data: DataShape, seed: number, freezeBackbone: boolean, initWeights: LoadedWeights | undefined,
): Promise<TrainableRepVGG> {
  const block = blockFlag(flags);
  if (initWeights === undefined) return TrainableRepVGG.init(specFor(arch, data, block), seed);
  const init = optionalFlag(flags, 'init') as string;
  if (block !== initWeights.spec.block) {
    throw new UsageError(`Expected --block ${initWeights.spec.block ?? 'repvgg'} (the blocks of --init '${init}') but received --block ${block ?? 'repvgg'}`);
  }
  if (initWeights.form !== 'train') throw new ArgumentValueError(`Expected training-time weights for --init but '${init}' is deployed (rbr_reparam keys)`);
  if (initWeights.spec.inChannels !== data.channels) {
    throw new ShapeError(`Expected ${initWeights.spec.inChannels}-channel images for --init '${init}' (${initWeights.spec.arch}) but the training data has ${data.channels} channels`);
  }
  checkImageSize(initWeights.spec, data);
  let { spec, state } = initWeights;
  if (data.numClasses !== spec.numClasses) {
    process.stderr.write(
      `train: --init ${init} has a ${spec.numClasses}-class head; training a new, freshly initialized ${data.numClasses}-class head (backbone kept)\n`,
    );
    ({ spec, state } = withNewHead(spec, state, data.numClasses, seed));
  }
  return TrainableRepVGG.fromStateDict(spec, state, { freezeBackbone });
}

/**
 * --backend of `repvgg train`: 'cuda' runs every training step on the GPU (and evaluates there); 'cpu' trains on
 * the CPU; the default 'auto' trains (and evaluates) on CUDA where it runs, else on the CPU.
 */
function trainBackendFlag(flags: Flags): BackendName {
  return choiceFlag<BackendName>(flags, 'backend', ['cpu', 'cuda', 'auto'], 'auto');
}

/**
 * --precision of `repvgg train`: 'fp32', or mixed precision 'fp16' (with dynamic loss scaling) or 'bf16' (compute
 * capability 8.0+), which need the GPU (--backend cuda).
 */
function trainPrecisionFlag(flags: Flags, backend: BackendName): TrainPrecision {
  const precision = choiceFlag<TrainPrecision>(flags, 'precision', ['fp32', 'fp16', 'bf16'], 'fp32');
  if (precision !== 'fp32' && backend !== 'cuda') {
    throw new UsageError(`Expected --backend cuda with --precision ${precision} (mixed precision runs on the GPU) but received --backend ${backend}`);
  }
  return precision;
}

/** A copy of the (CPU) model on the GPU, for --backend cuda (or auto where CUDA runs). */
async function onGpu(model: TrainableRepVGG, precision: TrainPrecision): Promise<TrainableRepVGG<DeviceTensor, DeviceTensor>> {
  const gpu = cudaBackend({ precision }); // a BackendError naming what is missing when CUDA cannot run here
  const mode = precision === 'fp16' ? 'mixed precision: fp16 convolutions, dynamic loss scaling'
    : precision === 'bf16' ? 'mixed precision: bf16 convolutions' : 'fp32';
  process.stderr.write(`train: training steps on the GPU (${cudaStatus().details['deviceName'] ?? 'CUDA'}, ${mode})\n`);
  return TrainableRepVGG.onBackend(gpu, model.spec, model.stateDict(), { freezeBackbone: model.backboneFrozen });
}

export async function runTrain(flags: Flags): Promise<void> {
  const backendFlag = trainBackendFlag(flags);
  const precisionFlag = trainPrecisionFlag(flags, backendFlag); // usage errors first
  if (backendFlag === 'cuda') cudaBackend(); // fail before loading data when CUDA cannot run here
  const resumeDir = optionalFlag(flags, 'resume');
  let config: TrainConfig;
  let model: TrainableRepVGG;
  let start: Parameters<typeof train>[0]['start'];
  let out = optionalFlag(flags, 'out');
  let data: { train: TrainingData; test: TrainingData | undefined };
  const keepFlag = flags['keep-checkpoints'] === undefined ? undefined : intFlag(flags, 'keep-checkpoints', DEFAULT_KEEP_CHECKPOINTS, 1);
  if (resumeDir !== undefined) {
    for (const name of ['init', 'arch', 'num-classes', 'freeze-backbone'] as const) {
      if (flags[name] !== undefined) throw new UsageError(`Expected no --${name} with --resume (the run folder records the model) but received one`);
    }
    const path = await latestCheckpoint(resumeDir);
    if (path === undefined) throw new ArgumentValueError(`Expected a run folder with checkpoints for --resume but '${resumeDir}' has none`);
    const checkpoint = await readCheckpoint(path);
    const saved = recordedConfig(checkpoint.config, path);
    const source = dataSourceFromFlags(flags) ?? recordedDataSource(saved.data, path);
    if (source === undefined) {
      throw new UsageError(`Expected --dataset or --train-npy with --resume: the checkpoint ${path} does not record its data (an older run)`);
    }
    // --backend may move a run between machines (checkpoints are host tensors whichever backend wrote them).
    config = {
      ...saved, data: source, ...(keepFlag !== undefined && { keepCheckpoints: keepFlag }),
      ...(flags.backend !== undefined && { backend: backendFlag }),
      ...(flags.precision !== undefined && { precision: precisionFlag }),
    };
    if (config.precision !== undefined && config.precision !== 'fp32' && config.backend !== 'cuda') config = { ...config, precision: 'fp32' }; // moved off the GPU
    data = await loadData(source, config.spec.numClasses);
    if (config.cropPadding !== undefined) checkCropPadding(config.cropPadding, dataShape(data.train), `the crop padding of the checkpoint ${path}`);
    model = TrainableRepVGG.fromStateDict(config.spec, checkpoint.weights, { freezeBackbone: config.freezeBackbone === true });
    start = { position: checkpoint.position, momentum: checkpoint.momentum, ema: checkpoint.ema, history: checkpoint.history as TrainHistory, seconds: saved.seconds };
    out ??= resumeDir;
  } else {
    const source = dataSourceFromFlags(flags);
    if (source === undefined) throw new UsageError('Expected one of --dataset fashion-mnist, --train-npy x.npy,y.npy, --train-dir DIR or --resume DIR');
    const arch = archOrMini(flags);
    const numClassesFlag = flags['num-classes'] === undefined ? undefined : intFlag(flags, 'num-classes', 1, 1);
    const init = optionalFlag(flags, 'init');
    if (init !== undefined && out !== undefined) await checkOutputDistinct(['out', out], [['init', init]]);
    const initWeights = init === undefined ? undefined : await loadWeights(init, arch === 'mini' ? undefined : arch, '--init');
    // The class count: --num-classes, else what the data defines, else (for .npy labels) the --init weights' head.
    const numClasses = numClassesFlag ?? (classCountKnown(source) ? undefined : initWeights?.spec.numClasses);
    data = await loadData(source, numClasses);
    const shape = dataShape(data.train);
    if (numClasses !== undefined && shape.numClasses !== numClasses) {
      throw new ArgumentValueError(`Expected --num-classes ${numClasses} to equal the ${shape.numClasses} classes of ${shape.name}`);
    }
    const seed = intFlag(flags, 'seed', DEFAULT_RECIPE.seed, 0);
    const freezeBackbone = flags['freeze-backbone'] === true;
    if (freezeBackbone && initWeights === undefined) throw new UsageError('Expected --init weights with --freeze-backbone (a random backbone is not worth freezing)');
    model = await initialModel(flags, arch, shape, seed, freezeBackbone, initWeights);
    if (flags['custom-l2'] === true && model.spec.block === 'qa') {
      throw new UsageError('Expected no --custom-l2 with --block qa: the custom L2 weighs each kernel by its branch BN, and QARepVGG 1x1 branches have none');
    }
    const maxSteps = flags.steps === undefined ? undefined : intFlag(flags, 'steps', 1);
    const cropPadding = cropPaddingFor(flags, source, shape);
    config = {
      spec: model.spec,
      ...(cropPadding !== undefined && { cropPadding }),
      epochs: intFlag(flags, 'epochs', DEFAULT_RECIPE.epochs),
      ...(maxSteps !== undefined && { maxSteps }),
      batchSize: intFlag(flags, 'batch-size', DEFAULT_RECIPE.batchSize),
      lr: numberFlag(flags, 'lr', DEFAULT_RECIPE.lr, 0),
      momentum: numberFlag(flags, 'momentum', DEFAULT_RECIPE.momentum, 0, 1),
      nesterov: flags.nesterov === true || (flags.nesterov === undefined && DEFAULT_RECIPE.nesterov && flags.momentum === undefined),
      weightDecay: numberFlag(flags, 'weight-decay', DEFAULT_RECIPE.weightDecay, 0),
      labelSmoothing: numberFlag(flags, 'label-smoothing', DEFAULT_RECIPE.labelSmoothing, 0, 1),
      warmupEpochs: numberFlag(flags, 'warmup-epochs', DEFAULT_RECIPE.warmupEpochs, 0),
      customL2: flags['custom-l2'] === true,
      emaDecay: numberFlag(flags, 'ema', DEFAULT_RECIPE.emaDecay, 0, 0.99999),
      seed,
      shuffle: flags['no-shuffle'] !== true,
      augment: flags['no-augment'] !== true,
      backend: backendFlag,
      precision: precisionFlag,
      keepCheckpoints: keepFlag ?? DEFAULT_KEEP_CHECKPOINTS,
      freezeBackbone,
      data: source,
    };
  }
  if (out === undefined) throw new UsageError('Missing required flag --out (a .safetensors file or a run folder)');
  if (resumeDir === undefined && !out.endsWith('.safetensors') && (await latestCheckpoint(out)) !== undefined) {
    throw new ArgumentValueError(`Expected a new run folder for --out but '${out}' already holds a run: continue it with --resume ${out} or pick another --out`);
  }
  await checkWritable(out);
  const runDir = out.endsWith('.safetensors') ? undefined : out;

  let stop = false;
  const onSigint = (): void => {
    if (stop) process.exit(130); // second Ctrl-C: give up immediately
    stop = true;
    process.stderr.write('\nstopping after this step (Ctrl-C again to abort without a checkpoint)...\n');
  };
  process.on('SIGINT', onSigint);
  try {
    const run = { config, train: data.train, test: data.test, runDir, ...(start && { start }), stopRequested: () => stop };
    // 'auto' is decided here, on this machine (a resumed run may have moved; the CLI probed CUDA before the command).
    const onGpuBackend = config.backend === 'cuda' || (config.backend === 'auto' && cudaStatus().available);
    const result = onGpuBackend
      ? await train({ ...run, model: await onGpu(model, config.precision ?? 'fp32') })
      : await train({ ...run, model });
    if (result.interrupted) {
      process.exitCode = 130;
      return;
    }
    if (runDir === undefined) await saveWeights(out, config.spec, 'train', await result.model.hostStateDict(), '--out', { normalization: result.normalization, ...(result.classNames && { classNames: result.classNames }) });
    const lines = [`trained ${config.spec.arch} for ${result.trainSeconds.toFixed(0)} s -> ${out}`];
    if (Number.isFinite(result.testAccuracy)) {
      lines.push(
        '',
        '| form          | test accuracy | inference img/s |',
        '|---------------|---------------|-----------------|',
        `| training-time | ${`${(result.testAccuracy * 100).toFixed(2)}%`.padEnd(13)} | ${result.testImagesPerSecond.toFixed(0).padEnd(15)} |`,
        `| deployed      | ${`${(result.deployTestAccuracy * 100).toFixed(2)}%`.padEnd(13)} | ${result.deployTestImagesPerSecond.toFixed(0).padEnd(15)} |`,
      );
    }
    process.stdout.write(lines.join('\n') + '\n');
  } finally {
    process.off('SIGINT', onSigint);
  }
}

/** The --val-dir of `repvgg eval`: an image folder preprocessed as the weights expect (their recorded normalization). */
async function evalImageFolder(flags: Flags, dir: string, weights: LoadedWeights): Promise<ImageFolderData> {
  const crop = intFlag(flags, 'crop', DEFAULT_IMAGE_SIZE, 8);
  const resize = intFlag(flags, 'resize', Math.round((crop * 256) / 224), 8);
  const normalization = recordedNormalization(weights, optionalFlag(flags, 'weights'));
  const evalPreprocess = preprocessWithNormalization(normalization, resize, crop, '--resize/--crop');
  if (weights.spec.inChannels !== 3 || normalization.mean.length !== 3) {
    throw new ArgumentValueError(`Expected a 3-channel (RGB) network for --val-dir but ${weights.spec.arch} takes ${weights.spec.inChannels}-channel input`);
  }
  const folder = await scanImageFolder(dir);
  if (folder.classes.length !== weights.spec.numClasses) {
    throw new ArgumentValueError(`Expected ${weights.spec.numClasses} class folders in --val-dir (the classes of --weights) but '${dir}' has ${folder.classes.length}`);
  }
  const recorded = recordedClassNames(weights);
  const differing = recorded?.findIndex((name, i) => name !== folder.classes[i]) ?? -1;
  if (recorded !== undefined && differing >= 0) {
    throw new ArgumentValueError(`Expected the class folders of --val-dir to be the classes the weights were trained on, but class ${differing} is '${folder.classes[differing]}' in '${dir}' and '${recorded[differing]}' in --weights`);
  }
  return { kind: 'image-folder', folder, trainTransform: imagenetTrainTransform(crop), evalPreprocess };
}

export async function runEval(flags: Flags): Promise<void> {
  const weightsPath = optionalFlag(flags, 'weights');
  if (weightsPath === undefined) throw new UsageError('Missing required flag --weights');
  const dataset = optionalFlag(flags, 'dataset');
  const testNpy = npyPair(flags, 'test-npy');
  const valDir = optionalFlag(flags, 'val-dir');
  if ([dataset, testNpy, valDir].filter((v) => v !== undefined).length !== 1) {
    throw new UsageError('Expected exactly one of --dataset fashion-mnist, --test-npy x.npy,y.npy or --val-dir DIR');
  }
  if (dataset !== undefined && dataset !== 'fashion-mnist') throw new UsageError(`Expected 'fashion-mnist' for --dataset but received '${dataset}'`);
  const weights = await loadWeights(weightsPath, optionalFlag(flags, 'arch'), '--weights');
  const data: TrainingData = valDir !== undefined
    ? await evalImageFolder(flags, valDir, weights)
    : dataset ? await loadFashionMnist('test') : await loadNpyDataset(testNpy![0], testNpy![1], { argName: '--test-npy', numClasses: weights.spec.numClasses });
  const backend = choiceFlag<BackendName>(flags, 'backend', ['cpu', 'cuda', 'auto'], 'auto');
  const started = performance.now();
  const precision = choiceFlag<Precision>(flags, 'precision', ['fp32', 'bf16', 'int8', 'fp16'], 'fp32');
  const result = await evaluateWithSpeed(weights.spec, weights.state, data, backend, intFlag(flags, 'batch', 256), {
    precision, ...(weights.quantization && { quantization: weights.quantization }),
  });
  const seconds = (performance.now() - started) / 1000;
  const count = dataShape(data).count;
  const top5 = Number.isNaN(result.top5) ? '' : `, top-5 ${(result.top5 * 100).toFixed(2)}%`;
  process.stdout.write(`${weights.spec.arch} (${weights.form} form, ${precision}): accuracy ${(result.accuracy * 100).toFixed(2)}%${top5} on ${count} images (${(count / seconds).toFixed(0)} img/s)\n`);
}
