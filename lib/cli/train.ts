// `repvgg train` and `repvgg eval`: flag parsing and validation (everything is checked before any work starts),
// then the trainer (lib/train/trainer.ts). `train --dataset fashion-mnist --out DIR` with no other flags is the
// default configuration that `npm start` runs.

import { access, mkdir, rm, writeFile } from 'node:fs/promises';
import { constants } from 'node:fs';
import { dirname, join } from 'node:path';
import { loadFashionMnist, loadNpyDataset, type Dataset } from '../data/index.js';
import type { BackendName } from '../engine.js';
import { ArgumentValueError, ShapeError, UsageError } from '../errors.js';
import { loadWeights, saveWeights } from '../io/weights.js';
import { officialSpec, totalStride, validateSpec, type RepVGGSpec } from '../models/repvgg.js';
import { latestCheckpoint, readCheckpoint } from '../train/checkpoint.js';
import { TrainableRepVGG } from '../train/model.js';
import { evaluate, train, type TrainConfig, type TrainHistory } from '../train/trainer.js';
import { miniSpec } from '../train/presets.js';
import { choiceFlag, intFlag, optionalFlag, type Flags } from './flags.js';

export const TRAIN_FLAGS = {
  arch: { type: 'string' }, dataset: { type: 'string' }, 'train-npy': { type: 'string' }, 'test-npy': { type: 'string' },
  epochs: { type: 'string' }, steps: { type: 'string' }, 'batch-size': { type: 'string' }, lr: { type: 'string' },
  momentum: { type: 'string' }, nesterov: { type: 'boolean' }, 'weight-decay': { type: 'string' },
  'label-smoothing': { type: 'string' }, 'warmup-epochs': { type: 'string' }, 'custom-l2': { type: 'boolean' },
  ema: { type: 'string' }, seed: { type: 'string' }, init: { type: 'string' }, 'no-shuffle': { type: 'boolean' },
  'no-augment': { type: 'boolean' }, backend: { type: 'string' }, out: { type: 'string' }, resume: { type: 'string' },
} as const;

export const EVAL_FLAGS = {
  arch: { type: 'string' }, weights: { type: 'string' }, dataset: { type: 'string' }, 'test-npy': { type: 'string' },
  backend: { type: 'string' }, batch: { type: 'string' },
} as const;

/** The default recipe: what `repvgg train --dataset fashion-mnist --out DIR` runs with no other flags. */
export const DEFAULT_RECIPE = {
  epochs: 8, batchSize: 128, lr: 0.1, momentum: 0.9, nesterov: true, weightDecay: 5e-4, labelSmoothing: 0.1,
  warmupEpochs: 0.5, emaDecay: 0, seed: 0,
};

function numberFlag(flags: Flags, name: string, fallback: number, min: number, max = Infinity): number {
  const value = flags[name];
  if (value === undefined) return fallback;
  const parsed = Number(value);
  if (typeof value !== 'string' || value.trim() === '' || !Number.isFinite(parsed) || parsed < min || parsed > max) {
    throw new UsageError(`Expected a number in [${min}, ${max}] for --${name} but received '${String(value)}'`);
  }
  return parsed;
}

function npyPair(flags: Flags, name: string): [string, string] | undefined {
  const value = optionalFlag(flags, name);
  if (value === undefined) return undefined;
  const parts = value.split(',');
  if (parts.length !== 2 || parts.some((p) => p === '')) throw new UsageError(`Expected x.npy,y.npy for --${name} but received '${value}'`);
  return [parts[0]!, parts[1]!];
}

async function datasets(flags: Flags): Promise<{ train: Dataset; test: Dataset | undefined }> {
  const dataset = optionalFlag(flags, 'dataset');
  const trainNpy = npyPair(flags, 'train-npy');
  const testNpy = npyPair(flags, 'test-npy');
  if (dataset !== undefined && dataset !== 'fashion-mnist') throw new UsageError(`Expected 'fashion-mnist' for --dataset but received '${dataset}'`);
  if ((dataset === undefined) === (trainNpy === undefined)) throw new UsageError('Expected exactly one of --dataset fashion-mnist or --train-npy x.npy,y.npy');
  if (dataset === 'fashion-mnist') return { train: await loadFashionMnist('train'), test: await loadFashionMnist('test') };
  const train = await loadNpyDataset(trainNpy![0], trainNpy![1], { argName: '--train-npy' });
  const test = testNpy ? await loadNpyDataset(testNpy[0], testNpy[1], { argName: '--test-npy', numClasses: train.numClasses }) : undefined;
  return { train, test };
}

function specFor(arch: string | undefined, data: Dataset): RepVGGSpec {
  const spec = arch === undefined || arch === 'mini'
    ? miniSpec(data.channels, data.numClasses)
    : officialSpec(arch, { numClasses: data.numClasses, inChannels: data.channels });
  const minSide = totalStride(spec);
  if (data.height < minSide || data.width < minSide) {
    throw new ShapeError(`Expected images of at least ${minSide}x${minSide} for --arch ${spec.arch} (its total stride) but the training data is ${data.height}x${data.width}`);
  }
  return spec;
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

export async function runTrain(flags: Flags): Promise<void> {
  const resumeDir = optionalFlag(flags, 'resume');
  let config: TrainConfig;
  let model: TrainableRepVGG;
  let start: Parameters<typeof train>[0]['start'];
  let out = optionalFlag(flags, 'out');
  const data = await datasets(flags);
  if (resumeDir !== undefined) {
    const path = await latestCheckpoint(resumeDir);
    if (path === undefined) throw new ArgumentValueError(`Expected a run folder with checkpoints for --resume but '${resumeDir}' has none`);
    const checkpoint = await readCheckpoint(path);
    const saved = checkpoint.config as TrainConfig & { seconds: number };
    config = { ...saved, spec: validateSpec(saved.spec) };
    model = TrainableRepVGG.fromStateDict(config.spec, checkpoint.weights);
    start = { position: checkpoint.position, momentum: checkpoint.momentum, ema: checkpoint.ema, history: checkpoint.history as TrainHistory, seconds: saved.seconds };
    out ??= resumeDir;
  } else {
    const spec = specFor(optionalFlag(flags, 'arch'), data.train);
    const maxSteps = flags.steps === undefined ? undefined : intFlag(flags, 'steps', 1);
    config = {
      spec,
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
      seed: intFlag(flags, 'seed', DEFAULT_RECIPE.seed, 0),
      shuffle: flags['no-shuffle'] !== true,
      augment: flags['no-augment'] !== true,
      backend: choiceFlag<BackendName>(flags, 'backend', ['cpu', 'cuda', 'auto'], 'auto'),
    };
    const init = optionalFlag(flags, 'init');
    if (init !== undefined) {
      const weights = await loadWeights(init, undefined, '--init');
      if (weights.form !== 'train') throw new ArgumentValueError(`Expected training-time weights for --init but '${init}' is deployed`);
      model = TrainableRepVGG.fromStateDict(config.spec, weights.state);
    } else {
      model = TrainableRepVGG.init(config.spec, config.seed);
    }
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
    const result = await train({ config, train: data.train, test: data.test, runDir, model, ...(start && { start }), stopRequested: () => stop });
    if (result.interrupted) {
      process.exitCode = 130;
      return;
    }
    if (runDir === undefined) await saveWeights(out, config.spec, 'train', result.model.stateDict(), '--out', result.normalization);
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

export async function runEval(flags: Flags): Promise<void> {
  const weightsPath = optionalFlag(flags, 'weights');
  if (weightsPath === undefined) throw new UsageError('Missing required flag --weights');
  const dataset = optionalFlag(flags, 'dataset');
  const testNpy = npyPair(flags, 'test-npy');
  if ((dataset === undefined) === (testNpy === undefined)) throw new UsageError('Expected exactly one of --dataset fashion-mnist or --test-npy x.npy,y.npy');
  if (dataset !== undefined && dataset !== 'fashion-mnist') throw new UsageError(`Expected 'fashion-mnist' for --dataset but received '${dataset}'`);
  const weights = await loadWeights(weightsPath, optionalFlag(flags, 'arch'), '--weights');
  const data = dataset ? await loadFashionMnist('test') : await loadNpyDataset(testNpy![0], testNpy![1], { argName: '--test-npy', numClasses: weights.spec.numClasses });
  const backend = choiceFlag<BackendName>(flags, 'backend', ['cpu', 'cuda', 'auto'], 'auto');
  const started = performance.now();
  const accuracy = await evaluate(weights.spec, weights.state, data, backend, intFlag(flags, 'batch', 256));
  const seconds = (performance.now() - started) / 1000;
  process.stdout.write(`${weights.spec.arch} (${weights.form} form): accuracy ${(accuracy * 100).toFixed(2)}% on ${data.count} images (${(data.count / seconds).toFixed(0)} img/s)\n`);
}
