// INT8 quantization parameters of a deployed RepVGG, as `repvgg quantize` calibrates them and a weights file
// stores them, and the arithmetic that every part of the library shares: symmetric per-output-channel s8 weights
// (w = weightScale[oc] * q, q in [-127, 127], or [-63, 63] for CPUs without VNNI: see WeightBits) and u8
// activations after a ReLU (x = inputScale * q, q in [0, 255]).
//
// File layout (a deployed safetensors file plus two tensors per int8 layer, official key names otherwise):
//   stageN[.M].rbr_reparam.weight        F32 [O, C/g, 3, 3]  the quantized weights dequantized (weightScale[oc] * q),
//                                                           so any tool that ignores the extra keys runs the
//                                                           weight-quantized model, and q = round(w / scale) exactly
//   stageN[.M].rbr_reparam.weight_scale  F32 [O]
//   stageN[.M].rbr_reparam.input_scale   F32 [1]            the scale of the layer's u8 input
// Layers without these keys run in float32 (the first layer, the classifier, layers kept with --keep).
// Not for: choosing the scales (calibrate.ts) or running the network (lib/engine.ts).

import { FormatError, WeightsMismatchError } from '../errors.js';
import type { DeployedModel } from '../reparam/types.js';
import type { StateDict } from '../tensor.js';

/** Largest |q| a file's int8 weights may have (8 bits). */
export const WEIGHT_QMAX = 127;
export const ACTIVATION_QMAX = 255;

/**
 * Bits of the weights' grid: 8 (q in [-127, 127]) or 7 (q in [-63, 63]). Without VNNI (AVX2, AVX-512 before
 * Cascade Lake) oneDNN sums pairs of u8 x s8 products in int16 with saturation (vpmaddubsw): 255 * 127 * 2
 * overflows 32767, 255 * 63 * 2 = 32130 does not, so 7-bit weights keep every sum exact there (oneDNN's own advice
 * for such CPUs, and onnxruntime's reduce_range).
 */
export type WeightBits = 7 | 8;

/** Largest |q| of a weights grid of `bits` bits. */
export function weightQmax(bits: WeightBits): number {
  return bits === 8 ? WEIGHT_QMAX : 63;
}

/** The int8 parameters of one deployed layer. */
export interface LayerQuantization {
  /** Scale of the layer's u8 input: x = inputScale * q. */
  readonly inputScale: number;
  /** Per output channel: w = weightScales[oc] * q. */
  readonly weightScales: Float32Array; // [outChannels]
}

/** Layer name (e.g. 'stage1.0') -> its int8 parameters; layers not named run in float32. */
export type ModelQuantization = ReadonlyMap<string, LayerQuantization>;

const INPUT_SCALE_SUFFIX = '.rbr_reparam.input_scale';
const WEIGHT_SCALE_SUFFIX = '.rbr_reparam.weight_scale';

/** Whether a state dict carries int8 calibration (any `*.rbr_reparam.input_scale` key). */
export function hasQuantization(state: StateDict): boolean {
  for (const key of state.keys()) if (key.endsWith(INPUT_SCALE_SUFFIX)) return true;
  return false;
}

/** round(v / scale) clamped to [lo, hi] (Math.round: a half rounds up; oneDNN rounds halves to even, and exact halves do not occur in real data). */
export function quantizeValue(v: number, scale: number, lo: number, hi: number): number {
  return Math.min(hi, Math.max(lo, Math.round(v / scale)));
}

/**
 * The integer weights q [O, C/g, 3, 3], within [-qmax, qmax], of a layer whose float weights are already on its grid
 * (or are to be put on it).
 */
export function integerWeights(weight: Float32Array, weightScales: Float32Array, qmax = WEIGHT_QMAX): Float32Array {
  const perChannel = weight.length / weightScales.length;
  const q = new Float32Array(weight.length);
  for (let i = 0; i < weight.length; i++) {
    q[i] = quantizeValue(weight[i] as number, weightScales[Math.floor(i / perChannel)] as number, -qmax, qmax);
  }
  return q;
}

/** weightScales[oc] * q: the float32 weights the int8 layer really computes with. */
export function dequantizedWeights(q: Float32Array, weightScales: Float32Array): Float32Array {
  const perChannel = q.length / weightScales.length;
  return q.map((v, i) => v * (weightScales[Math.floor(i / perChannel)] as number));
}

function positiveFinite(v: number): boolean {
  return Number.isFinite(v) && v > 0 && v < 3e38;
}

/**
 * Removes the quantization tensors from a deployed state dict (so it checks like any deployed file) and returns
 * them by layer, after checking them: shapes against the layer, scales positive and finite, and the weights on
 * their grid (a file edited after `repvgg quantize` would otherwise run different weights in int8 and fp32).
 * @throws WeightsMismatchError or FormatError naming the key and the value received.
 */
export function takeQuantization(state: StateDict, source: string): ModelQuantization {
  const layers = new Map<string, LayerQuantization>();
  const names = new Set<string>();
  for (const key of state.keys()) {
    if (key.endsWith(INPUT_SCALE_SUFFIX)) names.add(key.slice(0, -INPUT_SCALE_SUFFIX.length));
    if (key.endsWith(WEIGHT_SCALE_SUFFIX)) names.add(key.slice(0, -WEIGHT_SCALE_SUFFIX.length));
  }
  for (const name of names) {
    const input = state.get(`${name}${INPUT_SCALE_SUFFIX}`);
    const scales = state.get(`${name}${WEIGHT_SCALE_SUFFIX}`);
    const weight = state.get(`${name}.rbr_reparam.weight`);
    if (!input || !scales || !weight) {
      throw new WeightsMismatchError(`${source}: layer ${name} has only part of its int8 parameters (input_scale, weight_scale, rbr_reparam.weight)`);
    }
    const outChannels = weight.shape[0] ?? 0;
    if (input.data.length !== 1 || scales.shape.length !== 1 || scales.data.length !== outChannels) {
      throw new WeightsMismatchError(
        `${source}: ${name} expects input_scale [1] and weight_scale [${outChannels}] but received [${input.shape.join(', ')}] and [${scales.shape.join(', ')}]`,
      );
    }
    const inputScale = input.data[0] as number;
    if (!positiveFinite(inputScale)) throw new FormatError(`${source}: ${name}${INPUT_SCALE_SUFFIX} must be positive and finite but is ${inputScale}`);
    scales.data.forEach((s, oc) => {
      if (!positiveFinite(s)) throw new FormatError(`${source}: ${name}${WEIGHT_SCALE_SUFFIX}[${oc}] must be positive and finite but is ${s}`);
    });
    const perChannel = weight.data.length / outChannels;
    for (let i = 0; i < weight.data.length; i++) {
      const q = (weight.data[i] as number) / (scales.data[Math.floor(i / perChannel)] as number);
      if (!(Math.abs(q - Math.round(q)) <= 1e-3 && Math.abs(q) <= WEIGHT_QMAX + 1e-3)) {
        throw new FormatError(
          `${source}: ${name}.rbr_reparam.weight[${i}] = ${weight.data[i]} is not on its int8 grid (weight / weight_scale = ${q}); was the file edited after repvgg quantize?`,
        );
      }
    }
    layers.set(name, { inputScale, weightScales: scales.data });
    state.delete(`${name}${INPUT_SCALE_SUFFIX}`);
    state.delete(`${name}${WEIGHT_SCALE_SUFFIX}`);
  }
  return layers;
}

/** The largest |q| among a layer's integer weights (round(w / scale) per output channel). */
export function maxIntegerWeight(weight: Float32Array, weightScales: Float32Array): number {
  return integerWeights(weight, weightScales, Number.POSITIVE_INFINITY).reduce((max, q) => Math.max(max, Math.abs(q)), 0);
}

/**
 * A layer's 8-bit weights on the 7-bit grid of twice the scale: q7 = q / 2 rounded half to even, within [-63, 63]
 * (the doubled scale is exact in float32). For weights calibrated with 8 bits that must run where only 7 are exact.
 */
export function sevenBitWeights(weight: Float32Array, weightScales: Float32Array): { weight: Float32Array; weightScales: Float32Array } {
  const q = integerWeights(weight, weightScales);
  const qmax = weightQmax(7);
  const halved = q.map((v) => {
    const half = v / 2;
    const rounded = Number.isInteger(half) ? half : 2 * Math.round(half / 2); // odd q: the even neighbour of q / 2
    return Math.min(qmax, Math.max(-qmax, rounded));
  });
  const doubled = weightScales.map((s) => 2 * s);
  return { weight: dequantizedWeights(halved, doubled), weightScales: doubled };
}

/**
 * model and quantization as this CPU runs them exactly: unchanged with VNNI (int8Vnni true) or when every int8
 * layer's weights already fit 7 bits; otherwise the layers needing 8 bits move to 7 (sevenBitWeights), named in
 * `requantized`. The engine runs what this returns; a reference must compute with it too.
 */
export function quantizationForCpu(model: DeployedModel, quantization: ModelQuantization, int8Vnni: boolean): {
  model: DeployedModel; quantization: ModelQuantization; requantized: string[];
} {
  if (int8Vnni) return { model, quantization, requantized: [] };
  const requantized: string[] = [];
  const fitted = new Map(quantization);
  const layers = model.layers.map((layer) => {
    const q = quantization.get(layer.name);
    if (!q || maxIntegerWeight(layer.weight, q.weightScales) <= weightQmax(7)) return layer;
    const seven = sevenBitWeights(layer.weight, q.weightScales);
    requantized.push(layer.name);
    fitted.set(layer.name, { inputScale: q.inputScale, weightScales: seven.weightScales });
    return { ...layer, weight: seven.weight };
  });
  return requantized.length === 0 ? { model, quantization, requantized } : { model: { ...model, layers }, quantization: fitted, requantized };
}

/** Adds the quantization tensors of model's int8 layers to its deployed state dict (see the file layout above). */
export function putQuantization(state: StateDict, quantization: ModelQuantization): void {
  for (const [name, q] of quantization) {
    state.set(`${name}${INPUT_SCALE_SUFFIX}`, { shape: [1], data: Float32Array.of(q.inputScale) });
    state.set(`${name}${WEIGHT_SCALE_SUFFIX}`, { shape: [q.weightScales.length], data: q.weightScales });
  }
}

/** Checks that every quantized layer exists in model, is not its first layer, and has one scale per output channel. */
export function checkQuantizationFits(model: DeployedModel, quantization: ModelQuantization): void {
  const layers = new Map(model.layers.map((layer, index) => [layer.name, { layer, index }]));
  for (const [name, q] of quantization) {
    const found = layers.get(name);
    if (!found) throw new WeightsMismatchError(`int8 parameters name layer '${name}', which ${model.spec.arch} does not have`);
    if (found.index === 0) throw new WeightsMismatchError(`int8 parameters for the first layer ${name}: its signed input runs in float32`);
    if (q.weightScales.length !== found.layer.outChannels) {
      throw new WeightsMismatchError(`int8 parameters of ${name} hold ${q.weightScales.length} weight scales for ${found.layer.outChannels} output channels`);
    }
  }
}
