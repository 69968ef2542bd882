// Float64 reference implementations of every op and of whole RepVGG networks (training-time and deployed form),
// the project-wide error metric and seeded random data: what tests compare native ops and models against.
// Not for: production use. Loops are plain and readable, ordered only well enough to run small inputs in seconds.

import { blocksOf, expectedWeights } from '../../lib/models/repvgg.js';
import type { RepVGGSpec } from '../../lib/models/repvgg.js';
import type { DeployedModel } from '../../lib/reparam/types.js';
import type { HostTensor, StateDict } from '../../lib/tensor.js';
import { ACTIVATION_QMAX, integerWeights, quantizeValue, type ModelQuantization } from '../../lib/quant/params.js';

/** A dense row-major float64 tensor: what every reference op returns. */
export interface RefTensor {
  readonly data: Float64Array;
  readonly shape: readonly number[];
}

/** Dense row-major data of any precision with its shape: float32 weights, HostTensors and RefTensors all fit. */
export interface DenseArray {
  readonly data: ArrayLike<number>;
  readonly shape: readonly number[];
}

export interface ConvOptions {
  readonly stride: number;
  readonly pad: number;
  readonly groups: number;
}

/** Logits of a whole network. */
export interface ModelOutput {
  readonly logits: Float64Array; // [N, K]
  readonly shape: [number, number];
}

/** PyTorch's BatchNorm2d default, which the official RepVGG uses. */
export const BN_EPS = 1e-5;

// ---------------------------------------------------------------------------------------------------------------
// Error metric

/**
 * The project-wide error metric: max |ours - ref| / max(max |ref|, tiny).
 * Normalizing by the largest reference magnitude (not element by element) keeps the metric meaningful where the
 * reference is near zero: after ReLU and in sums that cancel, element-wise relative errors explode without any
 * bug. A NaN or infinite difference gives Infinity, so non-finite output never passes a tolerance.
 * @example maxRelativeError([1, 2.001], [1, 2]) // 0.0005
 */
export function maxRelativeError(ours: ArrayLike<number>, ref: ArrayLike<number>): number {
  if (ours.length !== ref.length) {
    throw new Error(`maxRelativeError: ours has ${ours.length} elements but ref has ${ref.length}`);
  }
  const tiny = 1e-30; // only matters when ref is all zeros: then any non-zero difference is a huge error
  let maxDiff = 0;
  let maxRef = 0;
  for (let i = 0; i < ref.length; i++) {
    const r = ref[i] as number;
    const diff = Math.abs((ours[i] as number) - r);
    if (!Number.isFinite(diff)) return Number.POSITIVE_INFINITY;
    maxDiff = Math.max(maxDiff, diff);
    maxRef = Math.max(maxRef, Math.abs(r));
  }
  return maxDiff / Math.max(maxRef, tiny);
}

/** Index of the largest logit of each row: the predicted class per sample. */
export function argmaxRows(logits: ArrayLike<number> /* [N, K] */, [n, k]: readonly [number, number]): number[] {
  const classes: number[] = [];
  for (let row = 0; row < n; row++) {
    let best = 0;
    for (let j = 1; j < k; j++) if ((logits[row * k + j] as number) > (logits[row * k + best] as number)) best = j;
    classes.push(best);
  }
  return classes;
}

// ---------------------------------------------------------------------------------------------------------------
// Seeded random data

/** A seeded generator of uniform numbers in the open interval (0, 1). */
export type Rng = () => number;

/**
 * A small deterministic PRNG (32-bit xorshift, 13/17/5 shifts) so that every test run sees the same data.
 * The seed is scrambled first so that nearby seeds (0, 1, 2) give unrelated streams, and so that 0 is allowed.
 */
export function makeRng(seed: number): Rng {
  let state = Math.imul((seed | 0) ^ 0x5bd1e995, 0x9e3779b1) >>> 0;
  if (state === 0) state = 0x6d2b79f5; // xorshift would stay at zero forever
  const next = (): number => {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    state >>>= 0;
    return state; // 1 .. 2^32 - 1
  };
  for (let i = 0; i < 8; i++) next(); // the first outputs still resemble the seed
  // (k - 0.5) / 2^32 is strictly inside (0, 1) and never exactly 1/2.
  return () => (next() - 0.5) / 4294967296;
}

/**
 * n values uniform in [-scale, scale]. None is exactly zero (the generator never yields 1/2), so an array is
 * never all zero and a test cannot pass by comparing zeros with zeros.
 */
export function randomArray(n: number, rng: Rng, scale: number): Float32Array {
  if (!(scale > 0)) throw new Error(`randomArray: expected a positive scale but received ${scale}`);
  const data = new Float32Array(n);
  for (let i = 0; i < n; i++) data[i] = (2 * rng() - 1) * scale;
  return data;
}

/** Eval-mode BatchNorm statistics of c channels. */
export interface BnStats {
  readonly mean: Float32Array; // [c]
  readonly var: Float32Array; // [c], positive
  readonly gamma: Float32Array; // [c]
  readonly beta: Float32Array; // [c]
}

/**
 * Plausible trained-BN statistics: mean and beta in [-0.2, 0.2], var in [0.5, 1.5], gamma in [0.5, 1.5].
 * Variances stay well above eps so that the BN scale is far from 1/sqrt(eps), as in trained networks.
 */
export function randomBnStats(c: number, rng: Rng): BnStats {
  const inRange = (low: number, high: number): Float32Array =>
    Float32Array.from({ length: c }, () => low + (high - low) * rng());
  return { mean: inRange(-0.2, 0.2), var: inRange(0.5, 1.5), gamma: inRange(0.5, 1.5), beta: inRange(-0.2, 0.2) };
}

/**
 * Random training-time weights for spec with exactly the keys and shapes of expectedWeights(spec, 'train').
 * Conv weights are uniform with variance 2 / fanIn (He) and each branch's BN gamma is divided by sqrt(branches),
 * so activations stay of order one through the whole depth and logits are neither zero nor huge.
 * Biases are uniform in [-0.1, 0.1] except the SE squeeze biases, in [0.2, 0.6].
 */
export function randomTrainState(spec: RepVGGSpec, rng: Rng): StateDict {
  const state: StateDict = new Map();
  const expected = expectedWeights(spec, 'train');
  const branches = new Map(blocksOf(spec).map((b) => [b.name, b.hasIdentity ? 3 : 2]));
  for (const [key, shape] of expected) {
    if (!key.endsWith('.running_mean')) continue;
    const prefix = key.slice(0, -'.running_mean'.length); // e.g. 'stage1.1.rbr_dense.bn'
    const c = shape[0] as number;
    const stats = randomBnStats(c, rng);
    const block = prefix.replace(/\.(rbr_.*|bn)$/, ''); // 'stage1.1' from '...rbr_dense.bn' or QARepVGG's '...bn'
    const gammaScale = 1 / Math.sqrt(branches.get(block) as number);
    state.set(`${prefix}.running_mean`, { shape: [c], data: stats.mean });
    state.set(`${prefix}.running_var`, { shape: [c], data: stats.var });
    state.set(`${prefix}.weight`, { shape: [c], data: stats.gamma.map((g) => g * gammaScale) });
    state.set(`${prefix}.bias`, { shape: [c], data: stats.beta });
  }
  for (const [key, shape] of expected) {
    if (state.has(key)) continue;
    const size = shape.reduce((p, d) => p * d, 1);
    if (key.endsWith('.se.down.bias')) {
      // Positive, so that the few squeeze units are not all dead after ReLU: a dead unit hides its weights.
      state.set(key, { shape, data: randomArray(size, rng, 0.2).map((v) => v + 0.4) });
    } else if (shape.length === 1) {
      state.set(key, { shape, data: randomArray(size, rng, 0.1) }); // SE up and linear biases
    } else {
      const fanIn = size / (shape[0] as number); // conv [O, C/g, KH, KW] and linear [K, C] alike
      state.set(key, { shape, data: randomArray(size, rng, Math.sqrt(6 / fanIn)) });
    }
  }
  return state;
}

// ---------------------------------------------------------------------------------------------------------------
// Ops

function toFloat64(values: ArrayLike<number>): Float64Array {
  return values instanceof Float64Array ? values : Float64Array.from(values);
}

function shapeOf(t: DenseArray, rank: number, name: string): number[] {
  const size = t.shape.reduce((p, d) => p * d, 1);
  if (t.shape.length !== rank || size !== t.data.length) {
    throw new Error(
      `Expected ${name} of rank ${rank} matching its ${t.data.length} elements but received shape [${t.shape.join(', ')}]`,
    );
  }
  return [...t.shape];
}

function checkLength(values: ArrayLike<number>, length: number, name: string): void {
  if (values.length !== length) throw new Error(`Expected ${length} values for ${name} but received ${values.length}`);
}

/**
 * Direct convolution (cross-correlation, as in PyTorch), zero padding on all four sides.
 * OH = floor((H + 2 pad - KH) / stride) + 1, likewise OW.
 */
export function conv2dRef(
  x: DenseArray, // [N, C, H, W]
  w: DenseArray, // [O, C/groups, KH, KW]
  bias: ArrayLike<number> | undefined, // [O]
  { stride, pad, groups }: ConvOptions,
): RefTensor /* [N, O, OH, OW] */ {
  const [n, c, h, wd] = shapeOf(x, 4, 'conv input') as [number, number, number, number];
  const [o, cPerGroup, kh, kw] = shapeOf(w, 4, 'conv weight') as [number, number, number, number];
  if (cPerGroup * groups !== c || o % groups !== 0) {
    throw new Error(`conv2dRef: ${groups} groups do not fit input channels ${c}, weight [${w.shape.join(', ')}]`);
  }
  if (bias !== undefined) checkLength(bias, o, 'conv bias');
  const oh = Math.floor((h + 2 * pad - kh) / stride) + 1;
  const ow = Math.floor((wd + 2 * pad - kw) / stride) + 1;
  if (oh < 1 || ow < 1) throw new Error(`conv2dRef: input ${h}x${wd} is too small for kernel ${kh}x${kw}, pad ${pad}`);
  const xs = toFloat64(x.data);
  const ws = toFloat64(w.data);
  const y = new Float64Array(n * o * oh * ow);
  const oPerGroup = o / groups;
  for (let b = 0; b < n; b++) {
    for (let oc = 0; oc < o; oc++) {
      const group = Math.floor(oc / oPerGroup);
      const yPlane = (b * o + oc) * oh * ow;
      if (bias !== undefined) y.fill(bias[oc] as number, yPlane, yPlane + oh * ow);
      for (let ic = 0; ic < cPerGroup; ic++) {
        const xPlane = (b * c + group * cPerGroup + ic) * h * wd;
        const wTaps = (oc * cPerGroup + ic) * kh * kw;
        for (let ky = 0; ky < kh; ky++) {
          for (let kx = 0; kx < kw; kx++) {
            const weight = ws[wTaps + ky * kw + kx] as number;
            // Output columns whose input column ox * stride + kx - pad lies inside [0, W): the rest read padding.
            const oxFirst = Math.max(0, Math.ceil((pad - kx) / stride));
            const oxEnd = Math.min(ow, Math.floor((wd - 1 + pad - kx) / stride) + 1);
            for (let oy = 0; oy < oh; oy++) {
              const iy = oy * stride + ky - pad;
              if (iy < 0 || iy >= h) continue;
              const yRow = yPlane + oy * ow;
              const xRow = xPlane + iy * wd + kx - pad; // input index that output column 0 would read
              for (let ox = oxFirst; ox < oxEnd; ox++) {
                y[yRow + ox] = (y[yRow + ox] as number) + weight * (xs[xRow + ox * stride] as number);
              }
            }
          }
        }
      }
    }
  }
  return { data: y, shape: [n, o, oh, ow] };
}

/** Eval-mode batch normalization over dim 1: y = (x - mean) * gamma / sqrt(var + eps) + beta. */
export function batchNormRef(
  x: DenseArray, // [N, C, ...]
  mean: ArrayLike<number>, // [C]
  variance: ArrayLike<number>, // [C]
  gamma: ArrayLike<number>, // [C]
  beta: ArrayLike<number>, // [C]
  eps = BN_EPS,
): RefTensor /* same shape as x */ {
  const [n, c] = x.shape as [number, number];
  if (x.shape.length < 2 || x.shape.reduce((p, d) => p * d, 1) !== x.data.length) {
    throw new Error(
      `Expected batch norm input [N, C, ...] matching its ${x.data.length} elements but received [${x.shape.join(', ')}]`,
    );
  }
  const inner = x.data.length / (n * c); // H * W, or 1 for [N, C]
  for (const [values, name] of [[mean, 'mean'], [variance, 'var'], [gamma, 'gamma'], [beta, 'beta']] as const) {
    checkLength(values, c, `batch norm ${name}`);
  }
  const y = new Float64Array(x.data.length);
  for (let b = 0; b < n; b++) {
    for (let ch = 0; ch < c; ch++) {
      const scale = (gamma[ch] as number) / Math.sqrt((variance[ch] as number) + eps);
      const shift = (beta[ch] as number) - (mean[ch] as number) * scale;
      const base = (b * c + ch) * inner;
      for (let i = base; i < base + inner; i++) y[i] = (x.data[i] as number) * scale + shift;
    }
  }
  return { data: y, shape: [...x.shape] };
}

function mapRef(x: DenseArray, f: (v: number) => number): RefTensor {
  return { data: Float64Array.from(x.data, f), shape: [...x.shape] };
}

/** max(x, 0), any shape. */
export function reluRef(x: DenseArray): RefTensor {
  return mapRef(x, (v) => (v > 0 ? v : 0));
}

/** 1 / (1 + exp(-x)), any shape. */
export function sigmoidRef(x: DenseArray): RefTensor {
  return mapRef(x, (v) => 1 / (1 + Math.exp(-v)));
}

/** a + b element-wise; the shapes must be equal (no broadcasting). */
export function addRef(a: DenseArray, b: DenseArray): RefTensor {
  if (a.shape.join() !== b.shape.join()) {
    throw new Error(`addRef: shapes [${a.shape.join(', ')}] and [${b.shape.join(', ')}] differ`);
  }
  return { data: Float64Array.from(a.data, (v, i) => v + (b.data[i] as number)), shape: [...a.shape] };
}

/** Mean over the spatial dims. */
export function globalAvgPoolRef(x: DenseArray /* [N, C, H, W] */): RefTensor /* [N, C] */ {
  const [n, c, h, w] = shapeOf(x, 4, 'pool input') as [number, number, number, number];
  const y = new Float64Array(n * c);
  for (let plane = 0; plane < n * c; plane++) {
    let sum = 0;
    for (let i = plane * h * w; i < (plane + 1) * h * w; i++) sum += x.data[i] as number;
    y[plane] = sum / (h * w);
  }
  return { data: y, shape: [n, c] };
}

/** y = x W^T + b, as torch.nn.Linear. */
export function linearRef(
  x: DenseArray, // [N, C]
  w: DenseArray, // [K, C]
  b: ArrayLike<number>, // [K]
): RefTensor /* [N, K] */ {
  const [n, c] = shapeOf(x, 2, 'linear input') as [number, number];
  const [k, wc] = shapeOf(w, 2, 'linear weight') as [number, number];
  if (wc !== c) throw new Error(`linearRef: input has ${c} features but weight [${k}, ${wc}] expects ${wc}`);
  checkLength(b, k, 'linear bias');
  const y = new Float64Array(n * k);
  for (let row = 0; row < n; row++) {
    for (let j = 0; j < k; j++) {
      let sum = b[j] as number;
      for (let i = 0; i < c; i++) sum += (x.data[row * c + i] as number) * (w.data[j * c + i] as number);
      y[row * k + j] = sum;
    }
  }
  return { data: y, shape: [n, k] };
}

/**
 * Squeeze-excitation: x * sigmoid(up(relu(down(gap(x))))) per (n, c), with the 1x1 convs as matrices.
 * The official code pools with avg_pool2d(kernel = W), which equals the global mean for square inputs.
 */
export function seRef(
  x: DenseArray, // [N, C, H, W]
  downW: ArrayLike<number>, // [R, C]
  downB: ArrayLike<number>, // [R]
  upW: ArrayLike<number>, // [C, R]
  upB: ArrayLike<number>, // [C]
): RefTensor /* [N, C, H, W] */ {
  const [n, c, h, w] = shapeOf(x, 4, 'SE input') as [number, number, number, number];
  const r = downB.length;
  const squeezed = reluRef(linearRef(globalAvgPoolRef(x), { data: downW, shape: [r, c] }, downB)); // [N, R]
  const gate = sigmoidRef(linearRef(squeezed, { data: upW, shape: [c, r] }, upB)); // [N, C]
  const y = new Float64Array(x.data.length);
  for (let plane = 0; plane < n * c; plane++) {
    const g = gate.data[plane] as number;
    for (let i = plane * h * w; i < (plane + 1) * h * w; i++) y[i] = (x.data[i] as number) * g;
  }
  return { data: y, shape: [n, c, h, w] };
}

// ---------------------------------------------------------------------------------------------------------------
// Whole networks

function inputOf(spec: RepVGGSpec, x: HostTensor): RefTensor /* [N, C, H, W] */ {
  if (x.shape.length !== 4 || x.shape[1] !== spec.inChannels) {
    throw new Error(`Expected input [N, ${spec.inChannels}, H, W] but received [${x.shape.join(', ')}]`);
  }
  return { data: toFloat64(x.data), shape: [...x.shape] };
}

/** x rounded to bfloat16 (8 significant bits), to nearest even, as oneDNN converts float32 to bf16. */
export function roundToBf16(x: number): number {
  const bits = new Uint32Array(new Float32Array([x]).buffer);
  const value = bits[0]!;
  bits[0] = ((value + 0x7fff + ((value >>> 16) & 1)) & 0xffff0000) >>> 0;
  return new Float32Array(bits.buffer)[0]!;
}

/** Global average pooling, then the classifier; bf16Head: its features and weights rounded to bf16 first. */
function classify(features: RefTensor, weight: DenseArray, bias: ArrayLike<number>, bf16Head = false): ModelOutput {
  const pooled = globalAvgPoolRef(features);
  const logits = bf16Head
    ? linearRef({ data: pooled.data.map(roundToBf16), shape: pooled.shape }, { data: Float64Array.from(weight.data, roundToBf16), shape: weight.shape }, bias)
    : linearRef(pooled, weight, bias);
  return { logits: logits.data, shape: logits.shape as [number, number] };
}

/** Reads weights from a state dict, checking each shape against expectedWeights(spec, 'train'). */
function trainWeightReader(spec: RepVGGSpec, state: StateDict): (key: string) => HostTensor {
  const expected = expectedWeights(spec, 'train');
  return (key) => {
    const tensor = state.get(key);
    const shape = expected.get(key);
    if (tensor === undefined || shape === undefined) throw new Error(`Missing weight ${key}`);
    if (tensor.shape.join() !== shape.join() || tensor.data.length !== tensor.shape.reduce((p, d) => p * d, 1)) {
      throw new Error(`Weight ${key} has shape [${tensor.shape.join(', ')}], expected [${shape.join(', ')}]`);
    }
    return tensor;
  };
}

/**
 * The training-time multi-branch network in eval mode, all in float64 from float32 weights:
 * per block y = ReLU(SE?(BN(conv3x3_s(x)) + BN(conv1x1_s(x)) + BN_id(x))) (QARepVGG blocks:
 * ReLU(BN(BN(conv3x3_s(x)) + conv1x1_s(x) + x))), then global average pool and linear.
 */
export function modelTrainRef(spec: RepVGGSpec, state: StateDict, x: HostTensor /* [N, C, H, W] */): ModelOutput {
  const weight = trainWeightReader(spec, state);
  const bn = (t: RefTensor, prefix: string): RefTensor =>
    batchNormRef(
      t,
      weight(`${prefix}.running_mean`).data,
      weight(`${prefix}.running_var`).data,
      weight(`${prefix}.weight`).data,
      weight(`${prefix}.bias`).data,
    );
  let act = inputOf(spec, x);
  for (const block of blocksOf(spec)) {
    const p = block.name;
    const conv = (kernelKey: string, pad: number): RefTensor =>
      conv2dRef(act, weight(kernelKey), undefined, { stride: block.stride, pad, groups: block.groups });
    if (spec.block === 'qa') {
      // QARepVGG: relu(BN(BN(conv3x3(x)) + conv1x1(x) [+ x])).
      let sum = addRef(bn(conv(`${p}.rbr_dense.conv.weight`, 1), `${p}.rbr_dense.bn`), conv(`${p}.rbr_1x1.weight`, 0));
      if (block.hasIdentity) sum = addRef(sum, act);
      act = reluRef(bn(sum, `${p}.bn`));
      continue;
    }
    const dense = bn(conv(`${p}.rbr_dense.conv.weight`, 1), `${p}.rbr_dense.bn`);
    const oneByOne = bn(conv(`${p}.rbr_1x1.conv.weight`, 0), `${p}.rbr_1x1.bn`);
    let sum = addRef(dense, oneByOne);
    if (block.hasIdentity) sum = addRef(sum, bn(act, `${p}.rbr_identity`));
    if (block.seChannels > 0) {
      const se = (part: string): Float32Array => weight(`${p}.se.${part}`).data;
      sum = seRef(sum, se('down.weight'), se('down.bias'), se('up.weight'), se('up.bias'));
    }
    act = reluRef(sum);
  }
  return classify(act, weight('linear.weight'), weight('linear.bias').data);
}

/**
 * The deployed network: per layer y = ReLU(SE?(conv3x3_s(x) + bias)), then global average pool and linear.
 * With quantization, the layers it names compute as int8 does, in float64 (see modelInt8Ref); bf16Head: the
 * classifier's features and weights rounded to bf16 (an int8 network's head on CPUs with native bf16).
 */
export function modelDeployRef(
  model: DeployedModel, x: HostTensor /* [N, C, H, W] */, quantization?: ModelQuantization, bf16Head = false,
): ModelOutput {
  let act = inputOf(model.spec, x);
  for (const layer of model.layers) {
    const shape = [layer.outChannels, layer.inChannels / layer.groups, 3, 3];
    const q = quantization?.get(layer.name);
    let input: RefTensor = act;
    let weight: DenseArray = { data: layer.weight, shape };
    if (q) {
      input = { data: act.data.map((v) => q.inputScale * quantizeValue(v, q.inputScale, 0, ACTIVATION_QMAX)), shape: act.shape };
      const perChannel = layer.weight.length / layer.outChannels;
      const integers = integerWeights(layer.weight, q.weightScales);
      weight = { data: Float64Array.from(integers, (v, i) => v * (q.weightScales[Math.floor(i / perChannel)] as number)), shape };
    }
    let y = conv2dRef(input, weight, layer.bias, { stride: layer.stride, pad: 1, groups: layer.groups });
    const se = layer.se;
    if (se !== undefined) y = seRef(y, se.downWeight, se.downBias, se.upWeight, se.upBias);
    act = reluRef(y);
  }
  const { numClasses } = model.spec;
  const linearWeight = { data: model.linearWeight, shape: [numClasses, model.linearWeight.length / numClasses] };
  return classify(act, linearWeight, model.linearBias, bf16Head);
}

/**
 * The deployed network with int8 layers, in float64: each layer named in quantization rounds its input to u8
 * (q = clamp(round(x / inputScale), 0, 255)) and computes with its integer weights dequantized
 * (weightScales[oc] * q), i.e. inputScale * weightScales[oc] * sum(q_x q_w) + bias exactly; every other layer, the
 * SE blocks and the head as modelDeployRef. A layer whose u8 output feeds an int8 layer is rounded by that layer,
 * on its input scale, which is where the native program rounds it too. headPrecision: the native plan's (its
 * report's headPrecision), 'bf16' rounding the classifier's features and weights.
 */
export function modelInt8Ref(
  model: DeployedModel, quantization: ModelQuantization, x: HostTensor /* [N, C, H, W] */, headPrecision: 'fp32' | 'bf16' = 'fp32',
): ModelOutput {
  return modelDeployRef(model, x, quantization, headPrecision === 'bf16');
}
