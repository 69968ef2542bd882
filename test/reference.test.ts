// Self-tests of the float64 reference (test/helpers/reference.ts) that everything else is judged by: hand-computed
// cases, identities between ops, and whole-network checks (every weight matters; deployed form = training form).
// Not for: native ops or library code, which have their own test files.

import test from 'ava';
import { customSpec, officialSpec, blocksOf } from '../lib/models/repvgg.js';
import type { RepVGGSpec } from '../lib/models/repvgg.js';
import type { DeployedLayer, DeployedModel } from '../lib/reparam/types.js';
import type { HostTensor, StateDict } from '../lib/tensor.js';
import {
  BN_EPS,
  argmaxRows,
  batchNormRef,
  conv2dRef,
  linearRef,
  makeRng,
  maxRelativeError,
  modelDeployRef,
  modelTrainRef,
  randomArray,
  randomBnStats,
  randomTrainState,
  reluRef,
  seRef,
  sigmoidRef,
} from './helpers/reference.js';
import type { RefTensor } from './helpers/reference.js';
import { FLOAT64, REPARAM_FP32_WEIGHTS, checkClose } from './helpers/tolerances.js';

/** Small enough to run in milliseconds, yet with every feature: identity branches, stride 1 and 2, groups. */
const tinyOptions = {
  inChannels: 3,
  numClasses: 5,
  stemChannels: 8,
  stemStride: 1,
  stageChannels: [8, 16, 16, 32],
  stageDepths: [2, 1, 2, 1],
  stageStrides: [1, 2, 1, 2],
  groups: 2,
};
const tinySpec = customSpec(tinyOptions);
const tinySeSpec = customSpec({ ...tinyOptions, stemStride: 2, stageStrides: [1, 2, 1, 1], seReduction: 2 });

function randomInput(shape: [number, number, number, number], seed: number): HostTensor {
  return { shape, data: randomArray(shape.reduce((p, d) => p * d), makeRng(seed), 1) };
}

// ---------------------------------------------------------------------------------------------------------------
// Error metric and random data

test('maxRelativeError divides the largest difference by the largest reference magnitude', (t) => {
  t.true(Math.abs(maxRelativeError([-4, 2.001], [-4, 2]) - 0.001 / 4) < 1e-15);
  t.is(maxRelativeError([0, 0], [0, 0]), 0);
  t.is(maxRelativeError([1, Number.NaN], [1, 2]), Number.POSITIVE_INFINITY);
  t.throws(() => maxRelativeError([1], [1, 2]));
});

test('makeRng is deterministic per seed and randomArray stays in [-scale, scale] without zeros', (t) => {
  const a = randomArray(1000, makeRng(0), 0.5);
  t.deepEqual(a, randomArray(1000, makeRng(0), 0.5));
  t.notDeepEqual(a, randomArray(1000, makeRng(1), 0.5));
  t.true(a.every((v) => v !== 0 && Math.abs(v) <= 0.5));
  const mean = a.reduce((s, v) => s + v, 0) / a.length;
  t.true(Math.abs(mean) < 0.05, `mean ${mean} of uniform [-0.5, 0.5] samples`);
  t.true(Math.min(...a) < -0.45 && Math.max(...a) > 0.45, 'values cover the whole range');
  const stats = randomBnStats(64, makeRng(2));
  t.true(stats.var.every((v) => v > 0));
});

test('argmaxRows picks the largest logit of each row', (t) => {
  t.deepEqual(argmaxRows([0.1, 0.9, 0.3, 5, -1, 4], [2, 3]), [1, 0]);
});

// ---------------------------------------------------------------------------------------------------------------
// Ops

test('conv2dRef matches a hand-computed 3x3 input with a 2x2 kernel', (t) => {
  const x = { data: [1, 2, 3, 4, 5, 6, 7, 8, 9], shape: [1, 1, 3, 3] };
  const w = { data: [1, 2, 3, 4], shape: [1, 1, 2, 2] };
  // No padding, stride 1: each output is the dot product of one 2x2 window with [1, 2, 3, 4].
  const plain = conv2dRef(x, w, undefined, { stride: 1, pad: 0, groups: 1 });
  t.deepEqual(plain.shape, [1, 1, 2, 2]);
  t.deepEqual([...plain.data], [1 + 4 + 12 + 20, 2 + 6 + 15 + 24, 4 + 10 + 21 + 32, 5 + 12 + 24 + 36]);
  // Padding 1, stride 2: windows start at (-1, -1), (-1, 1), (1, -1), (1, 1); taps on padding read zero.
  const padded = conv2dRef(x, w, [0.5], { stride: 2, pad: 1, groups: 1 });
  t.deepEqual(padded.shape, [1, 1, 2, 2]);
  t.deepEqual([...padded.data], [1 * 4 + 0.5, 2 * 3 + 3 * 4 + 0.5, 4 * 2 + 7 * 4 + 0.5, 5 + 12 + 24 + 36 + 0.5]);
});

function channelSlice(t: RefTensor, from: number, to: number): RefTensor {
  const [n, c, ...rest] = t.shape as [number, number, ...number[]];
  const plane = rest.reduce((p, d) => p * d, 1);
  const data = new Float64Array(n * (to - from) * plane);
  for (let b = 0; b < n; b++) {
    data.set(t.data.subarray((b * c + from) * plane, (b * c + to) * plane), b * (to - from) * plane);
  }
  return { data, shape: [n, to - from, ...rest] };
}

test('a grouped conv equals its groups run separately', (t) => {
  const rng = makeRng(3);
  const x: RefTensor = { data: Float64Array.from(randomArray(2 * 4 * 5 * 6, rng, 1)), shape: [2, 4, 5, 6] };
  const w: RefTensor = { data: Float64Array.from(randomArray(6 * 2 * 3 * 3, rng, 1)), shape: [6, 2, 3, 3] };
  const bias = randomArray(6, rng, 1);
  const grouped = conv2dRef(x, w, bias, { stride: 2, pad: 1, groups: 2 });
  t.deepEqual(grouped.shape, [2, 6, 3, 3]);
  for (const g of [0, 1]) {
    const groupInput = channelSlice(x, 2 * g, 2 * g + 2); // input channels 2g, 2g+1
    const groupWeight = { data: w.data.subarray(3 * g * 18, (3 * g + 3) * 18), shape: [3, 2, 3, 3] }; // outputs 3g..3g+2
    const groupBias = bias.subarray(3 * g, 3 * g + 3);
    const alone = conv2dRef(groupInput, groupWeight, groupBias, { stride: 2, pad: 1, groups: 1 });
    checkClose(t, `group ${g}`, channelSlice(grouped, 3 * g, 3 * g + 3).data, alone.data, FLOAT64);
  }
});

test('a 1x1 conv equals a linear layer over channels at every (strided) pixel', (t) => {
  const rng = makeRng(4);
  const [n, c, h, w, k] = [2, 3, 4, 5, 7];
  const x: RefTensor = { data: Float64Array.from(randomArray(n * c * h * w, rng, 1)), shape: [n, c, h, w] };
  const weight = randomArray(k * c, rng, 1);
  const bias = randomArray(k, rng, 1);
  for (const stride of [1, 2]) {
    const conv = conv2dRef(x, { data: weight, shape: [k, c, 1, 1] }, bias, { stride, pad: 0, groups: 1 });
    const [, , oh, ow] = conv.shape as [number, number, number, number];
    t.deepEqual([oh, ow], [Math.ceil(h / stride), Math.ceil(w / stride)]);
    // Gather the sampled pixels as rows [N*OH*OW, C], run the linear layer, scatter back to [N, K, OH, OW].
    const pixels = new Float64Array(n * oh * ow * c);
    for (let b = 0; b < n; b++)
      for (let oy = 0; oy < oh; oy++)
        for (let ox = 0; ox < ow; ox++)
          for (let ch = 0; ch < c; ch++) {
            const sampled = ((b * c + ch) * h + oy * stride) * w + ox * stride;
            pixels[((b * oh + oy) * ow + ox) * c + ch] = x.data[sampled] as number;
          }
    const rows = linearRef({ data: pixels, shape: [n * oh * ow, c] }, { data: weight, shape: [k, c] }, bias);
    const expected = new Float64Array(conv.data.length);
    for (let b = 0; b < n; b++)
      for (let j = 0; j < k; j++)
        for (let p = 0; p < oh * ow; p++) {
          expected[(b * k + j) * oh * ow + p] = rows.data[(b * oh * ow + p) * k + j] as number;
        }
    checkClose(t, `1x1 conv stride ${stride}`, conv.data, expected, FLOAT64);
  }
});

test('batchNormRef matches a hand case and defaults eps to 1e-5', (t) => {
  // var + eps = 4 and 1, so the scales gamma / sqrt(var + eps) are 2 / 2 = 1 and 3 / 1 = 3 exactly.
  const x = { data: [1, 2, 3, 4], shape: [1, 2, 1, 2] };
  const y = batchNormRef(x, [1, 2], [3.75, 0.75], [2, 3], [0.5, -1], 0.25);
  t.deepEqual([...y.data], [(1 - 1) * 1 + 0.5, (2 - 1) * 1 + 0.5, (3 - 2) * 3 - 1, (4 - 2) * 3 - 1]);
  t.is(BN_EPS, 1e-5);
  const zeroVariance = batchNormRef({ data: [2], shape: [1, 1] }, [0], [0], [1], [0]);
  t.is(zeroVariance.data[0], 2 / Math.sqrt(1e-5));
});

test('reluRef, sigmoidRef and seRef match hand cases', (t) => {
  t.deepEqual([...reluRef({ data: [-2, 0, 3], shape: [3] }).data], [0, 0, 3]);
  const sigmoid = sigmoidRef({ data: [0, Math.log(3), -Math.log(3)], shape: [3] }).data;
  checkClose(t, 'sigmoid', sigmoid, [0.5, 0.75, 0.25], FLOAT64);
  // One channel [2, 4]: mean 3; down: relu(3 * 1 - 1) = 2; up: 2 * 0.5 - 1 = 0; gate sigmoid(0) = 0.5.
  const se = seRef({ data: [2, 4], shape: [1, 1, 1, 2] }, [1], [-1], [0.5], [-1]);
  t.deepEqual([...se.data], [1, 2]);
  // Same with a negative squeeze: relu(3 * 1 - 5) = 0, so the gate is sigmoid(upBias) = sigmoid(ln 3) = 0.75.
  const dead = seRef({ data: [2, 4], shape: [1, 1, 1, 2] }, [1], [-5], [0.5], [Math.log(3)]);
  checkClose(t, 'SE, dead squeeze unit', dead.data, [1.5, 3], FLOAT64);
});

// ---------------------------------------------------------------------------------------------------------------
// Whole networks

function perturbed(state: StateDict, key: string): StateDict {
  const copy = new Map(state);
  const tensor = state.get(key) as HostTensor;
  copy.set(key, { shape: tensor.shape, data: tensor.data.map((v) => v * 1.5 + 0.1) });
  return copy;
}

for (const spec of [tinySpec, tinySeSpec]) {
  const label = spec.seReduction > 0 ? 'with SE' : 'without SE';

  test(`modelTrainRef ${label}: finite logits of shape [N, K] that depend on every weight`, (t) => {
    const state = randomTrainState(spec, makeRng(5));
    const x = randomInput([2, 3, 16, 16], 6);
    const { logits, shape } = modelTrainRef(spec, state, x);
    t.deepEqual(shape, [2, spec.numClasses]);
    t.is(logits.length, 2 * spec.numClasses);
    t.true(logits.every(Number.isFinite));
    t.true(logits.some((v) => v !== 0));
    const ignored = [...state.keys()].filter(
      (key) => maxRelativeError(modelTrainRef(spec, perturbed(state, key), x).logits, logits) <= FLOAT64,
    );
    t.deepEqual(ignored, [], 'weights whose change leaves the logits unchanged');
  });

  test(`modelDeployRef ${label} equals modelTrainRef through an independent float64 fusion`, (t) => {
    const state = randomTrainState(spec, makeRng(7));
    const x = randomInput([2, 3, 16, 16], 8);
    const train = modelTrainRef(spec, state, x);
    const deploy = modelDeployRef(fuseForTest(spec, state), x);
    t.deepEqual(deploy.shape, train.shape);
    checkClose(t, 'deploy vs train', deploy.logits, train.logits, REPARAM_FP32_WEIGHTS);
  });
}

test('modelTrainRef rejects a state dict with a missing or misshaped weight', (t) => {
  const state = randomTrainState(tinySpec, makeRng(9));
  const x = randomInput([1, 3, 8, 8], 10);
  const missing = new Map(state);
  missing.delete('stage1.1.rbr_identity.running_var');
  t.throws(() => modelTrainRef(tinySpec, missing, x), { message: /stage1\.1\.rbr_identity\.running_var/ });
  const misshaped = new Map(state);
  misshaped.set('linear.bias', { shape: [4], data: new Float32Array(4) });
  t.throws(() => modelTrainRef(tinySpec, misshaped, x), { message: /linear\.bias/ });
});

test('modelTrainRef runs RepVGG-A0 at 32x32', (t) => {
  const spec = officialSpec('RepVGG-A0');
  const state = randomTrainState(spec, makeRng(11));
  const started = performance.now();
  const { logits, shape } = modelTrainRef(spec, state, randomInput([1, 3, 32, 32], 12));
  t.log(`RepVGG-A0, 1x3x32x32: ${(performance.now() - started).toFixed(0)} ms`);
  t.deepEqual(shape, [1, 1000]);
  t.true(logits.every(Number.isFinite));
});

/**
 * The re-parameterization, written here independently of lib/reparam so the two references check each other:
 * per branch t = gamma / sqrt(var + eps), kernel * t, bias = beta - mean * t; 1x1 and identity land on the
 * centre tap; the sum is rounded to float32 once, as DeployedModel stores it.
 */
function fuseForTest(spec: RepVGGSpec, state: StateDict): DeployedModel {
  const get = (key: string): Float32Array => (state.get(key) as HostTensor).data;
  const layers: DeployedLayer[] = blocksOf(spec).map((block) => {
    const { name, inChannels, outChannels, groups } = block;
    const cPerGroup = inChannels / groups;
    const kernel = new Float64Array(outChannels * cPerGroup * 9); // [O, C/g, 3, 3]
    const bias = new Float64Array(outChannels); // [O]
    const addBranch = (bn: string, tap: (o: number, c: number, k: number) => number): void => {
      const mean = get(`${name}.${bn}.running_mean`);
      const variance = get(`${name}.${bn}.running_var`);
      const gamma = get(`${name}.${bn}.weight`);
      const beta = get(`${name}.${bn}.bias`);
      for (let o = 0; o < outChannels; o++) {
        const scale = (gamma[o] as number) / Math.sqrt((variance[o] as number) + BN_EPS);
        bias[o] = (bias[o] as number) + (beta[o] as number) - (mean[o] as number) * scale;
        for (let c = 0; c < cPerGroup; c++)
          for (let k = 0; k < 9; k++) {
            const at = (o * cPerGroup + c) * 9 + k;
            kernel[at] = (kernel[at] as number) + tap(o, c, k) * scale;
          }
      }
    };
    const dense = get(`${name}.rbr_dense.conv.weight`); // [O, C/g, 3, 3]
    const oneByOne = get(`${name}.rbr_1x1.conv.weight`); // [O, C/g, 1, 1]
    const centre = 4;
    addBranch('rbr_dense.bn', (o, c, k) => dense[(o * cPerGroup + c) * 9 + k] as number);
    addBranch('rbr_1x1.bn', (o, c, k) => (k === centre ? (oneByOne[o * cPerGroup + c] as number) : 0));
    if (block.hasIdentity) addBranch('rbr_identity', (o, c, k) => (k === centre && c === o % cPerGroup ? 1 : 0));
    const weight = Float32Array.from(kernel);
    const layer = { name, inChannels, outChannels, stride: block.stride, groups, weight, bias: Float32Array.from(bias) };
    if (block.seChannels === 0) return layer;
    const se = {
      channels: block.seChannels,
      downWeight: get(`${name}.se.down.weight`),
      downBias: get(`${name}.se.down.bias`),
      upWeight: get(`${name}.se.up.weight`),
      upBias: get(`${name}.se.up.bias`),
    };
    return { ...layer, se };
  });
  return { spec, layers, linearWeight: get('linear.weight'), linearBias: get('linear.bias') };
}
