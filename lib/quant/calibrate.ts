// Post-training INT8 calibration of a deployed RepVGG (`repvgg quantize`): runs calibration images through the
// network layer by layer, twice — the float32 network and the network as int8 will compute it — and for each
// layer chooses
//   - per-output-channel weight scales minimizing the weights' squared rounding+clipping error (a grid of clip
//     ratios per channel: RepVGG's re-parameterized kernels have a few large taps, and clipping them can pay),
//   - the input scale minimizing the expected squared error of quantizing the layer's input as the int8 network
//     produces it (histogram; clipping error of the values above the clip + uniform rounding noise below),
//   - a bias correction: the per-channel mean, over the calibration set, of what quantization shifted the layer's
//     pre-activation output by (this layer's error and every earlier one's), subtracted from the bias.
// It reports the signal-to-quantization-noise ratio (SQNR) per layer: of the layer alone (float input quantized)
// and of the network so far (int8 path vs float path at this layer's output), and at the logits.
// Not for: the file layout or the shared rounding rules (params.ts), running int8 (lib/engine.ts, native).

import { cpuCapabilities } from '../backends.js';
import { ArgumentValueError, ShapeError, describeValue, formatShape } from '../errors.js';
import { conv2d } from '../ops/conv.js';
import { channelScale, relu, sigmoid } from '../ops/eltwise.js';
import { linear } from '../ops/linear.js';
import { globalAvgPool } from '../ops/pool.js';
import type { DeployedLayer, DeployedModel } from '../reparam/types.js';
import type { HostTensor } from '../tensor.js';
import {
  ACTIVATION_QMAX,
  WEIGHT_QMAX,
  dequantizedWeights,
  integerWeights,
  quantizeValue,
  weightQmax,
  type LayerQuantization,
  type WeightBits,
} from './params.js';

export interface CalibrationOptions {
  /** Layer names (e.g. 'stage4.0') to keep in float32; the first layer always is (its input is signed). */
  keep?: readonly string[];
  /**
   * How scales are chosen: 'mse' (default: the clip with the least squared error, for weights and activations) or
   * 'max' (the plain max-abs scales of the standard recipe, for comparison).
   */
  method?: 'mse' | 'max';
  /** Empirical bias correction (default true). */
  biasCorrection?: boolean;
  /**
   * Bits of the weights' grid (params.ts WeightBits): 8, or 7 for CPUs without VNNI, where only 7-bit weights
   * compute exactly. Default: what this machine's CPU runs exactly (cpuCapabilities().int8Vnni ? 8 : 7); calibrate
   * with 7 for files that must run exactly on any x86 CPU (the engine moves 8-bit layers to 7 bits where needed).
   */
  weightBits?: WeightBits;
  /** Called after each layer with (layers done, layers in all). */
  onProgress?: (done: number, total: number) => void;
}

export interface LayerCalibration {
  readonly name: string;
  readonly precision: 'int8' | 'fp32';
  /** SQNR in dB of this layer alone: its float input quantized on its scale, its int8 weights, corrected bias. */
  readonly layerSqnrDb?: number;
  /** SQNR in dB of the int8 network's output of this layer against the float network's. */
  readonly networkSqnrDb: number;
  readonly inputScale?: number;
  /** Share of this layer's input values above the chosen clip (saturated to 255). */
  readonly clippedFraction?: number;
}

export interface CalibrationResult {
  /** The model with int8 layers' weights on their grid (dequantized) and bias-corrected biases. */
  readonly model: DeployedModel;
  readonly quantization: Map<string, LayerQuantization>;
  /** Bits of the int8 weights' grid chosen (options.weightBits or this CPU's default). */
  readonly weightBits: WeightBits;
  readonly layers: readonly LayerCalibration[];
  /** SQNR in dB of the int8 logits against the float logits on the calibration images. */
  readonly logitsSqnrDb: number;
  /** Share of calibration images whose top-1 class is the same in int8 and float. */
  readonly top1Agreement: number;
  readonly images: number;
}

/** The method recorded in the file's metadata, for the options used. */
export function calibrationMethod(options: Pick<CalibrationOptions, 'method' | 'biasCorrection' | 'weightBits'> = {}): string {
  const mse = (options.method ?? 'mse') === 'mse';
  return `per-output-channel symmetric s8 weights (${options.weightBits ?? defaultWeightBits()} bits, ${mse ? 'MSE clip search' : 'max'}), u8 activations (${mse ? 'histogram MSE clip' : 'max'})` +
    `${options.biasCorrection === false ? '' : ', empirical bias correction'}`;
}

/** 10 log10(sum ref^2 / sum (ref - test)^2); Infinity when they are equal. */
export function sqnrDb(ref: ArrayLike<number>, test: ArrayLike<number>): number {
  let signal = 0;
  let noise = 0;
  for (let i = 0; i < ref.length; i++) {
    const r = ref[i] as number;
    const d = r - (test[i] as number);
    signal += r * r;
    noise += d * d;
  }
  return noise === 0 ? Number.POSITIVE_INFINITY : 10 * Math.log10(signal / noise);
}

/** Squared error of representing values on the symmetric grid scale * [-qmax, qmax]. */
export function weightQuantizationError(values: ArrayLike<number>, scale: number, qmax = WEIGHT_QMAX): number {
  let error = 0;
  for (let i = 0; i < values.length; i++) {
    const v = values[i] as number;
    const d = v - scale * quantizeValue(v, scale, -qmax, qmax);
    error += d * d;
  }
  return error;
}

/** Clip ratios tried per weight channel: max|w| * r / qmax for r = 0.50, 0.51, ..., 1.00. */
const WEIGHT_CLIP_RATIOS = Array.from({ length: 51 }, (_, i) => 0.5 + i / 100);

/** The scale among max|w| * r / qmax (r in WEIGHT_CLIP_RATIOS) with the least weightQuantizationError. */
export function chooseWeightScale(values: ArrayLike<number>, qmax = WEIGHT_QMAX): number {
  let maxAbs = 0;
  for (let i = 0; i < values.length; i++) maxAbs = Math.max(maxAbs, Math.abs(values[i] as number));
  if (maxAbs === 0) return 1; // an all-zero channel: any scale represents it exactly
  let best = { scale: maxAbs / qmax, error: Number.POSITIVE_INFINITY };
  for (const ratio of WEIGHT_CLIP_RATIOS) {
    const scale = (maxAbs * ratio) / qmax;
    const error = weightQuantizationError(values, scale, qmax);
    if (error < best.error) best = { scale, error };
  }
  return best.scale;
}

/** max|v| / qmax (1 for all zeros): the scale of the standard max calibration. */
export function maxAbsScale(values: ArrayLike<number>, qmax: number): number {
  let max = 0;
  for (let i = 0; i < values.length; i++) max = Math.max(max, Math.abs(values[i] as number));
  return max > 0 ? max / qmax : 1;
}

/** A histogram of non-negative activations: exact zeros counted apart (they quantize exactly), the rest in bins. */
export interface ActivationHistogram {
  readonly max: number;
  readonly zeros: number;
  readonly counts: Float64Array; // [bins] over (0, max]
}

const HISTOGRAM_BINS = 2048;

export function activationHistogram(values: Float32Array, bins = HISTOGRAM_BINS): ActivationHistogram {
  let max = 0;
  for (let i = 0; i < values.length; i++) max = Math.max(max, values[i] as number);
  const counts = new Float64Array(bins);
  let zeros = 0;
  const perUnit = max > 0 ? bins / max : 0;
  for (let i = 0; i < values.length; i++) {
    const v = values[i] as number;
    if (v <= 0) zeros++;
    else {
      const bin = Math.min(bins - 1, Math.floor(v * perUnit));
      counts[bin] = (counts[bin] as number) + 1;
    }
  }
  return { max, zeros, counts };
}

/**
 * Expected squared error of quantizing the histogram's values to clip / 255 * [0, 255]: values above clip lose
 * (v - clip)^2 (v at its bin's center), values in (0, clip] carry uniform rounding noise step^2 / 12, zeros none.
 */
export function activationClipError(h: ActivationHistogram, clip: number): number {
  const bins = h.counts.length;
  const width = h.max / bins;
  const step = clip / ACTIVATION_QMAX;
  let error = 0;
  for (let b = 0; b < bins; b++) {
    const count = h.counts[b] as number;
    if (count === 0) continue;
    const center = (b + 0.5) * width;
    error += center > clip ? count * (center - clip) ** 2 : (count * step * step) / 12;
  }
  return error;
}

/** The input scale clip / 255 whose clip, among max * k / 256 for k = 32..256, has the least activationClipError. */
export function chooseActivationScale(h: ActivationHistogram): number {
  if (h.max === 0) return 1; // all zeros: any scale represents them exactly
  let best = { clip: h.max, error: Number.POSITIVE_INFINITY };
  for (let k = 32; k <= 256; k++) {
    const clip = (h.max * k) / 256;
    const error = activationClipError(h, clip);
    if (error < best.error) best = { clip, error };
  }
  return best.clip / ACTIVATION_QMAX;
}

// ---------------------------------------------------------------------------------------------------------------
// The layer-by-layer pass

function fakeQuantize(x: HostTensor, scale: number): { tensor: HostTensor; clipped: number } {
  let clipped = 0;
  const limit = ACTIVATION_QMAX + 0.5; // in steps: values rounding to above 255 saturate
  const data = x.data.map((v) => {
    if (v / scale > limit) clipped++;
    return scale * quantizeValue(v, scale, 0, ACTIVATION_QMAX);
  });
  return { tensor: { shape: x.shape, data }, clipped: clipped / Math.max(1, x.data.length) };
}

/** Per output channel: mean over (n, h, w) of a - b, for [N, C, H, W] tensors. */
function channelMeanDifference(a: HostTensor, b: HostTensor): Float64Array {
  const [n, c, h, w] = a.shape as [number, number, number, number];
  const plane = h * w;
  const sums = new Float64Array(c);
  for (let image = 0; image < n; image++) {
    for (let ch = 0; ch < c; ch++) {
      const start = (image * c + ch) * plane;
      let s = 0;
      for (let i = start; i < start + plane; i++) s += (a.data[i] as number) - (b.data[i] as number);
      sums[ch] = (sums[ch] as number) + s;
    }
  }
  return sums.map((s) => s / (n * plane));
}

function subtractPerChannel(x: HostTensor, delta: Float64Array): void {
  const [, c, h, w] = x.shape as [number, number, number, number];
  const plane = h * w;
  for (let i = 0; i < x.data.length; i++) x.data[i] = (x.data[i] as number) - (delta[Math.floor(i / plane) % c] as number);
}

/**
 * A deployed layer's 3x3 conv with its bias (the pre-activation), optionally with other weights of the same shape
 * (the int8 network's dequantized ones): [N, in, H, W] -> [N, out, H / stride, W / stride].
 */
export function layerConv(x: HostTensor, layer: DeployedLayer, weight = layer.weight): Promise<HostTensor> {
  const shape = [layer.outChannels, layer.inChannels / layer.groups, 3, 3];
  return conv2d(x, { shape, data: weight }, { bias: { shape: [layer.outChannels], data: layer.bias }, stride: layer.stride, pad: 1, groups: layer.groups });
}

/** What follows a layer's conv: SE (D2se) then ReLU, with the library's ops (off the event loop, as the engine computes them). */
export async function activate(y: HostTensor, layer: DeployedLayer): Promise<HostTensor> {
  const se = layer.se;
  if (!se) return relu(y);
  const c = layer.outChannels;
  const hidden = await linear(await globalAvgPool(y), { shape: [se.channels, c], data: se.downWeight }, { shape: [se.channels], data: se.downBias }, { relu: true });
  const gates = await sigmoid(await linear(hidden, { shape: [c, se.channels], data: se.upWeight }, { shape: [c], data: se.upBias }));
  return relu(await channelScale(y, gates));
}

/** Global average pooling and the classifier: [N, C, H, W] features -> [N, K] logits. */
async function logitsOf(model: DeployedModel, features: HostTensor): Promise<Float32Array> {
  const k = model.spec.numClasses;
  const c = features.shape[1] as number;
  const pooled = await globalAvgPool(features);
  return (await linear(pooled, { shape: [k, c], data: model.linearWeight }, { shape: [k], data: model.linearBias })).data;
}

function argmaxRow(values: Float32Array, row: number, k: number): number {
  let best = 0;
  for (let j = 1; j < k; j++) if ((values[row * k + j] as number) > (values[row * k + best] as number)) best = j;
  return best;
}

/** Most memory the layer-by-layer pass may hold in activations (it keeps five tensors of a layer's size). */
const MAX_CALIBRATION_BYTES = 4 * 2 ** 30;

/** Refuses a calibration set whose activations would not fit MAX_CALIBRATION_BYTES, before anything is allocated. */
function checkCalibrationMemory(model: DeployedModel, images: HostTensor): void {
  const [n, , h, w] = images.shape as [number, number, number, number];
  let height = h;
  let width = w;
  let largest = 0; // floats of one image's largest layer output
  for (const layer of model.layers) {
    height = Math.floor((height - 1) / layer.stride) + 1;
    width = Math.floor((width - 1) / layer.stride) + 1;
    largest = Math.max(largest, layer.outChannels * height * width);
  }
  const bytes = 5 * 4 * largest * n;
  if (bytes > MAX_CALIBRATION_BYTES) {
    const perImage = MAX_CALIBRATION_BYTES / (5 * 4 * largest);
    throw new ArgumentValueError(
      `Expected at most ${Math.floor(perImage)} calibration images of ${h}x${w} for ${model.spec.arch} (its activations need ` +
        `${(bytes / 2 ** 30).toFixed(1)} GiB for ${n}; the limit is 4 GiB) but received ${n}: use fewer (--calib-count)`,
    );
  }
}

/** The weight bits that this machine's CPU computes exactly: 8 with VNNI, else 7 (see params.ts WeightBits). */
export function defaultWeightBits(): WeightBits {
  return cpuCapabilities().int8Vnni ? 8 : 7;
}

/**
 * Calibrates int8 for every layer of model but the first (and those in options.keep) on images, float32 NCHW
 * [N, C, H, W] normalized as the model expects (several hundred images is plenty; memory grows with N).
 * @throws ShapeError for images that do not fit the model; ArgumentValueError for unknown names in keep.
 * @example const { model: q, quantization, layers } = await calibrate(deployed, calibImages);
 */
export async function calibrate(model: DeployedModel, images: HostTensor, options: CalibrationOptions = {}): Promise<CalibrationResult> {
  const [n, c] = images.shape as [number, number, number, number];
  if (images.shape.length !== 4 || c !== model.spec.inChannels || n < 1) {
    throw new ShapeError(`Expected calibration images [N, ${model.spec.inChannels}, H, W] but received ${formatShape(images.shape)}`);
  }
  checkCalibrationMemory(model, images);
  const names = new Set(model.layers.map((l) => l.name));
  const keep = new Set(options.keep ?? []);
  for (const name of keep) {
    if (!names.has(name)) {
      throw new ArgumentValueError(`Expected layer names of ${model.spec.arch} (${[...names].slice(0, 4).join(', ')}, ...) for keep but received '${name}'`);
    }
  }
  const weightBits = options.weightBits ?? defaultWeightBits();
  if (weightBits !== 7 && weightBits !== 8) throw new ArgumentValueError(`Expected 7 or 8 for weightBits but received ${describeValue(weightBits)}`);
  const qmax = weightQmax(weightBits);
  const mse = (options.method ?? 'mse') === 'mse';
  const correctBias = options.biasCorrection !== false;
  const quantization = new Map<string, LayerQuantization>();
  const reports: LayerCalibration[] = [];
  const layers: DeployedLayer[] = [];
  let xFloat: HostTensor = images;
  let xInt8: HostTensor = images;
  for (const [index, layer] of model.layers.entries()) {
    const yFloat = await layerConv(xFloat, layer);
    if (index === 0 || keep.has(layer.name)) {
      const yInt8 = index === 0 ? { shape: yFloat.shape, data: yFloat.data.slice() } : await layerConv(xInt8, layer);
      layers.push(layer);
      xFloat = await activate(yFloat, layer);
      xInt8 = await activate(yInt8, layer);
      reports.push({ name: layer.name, precision: 'fp32', networkSqnrDb: sqnrDb(xFloat.data, xInt8.data) });
    } else {
      const perChannel = layer.weight.length / layer.outChannels;
      const weightScales = new Float32Array(layer.outChannels);
      for (let oc = 0; oc < layer.outChannels; oc++) {
        const channel = layer.weight.subarray(oc * perChannel, (oc + 1) * perChannel);
        weightScales[oc] = mse ? chooseWeightScale(channel, qmax) : maxAbsScale(channel, qmax);
      }
      const weight = dequantizedWeights(integerWeights(layer.weight, weightScales, qmax), weightScales);
      const inputScale = mse ? chooseActivationScale(activationHistogram(xInt8.data)) : maxAbsScale(xInt8.data, ACTIVATION_QMAX);
      const quantizedInput = fakeQuantize(xInt8, inputScale);
      const yInt8 = await layerConv(quantizedInput.tensor, layer, weight);
      const yAlone = await layerConv(fakeQuantize(xFloat, inputScale).tensor, layer, weight);
      // Empirical bias correction: remove the mean shift quantization put on each output channel.
      const shift = correctBias ? channelMeanDifference(yInt8, yFloat) : new Float64Array(layer.outChannels);
      subtractPerChannel(yInt8, shift);
      subtractPerChannel(yAlone, shift);
      const bias = Float32Array.from(layer.bias, (b, oc) => b - (shift[oc] as number));
      layers.push({ ...layer, weight, bias });
      quantization.set(layer.name, { inputScale, weightScales });
      xFloat = await activate(yFloat, layer);
      xInt8 = await activate(yInt8, layer);
      reports.push({
        name: layer.name, precision: 'int8', inputScale, clippedFraction: quantizedInput.clipped,
        layerSqnrDb: sqnrDb(xFloat.data, (await activate(yAlone, layer)).data), networkSqnrDb: sqnrDb(xFloat.data, xInt8.data),
      });
    }
    options.onProgress?.(index + 1, model.layers.length);
  }
  const quantized: DeployedModel = { ...model, layers };
  const k = model.spec.numClasses;
  const floatLogits = await logitsOf(model, xFloat);
  const int8Logits = await logitsOf(quantized, xInt8);
  let agree = 0;
  for (let row = 0; row < n; row++) if (argmaxRow(floatLogits, row, k) === argmaxRow(int8Logits, row, k)) agree++;
  return {
    model: quantized, quantization, weightBits, layers: reports, images: n,
    logitsSqnrDb: sqnrDb(floatLogits, int8Logits), top1Agreement: agree / n,
  };
}
