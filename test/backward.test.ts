// The training ops of lib/ops (backward passes, training-mode batch norm, running statistics, softmax cross-entropy):
// each float64 reference gradient against central finite differences, then each native op, async and Sync form,
// against that reference on fresh random data; and every rejected argument (error class, name and received value).
// Not for: forward inference ops (test/ops.test.ts) or the autograd tape built on these ops.

import test from 'ava';
import type { ExecutionContext } from 'ava';

import { ArgumentTypeError, ArgumentValueError, RepvggError, ShapeError } from '../lib/errors.js';
import {
  batchNormBackward,
  batchNormBackwardSync,
  batchNormTrain,
  batchNormTrainSync,
  channelScaleBackward,
  channelScaleBackwardSync,
  conv2dBackward,
  conv2dBackwardSync,
  globalAvgPoolBackward,
  globalAvgPoolBackwardSync,
  linearBackward,
  linearBackwardSync,
  reluBackward,
  reluBackwardSync,
  reluSync,
  sigmoidBackward,
  sigmoidBackwardSync,
  sigmoidSync,
  softmaxCrossEntropy,
  softmaxCrossEntropySync,
  updateRunningStats,
} from '../lib/ops/index.js';
import type { Conv2dBackwardOptions } from '../lib/ops/index.js';
import { toLayout } from '../lib/ops/layout.js';
import type { HostTensor } from '../lib/tensor.js';
import { AUTO_ELSEWHERE, autoRunsIm2colShape } from './helpers/auto-conv.js';
import {
  conv2dRef,
  globalAvgPoolRef,
  linearRef,
  makeRng,
  maxRelativeError,
  randomArray,
  reluRef,
  sigmoidRef,
} from './helpers/reference.js';
import type { ConvOptions, RefTensor } from './helpers/reference.js';
import {
  batchNormBackwardRef,
  batchNormTrainRef,
  channelScaleBackwardRef,
  channelScaleRef,
  conv2dBackwardRef,
  dot,
  globalAvgPoolBackwardRef,
  linearBackwardRef,
  numericGradient,
  reluBackwardRef,
  sigmoidBackwardRef,
  softmaxCrossEntropyRef,
  updateRunningStatsRef,
} from './helpers/reference-backward.js';
import { FINITE_DIFF, FLOAT64, OP_FP32, WINOGRAD_OP_FP32, checkClose } from './helpers/tolerances.js';

/** Random float32 tensor with values in [offset - scale, offset + scale] (never exactly offset), seeded. */
function randomTensor(shape: readonly number[], seed: number, scale = 1, offset = 0): HostTensor {
  const data = randomArray(shape.reduce((p, d) => p * d, 1), makeRng(seed), scale);
  if (offset !== 0) for (let i = 0; i < data.length; i++) data[i] = (data[i] as number) + offset;
  return { shape: [...shape], data };
}

/** Runs the async and the Sync form of an op; both results, labelled. */
async function bothForms<T>(asyncForm: () => Promise<T>, syncForm: () => T): Promise<[string, T][]> {
  return [
    ['async', await asyncForm()],
    ['sync', syncForm()],
  ];
}

function checkTensorResult(t: ExecutionContext, label: string, ours: HostTensor | undefined, ref: RefTensor, tol = OP_FP32): void {
  if (ours === undefined) {
    t.fail(`${label}: missing`);
    return;
  }
  t.deepEqual(ours.shape, ref.shape, `${label}: shape`);
  t.true(ours.data instanceof Float32Array, `${label}: float32`);
  checkClose(t, label, ours.data, ref.data, tol);
}

/** A reference gradient must be non-trivial, or comparing it proves nothing. */
function assertNonTrivial(t: ExecutionContext, label: string, values: ArrayLike<number>): void {
  let nonZero = 0;
  for (let i = 0; i < values.length; i++) if (values[i] !== 0) nonZero++;
  t.true(nonZero >= values.length / 4, `${label}: ${nonZero}/${values.length} gradient values are non-zero`);
}

/** Float64 copy of a tensor with other data (for finite differences). */
function withData(t: { shape: readonly number[] }, data: Float64Array): RefTensor {
  return { data, shape: [...t.shape] };
}

// ---------------------------------------------------------------------------------------------------------------
// The float64 references against central finite differences (tiny shapes, every input of every op)

interface ConvCase {
  readonly name: string;
  readonly x: readonly [number, number, number, number]; // [N, C, H, W]
  readonly out: number;
  readonly kernel: number;
  readonly stride: number;
  readonly pad: number;
  readonly groups: number;
}

const tinyConvCases: ConvCase[] = [
  { name: '3x3 s1 p1, 5x7', x: [2, 3, 5, 7], out: 4, kernel: 3, stride: 1, pad: 1, groups: 1 },
  { name: '3x3 s2 p1, groups 2, 7x6', x: [2, 4, 7, 6], out: 6, kernel: 3, stride: 2, pad: 1, groups: 2 },
  { name: '3x3 s2 p0 (last row and column unused), 6x8', x: [1, 3, 6, 8], out: 2, kernel: 3, stride: 2, pad: 0, groups: 1 },
  { name: '1x1 s1 p1 (padding-only border), depthwise, 3x5', x: [2, 3, 3, 5], out: 3, kernel: 1, stride: 1, pad: 1, groups: 3 },
  { name: '1x1 s2 p0, 5x5', x: [2, 4, 5, 5], out: 3, kernel: 1, stride: 2, pad: 0, groups: 1 },
];

tinyConvCases.forEach((c, index) => {
  test(`reference conv2d backward ${c.name} equals finite differences`, (t) => {
    const seed = 100 + 10 * index;
    const options: ConvOptions = { stride: c.stride, pad: c.pad, groups: c.groups };
    const x = randomTensor(c.x, seed);
    const w = randomTensor([c.out, c.x[1] / c.groups, c.kernel, c.kernel], seed + 1);
    const y = conv2dRef(x, w, undefined, options);
    const dy = randomTensor(y.shape, seed + 2);
    const ref = conv2dBackwardRef(x, w, dy, options);
    const objective = (xs: Float64Array, ws: Float64Array): number => dot(conv2dRef(withData(x, xs), withData(w, ws), undefined, options).data, dy.data);
    const xs = Float64Array.from(x.data);
    const ws = Float64Array.from(w.data);
    assertNonTrivial(t, 'dweight', ref.dweight.data);
    checkClose(t, `${c.name} dx`, ref.dx.data, numericGradient((v) => objective(v, ws), xs), FINITE_DIFF);
    checkClose(t, `${c.name} dweight`, ref.dweight.data, numericGradient((v) => objective(xs, v), ws), FINITE_DIFF);
  });
});

test('reference training batch norm backward equals finite differences for x, gamma and beta', (t) => {
  const x = randomTensor([3, 2, 3, 2], 200, 1.5, 0.7);
  const gamma = randomTensor([2], 201, 0.5, 1);
  const beta = randomTensor([2], 202, 0.5);
  const dy = randomTensor(x.shape, 203);
  const forward = batchNormTrainRef(x, gamma.data, beta.data);
  const ref = batchNormBackwardRef(x, dy, gamma.data, forward.mean, forward.var);
  const xs = Float64Array.from(x.data);
  const gs = Float64Array.from(gamma.data);
  const bs = Float64Array.from(beta.data);
  const objective = (xv: Float64Array, gv: Float64Array, bv: Float64Array): number => dot(batchNormTrainRef(withData(x, xv), gv, bv).y.data, dy.data);
  assertNonTrivial(t, 'dx', ref.dx.data);
  checkClose(t, 'BN dx', ref.dx.data, numericGradient((v) => objective(v, gs, bs), xs), FINITE_DIFF);
  checkClose(t, 'BN dgamma', ref.dgamma, numericGradient((v) => objective(xs, v, bs), gs), FINITE_DIFF);
  checkClose(t, 'BN dbeta', ref.dbeta, numericGradient((v) => objective(xs, gs, v), bs), FINITE_DIFF);
});

test('reference relu, sigmoid, global average pool, linear and channel scale backward equal finite differences', (t) => {
  const x4 = randomTensor([2, 3, 3, 4], 300, 3);
  const dy4 = randomTensor(x4.shape, 301);
  const x4s = Float64Array.from(x4.data);

  const reluGrad = reluBackwardRef(reluRef(x4), dy4);
  t.true(reluGrad.data.some((v) => v === 0) && reluGrad.data.some((v) => v !== 0), 'ReLU blocks some gradients and passes others');
  checkClose(t, 'relu', reluGrad.data, numericGradient((v) => dot(reluRef(withData(x4, v)).data, dy4.data), x4s), FINITE_DIFF);
  const sigmoidGrad = sigmoidBackwardRef(sigmoidRef(x4), dy4);
  checkClose(t, 'sigmoid', sigmoidGrad.data, numericGradient((v) => dot(sigmoidRef(withData(x4, v)).data, dy4.data), x4s), FINITE_DIFF);

  const dyPool = randomTensor([2, 3], 302);
  const poolGrad = globalAvgPoolBackwardRef(dyPool, 3, 4);
  checkClose(t, 'globalAvgPool', poolGrad.data, numericGradient((v) => dot(globalAvgPoolRef(withData(x4, v)).data, dyPool.data), x4s), FINITE_DIFF);

  const scale = randomTensor([2, 3], 303, 2);
  const scaleGrad = channelScaleBackwardRef(x4, scale, dy4);
  const scales = Float64Array.from(scale.data);
  const scaleObjective = (xv: Float64Array, sv: Float64Array): number => dot(channelScaleRef(withData(x4, xv), withData(scale, sv)).data, dy4.data);
  checkClose(t, 'channelScale dx', scaleGrad.dx.data, numericGradient((v) => scaleObjective(v, scales), x4s), FINITE_DIFF);
  checkClose(t, 'channelScale dscale', scaleGrad.dscale.data, numericGradient((v) => scaleObjective(x4s, v), scales), FINITE_DIFF);

  const x = randomTensor([3, 5], 304);
  const w = randomTensor([4, 5], 305);
  const b = randomTensor([4], 306);
  const dy = randomTensor([3, 4], 307);
  const grads = linearBackwardRef(x, w, dy);
  const [xs, ws, bs] = [Float64Array.from(x.data), Float64Array.from(w.data), Float64Array.from(b.data)];
  const linearObjective = (xv: Float64Array, wv: Float64Array, bv: Float64Array): number => dot(linearRef(withData(x, xv), withData(w, wv), bv).data, dy.data);
  checkClose(t, 'linear dx', grads.dx.data, numericGradient((v) => linearObjective(v, ws, bs), xs), FINITE_DIFF);
  checkClose(t, 'linear dweight', grads.dweight.data, numericGradient((v) => linearObjective(xs, v, bs), ws), FINITE_DIFF);
  checkClose(t, 'linear dbias', grads.dbias, numericGradient((v) => linearObjective(xs, ws, v), bs), FINITE_DIFF);
});

for (const labelSmoothing of [0, 0.1, 1]) {
  test(`reference softmax cross-entropy (label smoothing ${labelSmoothing}) gradient equals finite differences`, (t) => {
    const logits = randomTensor([4, 5], 400, 3);
    const labels = [3, 0, 4, 3];
    const ref = softmaxCrossEntropyRef(logits, labels, labelSmoothing);
    const numeric = numericGradient((v) => softmaxCrossEntropyRef(withData(logits, v), labels, labelSmoothing).loss, Float64Array.from(logits.data));
    checkClose(t, `dlogits ls=${labelSmoothing}`, ref.dlogits.data, numeric, FINITE_DIFF);
  });
}

test('reference softmax cross-entropy: hand-computed values', (t) => {
  // Equal logits: softmax is uniform, so every target (smoothed or not) gives log K.
  for (const ls of [0, 0.3]) t.true(Math.abs(softmaxCrossEntropyRef({ data: [2, 2, 2, 2], shape: [1, 4] }, [1], ls).loss - Math.log(4)) < 1e-15);
  // Two classes, logits [0, log 3]: softmax [1/4, 3/4]. Label 0, ls 0.5: target [0.75, 0.25].
  const { loss, dlogits } = softmaxCrossEntropyRef({ data: [0, Math.log(3)], shape: [1, 2] }, [0], 0.5);
  t.true(Math.abs(loss - (-0.75 * Math.log(0.25) - 0.25 * Math.log(0.75))) < 1e-15, `loss ${loss}`);
  t.true(Math.abs((dlogits.data[0] as number) - (0.25 - 0.75)) < 1e-15 && Math.abs((dlogits.data[1] as number) - (0.75 - 0.25)) < 1e-15);
});

test('the finite-difference check catches a wrong gradient', (t) => {
  // A gradient with a plausible slip must fail FINITE_DIFF by a wide margin, or the checks above prove nothing.
  const c = tinyConvCases[1] as ConvCase;
  const options: ConvOptions = { stride: c.stride, pad: c.pad, groups: c.groups };
  const x = randomTensor(c.x, 500);
  const w = randomTensor([c.out, c.x[1] / c.groups, 3, 3], 501);
  const dy = randomTensor(conv2dRef(x, w, undefined, options).shape, 502);
  const numeric = numericGradient((v) => dot(conv2dRef(x, withData(w, v), undefined, options).data, dy.data), Float64Array.from(w.data));
  const right = conv2dBackwardRef(x, w, dy, options).dweight.data;
  t.true(maxRelativeError(right, numeric) <= FINITE_DIFF, 'the right gradient passes');
  const slightlyWrong = right.map((v, i) => (i === 0 ? v * 1.01 : v));
  t.true(maxRelativeError(slightlyWrong, numeric) > 100 * FINITE_DIFF, 'one weight gradient 1% off is caught');
  // A flipped kernel (convolution instead of correlation) is the classic slip of a hand-written conv gradient.
  const flipped = right.map((_, i) => right[i - (i % 9) + 8 - (i % 9)] as number);
  t.true(maxRelativeError(flipped, numeric) > 1e-2, 'a flipped kernel gradient is caught');

  // BN's gradient without the paths through the batch statistics (the inference-mode gradient) is far off.
  const xb = randomTensor([2, 2, 3, 3], 503, 1, 0.5);
  const gamma = Float64Array.from([1.2, 0.8]);
  const beta = Float64Array.from([0.1, -0.2]);
  const dyb = randomTensor(xb.shape, 504);
  const stats = batchNormTrainRef(xb, gamma, beta);
  const inferenceStyle = Float64Array.from(dyb.data, (g, i) => {
    const ch = Math.floor(i / 9) % 2;
    return (g * (gamma[ch] as number)) / Math.sqrt((stats.var[ch] as number) + 1e-5);
  });
  const numericBn = numericGradient((v) => dot(batchNormTrainRef(withData(xb, v), gamma, beta).y.data, dyb.data), Float64Array.from(xb.data));
  t.true(maxRelativeError(inferenceStyle, numericBn) > 1e-2, 'BN gradient ignoring the batch statistics is caught');
});

// ---------------------------------------------------------------------------------------------------------------
// conv2dBackward

const convCases: ConvCase[] = [
  ...tinyConvCases,
  { name: '3x3 s1 p1, 8 -> 16, 7x9', x: [2, 8, 7, 9], out: 16, kernel: 3, stride: 1, pad: 1, groups: 1 },
  { name: '3x3 s2 p1, 6 -> 10, 13x5', x: [3, 6, 13, 5], out: 10, kernel: 3, stride: 2, pad: 1, groups: 1 },
  { name: '3x3 s2 p0, groups 2, 13x6', x: [2, 8, 13, 6], out: 12, kernel: 3, stride: 2, pad: 0, groups: 2 },
  { name: '3x3 s1 p1, groups 4, 7x9', x: [2, 16, 7, 9], out: 8, kernel: 3, stride: 1, pad: 1, groups: 4 },
  { name: '3x3 s2 p1, depthwise, 9x7', x: [2, 12, 9, 7], out: 12, kernel: 3, stride: 2, pad: 1, groups: 12 },
  { name: '1x1 s2 p0, groups 2, 7x9', x: [2, 8, 7, 9], out: 6, kernel: 1, stride: 2, pad: 0, groups: 2 },
  { name: '3x3 s1 p1, 64 -> 64 (blocked kernels), 14x14', x: [4, 64, 14, 14], out: 64, kernel: 3, stride: 1, pad: 1, groups: 1 },
  { name: '3x3 s2 p1, 48 -> 96, groups 2, 15x11', x: [3, 48, 15, 11], out: 96, kernel: 3, stride: 2, pad: 1, groups: 2 },
  { name: '1x1 s1 p0, 1 input channel (first layer), 28x28', x: [8, 1, 28, 28], out: 16, kernel: 1, stride: 1, pad: 0, groups: 1 },
];

/** A case's random x, weights (scaled to keep outputs of order 1) and dy, and their float64 gradients. */
function convBackwardCase(c: ConvCase, seed: number) {
  const options: ConvOptions = { stride: c.stride, pad: c.pad, groups: c.groups };
  const cg = c.x[1] / c.groups;
  const x = randomTensor(c.x, seed);
  const w = randomTensor([c.out, cg, c.kernel, c.kernel], seed + 1, Math.sqrt(3 / (cg * c.kernel * c.kernel)));
  const dy = randomTensor(conv2dRef(x, w, undefined, options).shape, seed + 2);
  return { options, x, w, dy, ref: conv2dBackwardRef(x, w, dy, options) };
}

convCases.forEach((c, index) => {
  test(`conv2dBackward ${c.name}: async and sync match the float64 reference`, async (t) => {
    const { options, x, w, dy, ref } = convBackwardCase(c, 1000 + 10 * index);
    assertNonTrivial(t, 'dx', ref.dx.data);
    const before = [x.data.slice(), w.data.slice(), dy.data.slice()];
    for (const [form, grads] of await bothForms(() => conv2dBackward(x, w, dy, options), () => conv2dBackwardSync(x, w, dy, options))) {
      checkTensorResult(t, `${c.name} dx (${form})`, grads.dx, ref.dx);
      checkTensorResult(t, `${c.name} dweight (${form})`, grads.dweight, ref.dweight);
    }
    t.deepEqual([x.data, w.data, dy.data], before, 'inputs are not modified');
  });
});

// NHWC x and dy, as the training tape keeps activations. The strided 1x1 cases with few input channels are the stem's
// 1x1 branch, which oneDNN 2.6's AVX2 1x1 weight-gradient kernel got wrong on NHWC (a crash, a hang or wrong values;
// native/cpu/conv.cc); 64x64 and batch 8 are the sizes where it crashed.
const nhwcConvCases: ConvCase[] = [
  { name: '1x1 s2 p0, 3 -> 48, 64x64 (the stem 1x1 branch)', x: [8, 3, 64, 64], out: 48, kernel: 1, stride: 2, pad: 0, groups: 1 },
  { name: '1x1 s2 p0, 4 -> 8, 32x32', x: [8, 4, 32, 32], out: 8, kernel: 1, stride: 2, pad: 0, groups: 1 },
  { name: '1x1 s2 p0, 24 -> 16, 18x14', x: [2, 24, 18, 14], out: 16, kernel: 1, stride: 2, pad: 0, groups: 1 },
  { name: '3x3 s2 p1, 3 -> 48, 64x64 (the stem 3x3 branch)', x: [8, 3, 64, 64], out: 48, kernel: 3, stride: 2, pad: 1, groups: 1 },
];

/**
 * conv2dBackward of case c on NHWC x and dy, with and without dx, async and sync, against the float64 reference
 * (dx within dxTolerance); returns x, w and dy in those layouts and the options for more checks.
 */
async function checkNhwcBackward(t: ExecutionContext, c: ConvCase, seed: number, options: Conv2dBackwardOptions = {}, dxTolerance = OP_FP32) {
  const { options: geometry, x, w, dy, ref } = convBackwardCase(c, seed);
  const xNhwc = toLayout(x, 'nhwc');
  const dyNhwc = toLayout(dy, 'nhwc');
  for (const needInputGrad of [true, false]) {
    const all = { ...geometry, ...options, needInputGrad };
    for (const [form, grads] of await bothForms(() => conv2dBackward(xNhwc, w, dyNhwc, all), () => conv2dBackwardSync(xNhwc, w, dyNhwc, all))) {
      checkTensorResult(t, `${c.name} dweight (${form}, needInputGrad ${needInputGrad})`, grads.dweight, ref.dweight);
      if (needInputGrad) checkTensorResult(t, `${c.name} dx (${form})`, grads.dx && toLayout(grads.dx, 'nchw'), ref.dx, dxTolerance);
      t.is(grads.dx === undefined, !needInputGrad, `${c.name}: dx only when asked (${form})`);
    }
  }
  return { x: xNhwc, w, dy: dyNhwc, geometry };
}

nhwcConvCases.forEach((c, index) => {
  test(`conv2dBackward on NHWC ${c.name}: matches the float64 reference`, async (t) => {
    await checkNhwcBackward(t, c, 1700 + 10 * index);
  });
});

// The plane-GEMM algorithm (one matrix product when every output sees the whole input plane; native/cpu/gemm_conv.h):
// RepVGG's 3x3 convs on 2x2 planes and its stride-2 conv from 2x2 to 1x1, which 'auto' (the default) gives it,
// a 1x1 plane with pad 1 and a 1x2 plane. x and dy NHWC, as the training tape keeps them.
const planeGemmConvCases: ConvCase[] = [
  { name: '3x3 s1 p1 on 2x2, 24 -> 40', x: [6, 24, 2, 2], out: 40, kernel: 3, stride: 1, pad: 1, groups: 1 },
  { name: '3x3 s2 p1 from 2x2 to 1x1, 32 -> 72', x: [5, 32, 2, 2], out: 72, kernel: 3, stride: 2, pad: 1, groups: 1 },
  { name: '3x3 s1 p1 on 1x1, 16 -> 8', x: [3, 16, 1, 1], out: 8, kernel: 3, stride: 1, pad: 1, groups: 1 },
  { name: '3x3 s1 p1 on 1x2, 12 -> 20', x: [4, 12, 1, 2], out: 20, kernel: 3, stride: 1, pad: 1, groups: 1 },
];

planeGemmConvCases.forEach((c, index) => {
  test(`conv2dBackward plane GEMM ${c.name}: matches the float64 reference; 'auto' runs it`, async (t) => {
    const { x, w, dy, geometry } = await checkNhwcBackward(t, c, 1800 + 10 * index, { algorithm: 'gemm' });
    const gemm = conv2dBackwardSync(x, w, dy, { ...geometry, algorithm: 'gemm' });
    const auto = conv2dBackwardSync(x, w, dy, geometry);
    t.deepEqual([auto.dx?.data, auto.dweight.data], [gemm.dx?.data, gemm.dweight.data], "the default ('auto') runs the plane GEMM, bit for bit");
  });
});

// im2col + GEMM (native/cpu/gemm_conv.h): strided, padded, non-square and 1x1 kernels, a batch in chunks of 4 and 2
// images and an image over the chunk budget alone (as in ops.test.ts). 'auto' runs it below AVX-512, where neither the
// plane GEMM nor Winograd applies, for kernels over 1x1 or onto at most 16 output positions (helpers/auto-conv.ts).
const im2colConvCases: ConvCase[] = [
  { name: '3x3 s2 p1 from 9x9, 24 -> 40', x: [3, 24, 9, 9], out: 40, kernel: 3, stride: 2, pad: 1, groups: 1 },
  { name: '3x3 s1 p1 on 7x5, 16 -> 8', x: [2, 16, 7, 5], out: 8, kernel: 3, stride: 1, pad: 1, groups: 1 },
  { name: '5x5 s3 p2 from 11x11, 6 -> 10', x: [2, 6, 11, 11], out: 10, kernel: 5, stride: 3, pad: 2, groups: 1 },
  { name: '1x1 s2 p0 from 8x8, 12 -> 20', x: [3, 12, 8, 8], out: 20, kernel: 1, stride: 2, pad: 0, groups: 1 },
  { name: '1x1 s1 p0 on 8x8, 12 -> 20', x: [3, 12, 8, 8], out: 20, kernel: 1, stride: 1, pad: 0, groups: 1 },
  { name: '3x3 s1 p1 on 28x28, 64 -> 16, chunks of 4 and 2 images', x: [6, 64, 28, 28], out: 16, kernel: 3, stride: 1, pad: 1, groups: 1 },
  { name: '3x3 s2 p1 from 56x56, 320 -> 8, one image per chunk', x: [2, 320, 56, 56], out: 8, kernel: 3, stride: 2, pad: 1, groups: 1 },
];

im2colConvCases.forEach((c, index) => {
  const autoRunsIm2col = autoRunsIm2colShape(c);
  test(`conv2dBackward im2col ${c.name}: matches the float64 reference; 'auto' runs ${autoRunsIm2col ? AUTO_ELSEWHERE : 'direct'}`, async (t) => {
    const { x, w, dy, geometry } = await checkNhwcBackward(t, c, 1950 + 10 * index, { algorithm: 'im2col' });
    const im2col = conv2dBackwardSync(x, w, dy, { ...geometry, algorithm: 'im2col' });
    const direct = conv2dBackwardSync(x, w, dy, { ...geometry, algorithm: 'direct' });
    const [n, , oh, ow] = dy.shape as [number, number, number, number];
    if (n * oh * ow >= 200) {
      // dweight sums n * oh * ow products per weight: in another order, the direct kernel rounds differently somewhere.
      t.notDeepEqual(im2col.dweight.data, direct.dweight.data, 'dweight is not the direct kernel');
    }
    const expected = autoRunsIm2col && AUTO_ELSEWHERE === 'im2col' ? im2col : direct;
    const auto = conv2dBackwardSync(x, w, dy, geometry);
    t.deepEqual([auto.dx?.data, auto.dweight.data], [expected.dx?.data, expected.dweight.data], "the default ('auto'), bit for bit");
  });
});

// Winograd: dx with F(2x2, 3x3), the conv of dy with the flipped, transposed weights, and dweight with its transpose
// F(3x3, 2x2) (winograd.h), in chunks of tiles (the last case has two). 'auto' picks it from 64 channels on, for
// dweight only below AVX-512 (AUTO_ELSEWHERE 'im2col'); AVX-512 CPUs keep oneDNN's dweight.
const winogradBackwardCases: ConvCase[] = [
  { name: '3x3 s1 p1, 64 -> 80, 9x7', x: [3, 64, 9, 7], out: 80, kernel: 3, stride: 1, pad: 1, groups: 1 },
  { name: '3x3 s1 p1, 72 -> 64, 5x13 (partial tiles)', x: [2, 72, 5, 13], out: 64, kernel: 3, stride: 1, pad: 1, groups: 1 },
  { name: '3x3 s1 p1, 72 -> 72, 60x60 (two chunks of tiles)', x: [2, 72, 60, 60], out: 72, kernel: 3, stride: 1, pad: 1, groups: 1 },
];

winogradBackwardCases.forEach((c, index) => {
  const autoDweight = AUTO_ELSEWHERE === 'im2col' ? 'winograd2x2' : 'direct';
  test(`conv2dBackward Winograd ${c.name}: dx and dweight match the float64 reference; 'auto' runs it (dweight: ${autoDweight})`, async (t) => {
    const { x, w, dy, geometry } = await checkNhwcBackward(t, c, 1900 + 10 * index, { algorithm: 'winograd2x2' }, WINOGRAD_OP_FP32);
    await checkNhwcBackward(t, c, 1900 + 10 * index, {}, WINOGRAD_OP_FP32); // 'auto' against float64 as well
    const ours = conv2dBackwardSync(x, w, dy, { ...geometry, algorithm: 'winograd2x2' });
    const direct = conv2dBackwardSync(x, w, dy, { ...geometry, algorithm: 'direct' });
    const auto = conv2dBackwardSync(x, w, dy, geometry);
    t.notDeepEqual(ours.dx?.data, direct.dx?.data, 'dx is not the direct kernel');
    t.notDeepEqual(ours.dweight.data, direct.dweight.data, 'dweight is not the direct kernel');
    const alone = conv2dBackwardSync(x, w, dy, { ...geometry, algorithm: 'winograd2x2', needInputGrad: false });
    t.deepEqual(alone.dweight.data, ours.dweight.data, 'dweight without dx: the same bits');
    t.deepEqual(auto.dx?.data, ours.dx?.data, "the default ('auto') runs Winograd for dx, bit for bit");
    const expected = autoDweight === 'winograd2x2' ? ours : direct;
    t.deepEqual(auto.dweight.data, expected.dweight.data, `the default ('auto') runs ${autoDweight} for dweight, bit for bit`);
  });
});

test('conv2dBackward with needInputGrad false computes only dweight', async (t) => {
  const options = { stride: 2, pad: 1, groups: 2 };
  const x = randomTensor([2, 4, 9, 7], 1500);
  const w = randomTensor([6, 2, 3, 3], 1501);
  const dy = randomTensor([2, 6, 5, 4], 1502);
  const ref = conv2dBackwardRef(x, w, dy, options);
  for (const [form, grads] of await bothForms(
    () => conv2dBackward(x, w, dy, { ...options, needInputGrad: false }),
    () => conv2dBackwardSync(x, w, dy, { ...options, needInputGrad: false }),
  )) {
    t.false('dx' in grads, `no dx (${form})`);
    checkTensorResult(t, `dweight (${form})`, grads.dweight, ref.dweight);
  }
});

test('conv2dBackward defaults to stride 1, pad 0, groups 1', async (t) => {
  const x = randomTensor([2, 3, 6, 5], 1600);
  const w = randomTensor([4, 3, 3, 3], 1601);
  const dy = randomTensor([2, 4, 4, 3], 1602);
  const ref = conv2dBackwardRef(x, w, dy, { stride: 1, pad: 0, groups: 1 });
  const grads = await conv2dBackward(x, w, dy);
  checkTensorResult(t, 'dx', grads.dx, ref.dx);
  checkTensorResult(t, 'dweight', grads.dweight, ref.dweight);
});

// ---------------------------------------------------------------------------------------------------------------
// batchNormTrain, batchNormBackward, updateRunningStats

const bnCases: { name: string; shape: [number, number, number, number]; offset: number; eps?: number }[] = [
  { name: '[4, 3, 5, 7]', shape: [4, 3, 5, 7], offset: 0 },
  { name: '[2, 5, 9, 1], mean 3 (variance needs two passes)', shape: [2, 5, 9, 1], offset: 3 },
  { name: '[8, 16, 1, 1] (after global pooling), eps 1e-3', shape: [8, 16, 1, 1], offset: -0.5, eps: 1e-3 },
  // Not two values per channel: then y = +-gamma + beta whatever x is, so dx is ~0 and all rounding.
  { name: '[3, 2, 1, 1] (three values per channel)', shape: [3, 2, 1, 1], offset: 0 },
  { name: '[16, 32, 14, 14] (vectorized kernels)', shape: [16, 32, 14, 14], offset: 1 },
];

bnCases.forEach((c, index) => {
  test(`batchNormTrain and batchNormBackward ${c.name}: async and sync match the float64 reference`, async (t) => {
    const seed = 2000 + 10 * index;
    const channels = c.shape[1];
    const x = randomTensor(c.shape, seed, 2, c.offset);
    const gamma = randomTensor([channels], seed + 1, 0.5, 1);
    const beta = randomTensor([channels], seed + 2, 0.5);
    const dy = randomTensor(c.shape, seed + 3);
    const eps = c.eps ?? 1e-5;
    const options = c.eps === undefined ? {} : { eps: c.eps };
    const ref = batchNormTrainRef(x, gamma.data, beta.data, eps);
    for (const [form, out] of await bothForms(() => batchNormTrain(x, gamma, beta, options), () => batchNormTrainSync(x, gamma, beta, options))) {
      checkTensorResult(t, `y (${form})`, out.y, ref.y);
      checkTensorResult(t, `mean (${form})`, out.mean, { data: ref.mean, shape: [channels] });
      checkTensorResult(t, `biased var (${form})`, out.var, { data: ref.var, shape: [channels] });
    }
    // The backward takes the statistics batchNormTrain returned, as the autograd tape will.
    const stats = batchNormTrainSync(x, gamma, beta, options);
    const grads = batchNormBackwardRef(x, dy, gamma.data, stats.mean.data, stats.var.data, eps);
    assertNonTrivial(t, 'dx', grads.dx.data);
    for (const [form, out] of await bothForms(
      () => batchNormBackward(x, dy, gamma, stats.mean, stats.var, options),
      () => batchNormBackwardSync(x, dy, gamma, stats.mean, stats.var, options),
    )) {
      checkTensorResult(t, `dx (${form})`, out.dx, grads.dx);
      checkTensorResult(t, `dgamma (${form})`, out.dgamma, { data: grads.dgamma, shape: [channels] });
      checkTensorResult(t, `dbeta (${form})`, out.dbeta, { data: grads.dbeta, shape: [channels] });
    }
  });
});

test('batchNormTrain uses the given eps', async (t) => {
  // A tiny variance makes y depend strongly on eps: a kernel that ignores eps is far off.
  const x = randomTensor([2, 3, 4, 4], 2500, 1e-3);
  const gamma = randomTensor([3], 2501, 0.5, 1);
  const beta = randomTensor([3], 2502);
  const y5 = batchNormTrainRef(x, gamma.data, beta.data, 1e-5).y;
  const y3 = batchNormTrainRef(x, gamma.data, beta.data, 1e-3).y;
  t.true(maxRelativeError(y3.data, y5.data) > 0.1, 'the two eps give clearly different outputs');
  checkTensorResult(t, 'default eps', (await batchNormTrain(x, gamma, beta)).y, y5);
  checkTensorResult(t, 'eps 1e-3', (await batchNormTrain(x, gamma, beta, { eps: 1e-3 })).y, y3);
});

test('updateRunningStats applies PyTorch\'s momentum update with the unbiased variance, in place', (t) => {
  const c = 6;
  const rng = makeRng(2600);
  const runningMean = { shape: [c], data: randomArray(c, rng, 1) };
  const runningVar = { shape: [c], data: Float32Array.from({ length: c }, () => 0.5 + rng()) };
  const mean = { shape: [c], data: randomArray(c, rng, 1) };
  const variance = { shape: [c], data: Float32Array.from({ length: c }, () => 0.5 + rng()) };
  const count = 2 * 3 * 3;
  for (const momentum of [undefined, 0.25]) {
    const m = momentum ?? 0.1;
    const expected = updateRunningStatsRef(runningMean.data, runningVar.data, mean.data, variance.data, count, m);
    const [rm, rv] = [{ shape: [c], data: runningMean.data.slice() }, { shape: [c], data: runningVar.data.slice() }];
    if (momentum === undefined) updateRunningStats(rm, rv, mean, variance, count);
    else updateRunningStats(rm, rv, mean, variance, count, momentum);
    // Computed in float64 and rounded once to float32 (PyTorch's CPU kernel): within one float32 rounding.
    checkClose(t, `running mean, momentum ${m}`, rm.data, expected.mean, 2 ** -24);
    checkClose(t, `running var, momentum ${m}`, rv.data, expected.var, 2 ** -24);
  }
  // By hand for channel 0, momentum 0.1: a biased variance 1 over 18 values is 18/17 unbiased.
  const one = { shape: [1], data: Float32Array.of(1) };
  const rm = { shape: [1], data: Float32Array.of(2) };
  const rv = { shape: [1], data: Float32Array.of(3) };
  updateRunningStats(rm, rv, { shape: [1], data: Float32Array.of(4) }, one, 18);
  t.is(rm.data[0], Math.fround(0.1 * 4 + 0.9 * 2));
  t.is(rv.data[0], Math.fround(0.1 * (18 / 17) + 0.9 * 3));
});

test('batchNormTrain statistics followed by updateRunningStats match PyTorch\'s running statistics in float64', (t) => {
  const x = randomTensor([4, 3, 5, 5], 2700, 1.5, 2);
  const gamma = randomTensor([3], 2701, 0.5, 1);
  const beta = randomTensor([3], 2702);
  const ref = batchNormTrainRef(x, gamma.data, beta.data);
  const count = 4 * 5 * 5;
  const start = () => ({ mean: { shape: [3], data: Float32Array.of(0, 0, 0) }, var: { shape: [3], data: Float32Array.of(1, 1, 1) } });
  const running = start();
  const stats = batchNormTrainSync(x, gamma, beta);
  updateRunningStats(running.mean, running.var, stats.mean, stats.var, count);
  const expected = updateRunningStatsRef([0, 0, 0], [1, 1, 1], ref.mean, ref.var, count);
  checkClose(t, 'running mean', running.mean.data, expected.mean, OP_FP32);
  checkClose(t, 'running var', running.var.data, expected.var, OP_FP32);
});

// ---------------------------------------------------------------------------------------------------------------
// reluBackward, sigmoidBackward, globalAvgPoolBackward, channelScaleBackward, linearBackward

for (const shape of [[2, 3, 7, 9], [5, 13], [3, 1, 1, 1]] as const) {
  test(`reluBackward and sigmoidBackward of shape [${shape.join(', ')}] from the forward output match the reference`, async (t) => {
    const seed = 3000 + shape.reduce((p: number, d) => p * d, 1);
    const x = randomTensor(shape, seed, 6);
    const dy = randomTensor(shape, seed + 1);
    const y = reluSync(x);
    const reluExpected = reluBackwardRef(y, dy);
    t.true(shape[0] === 3 || (reluExpected.data.some((v) => v === 0) && reluExpected.data.some((v) => v !== 0)), 'some gradients blocked');
    for (const [form, dx] of await bothForms(() => reluBackward(y, dy), () => reluBackwardSync(y, dy))) checkTensorResult(t, `relu (${form})`, dx, reluExpected);
    const s = sigmoidSync(x);
    const sigmoidExpected = sigmoidBackwardRef(s, dy);
    for (const [form, dx] of await bothForms(() => sigmoidBackward(s, dy), () => sigmoidBackwardSync(s, dy))) {
      checkTensorResult(t, `sigmoid (${form})`, dx, sigmoidExpected);
    }
  });
}

test('globalAvgPoolBackward of odd spatial sizes matches the reference', async (t) => {
  for (const [i, [n, c, h, w]] of ([[3, 10, 13, 5], [2, 7, 7, 9], [2, 3, 1, 1]] as const).entries()) {
    const dy = randomTensor([n, c], 3100 + i);
    const ref = globalAvgPoolBackwardRef(dy, h, w);
    for (const [form, dx] of await bothForms(() => globalAvgPoolBackward(dy, h, w), () => globalAvgPoolBackwardSync(dy, h, w))) {
      checkTensorResult(t, `[${n}, ${c}, ${h}, ${w}] (${form})`, dx, ref);
    }
  }
});

test('channelScaleBackward matches the reference', async (t) => {
  const x = randomTensor([3, 6, 7, 9], 3200);
  const scale = randomTensor([3, 6], 3201, 2);
  const dy = randomTensor(x.shape, 3202);
  const ref = channelScaleBackwardRef(x, scale, dy);
  for (const [form, grads] of await bothForms(() => channelScaleBackward(x, scale, dy), () => channelScaleBackwardSync(x, scale, dy))) {
    checkTensorResult(t, `dx (${form})`, grads.dx, ref.dx);
    checkTensorResult(t, `dscale (${form})`, grads.dscale, ref.dscale);
  }
});

for (const [n, c, k] of [[4, 37, 11], [1, 5, 3], [64, 48, 10]] as const) {
  test(`linearBackward x [${n}, ${c}], weight [${k}, ${c}] matches the reference`, async (t) => {
    const seed = 3300 + n + c + k;
    const x = randomTensor([n, c], seed);
    const w = randomTensor([k, c], seed + 1, 0.3);
    const dy = randomTensor([n, k], seed + 2);
    const ref = linearBackwardRef(x, w, dy);
    for (const [form, grads] of await bothForms(() => linearBackward(x, w, dy), () => linearBackwardSync(x, w, dy))) {
      checkTensorResult(t, `dx (${form})`, grads.dx, ref.dx);
      checkTensorResult(t, `dweight (${form})`, grads.dweight, ref.dweight);
      checkTensorResult(t, `dbias (${form})`, grads.dbias, { data: ref.dbias, shape: [k] });
    }
    const noDx = await linearBackward(x, w, dy, { needInputGrad: false });
    t.false('dx' in noDx, 'needInputGrad false: no dx');
    checkTensorResult(t, 'dweight without dx', noDx.dweight, ref.dweight);
  });
}

// ---------------------------------------------------------------------------------------------------------------
// softmaxCrossEntropy

const lossCases: { name: string; n: number; k: number; scale: number; ls?: number }[] = [
  { name: '[8, 10]', n: 8, k: 10, scale: 3 },
  { name: '[8, 10], label smoothing 0.1', n: 8, k: 10, scale: 3, ls: 0.1 },
  { name: '[3, 2], label smoothing 0.5', n: 3, k: 2, scale: 1, ls: 0.5 },
  { name: '[5, 7], logits of magnitude 1000 (needs the max subtraction)', n: 5, k: 7, scale: 1000, ls: 0.2 },
  { name: '[1, 1] (a single class: loss 0)', n: 1, k: 1, scale: 1 },
];

lossCases.forEach((c, index) => {
  test(`softmaxCrossEntropy ${c.name}: loss and dlogits match the float64 reference`, async (t) => {
    const seed = 4000 + 10 * index;
    const logits = randomTensor([c.n, c.k], seed, c.scale);
    const rng = makeRng(seed + 1);
    const labels = Int32Array.from({ length: c.n }, () => Math.floor(rng() * c.k));
    const ref = softmaxCrossEntropyRef(logits, labels, c.ls ?? 0);
    const options = c.ls === undefined ? {} : { labelSmoothing: c.ls };
    for (const [form, out] of await bothForms(() => softmaxCrossEntropy(logits, labels, options), () => softmaxCrossEntropySync(logits, labels, options))) {
      t.true(Number.isFinite(out.loss), `finite loss (${form})`);
      // Both float64 from the same float32 logits: they differ only in summation order.
      t.true(Math.abs(out.loss - ref.loss) <= FLOAT64 * Math.max(1, Math.abs(ref.loss)), `loss ${out.loss} vs ${ref.loss} (${form})`);
      if (c.k > 1) checkTensorResult(t, `dlogits (${form})`, out.dlogits, ref.dlogits);
      else t.deepEqual(Array.from(out.dlogits.data), [0], 'one class: zero gradient');
    }
  });
});

test('softmaxCrossEntropy label smoothing changes the loss as PyTorch defines it', (t) => {
  // ls = 1 makes the target uniform whatever the label: the loss is the same for every label.
  const logits = randomTensor([1, 4], 4100, 2);
  const losses = [0, 1, 2, 3].map((label) => softmaxCrossEntropySync(logits, Int32Array.of(label), { labelSmoothing: 1 }).loss);
  for (const loss of losses) t.true(Math.abs(loss - (losses[0] as number)) < 1e-12, `uniform target: ${losses.join(', ')}`);
  const plain = softmaxCrossEntropySync(logits, Int32Array.of(1)).loss;
  t.true(Math.abs(plain - (losses[0] as number)) > 1e-3, 'unsmoothed loss differs');
});

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
const shapeError = (...mentions: RegExp[]): Expected => ({ instanceOf: ShapeError, code: 'ERR_SHAPE', mentions });
const valueError = (...mentions: RegExp[]): Expected => ({ instanceOf: ArgumentValueError, code: 'ERR_ARG_VALUE', mentions });
const typeError = (...mentions: RegExp[]): Expected => ({ instanceOf: ArgumentTypeError, code: 'ERR_ARG_TYPE', mentions });
const float64 = (t: HostTensor): HostTensor => ({ shape: t.shape, data: Float64Array.from(t.data) as unknown as Float32Array });

const X = randomTensor([2, 4, 8, 8], 8000);
const W = randomTensor([6, 4, 3, 3], 8001);
const DY = randomTensor([2, 6, 6, 6], 8002);
const X2 = randomTensor([2, 4, 2, 2], 8006); // a 2x2 plane, where pad 1 lets the plane GEMM run
const DY2 = randomTensor([2, 6, 2, 2], 8007);

interface Rejection {
  readonly label: string;
  readonly run: () => Promise<unknown>;
  readonly runSync: () => unknown;
  readonly expected: Expected;
}

const gamma4 = randomTensor([4], 8003, 0.5, 1);
const beta4 = randomTensor([4], 8004);
const stats4 = batchNormTrainSync(X, gamma4, beta4);
const logits = randomTensor([3, 5], 8005);
const labels = Int32Array.of(0, 4, 2);

const rejections: Rejection[] = [
  {
    label: 'conv2dBackward: dy of the wrong spatial size',
    run: () => conv2dBackward(X, W, randomTensor([2, 6, 8, 8], 8010), {}),
    runSync: () => conv2dBackwardSync(X, W, randomTensor([2, 6, 8, 8], 8010), {}),
    expected: shapeError(/\bdy\b/, shapeRe([2, 6, 6, 6]), shapeRe([2, 6, 8, 8])),
  },
  {
    label: 'conv2dBackward: dy for stride 1 used with stride 2',
    run: () => conv2dBackward(X, W, DY, { stride: 2 }),
    runSync: () => conv2dBackwardSync(X, W, DY, { stride: 2 }),
    expected: shapeError(/\bdy\b/, shapeRe([2, 6, 3, 3]), shapeRe([2, 6, 6, 6])),
  },
  {
    label: 'conv2dBackward: weight for groups 1 used with groups 2',
    run: () => conv2dBackward(X, W, DY, { groups: 2 }),
    runSync: () => conv2dBackwardSync(X, W, DY, { groups: 2 }),
    expected: shapeError(/\bweight\b/, shapeRe([6, 4, 3, 3]), shapeRe([6, 2, 3, 3])),
  },
  {
    label: 'conv2dBackward: pad -1',
    run: () => conv2dBackward(X, W, DY, { pad: -1 }),
    runSync: () => conv2dBackwardSync(X, W, DY, { pad: -1 }),
    expected: valueError(/\bpad\b/, /number -1/),
  },
  {
    label: 'conv2dBackward: Float64Array dy',
    run: () => conv2dBackward(X, W, float64(DY)),
    runSync: () => conv2dBackwardSync(X, W, float64(DY)),
    expected: typeError(/\bdy\b/, /Float64Array\(432\)/),
  },
  {
    label: "conv2dBackward: 'gemm' with an NCHW dy",
    run: () => conv2dBackward(toLayout(X2, 'nhwc'), W, DY2, { pad: 1, algorithm: 'gemm' }),
    runSync: () => conv2dBackwardSync(toLayout(X2, 'nhwc'), W, DY2, { pad: 1, algorithm: 'gemm' }),
    expected: valueError(/'gemm'/, /output nchw/),
  },
  {
    label: "conv2dBackward: 'gemm' where outputs see only part of the plane",
    run: () => conv2dBackward(toLayout(X, 'nhwc'), W, toLayout(randomTensor([2, 6, 8, 8], 8011), 'nhwc'), { pad: 1, algorithm: 'gemm' }),
    runSync: () => conv2dBackwardSync(toLayout(X, 'nhwc'), W, toLayout(randomTensor([2, 6, 8, 8], 8011), 'nhwc'), { pad: 1, algorithm: 'gemm' }),
    expected: valueError(/'gemm'/, /only part of the 8x8 input/),
  },
  {
    label: "conv2dBackward: 'im2col' with an NCHW dy",
    run: () => conv2dBackward(toLayout(X, 'nhwc'), W, DY, { algorithm: 'im2col' }),
    runSync: () => conv2dBackwardSync(toLayout(X, 'nhwc'), W, DY, { algorithm: 'im2col' }),
    expected: valueError(/'im2col'/, /output nchw/),
  },
  {
    label: "conv2dBackward: 'winograd2x2' with pad 0",
    run: () => conv2dBackward(toLayout(X, 'nhwc'), W, toLayout(DY, 'nhwc'), { algorithm: 'winograd2x2' }),
    runSync: () => conv2dBackwardSync(toLayout(X, 'nhwc'), W, toLayout(DY, 'nhwc'), { algorithm: 'winograd2x2' }),
    expected: valueError(/'winograd2x2'/, /pad 1\b/, /pad 0/),
  },
  {
    label: 'conv2dBackward: an unknown algorithm',
    run: () => conv2dBackward(X, W, DY, { algorithm: 'winograd' as 'direct' }),
    runSync: () => conv2dBackwardSync(X, W, DY, { algorithm: 'winograd' as 'direct' }),
    expected: valueError(/\balgorithm\b/, /'winograd'/),
  },
  {
    label: 'batchNormTrain: gamma of 3 values for 4 channels',
    run: () => batchNormTrain(X, randomTensor([3], 8020), beta4),
    runSync: () => batchNormTrainSync(X, randomTensor([3], 8020), beta4),
    expected: shapeError(/\bgamma\b/, shapeRe([4]), shapeRe([3])),
  },
  {
    label: 'batchNormTrain: one value per channel',
    run: () => batchNormTrain(randomTensor([1, 4, 1, 1], 8021), gamma4, beta4),
    runSync: () => batchNormTrainSync(randomTensor([1, 4, 1, 1], 8021), gamma4, beta4),
    expected: shapeError(/\bx\b/, /more than 1 value per channel/, shapeRe([1, 4, 1, 1])),
  },
  {
    label: 'batchNormTrain: eps 0',
    run: () => batchNormTrain(X, gamma4, beta4, { eps: 0 }),
    runSync: () => batchNormTrainSync(X, gamma4, beta4, { eps: 0 }),
    expected: valueError(/\beps\b/, /number 0/),
  },
  {
    label: 'batchNormTrain: x of rank 2',
    run: () => batchNormTrain(randomTensor([2, 4], 8022), gamma4, beta4),
    runSync: () => batchNormTrainSync(randomTensor([2, 4], 8022), gamma4, beta4),
    expected: shapeError(/\bx\b/, /rank-4/, shapeRe([2, 4])),
  },
  {
    label: 'batchNormBackward: dy of another shape',
    run: () => batchNormBackward(X, DY, gamma4, stats4.mean, stats4.var),
    runSync: () => batchNormBackwardSync(X, DY, gamma4, stats4.mean, stats4.var),
    expected: shapeError(/\bdy\b/, shapeRe([2, 4, 8, 8]), shapeRe([2, 6, 6, 6])),
  },
  {
    label: 'batchNormBackward: var of 6 values',
    run: () => batchNormBackward(X, X, gamma4, stats4.mean, randomTensor([6], 8023)),
    runSync: () => batchNormBackwardSync(X, X, gamma4, stats4.mean, randomTensor([6], 8023)),
    expected: shapeError(/\bvar\b/, shapeRe([4]), shapeRe([6])),
  },
  {
    label: 'reluBackward: dy of another shape',
    run: () => reluBackward(X, DY),
    runSync: () => reluBackwardSync(X, DY),
    expected: shapeError(/\bdy\b/, shapeRe([2, 4, 8, 8]), shapeRe([2, 6, 6, 6])),
  },
  {
    label: 'sigmoidBackward: y that is not a tensor',
    run: () => sigmoidBackward([1, 2] as unknown as HostTensor, DY),
    runSync: () => sigmoidBackwardSync([1, 2] as unknown as HostTensor, DY),
    expected: typeError(/\by\b/, /array \[1, 2\]/),
  },
  {
    label: 'globalAvgPoolBackward: height 0',
    run: () => globalAvgPoolBackward(randomTensor([2, 4], 8030), 0, 3),
    runSync: () => globalAvgPoolBackwardSync(randomTensor([2, 4], 8030), 0, 3),
    expected: valueError(/\bheight\b/, /number 0/),
  },
  {
    label: 'globalAvgPoolBackward: dy of rank 4',
    run: () => globalAvgPoolBackward(X, 8, 8),
    runSync: () => globalAvgPoolBackwardSync(X, 8, 8),
    expected: shapeError(/\bdy\b/, /rank-2/, shapeRe([2, 4, 8, 8])),
  },
  {
    label: 'channelScaleBackward: scale of [2, 3] for 4 channels',
    run: () => channelScaleBackward(X, randomTensor([2, 3], 8040), X),
    runSync: () => channelScaleBackwardSync(X, randomTensor([2, 3], 8040), X),
    expected: shapeError(/\bscale\b/, shapeRe([2, 4]), shapeRe([2, 3])),
  },
  {
    label: 'linearBackward: dy of [3, 5] for x [3, 7] and weight [4, 7]',
    run: () => linearBackward(randomTensor([3, 7], 8050), randomTensor([4, 7], 8051), randomTensor([3, 5], 8052)),
    runSync: () => linearBackwardSync(randomTensor([3, 7], 8050), randomTensor([4, 7], 8051), randomTensor([3, 5], 8052)),
    expected: shapeError(/\bdy\b/, shapeRe([3, 4]), shapeRe([3, 5])),
  },
  {
    label: 'linearBackward: weight for 6 features, x with 7',
    run: () => linearBackward(randomTensor([3, 7], 8050), randomTensor([4, 6], 8053), randomTensor([3, 4], 8054)),
    runSync: () => linearBackwardSync(randomTensor([3, 7], 8050), randomTensor([4, 6], 8053), randomTensor([3, 4], 8054)),
    expected: shapeError(/\bweight\b/, shapeRe([4, 7]), shapeRe([4, 6])),
  },
  {
    label: 'softmaxCrossEntropy: label 5 of 5 classes',
    run: () => softmaxCrossEntropy(logits, Int32Array.of(0, 1, 5)),
    runSync: () => softmaxCrossEntropySync(logits, Int32Array.of(0, 1, 5)),
    expected: valueError(/\blabels\[2\] = 5\b/, /\[0, 5\)/),
  },
  {
    label: 'softmaxCrossEntropy: label -1',
    run: () => softmaxCrossEntropy(logits, Int32Array.of(-1, 1, 2)),
    runSync: () => softmaxCrossEntropySync(logits, Int32Array.of(-1, 1, 2)),
    expected: valueError(/\blabels\[0\] = -1\b/),
  },
  {
    label: 'softmaxCrossEntropy: Float32Array labels',
    run: () => softmaxCrossEntropy(logits, Float32Array.of(0, 1, 2) as unknown as Int32Array),
    runSync: () => softmaxCrossEntropySync(logits, Float32Array.of(0, 1, 2) as unknown as Int32Array),
    expected: typeError(/\blabels\b/, /Int32Array/, /Float32Array\(3\)/),
  },
  {
    label: 'softmaxCrossEntropy: plain array labels',
    run: () => softmaxCrossEntropy(logits, [0, 1, 2] as unknown as Int32Array),
    runSync: () => softmaxCrossEntropySync(logits, [0, 1, 2] as unknown as Int32Array),
    expected: typeError(/\blabels\b/, /array \[0, 1, 2\]/),
  },
  {
    label: 'softmaxCrossEntropy: BigInt64Array labels (int64 as in .npy)',
    run: () => softmaxCrossEntropy(logits, BigInt64Array.of(0n, 1n, 2n) as unknown as Int32Array),
    runSync: () => softmaxCrossEntropySync(logits, BigInt64Array.of(0n, 1n, 2n) as unknown as Int32Array),
    expected: typeError(/\blabels\b/, /BigInt64Array\(3\)/),
  },
  {
    label: 'softmaxCrossEntropy: 4 labels for 3 rows',
    run: () => softmaxCrossEntropy(logits, Int32Array.of(0, 1, 2, 3)),
    runSync: () => softmaxCrossEntropySync(logits, Int32Array.of(0, 1, 2, 3)),
    expected: shapeError(/\blabels\b/, shapeRe([3]), shapeRe([4])),
  },
  {
    label: 'softmaxCrossEntropy: labelSmoothing 1.5',
    run: () => softmaxCrossEntropy(logits, labels, { labelSmoothing: 1.5 }),
    runSync: () => softmaxCrossEntropySync(logits, labels, { labelSmoothing: 1.5 }),
    expected: valueError(/\blabelSmoothing\b/, /number 1\.5/),
  },
  {
    label: 'softmaxCrossEntropy: logits of rank 1',
    run: () => softmaxCrossEntropy(randomTensor([5], 8060), Int32Array.of(0)),
    runSync: () => softmaxCrossEntropySync(randomTensor([5], 8060), Int32Array.of(0)),
    expected: shapeError(/\blogits\b/, /rank-2/, shapeRe([5])),
  },
];

for (const r of rejections) {
  test(`rejects ${r.label}`, async (t) => {
    await rejectsBoth(t, r.label, r.run, r.runSync, r.expected);
  });
}

test('updateRunningStats rejects mismatched statistics, count < 2 and momentum outside [0, 1]', (t) => {
  const c4 = (seed: number): HostTensor => randomTensor([4], seed, 0.5, 1);
  const [rm, rv, m, v] = [c4(8070), c4(8071), c4(8072), c4(8073)];
  const cases: [string, () => void, Expected][] = [
    ['var of 3 values', () => updateRunningStats(rm, rv, m, randomTensor([3], 8074), 8), shapeError(/\bvar\b/, shapeRe([4]), shapeRe([3]))],
    ['count 1', () => updateRunningStats(rm, rv, m, v, 1), valueError(/\bcount\b/, /number 1/)],
    ['momentum 2', () => updateRunningStats(rm, rv, m, v, 8, 2), valueError(/\bmomentum\b/, /number 2/)],
    ['Float64Array runningVar', () => updateRunningStats(rm, float64(rv), m, v, 8), typeError(/\brunningVar\b/, /Float64Array\(4\)/)],
  ];
  const before = [rm.data.slice(), rv.data.slice()];
  for (const [label, run, e] of cases) {
    const error = t.throws(run, { instanceOf: e.instanceOf }, label);
    t.is(error?.code, e.code, `${label}: code`);
    for (const mention of e.mentions) t.regex(error?.message ?? '', mention, `${label}: message names ${mention}`);
  }
  t.deepEqual([rm.data, rv.data], before, 'nothing is updated when the arguments are rejected');
});
