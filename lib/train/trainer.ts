// The training loop: the paper's recipe (SGD with the official parameter groups, optional custom L2, cosine LR
// with linear warm-up, label smoothing, optional weight EMA) on the autograd tape, with evaluation of both the
// training-time and the deployed form, atomic checkpoints, resume, Ctrl-C handling, progress and a curve plot.
// Not for: argument parsing (lib/cli/train.ts) or the data pipeline (lib/data/).

import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { Tape } from '../autograd/tape.js';
import { retainFreedMemory } from '../ops/alloc.js';
import { DEFAULT_AUGMENT } from '../data/index.js';
import * as F from '../autograd/functions.js';
import { RepVGGNetwork, type BackendName, type NetworkOptions } from '../engine.js';
import { writeFileAtomic } from '../io/atomic.js';
import { saveWeights, type InputNormalization } from '../io/weights.js';
import type { RepVGGSpec } from '../models/repvgg.js';
import { deployedStateDict, reparameterize } from '../reparam/reparam.js';
import type { TrainPrecision } from '../backend/cuda.js';
import type { HostTensor, StateDict } from '../tensor.js';
import { dataShape, evaluationBatches, inputNormalization, trainingLoader, type TrainingData } from './data.js';
import { checkpointName, pruneCheckpoints, removeStaleTempFiles, writeCheckpoint, type RunPosition } from './checkpoint.js';
import { WeightEma } from './ema.js';
import { TrainableRepVGG } from './model.js';
import { DynamicLossScale } from './loss-scale.js';
import { SGD, addCustomL2 } from './optimizer.js';
import { trainingCurveSvg } from './plot.js';
import { ProgressBar } from './progress.js';
import { learningRate } from './schedule.js';

export interface TrainConfig {
  spec: RepVGGSpec;
  epochs: number;
  /** Stop after this many optimizer steps in all (undefined: run every epoch). */
  maxSteps?: number;
  batchSize: number;
  lr: number;
  momentum: number;
  nesterov: boolean;
  weightDecay: number;
  labelSmoothing: number;
  warmupEpochs: number;
  customL2: boolean;
  /** EMA decay of the weights, 0 = off. */
  emaDecay: number;
  seed: number;
  shuffle: boolean;
  augment: boolean;
  /**
   * Zero padding of the random crop when augmenting in-memory data (torchvision RandomCrop's `padding`; 0: flip
   * only). Undefined: DEFAULT_AUGMENT's (4), which runs recorded before this field used.
   */
  cropPadding?: number;
  backend: BackendName;
  /**
   * 'fp32' (default), or mixed precision on CUDA: 'fp16' (half convolutions, with dynamic loss scaling) or 'bf16'
   * (bfloat16 convolutions, compute capability 8.0+); the parameters and everything else stay float32. The model's
   * backend must have been made with it (lib/cli/train.ts does).
   */
  precision?: TrainPrecision;
  /** Checkpoints kept in a run folder (older ones are deleted after each save); default DEFAULT_KEEP_CHECKPOINTS. */
  keepCheckpoints?: number;
  /** Linear probing: only the classifier learns (see TrainableOptions.freezeBackbone). */
  freezeBackbone?: boolean;
  /** Where the data came from, recorded so that `--resume DIR` needs nothing else (see lib/cli/train.ts). */
  data?: unknown;
}

/** Checkpoints a run keeps unless told otherwise (an A0 checkpoint is ~100 MB with momentum and EMA). */
export const DEFAULT_KEEP_CHECKPOINTS = 3;

export interface TrainHistory {
  /** (global step, mean loss over the last logging window) */
  loss: [number, number][];
  /** (global step at epoch end, test accuracy) */
  testAccuracy: [number, number][];
}

export interface TrainResult<V extends { readonly shape: readonly number[] } = HostTensor, G = Float32Array> {
  /** Normalization to record with weights saved from this run. */
  normalization: InputNormalization;
  testAccuracy: number;
  deployTestAccuracy: number;
  trainSeconds: number;
  interrupted: boolean;
  /** Inference throughput of each form while evaluating the test set (NaN without test data). */
  testImagesPerSecond: number;
  deployTestImagesPerSecond: number;
  model: TrainableRepVGG<V, G>;
  history: TrainHistory;
  /** Class names of the training data, when it has them (image folders, Fashion-MNIST). */
  classNames: readonly string[] | undefined;
}

export interface TrainRun<V extends { readonly shape: readonly number[] } = HostTensor, G = Float32Array> {
  config: TrainConfig;
  train: TrainingData;
  test: TrainingData | undefined;
  /** Run folder for checkpoints, plot and summary; undefined when only final weights are wanted. */
  runDir: string | undefined;
  /** The model on the backend that runs the steps (TrainableRepVGG.fromStateDict: the CPU; onBackend: any). */
  model: TrainableRepVGG<V, G>;
  start?: { position: RunPosition; momentum: Map<string, Float32Array>; ema: StateDict | undefined; history: TrainHistory; seconds: number };
  /** Set to true (e.g. by a SIGINT handler) to stop at the next step boundary with a checkpoint. */
  stopRequested?: () => boolean;
  log?: (line: string) => void;
  /** Draw the progress bar on stderr (default true). */
  showProgress?: boolean;
}

/** Accuracy of a state dict (training-time or deployed form) on a data set, through the native engine. */
export interface Evaluation {
  /** Top-1 accuracy in [0, 1]. */
  accuracy: number;
  /** Top-5 accuracy in [0, 1] (NaN with fewer than 5 classes). */
  top5: number;
  /** Images per second of the predict calls (data loading excluded). */
  imagesPerSecond: number;
}

/** Top-1 accuracy of a state dict (training-time or deployed form) on a data set, through the native engine. */
export async function evaluate(spec: RepVGGSpec, state: StateDict, data: TrainingData, backend: BackendName, batchSize = 256): Promise<number> {
  return (await evaluateWithSpeed(spec, state, data, backend, batchSize)).accuracy;
}

/** Top-1 and top-5 accuracy and the inference throughput seen while evaluating. */
export async function evaluateWithSpeed(
  spec: RepVGGSpec, state: StateDict, data: TrainingData, backend: BackendName, batchSize = 256,
  options: Pick<NetworkOptions, 'precision' | 'quantization'> = {},
): Promise<Evaluation> {
  const network = RepVGGNetwork.fromStateDict(spec, state, { ...options, backend, maxBatch: batchSize });
  try {
    const k = spec.numClasses;
    let correct = 0;
    let correct5 = 0;
    let seen = 0;
    let predictSeconds = 0;
    for await (const { images, labels } of evaluationBatches(data, batchSize)) {
      const started = performance.now();
      const logits = await network.predict(images);
      predictSeconds += (performance.now() - started) / 1000;
      labels.forEach((label: number, i: number) => {
        // The label's rank: how many classes score strictly higher.
        const score = logits.data[i * k + label] as number;
        let rank = 0;
        for (let c = 0; c < k; c++) if ((logits.data[i * k + c] as number) > score) rank++;
        if (rank === 0) correct++;
        if (rank < 5) correct5++;
      });
      seen += labels.length;
    }
    return { accuracy: correct / seen, top5: k < 5 ? Number.NaN : correct5 / seen, imagesPerSecond: seen / predictSeconds };
  } finally {
    network.dispose();
  }
}

export async function train<V extends { readonly shape: readonly number[] }, G>(run: TrainRun<V, G>): Promise<TrainResult<V, G>> {
  const { config, model } = run;
  retainFreedMemory(); // reuse freed buffers instead of page-faulting fresh ones every step
  const log = run.log ?? ((line: string) => process.stderr.write(`${line}\n`));
  const loader = trainingLoader(run.train, {
    batchSize: config.batchSize, shuffle: config.shuffle, seed: config.seed,
    augment: config.augment && { ...DEFAULT_AUGMENT, padding: config.cropPadding ?? DEFAULT_AUGMENT.padding },
  });
  const stepsPerEpoch = loader.stepsPerEpoch;
  const plannedSteps = config.epochs * stepsPerEpoch;
  const totalSteps = Math.min(plannedSteps, config.maxSteps ?? plannedSteps);
  const schedule = { baseLr: config.lr, totalSteps, warmupSteps: Math.round(config.warmupEpochs * stepsPerEpoch) };
  const backend = model.backend;
  const optimizer = new SGD(model.params, config, backend);
  const lossScale = backend.precision === 'fp16' ? new DynamicLossScale() : undefined;
  const ema = config.emaDecay > 0 ? await WeightEma.onBackend(backend, model.values(), config.emaDecay) : undefined;
  const history: TrainHistory = run.start?.history ?? { loss: [], testAccuracy: [] };
  let position: RunPosition = run.start?.position ?? { epoch: 0, stepInEpoch: 0, globalStep: 0 };
  if (run.start) {
    await optimizer.loadMomentum(run.start.momentum);
    if (ema && run.start.ema) await ema.load(run.start.ema);
  }
  /** The EMA's average in host memory with the state dict's shapes (its tensors have the parameters' shapes). */
  const emaState = async (): Promise<StateDict | undefined> => (ema ? model.withStateShapes(await ema.hostState()) : undefined);
  /** The weights evaluated and saved: the EMA's when enabled, in host memory. */
  const evalState = async (): Promise<StateDict> => (await emaState()) ?? model.hostStateDict();
  const progress = run.showProgress === false ? undefined : new ProgressBar();
  const started = performance.now() - (run.start?.seconds ?? 0) * 1000;
  const elapsed = (): number => (performance.now() - started) / 1000;

  const saveCheckpoint = async (): Promise<void> => {
    if (!run.runDir) return;
    await writeCheckpoint(join(run.runDir, 'checkpoints', checkpointName(position.globalStep)), {
      weights: await model.hostStateDict(), momentum: await optimizer.hostMomentum(), ema: await emaState(), position,
      config: { ...config, seconds: elapsed() }, history,
    });
    await pruneCheckpoints(run.runDir, config.keepCheckpoints ?? DEFAULT_KEEP_CHECKPOINTS);
  };
  if (run.runDir) {
    await mkdir(join(run.runDir, 'checkpoints'), { recursive: true });
    for (const path of await removeStaleTempFiles(run.runDir)) log(`removed ${path}, left by an interrupted write`);
  }

  let interrupted = false;
  try {
    while (position.epoch < config.epochs && position.globalStep < totalSteps && !interrupted) {
      let windowLoss = 0;
      let windowCorrect = 0;
      let windowSeen = 0;
      let windowSteps = 0;
      const epochStart = performance.now();
      let epochImages = 0;
      for await (const { images, labels } of loader.epoch(position.epoch, position.stepInEpoch)) {
        const tape = new Tape(backend);
        optimizer.zeroGrad();
        const logits = await model.forward(tape, images);
        const { loss, value } = await F.softmaxCrossEntropy(tape, logits, labels, config.labelSmoothing);
        await tape.backward(loss, lossScale?.seed());
        // Mixed precision: an overflowing step is skipped (its position still counts, as with PyTorch's GradScaler).
        const update = lossScale === undefined || (await lossScale.unscale(backend, model.params));
        const l2 = config.customL2 && update ? await addCustomL2(config.spec, model.params, model.buffers, config.weightDecay, backend) : 0;
        if (update) {
          await optimizer.step(learningRate(position.globalStep, schedule));
          await ema?.update(model.values());
        }
        const scores = (await backend.download(logits.value)).data; // (N, K); the CPU's own array, no copy

        const k = config.spec.numClasses;
        labels.forEach((label: number, i: number) => {
          let best = 0;
          for (let c = 1; c < k; c++) if ((scores[i * k + c] as number) > (scores[i * k + best] as number)) best = c;
          if (best === label) windowCorrect++;
        });
        tape.recycle(); // the logits were read above; every activation buffer goes to the next step's ops
        windowLoss += value + l2;
        windowSeen += labels.length;
        windowSteps++;
        epochImages += labels.length;
        position = { epoch: position.epoch, stepInEpoch: position.stepInEpoch + 1, globalStep: position.globalStep + 1 };

        const rate = epochImages / ((performance.now() - epochStart) / 1000);
        progress?.update({
          epoch: position.epoch + 1, epochs: config.epochs, step: position.stepInEpoch,
          steps: Math.min(stepsPerEpoch, totalSteps - (position.globalStep - position.stepInEpoch)),
          loss: windowLoss / windowSteps, accuracy: windowCorrect / windowSeen, imagesPerSecond: rate,
          etaSeconds: ((totalSteps - position.globalStep) * config.batchSize) / rate,
        });
        if (position.globalStep % 20 === 0 || position.stepInEpoch === stepsPerEpoch) {
          history.loss.push([position.globalStep, windowLoss / windowSteps]);
          windowLoss = windowCorrect = windowSeen = windowSteps = 0;
        }
        if (run.stopRequested?.()) {
          interrupted = true;
          break;
        }
        if (position.globalStep >= totalSteps) break;
      }
      if (interrupted) {
        progress?.done();
        await saveCheckpoint();
        log(`interrupted: checkpoint at step ${position.globalStep} saved${run.runDir ? ` in ${run.runDir}/checkpoints` : ''}`);
        break;
      }
      if (position.stepInEpoch >= stepsPerEpoch) position = { epoch: position.epoch + 1, stepInEpoch: 0, globalStep: position.globalStep };
      progress?.done();
      if (run.test) {
        const accuracy = await evaluate(config.spec, await evalState(), run.test, config.backend);
        history.testAccuracy.push([position.globalStep, accuracy]);
        const skipped = lossScale ? `; loss scale ${lossScale.scale}, ${lossScale.skippedSteps} steps skipped for overflow` : '';
        log(`step ${position.globalStep} (${position.epoch} epochs done): test accuracy ${(accuracy * 100).toFixed(2)}% (${elapsed().toFixed(0)} s)${skipped}`);
      }
      await saveCheckpoint();
    }
  } finally {
    await loader.close();
    model.dispose();
  }

  const trainSeconds = elapsed();
  const finalState = await evalState();
  const deployState = deployedStateDict(reparameterize(config.spec, finalState));
  let trainForm: Evaluation = { accuracy: Number.NaN, top5: Number.NaN, imagesPerSecond: Number.NaN };
  let deployForm: Evaluation = { ...trainForm };
  if (run.test && !interrupted) {
    trainForm = await evaluateWithSpeed(config.spec, finalState, run.test, config.backend);
    deployForm = await evaluateWithSpeed(config.spec, deployState, run.test, config.backend);
  }
  const testAccuracy = trainForm.accuracy;
  const deployTestAccuracy = deployForm.accuracy;
  const normalization = inputNormalization(run.train);
  const { classNames } = dataShape(run.train);
  if (run.runDir && !interrupted) {
    const saveOptions = { normalization, ...(classNames && { classNames }) };
    await saveWeights(join(run.runDir, 'train.safetensors'), config.spec, 'train', finalState, '--out', saveOptions);
    await saveWeights(join(run.runDir, 'deploy.safetensors'), config.spec, 'deploy', deployState, '--out', saveOptions);
    if (classNames) await writeFileAtomic(join(run.runDir, 'classes.txt'), Buffer.from(classNames.join('\n') + '\n'));
    await writeFileAtomic(join(run.runDir, 'curve.svg'), Buffer.from(trainingCurveSvg({ loss: history.loss, accuracy: history.testAccuracy, title: `${config.spec.arch} training` })));
    const summary = {
      arch: config.spec.arch, test_accuracy: testAccuracy, deploy_test_accuracy: deployTestAccuracy,
      test_top5: trainForm.top5, deploy_test_top5: deployForm.top5, seconds: trainSeconds,
      test_images_per_second: trainForm.imagesPerSecond, deploy_test_images_per_second: deployForm.imagesPerSecond,
      steps: position.globalStep, epochs_completed: position.epoch, config,
    };
    await writeFileAtomic(join(run.runDir, 'summary.json'), Buffer.from(JSON.stringify(summary, null, 2) + '\n'));
  }
  return {
    testAccuracy, deployTestAccuracy, trainSeconds, interrupted, model, history, normalization, classNames,
    testImagesPerSecond: trainForm.imagesPerSecond, deployTestImagesPerSecond: deployForm.imagesPerSecond,
  };
}
