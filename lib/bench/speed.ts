// The paper's speed table, measured here: for each RepVGG variant, backend, precision, form (deployed or
// training-time) and batch size, images per second and the memory the plan uses, with random weights and random
// BN statistics (speed and memory do not depend on the values). Optionally onnxruntime-node on the same deployed
// model as a peer (CPU). What `repvgg bench` prints; a library user gets the same rows from benchmarkSpeed().
// Not for: accuracy (the tests), the developer benchmarks with agreement checks (bench/cpu.ts, bench/cuda.ts).

import { availableParallelism } from 'node:os';

import { RepVGGNetwork, type NetworkProfile, type Precision } from '../engine.js';
import { requireBf16Convolutions } from '../backends.js';
import { ArgumentValueError, BackendError, describeValue } from '../errors.js';
import { ONNX_INPUT_NAME, ONNX_OUTPUT_NAME, encodeOnnx } from '../io/onnx.js';
import { randomStateDict, seededUniform } from '../models/init.js';
import { officialSpec } from '../models/repvgg.js';
import { activate, calibrate, layerConv } from '../quant/calibrate.js';
import { reparameterize } from '../reparam/reparam.js';
import type { DeployedModel } from '../reparam/types.js';
import type { HostTensor } from '../tensor.js';
import { measureThroughput, type Throughput } from './measure.js';

/**
 * The paper's Table 4 speeds (RepVGG, CVPR 2021): images/s on a GTX 1080 Ti, fp32, batch 128, 224x224, deployed
 * models. A different card from any we measure on: shown for reference only. ResNet-50 is the paper's baseline.
 */
export const PAPER_1080TI_IMAGES_PER_SECOND: Readonly<Record<string, number>> = {
  A0: 3256, A1: 2339, B0: 1817, A2: 1322, B1g4: 868, B1: 685, B2: 460, 'ResNet-50': 719,
};

export type SpeedForm = 'deploy' | 'train';

export interface SpeedOptions {
  /** Official variant names (A0, B1g4, ...). */
  models: readonly string[];
  backend: 'cpu' | 'cuda';
  /** cpu: fp32, bf16, int8 (int8 calibrated on random images); cuda: fp32, fp16. */
  precisions: readonly Precision[];
  batches: readonly number[];
  /** Image side (square inputs). Default 224. */
  size?: number;
  /** Seconds of timed runs per measurement (at least 5 runs). Default 2. */
  seconds?: number;
  /** Default both: the deployed plain stack and the training-time multi-branch network. */
  forms?: readonly SpeedForm[];
  /** Also time onnxruntime-node (CPU, fp32, the deployed model exported as ONNX) when it is installed. */
  peer?: boolean;
  /** CPU only: per-layer profile of each deployed measurement. */
  profile?: boolean;
  /** Progress lines ('A0 fp32 deploy batch 8: 412.3 img/s'). */
  onProgress?: (message: string) => void;
}

export interface SpeedRow {
  model: string;
  /** 'ours' or 'onnxruntime-node'. */
  engine: string;
  backend: 'cpu' | 'cuda';
  precision: Precision;
  form: SpeedForm;
  batch: number;
  throughput: Throughput;
  /** The plan's activation buffers and weights (ours only). */
  activationBytes?: number;
  weightBytes?: number;
  profile?: NetworkProfile;
}

/** Largest input we build: batch x 3 x size x size float32 values (1 GiB). */
const MAX_INPUT_VALUES = 2 ** 28;
const WEIGHT_SEED = 1;
const INPUT_SEED = 2;
const CALIBRATION_SEED = 3;
const CALIBRATION_IMAGES = 16;
const NUM_CLASSES = 1000;
const PROFILE_RUNS = 10;

const BACKEND_PRECISIONS: Record<'cpu' | 'cuda', readonly Precision[]> = { cpu: ['fp32', 'bf16', 'int8'], cuda: ['fp32', 'fp16'] };

/** (batch, 3, size, size) seeded uniform values in [-2, 2), roughly the range of normalized pixels. */
export function randomImages(batch: number, size: number, seed: number): HostTensor {
  const uniform = seededUniform(seed);
  const data = new Float32Array(batch * 3 * size * size);
  for (let i = 0; i < data.length; i++) data[i] = 4 * uniform() - 2;
  return { shape: [batch, 3, size, size], data };
}

/**
 * The deployed model with each layer's weights and bias scaled so that its pre-activation output has unit root
 * mean square on these images (measured layer by layer on the CPU, each layer fed the scaled layers before it).
 * Random training-time weights grow by a factor per block (three branches summed), so a deep variant's
 * activations pass fp16's 65504 (B0 and B1g4 at 224 give infinite logits in fp16, in PyTorch as in ours) where
 * trained weights do not; benchmarks that check fp16 against fp32 need weights in a trained network's range.
 * @example const model = await unitScaledLayers(reparameterize(spec, randomStateDict(spec, 'train')), images);
 */
export async function unitScaledLayers(model: DeployedModel, images: HostTensor): Promise<DeployedModel> {
  const layers = [];
  let x = images; // [N, C, H, W]: the previous scaled layer's activation
  for (const layer of model.layers) {
    const y = await layerConv(x, layer);
    let squares = 0;
    for (const v of y.data) squares += v * v;
    const rms = Math.sqrt(squares / y.data.length);
    const scale = rms > 0 && Number.isFinite(rms) ? 1 / rms : 1;
    for (let i = 0; i < y.data.length; i++) y.data[i] = (y.data[i] as number) * scale;
    layers.push({ ...layer, weight: layer.weight.map((w) => w * scale), bias: layer.bias.map((b) => b * scale) });
    x = await activate(y, layer);
  }
  return { ...model, layers };
}

function checkOptions(options: SpeedOptions): void {
  const size = options.size ?? 224;
  if (!Number.isSafeInteger(size) || size < 32 || size > 4096) throw new ArgumentValueError(`Expected an integer from 32 to 4096 for size but received ${describeValue(size)}`);
  if (options.batches.length === 0) throw new ArgumentValueError('Expected at least one batch size for batches but received none');
  for (const batch of options.batches) {
    if (!Number.isSafeInteger(batch) || batch < 1) throw new ArgumentValueError(`Expected positive integers for batches but received ${describeValue(batch)}`);
    if (batch * 3 * size * size > MAX_INPUT_VALUES) {
      throw new ArgumentValueError(`Expected batch x 3 x size x size <= ${MAX_INPUT_VALUES} (1 GiB of input) but received batch ${batch} at size ${size}`);
    }
  }
  const seconds = options.seconds ?? 2;
  if (!(seconds > 0 && seconds <= 3600)) throw new ArgumentValueError(`Expected seconds in (0, 3600] but received ${describeValue(seconds)}`);
  for (const precision of options.precisions) {
    if (!BACKEND_PRECISIONS[options.backend].includes(precision)) {
      throw new ArgumentValueError(`Expected ${BACKEND_PRECISIONS[options.backend].join(', ')} for precisions on the ${options.backend} backend but received ${describeValue(precision)}`);
    }
  }
  if (options.backend === 'cpu' && options.precisions.includes('bf16')) requireBf16Convolutions('precisions');
  if (options.profile === true && options.backend !== 'cpu') throw new ArgumentValueError(`Expected the cpu backend for profile but received ${options.backend}`);
  for (const model of options.models) officialSpec(model); // an unknown name throws here, before anything runs
}

/** onnxruntime-node, which only the peer needs: an optional dependency of users' installs. */
async function loadOnnxruntime(): Promise<typeof import('onnxruntime-node')> {
  try {
    return await import('onnxruntime-node');
  } catch (err) {
    throw new BackendError(`the --peer benchmark needs onnxruntime-node (npm install onnxruntime-node): ${err instanceof Error ? err.message : String(err)}`, 'ERR_BACKEND_UNAVAILABLE');
  }
}

/**
 * Measures every combination the options name, model by model, and returns one row per measurement (the
 * training-time form is skipped for int8, which needs deployed, calibrated weights).
 * @throws ArgumentValueError for an unknown model, a precision the backend lacks or sizes out of bounds;
 *   BackendError when the backend (or, with peer, onnxruntime-node) is unavailable.
 */
export async function benchmarkSpeed(options: SpeedOptions): Promise<SpeedRow[]> {
  checkOptions(options);
  const size = options.size ?? 224;
  const seconds = options.seconds ?? 2;
  const forms = options.forms ?? ['deploy', 'train'];
  const maxBatch = Math.max(...options.batches);
  const progress = options.onProgress ?? (() => undefined);
  const ort = options.peer === true ? await loadOnnxruntime() : undefined;
  const rows: SpeedRow[] = [];
  for (const model of options.models) {
    const spec = officialSpec(model, { numClasses: NUM_CLASSES });
    const name = spec.arch.replace(/^RepVGG-/, '');
    progress(`${name}: random weights with random BN statistics, re-parameterizing`);
    const trainState = randomStateDict(spec, 'train', WEIGHT_SEED);
    const deployed = reparameterize(spec, trainState);
    for (const precision of options.precisions) {
      let quantized: Awaited<ReturnType<typeof calibrate>> | undefined;
      if (precision === 'int8') {
        progress(`${name}: calibrating int8 on ${CALIBRATION_IMAGES} random images`);
        quantized = await calibrate(deployed, randomImages(CALIBRATION_IMAGES, size, CALIBRATION_SEED));
      }
      for (const form of forms) {
        if (form === 'train' && precision === 'int8') continue;
        const networkOptions = { backend: options.backend, precision, maxBatch, ...(quantized && { quantization: quantized.quantization }) };
        const network = form === 'train'
          ? RepVGGNetwork.fromStateDict(spec, trainState, networkOptions)
          : RepVGGNetwork.fromDeployed(quantized?.model ?? deployed, networkOptions);
        try {
          for (const batch of options.batches) {
            const label = `${name} ${precision} ${form} batch ${batch}`;
            progress(`${label}: preparing`);
            const plan = await network.prepare(batch, size, size);
            const images = randomImages(batch, size, INPUT_SEED + batch);
            const throughput = await measureThroughput(() => network.predict(images), batch, { seconds });
            const profile = options.profile === true && form === 'deploy' ? await network.profile(batch, size, size, { runs: PROFILE_RUNS }) : undefined;
            rows.push({
              model: name, engine: 'ours', backend: network.backend, precision, form, batch, throughput,
              activationBytes: plan.activationBytes, weightBytes: plan.weightBytes, ...(profile && { profile }),
            });
            progress(`${label}: ${throughput.medianImagesPerSecond.toFixed(1)} img/s`);
          }
        } finally {
          network.dispose();
        }
      }
    }
    if (ort) {
      const session = await ort.InferenceSession.create(encodeOnnx(deployed), { intraOpNumThreads: availableParallelism(), graphOptimizationLevel: 'all' });
      try {
        for (const batch of options.batches) {
          const images = randomImages(batch, size, INPUT_SEED + batch);
          const feeds = { [ONNX_INPUT_NAME]: new ort.Tensor('float32', images.data, images.shape) };
          const throughput = await measureThroughput(async () => (await session.run(feeds))[ONNX_OUTPUT_NAME], batch, { seconds });
          rows.push({ model: name, engine: 'onnxruntime-node', backend: 'cpu', precision: 'fp32', form: 'deploy', batch, throughput });
          progress(`${name} onnxruntime-node fp32 batch ${batch}: ${throughput.medianImagesPerSecond.toFixed(1)} img/s`);
        }
      } finally {
        await session.release();
      }
    }
  }
  return rows;
}
