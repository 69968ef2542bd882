// The training loop: the paper's recipe (SGD with the official parameter groups, optional custom L2, cosine LR
// with linear warm-up, label smoothing, optional weight EMA) on the autograd tape, with evaluation of both the
// training-time and the deployed form, atomic checkpoints, resume, Ctrl-C handling, progress and a curve plot.
// Not for: argument parsing (lib/cli/train.ts) or the data pipeline (lib/data/).

import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { Tape } from '../autograd/tape.js';
import { retainFreedMemory } from '../ops/alloc.js';
import * as F from '../autograd/functions.js';
import { DataLoader, evalBatches, type Dataset } from '../data/index.js';
import { RepVGGNetwork, type BackendName } from '../engine.js';
import { writeFileAtomic } from '../io/atomic.js';
import { saveWeights, type InputNormalization } from '../io/weights.js';
import type { RepVGGSpec } from '../models/repvgg.js';
import { deployedStateDict, reparameterize } from '../reparam/reparam.js';
import type { StateDict } from '../tensor.js';
import { checkpointName, writeCheckpoint, type RunPosition } from './checkpoint.js';
import { WeightEma } from './ema.js';
import { TrainableRepVGG } from './model.js';
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
  backend: BackendName;
}

export interface TrainHistory {
  /** (global step, mean loss over the last logging window) */
  loss: [number, number][];
  /** (global step at epoch end, test accuracy) */
  testAccuracy: [number, number][];
}

export interface TrainResult {
  /** Normalization to record with weights saved from this run. */
  normalization: InputNormalization;
  testAccuracy: number;
  deployTestAccuracy: number;
  trainSeconds: number;
  interrupted: boolean;
  /** Inference throughput of each form while evaluating the test set (NaN without test data). */
  testImagesPerSecond: number;
  deployTestImagesPerSecond: number;
  model: TrainableRepVGG;
  history: TrainHistory;
}

export interface TrainRun {
  config: TrainConfig;
  train: Dataset;
  test: Dataset | undefined;
  /** Run folder for checkpoints, plot and summary; undefined when only final weights are wanted. */
  runDir: string | undefined;
  model: TrainableRepVGG;
  start?: { position: RunPosition; momentum: Map<string, Float32Array>; ema: StateDict | undefined; history: TrainHistory; seconds: number };
  /** Set to true (e.g. by a SIGINT handler) to stop at the next step boundary with a checkpoint. */
  stopRequested?: () => boolean;
  log?: (line: string) => void;
  /** Draw the progress bar on stderr (default true). */
  showProgress?: boolean;
}

/** Top-1 accuracy of a state dict (training-time or deployed form) on a dataset, through the native engine. */
export async function evaluate(spec: RepVGGSpec, state: StateDict, data: Dataset, backend: BackendName, batchSize = 256): Promise<number> {
  return (await evaluateWithSpeed(spec, state, data, backend, batchSize)).accuracy;
}

/** evaluate() plus the inference throughput it saw (images per second of predict calls, data loading excluded). */
export async function evaluateWithSpeed(
  spec: RepVGGSpec, state: StateDict, data: Dataset, backend: BackendName, batchSize = 256,
): Promise<{ accuracy: number; imagesPerSecond: number }> {
  const network = RepVGGNetwork.fromStateDict(spec, state, { backend, maxBatch: batchSize });
  try {
    let correct = 0;
    let predictSeconds = 0;
    for await (const { images, labels } of evalBatches(data, batchSize)) {
      const started = performance.now();
      const logits = await network.predict(images);
      predictSeconds += (performance.now() - started) / 1000;
      const k = spec.numClasses;
      labels.forEach((label: number, i: number) => {
        let best = 0;
        for (let c = 1; c < k; c++) if ((logits.data[i * k + c] as number) > (logits.data[i * k + best] as number)) best = c;
        if (best === label) correct++;
      });
    }
    return { accuracy: correct / data.count, imagesPerSecond: data.count / predictSeconds };
  } finally {
    network.dispose();
  }
}

/** The normalization the data loader applied, recorded in the saved weights' metadata for inference. */
function inputNormalization(data: Dataset): InputNormalization {
  const n = data.normalization;
  if (!n) return { mean: new Array<number>(data.channels).fill(0), std: new Array<number>(data.channels).fill(1), scale: 1 };
  return { mean: [...n.mean], std: [...n.std], scale: n.scale };
}

export async function train(run: TrainRun): Promise<TrainResult> {
  const { config, model } = run;
  retainFreedMemory(); // reuse freed buffers instead of page-faulting fresh ones every step
  const log = run.log ?? ((line: string) => process.stderr.write(`${line}\n`));
  const loader = new DataLoader(run.train, {
    batchSize: config.batchSize, shuffle: config.shuffle, augment: config.augment, seed: config.seed,
  });
  const stepsPerEpoch = loader.stepsPerEpoch;
  const plannedSteps = config.epochs * stepsPerEpoch;
  const totalSteps = Math.min(plannedSteps, config.maxSteps ?? plannedSteps);
  const schedule = { baseLr: config.lr, totalSteps, warmupSteps: Math.round(config.warmupEpochs * stepsPerEpoch) };
  const optimizer = new SGD(model.params, config);
  const ema = config.emaDecay > 0 ? new WeightEma(model.stateDict(), config.emaDecay) : undefined;
  const history: TrainHistory = run.start?.history ?? { loss: [], testAccuracy: [] };
  let position: RunPosition = run.start?.position ?? { epoch: 0, stepInEpoch: 0, globalStep: 0 };
  if (run.start) {
    for (const [k, v] of run.start.momentum) optimizer.momentumBuffers.set(k, v);
    if (ema && run.start.ema) for (const [k, t] of run.start.ema) ema.shadow.set(k, t);
  }
  const evalState = (): StateDict => ema?.shadow ?? model.stateDict();
  const progress = run.showProgress === false ? undefined : new ProgressBar();
  const started = performance.now() - (run.start?.seconds ?? 0) * 1000;
  const elapsed = (): number => (performance.now() - started) / 1000;

  const saveCheckpoint = async (): Promise<void> => {
    if (!run.runDir) return;
    await writeCheckpoint(join(run.runDir, 'checkpoints', checkpointName(position.globalStep)), {
      weights: model.stateDict(), momentum: optimizer.momentumBuffers, ema: ema?.shadow, position,
      config: { ...config, seconds: elapsed() }, history,
    });
  };
  if (run.runDir) await mkdir(join(run.runDir, 'checkpoints'), { recursive: true });

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
        const tape = new Tape();
        optimizer.zeroGrad();
        const logits = await model.forward(tape, images);
        const { loss, value } = await F.softmaxCrossEntropy(tape, logits, labels, config.labelSmoothing);
        await tape.backward(loss);
        const l2 = config.customL2 ? addCustomL2(config.spec, model.params, model.buffers, config.weightDecay) : 0;
        optimizer.step(learningRate(position.globalStep, schedule));
        ema?.update(model.stateDict());

        const k = config.spec.numClasses;
        labels.forEach((label: number, i: number) => {
          let best = 0;
          for (let c = 1; c < k; c++) if ((logits.value.data[i * k + c] as number) > (logits.value.data[i * k + best] as number)) best = c;
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
        const accuracy = await evaluate(config.spec, evalState(), run.test, config.backend);
        history.testAccuracy.push([position.globalStep, accuracy]);
        log(`step ${position.globalStep} (${position.epoch} epochs done): test accuracy ${(accuracy * 100).toFixed(2)}% (${elapsed().toFixed(0)} s)`);
      }
      await saveCheckpoint();
    }
  } finally {
    loader.close();
  }

  const trainSeconds = elapsed();
  const finalState = evalState();
  const deployState = deployedStateDict(reparameterize(config.spec, finalState));
  let trainForm = { accuracy: Number.NaN, imagesPerSecond: Number.NaN };
  let deployForm = { accuracy: Number.NaN, imagesPerSecond: Number.NaN };
  if (run.test && !interrupted) {
    trainForm = await evaluateWithSpeed(config.spec, finalState, run.test, config.backend);
    deployForm = await evaluateWithSpeed(config.spec, deployState, run.test, config.backend);
  }
  const testAccuracy = trainForm.accuracy;
  const deployTestAccuracy = deployForm.accuracy;
  if (run.runDir && !interrupted) {
    const normalization = inputNormalization(run.train);
    await saveWeights(join(run.runDir, 'train.safetensors'), config.spec, 'train', finalState, '--out', normalization);
    await saveWeights(join(run.runDir, 'deploy.safetensors'), config.spec, 'deploy', deployState, '--out', normalization);
    await writeFileAtomic(join(run.runDir, 'curve.svg'), Buffer.from(trainingCurveSvg({ loss: history.loss, accuracy: history.testAccuracy, title: `${config.spec.arch} training` })));
    const summary = {
      arch: config.spec.arch, test_accuracy: testAccuracy, deploy_test_accuracy: deployTestAccuracy, seconds: trainSeconds,
      test_images_per_second: trainForm.imagesPerSecond, deploy_test_images_per_second: deployForm.imagesPerSecond,
      steps: position.globalStep, epochs_completed: position.epoch, config,
    };
    await writeFileAtomic(join(run.runDir, 'summary.json'), Buffer.from(JSON.stringify(summary, null, 2) + '\n'));
  }
  return {
    testAccuracy, deployTestAccuracy, trainSeconds, interrupted, model, history, normalization: inputNormalization(run.train),
    testImagesPerSecond: trainForm.imagesPerSecond, deployTestImagesPerSecond: deployForm.imagesPerSecond,
  };
}
