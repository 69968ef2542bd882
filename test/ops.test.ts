// The single-op API (lib/ops) on the oneDNN addon: every op, async and *Sync form, against the float64 reference
// on fresh random data; every rejected argument (error class, argument name and received value in the message);
// and the async form running off the event loop.
// Not for: whole networks (test/models.test.ts) or the reference itself (test/reference.test.ts).

import test from 'ava';
import type { ExecutionContext } from 'ava';

import { ArgumentTypeError, ArgumentValueError, RepvggError, ShapeError } from '../lib/errors.js';
import {
  add,
  addSync,
  batchNorm,
  batchNormSync,
  channelScale,
  channelScaleSync,
  conv2d,
  conv2dSync,
  globalAvgPool,
  globalAvgPoolSync,
  linear,
  linearSync,
  relu,
  reluSync,
  sigmoid,
  sigmoidSync,
} from '../lib/ops/index.js';
import type { BatchNormParams, Conv2dOptions } from '../lib/ops/index.js';
import { layoutOf, toLayout } from '../lib/ops/layout.js';
import type { HostTensor } from '../lib/tensor.js';
import { AUTO_ELSEWHERE, autoRunsIm2colShape, nativeConvAlgorithm } from './helpers/auto-conv.js';
import {
  addRef,
  batchNormRef,
  conv2dRef,
  globalAvgPoolRef,
  linearRef,
  makeRng,
  randomArray,
  randomBnStats,
  reluRef,
  sigmoidRef,
} from './helpers/reference.js';
import type { RefTensor } from './helpers/reference.js';
import { OP_FP32, WINOGRAD_OP_FP32, checkClose } from './helpers/tolerances.js';

/** Random float32 tensor with values in [-scale, scale] (never zero), seeded. */
function randomTensor(shape: readonly number[], seed: number, scale = 1): HostTensor {
  return { shape: [...shape], data: randomArray(shape.reduce((p, d) => p * d, 1), makeRng(seed), scale) };
}

const nhwc = (t: HostTensor): HostTensor => toLayout(t, 'nhwc');

/** Runs the async and the Sync form of an op; both results, in that order, labelled. */
async function bothForms<T>(asyncForm: () => Promise<T>, syncForm: () => T): Promise<[string, T][]> {
  return [
    ['async', await asyncForm()],
    ['sync', syncForm()],
  ];
}

function checkResult(t: ExecutionContext, label: string, ours: HostTensor, ref: RefTensor, tol = OP_FP32): void {
  t.deepEqual(ours.shape, ref.shape, `${label}: output shape`);
  t.true(ours.data instanceof Float32Array, `${label}: output is float32`);
  checkClose(t, label, ours.data, ref.data, tol);
}

// ---------------------------------------------------------------------------------------------------------------
// conv2d

interface ConvCase {
  readonly name: string;
  readonly x: readonly [number, number, number, number]; // [N, C, H, W]
  readonly out: number;
  readonly kernel: 1 | 3;
  readonly stride: number;
  readonly pad: number;
  readonly groups: number;
  readonly bias: boolean;
  readonly relu: boolean;
}

const convCases: ConvCase[] = [
  { name: '3x3 s1 p1, bias + relu, 7x9', x: [2, 8, 7, 9], out: 16, kernel: 3, stride: 1, pad: 1, groups: 1, bias: true, relu: true },
  { name: '3x3 s2 p1, bias, 13x5', x: [3, 6, 13, 5], out: 10, kernel: 3, stride: 2, pad: 1, groups: 1, bias: true, relu: false },
  { name: '3x3 s1 p0, relu, no bias, 7x9', x: [2, 5, 7, 9], out: 7, kernel: 3, stride: 1, pad: 0, groups: 1, bias: false, relu: true },
  { name: '3x3 s2 p0, groups 2, 13x5', x: [2, 8, 13, 5], out: 12, kernel: 3, stride: 2, pad: 0, groups: 2, bias: false, relu: false },
  { name: '3x3 s1 p1, groups 4, bias, 7x9', x: [2, 16, 7, 9], out: 8, kernel: 3, stride: 1, pad: 1, groups: 4, bias: true, relu: false },
  { name: '3x3 s2 p1, groups 4, bias + relu, 13x5', x: [2, 16, 13, 5], out: 16, kernel: 3, stride: 2, pad: 1, groups: 4, bias: true, relu: true },
  { name: '3x3 s1 p1, depthwise, bias + relu, 7x9', x: [2, 12, 7, 9], out: 12, kernel: 3, stride: 1, pad: 1, groups: 12, bias: true, relu: true },
  { name: '3x3 s2 p1, depthwise x2 multiplier, 13x5', x: [3, 16, 13, 5], out: 32, kernel: 3, stride: 2, pad: 1, groups: 16, bias: false, relu: false },
  { name: '1x1 s1 p0, bias, 13x5', x: [2, 24, 13, 5], out: 20, kernel: 1, stride: 1, pad: 0, groups: 1, bias: true, relu: false },
  { name: '1x1 s2 p0, groups 2, relu, 7x9', x: [2, 8, 7, 9], out: 6, kernel: 1, stride: 2, pad: 0, groups: 2, bias: false, relu: true },
  { name: '1x1 s1 p1 (bias-only border), groups 4, bias, 5x7', x: [2, 8, 5, 7], out: 8, kernel: 1, stride: 1, pad: 1, groups: 4, bias: true, relu: false },
  { name: '1x1 s1 p0, depthwise, bias + relu, 13x5', x: [4, 8, 13, 5], out: 8, kernel: 1, stride: 1, pad: 0, groups: 8, bias: true, relu: true },
  { name: '3x3 s1 p1, 64 -> 64 (blocked layouts), bias + relu, 15x11', x: [2, 64, 15, 11], out: 64, kernel: 3, stride: 1, pad: 1, groups: 1, bias: true, relu: true },
  { name: '3x3 s2 p1, 48 -> 96, groups 2, bias, 9x13', x: [2, 48, 9, 13], out: 96, kernel: 3, stride: 2, pad: 1, groups: 2, bias: true, relu: false },
];

convCases.forEach((c, index) => {
  test(`conv2d ${c.name}: async and sync match the float64 reference`, async (t) => {
    const seed = 1000 + 10 * index;
    const [n, ch, h, w] = c.x;
    const x = randomTensor([n, ch, h, w], seed);
    const weight = randomTensor([c.out, ch / c.groups, c.kernel, c.kernel], seed + 1, Math.sqrt(3 / ((ch / c.groups) * c.kernel * c.kernel)));
    const bias = c.bias ? randomTensor([c.out], seed + 2, 0.5) : undefined;
    const options: Conv2dOptions = { stride: c.stride, pad: c.pad, groups: c.groups, relu: c.relu, ...(bias && { bias }) };
    const xBefore = x.data.slice();
    const weightBefore = weight.data.slice();

    let ref = conv2dRef(x, weight, bias?.data, { stride: c.stride, pad: c.pad, groups: c.groups });
    if (c.relu) ref = reluRef(ref);
    const oh = Math.floor((h + 2 * c.pad - c.kernel) / c.stride) + 1;
    const ow = Math.floor((w + 2 * c.pad - c.kernel) / c.stride) + 1;
    t.deepEqual(ref.shape, [n, c.out, oh, ow]);
    if (c.relu) t.true(ref.data.some((v) => v === 0) && ref.data.some((v) => v > 0), 'ReLU clips some outputs and keeps others');

    for (const [form, y] of await bothForms(() => conv2d(x, weight, options), () => conv2dSync(x, weight, options))) {
      checkResult(t, `${c.name} (${form})`, y, ref);
    }
    t.deepEqual(x.data, xBefore, 'x is not modified');
    t.deepEqual(weight.data, weightBefore, 'weight is not modified');
  });
});

// Winograd F(2x2, 3x3) and F(4x4, 3x3) (algorithm option): channel counts below, above and between multiples of 16
// (the transforms run 16 channels at a time, the rest one by one), sizes that leave partial tiles at the bottom and
// right edges, pad 0 and 1, batches > 1, and A0's 14x14x192 layer (whose tile matrices get padding rows).
const winogradCases: { name: string; x: [number, number, number, number]; out: number; pad: number; bias: boolean; relu: boolean }[] = [
  { name: '8 -> 16, 7x9, pad 1, bias + relu', x: [2, 8, 7, 9], out: 16, pad: 1, bias: true, relu: true },
  { name: '20 -> 37, 13x6, pad 0, no bias', x: [1, 20, 13, 6], out: 37, pad: 0, bias: false, relu: false },
  { name: '64 -> 48, 15x11, batch 3, pad 1, bias', x: [3, 64, 15, 11], out: 48, pad: 1, bias: true, relu: false },
  { name: '192 -> 192, 14x14, pad 1, bias + relu (RepVGG-A0 stage 3)', x: [1, 192, 14, 14], out: 192, pad: 1, bias: true, relu: true },
  { name: '3 -> 5, 3x3, pad 0 (one output pixel)', x: [2, 3, 3, 3], out: 5, pad: 0, bias: true, relu: false },
  // On AVX-512 our float32 matmul (f32_gemm.cc) runs the outputs in multiples of 16 here and above: 80 is 3 + 2 groups
  // of 16, and 800 F(2x2) tiles give each thread chunks of 112 rows and a shorter last one.
  { name: '24 -> 80, 40x40, batch 2, pad 1, bias + relu', x: [2, 24, 40, 40], out: 80, pad: 1, bias: true, relu: true },
];

winogradCases.forEach((c, index) => {
  test(`conv2d Winograd ${c.name}: F(2x2) and F(4x4), async and sync, match the float64 reference`, async (t) => {
    const seed = 1500 + 10 * index;
    const [n, ch, h, w] = c.x;
    const x = nhwc(randomTensor([n, ch, h, w], seed));
    const weight = randomTensor([c.out, ch, 3, 3], seed + 1, Math.sqrt(3 / (ch * 9)));
    const bias = c.bias ? randomTensor([c.out], seed + 2, 0.5) : undefined;
    const base: Conv2dOptions = { pad: c.pad, relu: c.relu, ...(bias && { bias }) };
    let ref = conv2dRef(toLayout(x, 'nchw'), weight, bias?.data, { stride: 1, pad: c.pad, groups: 1 });
    if (c.relu) ref = reluRef(ref);
    const direct = conv2dSync(x, weight, { ...base, algorithm: 'direct' });
    for (const algorithm of ['winograd', 'winograd2x2'] as const) {
      const options: Conv2dOptions = { ...base, algorithm };
      for (const [form, y] of await bothForms(() => conv2d(x, weight, options), () => conv2dSync(x, weight, options))) {
        t.is(layoutOf(y), 'nhwc', `${algorithm} (${form}) keeps x's layout`);
        checkResult(t, `${c.name} ${algorithm} (${form})`, toLayout(y, 'nchw'), ref, WINOGRAD_OP_FP32);
        // Another algorithm ran: its rounding differs from the direct kernel's somewhere.
        t.notDeepEqual(y.data, direct.data, `${algorithm} (${form}) is not the direct kernel`);
      }
    }
  });
});

// The plane-GEMM algorithm (the conv as one matrix product where every output sees the whole input plane): RepVGG's
// 3x3 convs on 2x2 planes and its stride-2 conv from 2x2 to 1x1 (its last stages on 32x32 images), a 1x1 plane with
// pad 1 (the centre tap alone), 1x2 and 2x1 planes, a 2x2 kernel at stride 2 and a 1x1 kernel on a 1x1 plane.
interface ConvAlgorithmCase {
  name: string; x: [number, number, number, number]; out: number; kernel: number; stride: number; pad: number; bias: boolean; relu: boolean;
}

/**
 * Runs case c with `algorithm` on NHWC x, async and sync, against the float64 reference (bias and ReLU as the case
 * says); returns the inputs, the options without the algorithm and the result, for checks of 'auto'.
 */
async function checkConvAlgorithm(t: ExecutionContext, c: ConvAlgorithmCase, seed: number, algorithm: 'gemm' | 'im2col') {
  const [n, ch, h, w] = c.x;
  const x = nhwc(randomTensor([n, ch, h, w], seed));
  const weight = randomTensor([c.out, ch, c.kernel, c.kernel], seed + 1, Math.sqrt(3 / (ch * c.kernel * c.kernel)));
  const bias = c.bias ? randomTensor([c.out], seed + 2, 0.5) : undefined;
  const base: Conv2dOptions = { stride: c.stride, pad: c.pad, relu: c.relu, ...(bias && { bias }) };
  let ref = conv2dRef(toLayout(x, 'nchw'), weight, bias?.data, { stride: c.stride, pad: c.pad, groups: 1 });
  if (c.relu) ref = reluRef(ref);
  const options: Conv2dOptions = { ...base, algorithm };
  const results = await bothForms(() => conv2d(x, weight, options), () => conv2dSync(x, weight, options));
  for (const [form, y] of results) {
    t.is(layoutOf(y), 'nhwc', `${algorithm} (${form}) keeps x's layout`);
    checkResult(t, `${c.name} ${algorithm} (${form})`, toLayout(y, 'nchw'), ref);
  }
  // Sums of hundreds of products in another order: the direct kernel rounds differently somewhere.
  const longSums = ch * c.kernel * c.kernel >= 200;
  return { x, weight, base, y: results[0]![1], longSums };
}

const planeGemmCases: ConvAlgorithmCase[] = [
  { name: '3x3 s1 p1 on 2x2, 24 -> 40, bias + relu', x: [6, 24, 2, 2], out: 40, kernel: 3, stride: 1, pad: 1, bias: true, relu: true },
  { name: '3x3 s2 p1 from 2x2 to 1x1, 32 -> 72', x: [5, 32, 2, 2], out: 72, kernel: 3, stride: 2, pad: 1, bias: false, relu: false },
  { name: '3x3 s1 p1 on 1x1, 16 -> 8, bias', x: [3, 16, 1, 1], out: 8, kernel: 3, stride: 1, pad: 1, bias: true, relu: false },
  { name: '3x3 s1 p1 on 1x2, 12 -> 20, relu', x: [4, 12, 1, 2], out: 20, kernel: 3, stride: 1, pad: 1, bias: false, relu: true },
  { name: '3x3 s2 p1 on 2x1, 12 -> 9', x: [4, 12, 2, 1], out: 9, kernel: 3, stride: 2, pad: 1, bias: false, relu: false },
  { name: '2x2 s2 p0 on 2x2, 10 -> 6, bias', x: [3, 10, 2, 2], out: 6, kernel: 2, stride: 2, pad: 0, bias: true, relu: false },
  { name: '1x1 on 1x1, 30 -> 14', x: [7, 30, 1, 1], out: 14, kernel: 1, stride: 1, pad: 0, bias: false, relu: false },
];

planeGemmCases.forEach((c, index) => {
  test(`conv2d plane GEMM ${c.name}: async and sync match the float64 reference; 'auto' runs it`, async (t) => {
    const { x, weight, base, y: gemm } = await checkConvAlgorithm(t, c, 1600 + 10 * index, 'gemm');
    t.deepEqual(conv2dSync(x, weight, base).data, gemm.data, "the default ('auto') runs the plane GEMM, bit for bit");
    // Which kernel ran, from the call itself: oneDNN's direct kernel may sum these few products in the GEMM's order.
    t.deepEqual(nativeConvAlgorithm(() => conv2dSync(x, weight, base)), { planeGemm: true, im2colGemm: false, winogradTile: 0 }, "'auto' asks for the plane GEMM");
  });
});

test(`conv2d 'auto' runs ${AUTO_ELSEWHERE} where outputs see only part of the plane`, async (t) => {
  const x = nhwc(randomTensor([4, 24, 3, 3], 1690));
  const weight = randomTensor([40, 24, 3, 3], 1691, Math.sqrt(3 / 216));
  const ref = conv2dRef(toLayout(x, 'nchw'), weight, undefined, { stride: 1, pad: 1, groups: 1 });
  const auto = conv2dSync(x, weight, { pad: 1 });
  checkResult(t, '3x3 plane, auto', toLayout(auto, 'nchw'), ref);
  t.deepEqual(auto.data, conv2dSync(x, weight, { pad: 1, algorithm: AUTO_ELSEWHERE }).data, `auto is ${AUTO_ELSEWHERE} here`);
  // Which kernel ran, from the call itself: on AVX-512 oneDNN's direct kernel and im2col summed these alike.
  t.deepEqual(nativeConvAlgorithm(() => conv2dSync(x, weight, { pad: 1 })), { planeGemm: false, im2colGemm: AUTO_ELSEWHERE === 'im2col', winogradTile: 0 }, `auto asks for ${AUTO_ELSEWHERE}`);
});

test(`conv2d 'auto' runs Winograd F(2x2) on NHWC 3x3 stride-1 pad-1 convs from 64 channels on, ${AUTO_ELSEWHERE} below`, async (t) => {
  for (const [channels, out, expected] of [[64, 72, 'winograd2x2'], [72, 64, 'winograd2x2'], [48, 96, AUTO_ELSEWHERE], [96, 48, AUTO_ELSEWHERE]] as const) {
    const label = `${channels} -> ${out}`;
    const x = nhwc(randomTensor([2, channels, 9, 7], 1700 + channels));
    const weight = randomTensor([out, channels, 3, 3], 1701 + out, Math.sqrt(3 / (channels * 9)));
    const ref = conv2dRef(toLayout(x, 'nchw'), weight, undefined, { stride: 1, pad: 1, groups: 1 });
    const auto = conv2dSync(x, weight, { pad: 1 });
    checkResult(t, `${label} auto`, toLayout(auto, 'nchw'), ref, WINOGRAD_OP_FP32);
    t.deepEqual(auto.data, conv2dSync(x, weight, { pad: 1, algorithm: expected }).data, `${label}: auto is ${expected}, bit for bit`);
    const other = expected === 'winograd2x2' ? 'direct' : 'winograd2x2';
    t.notDeepEqual(auto.data, conv2dSync(x, weight, { pad: 1, algorithm: other }).data, `${label}: auto is not ${other}`);
  }
});

// im2col + GEMM (native/cpu/gemm_conv.h): strided, padded, non-square and 1x1 kernels; a batch cut into chunks of 4
// images and a last chunk of 2 (64 channels at 28x28: 1.8 MB of column matrix per image, 8 MiB per chunk); a single
// image whose column matrix (9 MB) is over the chunk budget alone.
const im2colCases: ConvAlgorithmCase[] = [
  { name: '3x3 s2 p1 from 9x9, 24 -> 40, bias + relu', x: [3, 24, 9, 9], out: 40, kernel: 3, stride: 2, pad: 1, bias: true, relu: true },
  { name: '3x3 s1 p1 on 7x5, 16 -> 8', x: [2, 16, 7, 5], out: 8, kernel: 3, stride: 1, pad: 1, bias: false, relu: false },
  { name: '5x5 s3 p2 from 11x11, 6 -> 10, bias', x: [2, 6, 11, 11], out: 10, kernel: 5, stride: 3, pad: 2, bias: true, relu: false },
  { name: '1x1 s2 p0 from 8x8, 12 -> 20, relu', x: [3, 12, 8, 8], out: 20, kernel: 1, stride: 2, pad: 0, bias: false, relu: true },
  { name: '1x1 s1 p0 on 8x8, 12 -> 20', x: [3, 12, 8, 8], out: 20, kernel: 1, stride: 1, pad: 0, bias: false, relu: false },
  { name: '3x3 s1 p1 on 28x28, 64 -> 16, 6 images in chunks of 4 and 2', x: [6, 64, 28, 28], out: 16, kernel: 3, stride: 1, pad: 1, bias: true, relu: false },
  { name: '3x3 s2 p1 from 56x56, 320 -> 8, one image per chunk', x: [2, 320, 56, 56], out: 8, kernel: 3, stride: 2, pad: 1, bias: false, relu: true },
];

im2colCases.forEach((c, index) => {
  test(`conv2d im2col ${c.name}: async and sync match the float64 reference`, async (t) => {
    const { x, weight, base, y: im2col, longSums } = await checkConvAlgorithm(t, c, 1750 + 10 * index, 'im2col');
    const autoRuns = autoRunsIm2colShape(c) ? AUTO_ELSEWHERE : 'direct';
    t.deepEqual(conv2dSync(x, weight, base).data, conv2dSync(x, weight, { ...base, algorithm: autoRuns }).data, `'auto' runs ${autoRuns}, bit for bit`);
    if (longSums) t.notDeepEqual(conv2dSync(x, weight, { ...base, algorithm: 'direct' }).data, im2col.data, 'im2col is not the direct kernel');
  });
});

test('conv2d defaults to stride 1, pad 0, groups 1, no bias and no ReLU', async (t) => {
  const x = randomTensor([2, 3, 6, 5], 1201);
  const weight = randomTensor([4, 3, 3, 3], 1202);
  const ref = conv2dRef(x, weight, undefined, { stride: 1, pad: 0, groups: 1 });
  t.true(ref.data.some((v) => v < 0), 'negative outputs would be clipped by a stray ReLU');
  checkResult(t, 'defaults (async)', await conv2d(x, weight), ref);
  checkResult(t, 'defaults (sync)', conv2dSync(x, weight), ref);
});

test('concurrent async conv2d calls with different shapes each get their own correct result', async (t) => {
  const cases = convCases.slice(0, 6);
  const inputs = cases.map((c, i) => {
    const seed = 1300 + 10 * i;
    const x = randomTensor(c.x, seed);
    const weight = randomTensor([c.out, c.x[1] / c.groups, c.kernel, c.kernel], seed + 1);
    const bias = randomTensor([c.out], seed + 2);
    return { c, x, weight, bias };
  });
  const results = await Promise.all(
    inputs.map(({ c, x, weight, bias }) => conv2d(x, weight, { stride: c.stride, pad: c.pad, groups: c.groups, bias, relu: c.relu })),
  );
  results.forEach((y, i) => {
    const { c, x, weight, bias } = inputs[i] as (typeof inputs)[number];
    let ref = conv2dRef(x, weight, bias.data, { stride: c.stride, pad: c.pad, groups: c.groups });
    if (c.relu) ref = reluRef(ref);
    checkResult(t, `concurrent ${c.name}`, y, ref);
  });
});

// ---------------------------------------------------------------------------------------------------------------
// batchNorm, relu, sigmoid, add, channelScale, globalAvgPool, linear

function bnParams(c: number, seed: number, eps?: number): BatchNormParams {
  const stats = randomBnStats(c, makeRng(seed));
  return { mean: stats.mean, var: stats.var, gamma: stats.gamma, beta: stats.beta, ...(eps !== undefined && { eps }) };
}

for (const withRelu of [false, true]) {
  test(`batchNorm${withRelu ? ' + relu' : ''}: async and sync match the float64 reference`, async (t) => {
    const seed = withRelu ? 2010 : 2000;
    const x = randomTensor([3, 5, 7, 9], seed, 2);
    const p = bnParams(5, seed + 1);
    let ref = batchNormRef(x, p.mean, p.var, p.gamma, p.beta);
    if (withRelu) ref = reluRef(ref);
    else t.true(ref.data.some((v) => v < 0), 'some outputs are negative');
    const options = { relu: withRelu };
    for (const [form, y] of await bothForms(() => batchNorm(x, p, options), () => batchNormSync(x, p, options))) {
      checkResult(t, `batchNorm relu=${withRelu} (${form})`, y, ref);
    }
  });
}

test('batchNorm uses the given eps (1e-5 by default)', async (t) => {
  // Variances of order eps make the result depend strongly on eps: a kernel that ignores it is far off.
  const x = randomTensor([2, 4, 5, 3], 2101);
  const rng = makeRng(2102);
  const p = bnParams(4, 2103);
  const smallVar = Float32Array.from({ length: 4 }, () => 1e-3 * (0.5 + rng()));
  for (const eps of [undefined, 1e-3]) {
    const params = { ...p, var: smallVar, ...(eps !== undefined && { eps }) };
    const ref = batchNormRef(x, params.mean, params.var, params.gamma, params.beta, eps ?? 1e-5);
    const otherEps = batchNormRef(x, params.mean, params.var, params.gamma, params.beta, eps === undefined ? 1e-3 : 1e-5);
    t.true(checkCloseQuiet(ref.data, otherEps.data) > 100 * OP_FP32, 'the two eps values give clearly different results');
    for (const [form, y] of await bothForms(() => batchNorm(x, params), () => batchNormSync(x, params))) {
      checkResult(t, `batchNorm eps ${eps ?? 'default'} (${form})`, y, ref);
    }
  }
});

function checkCloseQuiet(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let maxDiff = 0;
  let maxRef = 0;
  for (let i = 0; i < b.length; i++) {
    maxDiff = Math.max(maxDiff, Math.abs((a[i] as number) - (b[i] as number)));
    maxRef = Math.max(maxRef, Math.abs(b[i] as number));
  }
  return maxDiff / maxRef;
}

for (const shape of [[2, 3, 7, 9], [5, 13], [4, 3, 11]] as const) {
  test(`relu and sigmoid of shape [${shape.join(', ')}]: async and sync match the float64 reference`, async (t) => {
    const seed = 3000 + shape.reduce((p, d) => p * d, 1);
    const x = randomTensor(shape, seed, 8); // wide range: sigmoid saturates at both ends
    const reluExpected = reluRef(x);
    for (const [form, y] of await bothForms(() => relu(x), () => reluSync(x))) checkResult(t, `relu (${form})`, y, reluExpected);
    const sigmoidExpected = sigmoidRef(x);
    for (const [form, y] of await bothForms(() => sigmoid(x), () => sigmoidSync(x))) checkResult(t, `sigmoid (${form})`, y, sigmoidExpected);
  });
}

for (const withRelu of [false, true]) {
  test(`add${withRelu ? ' + relu' : ''}: async and sync match the float64 reference`, async (t) => {
    const seed = withRelu ? 4010 : 4000;
    const a = randomTensor([2, 5, 7, 9], seed);
    const b = randomTensor([2, 5, 7, 9], seed + 1, 0.5);
    let ref = addRef(a, b);
    if (withRelu) ref = reluRef(ref);
    else t.true(ref.data.some((v) => v < 0));
    for (const [form, y] of await bothForms(() => add(a, b, { relu: withRelu }), () => addSync(a, b, { relu: withRelu }))) {
      checkResult(t, `add relu=${withRelu} (${form})`, y, ref);
    }
  });
}

test('channelScale: async and sync match the float64 reference', async (t) => {
  const [n, c, h, w] = [3, 6, 7, 9];
  const x = randomTensor([n, c, h, w], 5000);
  const scale = randomTensor([n, c], 5001, 2);
  const expected = new Float64Array(x.data.length);
  for (let plane = 0; plane < n * c; plane++) {
    for (let i = plane * h * w; i < (plane + 1) * h * w; i++) expected[i] = (x.data[i] as number) * (scale.data[plane] as number);
  }
  const ref: RefTensor = { data: expected, shape: [n, c, h, w] };
  for (const [form, y] of await bothForms(() => channelScale(x, scale), () => channelScaleSync(x, scale))) checkResult(t, `channelScale (${form})`, y, ref);
});

test('globalAvgPool of odd spatial sizes: async and sync match the float64 reference', async (t) => {
  for (const [i, shape] of ([[3, 10, 13, 5], [2, 7, 7, 9], [2, 3, 1, 1]] as const).entries()) {
    const x = randomTensor(shape, 6000 + i);
    const ref = globalAvgPoolRef(x);
    for (const [form, y] of await bothForms(() => globalAvgPool(x), () => globalAvgPoolSync(x))) {
      checkResult(t, `globalAvgPool [${shape.join(', ')}] (${form})`, y, ref);
    }
  }
});

for (const withRelu of [false, true]) {
  test(`linear${withRelu ? ' + relu' : ''}: async and sync match the float64 reference`, async (t) => {
    const seed = withRelu ? 7010 : 7000;
    const x = randomTensor([4, 37], seed);
    const weight = randomTensor([11, 37], seed + 1, 0.3);
    const bias = randomTensor([11], seed + 2, 0.5);
    let ref = linearRef(x, weight, bias.data);
    if (withRelu) ref = reluRef(ref);
    t.true(ref.data.some((v) => (withRelu ? v === 0 : v < 0)));
    const options = { relu: withRelu };
    for (const [form, y] of await bothForms(() => linear(x, weight, bias, options), () => linearSync(x, weight, bias, options))) {
      checkResult(t, `linear relu=${withRelu} (${form})`, y, ref);
    }
  });
}

// ---------------------------------------------------------------------------------------------------------------
// Rejected arguments: the Sync form throws and the async form rejects, with the same class and message.

interface Expected {
  readonly instanceOf: new (...args: never[]) => RepvggError;
  readonly code: string;
  /** Each must match the message: the argument's name and the received shape or value. */
  readonly mentions: readonly RegExp[];
}

async function rejectsBoth(t: ExecutionContext, label: string, asyncForm: () => Promise<unknown>, syncForm: () => unknown, e: Expected) {
  const syncError = t.throws(syncForm, { instanceOf: e.instanceOf }, `${label} (sync)`);
  const asyncError = await t.throwsAsync(asyncForm, { instanceOf: e.instanceOf }, `${label} (async)`);
  for (const [form, error] of [['sync', syncError], ['async', asyncError]] as const) {
    t.is(error?.code, e.code, `${label} (${form}): code`);
    for (const mention of e.mentions) t.regex(error?.message ?? '', mention, `${label} (${form}): message names ${mention}`);
  }
}

const shapeRe = (s: readonly number[]): RegExp => new RegExp(`\\[${s.join(', ')}\\]`);

const X = randomTensor([2, 4, 8, 8], 8000);
const W = randomTensor([6, 4, 3, 3], 8001);

const convRejections: [string, () => [HostTensor, HostTensor, Conv2dOptions], Expected][] = [
  [
    'x of rank 3',
    () => [randomTensor([4, 8, 8], 8010), W, {}],
    { instanceOf: ShapeError, code: 'ERR_SHAPE', mentions: [/\bx\b/, /rank-4/, shapeRe([4, 8, 8])] },
  ],
  [
    'weight of rank 2',
    () => [X, randomTensor([6, 36], 8011), {}],
    { instanceOf: ShapeError, code: 'ERR_SHAPE', mentions: [/\bweight\b/, shapeRe([6, 36])] },
  ],
  [
    'weight for 3 input channels, x with 4',
    () => [X, randomTensor([6, 3, 3, 3], 8012), {}],
    { instanceOf: ShapeError, code: 'ERR_SHAPE', mentions: [/\bweight\b/, shapeRe([6, 3, 3, 3]), shapeRe([6, 4, 3, 3])] },
  ],
  [
    'weight for groups 1 used with groups 2',
    () => [X, W, { groups: 2 }],
    { instanceOf: ShapeError, code: 'ERR_SHAPE', mentions: [/\bweight\b/, shapeRe([6, 4, 3, 3]), shapeRe([6, 2, 3, 3])] },
  ],
  [
    'groups 3 not dividing 4 input channels',
    () => [X, randomTensor([6, 1, 3, 3], 8013), { groups: 3 }],
    { instanceOf: ArgumentValueError, code: 'ERR_ARG_VALUE', mentions: [/\bgroups\b/, /groups 3\b/, /\b4\b/] },
  ],
  [
    'groups 4 not dividing 6 output channels',
    () => [X, randomTensor([6, 1, 3, 3], 8014), { groups: 4 }],
    { instanceOf: ArgumentValueError, code: 'ERR_ARG_VALUE', mentions: [/\bgroups\b/, /groups 4\b/, /\b6\b/] },
  ],
  [
    'groups 0',
    () => [X, W, { groups: 0 }],
    { instanceOf: ArgumentValueError, code: 'ERR_ARG_VALUE', mentions: [/\bgroups\b/, /number 0/] },
  ],
  [
    'stride 0',
    () => [X, W, { stride: 0 }],
    { instanceOf: ArgumentValueError, code: 'ERR_ARG_VALUE', mentions: [/\bstride\b/, /number 0/] },
  ],
  [
    'pad -1',
    () => [X, W, { pad: -1 }],
    { instanceOf: ArgumentValueError, code: 'ERR_ARG_VALUE', mentions: [/\bpad\b/, /number -1/] },
  ],
  [
    'stride 1.5',
    () => [X, W, { stride: 1.5 }],
    { instanceOf: ArgumentValueError, code: 'ERR_ARG_VALUE', mentions: [/\bstride\b/, /1\.5/] },
  ],
  [
    'Float64Array x',
    () => [{ shape: [2, 4, 8, 8], data: Float64Array.from(X.data) as unknown as Float32Array }, W, {}],
    { instanceOf: ArgumentTypeError, code: 'ERR_ARG_TYPE', mentions: [/\bx\b/, /Float64Array\(512\)/] },
  ],
  [
    'Float64Array weight',
    () => [X, { shape: [6, 4, 3, 3], data: Float64Array.from(W.data) as unknown as Float32Array }, {}],
    { instanceOf: ArgumentTypeError, code: 'ERR_ARG_TYPE', mentions: [/\bweight\b/, /Float64Array\(216\)/] },
  ],
  [
    'Float64Array bias',
    () => [X, W, { bias: { shape: [6], data: new Float64Array(6).fill(0.5) as unknown as Float32Array } }],
    { instanceOf: ArgumentTypeError, code: 'ERR_ARG_TYPE', mentions: [/\bbias\b/, /Float64Array\(6\)/] },
  ],
  [
    'bias of 5 values for 6 output channels',
    () => [X, W, { bias: randomTensor([5], 8015) }],
    { instanceOf: ShapeError, code: 'ERR_SHAPE', mentions: [/\bbias\b/, shapeRe([6]), shapeRe([5])] },
  ],
  [
    'bias of rank 2',
    () => [X, W, { bias: randomTensor([2, 3], 8016) }],
    { instanceOf: ShapeError, code: 'ERR_SHAPE', mentions: [/\bbias\b/, shapeRe([2, 3])] },
  ],
  [
    'x of 2x8 for a 3x3 kernel without padding',
    () => [randomTensor([2, 4, 2, 8], 8017), W, {}],
    { instanceOf: ShapeError, code: 'ERR_SHAPE', mentions: [/\bx\b/, /2x8/, /3x3 kernel/] },
  ],
  [
    'x of 1x1 for a 3x3 kernel with stride 2, pad 0',
    () => [randomTensor([1, 4, 1, 1], 8018), W, { stride: 2 }],
    { instanceOf: ShapeError, code: 'ERR_SHAPE', mentions: [/\bx\b/, /1x1/] },
  ],
  [
    'non-square kernel',
    () => [X, randomTensor([6, 4, 3, 1], 8019), { pad: 1 }],
    { instanceOf: ShapeError, code: 'ERR_SHAPE', mentions: [/\bweight\b/, shapeRe([6, 4, 3, 1])] },
  ],
  [
    'an unknown algorithm',
    () => [nhwc(X), W, { pad: 1, algorithm: 'fft' as 'direct' }],
    { instanceOf: ArgumentValueError, code: 'ERR_ARG_VALUE', mentions: [/\balgorithm\b/, /'fft'/] },
  ],
  [
    'Winograd with stride 2',
    () => [nhwc(X), W, { pad: 1, stride: 2, algorithm: 'winograd' }],
    { instanceOf: ArgumentValueError, code: 'ERR_ARG_VALUE', mentions: [/'winograd'/, /stride 2/] },
  ],
  [
    'Winograd on an NCHW x',
    () => [X, W, { pad: 1, algorithm: 'winograd2x2' }],
    { instanceOf: ArgumentValueError, code: 'ERR_ARG_VALUE', mentions: [/'winograd2x2'/, /x nchw/] },
  ],
  [
    'Winograd with pad 2',
    () => [nhwc(X), W, { pad: 2, algorithm: 'winograd' }],
    { instanceOf: ArgumentValueError, code: 'ERR_ARG_VALUE', mentions: [/pad 2/] },
  ],
  [
    "'gemm' on an NCHW x",
    () => [randomTensor([2, 4, 2, 2], 8030), W, { pad: 1, algorithm: 'gemm' }],
    { instanceOf: ArgumentValueError, code: 'ERR_ARG_VALUE', mentions: [/'gemm'/, /x nchw/] },
  ],
  [
    "'gemm' where outputs see only part of the plane",
    () => [nhwc(X), W, { pad: 1, algorithm: 'gemm' }],
    { instanceOf: ArgumentValueError, code: 'ERR_ARG_VALUE', mentions: [/'gemm'/, /only part of the 8x8 input/] },
  ],
  [
    "'gemm' with groups 2",
    () => [nhwc(randomTensor([2, 4, 2, 2], 8031)), randomTensor([6, 2, 3, 3], 8032), { pad: 1, groups: 2, algorithm: 'gemm' }],
    { instanceOf: ArgumentValueError, code: 'ERR_ARG_VALUE', mentions: [/'gemm'/, /groups 2/] },
  ],
  [
    "'gemm' with a matrix over 2^24 elements (2x2 plane, 1025 -> 1025 channels)",
    () => [nhwc({ shape: [1, 1025, 2, 2], data: new Float32Array(4100).fill(0.5) }), { shape: [1025, 1025, 3, 3], data: new Float32Array(1025 * 1025 * 9).fill(0.5) }, { pad: 1, algorithm: 'gemm' }],
    { instanceOf: ArgumentValueError, code: 'ERR_ARG_VALUE', mentions: [/'gemm'/, /16810000 elements/] },
  ],
  [
    "'im2col' on an NCHW x",
    () => [X, W, { pad: 1, algorithm: 'im2col' }],
    { instanceOf: ArgumentValueError, code: 'ERR_ARG_VALUE', mentions: [/'im2col'/, /x nchw/] },
  ],
  [
    "'im2col' with groups 2",
    () => [nhwc(randomTensor([2, 4, 5, 5], 8033)), randomTensor([6, 2, 3, 3], 8034), { pad: 1, groups: 2, algorithm: 'im2col' }],
    { instanceOf: ArgumentValueError, code: 'ERR_ARG_VALUE', mentions: [/'im2col'/, /groups 2/] },
  ],
  [
    "'im2col' with a column matrix over 2^24 elements per image (64x64 output, 3x3 kernel, 456 channels)",
    () => [nhwc({ shape: [1, 456, 64, 64], data: new Float32Array(456 * 4096).fill(0.5) }), { shape: [1, 456, 3, 3], data: new Float32Array(456 * 9).fill(0.5) }, { pad: 1, algorithm: 'im2col' }],
    { instanceOf: ArgumentValueError, code: 'ERR_ARG_VALUE', mentions: [/'im2col'/, /16809984 elements per image/] },
  ],
  [
    'x data shorter than its shape',
    () => [{ shape: [2, 4, 8, 8], data: new Float32Array(500).fill(1) }, W, {}],
    { instanceOf: ShapeError, code: 'ERR_SHAPE', mentions: [/\bx\b/, shapeRe([2, 4, 8, 8]), /500 values/] },
  ],
  [
    'x that is not a tensor',
    () => [[1, 2, 3] as unknown as HostTensor, W, {}],
    { instanceOf: ArgumentTypeError, code: 'ERR_ARG_TYPE', mentions: [/\bx\b/, /array \[1, 2, 3\]/] },
  ],
];

for (const [label, args, expected] of convRejections) {
  test(`conv2d rejects ${label}`, async (t) => {
    const [x, weight, options] = args();
    await rejectsBoth(t, label, () => conv2d(x, weight, options), () => conv2dSync(x, weight, options), expected);
  });
}

test('add rejects mismatched shapes, naming b and both shapes', async (t) => {
  const a = randomTensor([2, 3, 4, 5], 8100);
  for (const [i, bShape] of ([[2, 3, 5, 4], [2, 3, 20], [2, 3, 4, 6]] as const).entries()) {
    const b = randomTensor(bShape, 8101 + i);
    await rejectsBoth(t, `add [2, 3, 4, 5] + [${bShape.join(', ')}]`, () => add(a, b), () => addSync(a, b), {
      instanceOf: ShapeError,
      code: 'ERR_SHAPE',
      mentions: [/\bb\b/, shapeRe(bShape), shapeRe([2, 3, 4, 5])],
    });
  }
  const b64 = { shape: [2, 3, 4, 5], data: new Float64Array(120).fill(1) as unknown as Float32Array };
  await rejectsBoth(t, 'add Float64Array b', () => add(a, b64), () => addSync(a, b64), {
    instanceOf: ArgumentTypeError,
    code: 'ERR_ARG_TYPE',
    mentions: [/\bb\b/, /Float64Array\(120\)/],
  });
});

test('batchNorm rejects a wrong rank, statistics of the wrong length and Float64Array statistics', async (t) => {
  const x = randomTensor([2, 5, 4, 4], 8200);
  const p = bnParams(5, 8201);
  const x3 = randomTensor([5, 4, 4], 8202);
  await rejectsBoth(t, 'batchNorm rank 3', () => batchNorm(x3, p), () => batchNormSync(x3, p), {
    instanceOf: ShapeError,
    code: 'ERR_SHAPE',
    mentions: [/\bx\b/, shapeRe([5, 4, 4])],
  });
  const shortVar = { ...p, var: p.var.subarray(0, 4) };
  await rejectsBoth(t, 'batchNorm var of 4', () => batchNorm(x, shortVar), () => batchNormSync(x, shortVar), {
    instanceOf: ShapeError,
    code: 'ERR_SHAPE',
    mentions: [/\bvar\b/, /\b5 values/, /received 4\b/],
  });
  const gamma64 = { ...p, gamma: Float64Array.from(p.gamma) as unknown as Float32Array };
  await rejectsBoth(t, 'batchNorm Float64Array gamma', () => batchNorm(x, gamma64), () => batchNormSync(x, gamma64), {
    instanceOf: ArgumentTypeError,
    code: 'ERR_ARG_TYPE',
    mentions: [/\bgamma\b/, /Float64Array\(5\)/],
  });
});

test('linear rejects a weight of other in-features, a bias of the wrong length and a wrong rank', async (t) => {
  const x = randomTensor([3, 8], 8300);
  const weight = randomTensor([4, 8], 8301);
  const bias = randomTensor([4], 8302);
  const wrongWeight = randomTensor([4, 7], 8303);
  await rejectsBoth(t, 'linear weight [4, 7]', () => linear(x, wrongWeight, bias), () => linearSync(x, wrongWeight, bias), {
    instanceOf: ShapeError,
    code: 'ERR_SHAPE',
    mentions: [/\bweight\b/, shapeRe([4, 7]), shapeRe([4, 8])],
  });
  const wrongBias = randomTensor([5], 8304);
  await rejectsBoth(t, 'linear bias [5]', () => linear(x, weight, wrongBias), () => linearSync(x, weight, wrongBias), {
    instanceOf: ShapeError,
    code: 'ERR_SHAPE',
    mentions: [/\bbias\b/, shapeRe([5]), shapeRe([4])],
  });
  const x4 = randomTensor([3, 8, 1, 1], 8305);
  await rejectsBoth(t, 'linear x rank 4', () => linear(x4, weight, bias), () => linearSync(x4, weight, bias), {
    instanceOf: ShapeError,
    code: 'ERR_SHAPE',
    mentions: [/\bx\b/, /rank-2/, shapeRe([3, 8, 1, 1])],
  });
});

test('channelScale, globalAvgPool, relu and sigmoid reject bad arguments', async (t) => {
  const x = randomTensor([2, 3, 4, 4], 8400);
  const scale = randomTensor([2, 4], 8401);
  await rejectsBoth(t, 'channelScale scale [2, 4]', () => channelScale(x, scale), () => channelScaleSync(x, scale), {
    instanceOf: ShapeError,
    code: 'ERR_SHAPE',
    mentions: [/\bscale\b/, shapeRe([2, 4]), shapeRe([2, 3])],
  });
  const x3 = randomTensor([2, 3, 16], 8402);
  await rejectsBoth(t, 'globalAvgPool rank 3', () => globalAvgPool(x3), () => globalAvgPoolSync(x3), {
    instanceOf: ShapeError,
    code: 'ERR_SHAPE',
    mentions: [/\bx\b/, shapeRe([2, 3, 16])],
  });
  const x64 = { shape: [2, 3], data: new Float64Array(6).fill(1) as unknown as Float32Array };
  for (const [name, asyncForm, syncForm] of [
    ['relu', relu, reluSync],
    ['sigmoid', sigmoid, sigmoidSync],
  ] as const) {
    await rejectsBoth(t, `${name} Float64Array`, () => asyncForm(x64), () => syncForm(x64), {
      instanceOf: ArgumentTypeError,
      code: 'ERR_ARG_TYPE',
      mentions: [/\bx\b/, /Float64Array\(6\)/],
    });
    const short = { shape: [2, 3], data: new Float32Array(5).fill(1) };
    await rejectsBoth(t, `${name} data shorter than shape`, () => asyncForm(short), () => syncForm(short), {
      instanceOf: ShapeError,
      code: 'ERR_SHAPE',
      mentions: [/\bx\b/, shapeRe([2, 3]), /5 values/],
    });
  }
});

// ---------------------------------------------------------------------------------------------------------------
// The async form runs off the event loop

// Serial, so that no other test's JavaScript occupies the event loop while the conv runs.
test.serial('async conv2d does not block the event loop: callbacks run before its promise resolves', async (t) => {
  const [n, c, h, w] = [8, 64, 112, 112];
  const x = randomTensor([n, c, h, w], 9000);
  const weight = randomTensor([c, c, 3, 3], 9001, Math.sqrt(3 / (c * 9)));
  let resolved = false;
  let immediateSawPending: boolean | undefined;
  let timerSawPending: boolean | undefined;
  let immediateTicks = 0;
  const started = performance.now();
  const pending = conv2d(x, weight, { pad: 1 }).then((y) => {
    resolved = true;
    return y;
  });
  // A blocking implementation would resolve the promise before the event loop reaches either callback.
  setImmediate(() => {
    immediateSawPending = !resolved;
  });
  setTimeout(() => {
    timerSawPending = !resolved;
  }, 0);
  const tick = (): void => {
    if (resolved) return;
    immediateTicks++;
    setImmediate(tick);
  };
  setImmediate(tick);
  const y = await pending;
  const ms = performance.now() - started;
  t.true(immediateSawPending, 'a setImmediate callback ran while the conv was still running');
  t.log(`${immediateTicks} event-loop turns during the ${n}x${c}x${h}x${w} conv (${ms.toFixed(0)} ms); a 1 ms timer saw it pending: ${timerSawPending}`);
  t.true(immediateTicks >= 1, 'the event loop kept turning');

  // The result is still right: check image 0, output channels 0..3 against the reference.
  const x0 = { data: x.data.subarray(0, c * h * w), shape: [1, c, h, w] };
  const w0 = { data: weight.data.subarray(0, 4 * c * 9), shape: [4, c, 3, 3] };
  const ref = conv2dRef(x0, w0, undefined, { stride: 1, pad: 1, groups: 1 });
  t.deepEqual(y.shape, [n, c, h, w]);
  checkClose(t, 'large conv, image 0, channels 0..3', y.data.subarray(0, 4 * h * w), ref.data, OP_FP32);
});
