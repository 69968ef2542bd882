// Batch normalization of the single-op API, on oneDNN: inference mode (running statistics), training mode (batch
// statistics), its backward pass, and PyTorch's running-statistics update (in TypeScript: C values per call).

import { callNative, callNativeSync, loadCpuAddon } from '../backend/native.js';
import { ArgumentValueError, ShapeError, describeValue } from '../errors.js';
import type { HostTensor } from '../tensor.js';
import { outputArray } from './alloc.js';
import { checkPositiveInt, checkShape, checkTensor } from './check.js';
import { checkSameLayout, layoutOf, withLayout } from './layout.js';
import { runTrainingOp, runTrainingOpSync } from './native-op.js';

/** Per-channel parameters of a BatchNorm2d, each (C). */
export interface BatchNormParams {
  mean: Float32Array;
  var: Float32Array;
  gamma: Float32Array;
  beta: Float32Array;
  eps?: number;
}

function prepareBatchNorm(x: HostTensor, p: BatchNormParams, relu: boolean) {
  const [n, c, h, w] = checkTensor(x, 'x', 4) as [number, number, number, number];
  for (const key of ['mean', 'var', 'gamma', 'beta'] as const) {
    checkTensor({ shape: [p[key]?.length ?? 0], data: p[key] }, key, 1);
    if (p[key].length !== c) throw new ShapeError(`Expected ${key} of ${c} values (x channels) but received ${p[key].length}`);
  }
  const layout = layoutOf(x, 'x');
  const y = withLayout([n, c, h, w], outputArray(x.data.length), layout);
  const native = {
    x: x.data, y: y.data, mean: p.mean, var: p.var, gamma: p.gamma, beta: p.beta, eps: p.eps ?? 1e-5, batch: n, channels: c, height: h, width: w, relu,
    channelsLast: layout === 'nhwc',
  };
  return { native, y };
}

/** y = gamma * (x - mean) / sqrt(var + eps) + beta per channel; x: (N, C, H, W), NCHW or NHWC (y alike). Optional fused ReLU. */
export async function batchNorm(x: HostTensor, params: BatchNormParams, options: { relu?: boolean } = {}): Promise<HostTensor> {
  const { native, y } = prepareBatchNorm(x, params, options.relu === true);
  await callNative(() => loadCpuAddon().batchNorm(native));
  return y;
}

export function batchNormSync(x: HostTensor, params: BatchNormParams, options: { relu?: boolean } = {}): HostTensor {
  const { native, y } = prepareBatchNorm(x, params, options.relu === true);
  callNativeSync(() => loadCpuAddon().batchNormSync(native));
  return y;
}

// ---------------------------------------------------------------------------------------------------------------
// Training

/** PyTorch's BatchNorm2d default eps. */
const DEFAULT_EPS = 1e-5;

function checkEps(eps: unknown): number {
  if (typeof eps !== 'number' || !Number.isFinite(eps) || eps <= 0) {
    throw new ArgumentValueError(`Expected a positive finite number for eps but received ${describeValue(eps)}`);
  }
  return eps;
}

/** Checks x (N, C, H, W) for a training-mode batch norm: more than one value per channel, as PyTorch requires. */
function checkTrainInput(x: HostTensor) {
  const [n, c, h, w] = checkTensor(x, 'x', 4) as [number, number, number, number];
  if (n * h * w < 2) {
    throw new ShapeError(`Expected more than 1 value per channel in training mode but received x of shape [${n}, ${c}, ${h}, ${w}]`);
  }
  return [n, c, h, w] as const;
}

/** Output of batchNormTrain. */
export interface BatchNormTrainResult {
  /** (N, C, H, W) normalized with the batch statistics, in the layout of x. */
  y: HostTensor;
  /** (C) batch mean over (N, H, W). */
  mean: HostTensor;
  /** (C) BIASED batch variance (divided by N*H*W), the one used to normalize. */
  var: HostTensor;
}

function prepareBatchNormTrain(x: HostTensor, gamma: HostTensor, beta: HostTensor, options: { eps?: number }) {
  const [n, c, h, w] = checkTrainInput(x);
  checkShape(gamma, 'gamma', [c], 'x channels');
  checkShape(beta, 'beta', [c], 'x channels');
  const eps = checkEps(options.eps ?? DEFAULT_EPS);
  const layout = layoutOf(x, 'x');
  const result: BatchNormTrainResult = {
    y: withLayout([n, c, h, w], outputArray(x.data.length), layout),
    mean: { shape: [c], data: outputArray(c) },
    var: { shape: [c], data: outputArray(c) },
  };
  const native = {
    x: x.data, gamma: gamma.data, beta: beta.data, y: result.y.data, mean: result.mean.data, var: result.var.data,
    eps, batch: n, channels: c, height: h, width: w, channelsLast: layout === 'nhwc',
  };
  return { native, result };
}

/**
 * Training-mode batch normalization (PyTorch's BatchNorm2d in train()): y = gamma (x - mean) / sqrt(var + eps) + beta
 * with the batch mean and BIASED variance over (N, H, W), which are returned for the backward pass and for
 * updateRunningStats. The running statistics are not touched here. x: (N, C, H, W), NCHW or NHWC; gamma, beta: (C).
 * @throws ShapeError when N*H*W < 2 or gamma/beta do not have C values; ArgumentValueError for a bad eps.
 * @example
 * const { y, mean, var: v } = await batchNormTrain(x, gamma, beta);
 * updateRunningStats(runningMean, runningVar, mean, v, x.shape[0] * x.shape[2] * x.shape[3]);
 */
export async function batchNormTrain(x: HostTensor, gamma: HostTensor, beta: HostTensor, options: { eps?: number } = {}): Promise<BatchNormTrainResult> {
  const { native, result } = prepareBatchNormTrain(x, gamma, beta, options);
  await runTrainingOp('batchNormTrain', native);
  return result;
}

/** Synchronous batchNormTrain (blocks the event loop). */
export function batchNormTrainSync(x: HostTensor, gamma: HostTensor, beta: HostTensor, options: { eps?: number } = {}): BatchNormTrainResult {
  const { native, result } = prepareBatchNormTrain(x, gamma, beta, options);
  runTrainingOpSync('batchNormTrain', native);
  return result;
}

/** Gradients of batchNormTrain. */
export interface BatchNormGrads {
  /** (N, C, H, W) in the layout of x, including the paths through the batch mean and variance. */
  dx: HostTensor;
  /** (C) */
  dgamma: HostTensor;
  /** (C) */
  dbeta: HostTensor;
}

function prepareBatchNormBackward(x: HostTensor, dy: HostTensor, gamma: HostTensor, mean: HostTensor, variance: HostTensor, options: { eps?: number }) {
  const [n, c, h, w] = checkTrainInput(x);
  checkShape(dy, 'dy', [n, c, h, w], 'same as x');
  checkShape(gamma, 'gamma', [c], 'x channels');
  checkShape(mean, 'mean', [c], 'x channels');
  checkShape(variance, 'var', [c], 'x channels');
  const eps = checkEps(options.eps ?? DEFAULT_EPS);
  const layout = checkSameLayout(x, 'x', dy, 'dy');
  const grads: BatchNormGrads = {
    dx: withLayout([n, c, h, w], outputArray(x.data.length), layout),
    dgamma: { shape: [c], data: outputArray(c) },
    dbeta: { shape: [c], data: outputArray(c) },
  };
  const native = {
    x: x.data, dy: dy.data, gamma: gamma.data, mean: mean.data, var: variance.data,
    dx: grads.dx.data, dgamma: grads.dgamma.data, dbeta: grads.dbeta.data, eps, batch: n, channels: c, height: h, width: w,
    channelsLast: layout === 'nhwc',
  };
  return { native, grads };
}

/**
 * Backward pass of batchNormTrain (PyTorch's training-mode BatchNorm2d gradients): mean and var are the batch
 * statistics batchNormTrain returned for the same x, eps the same eps.
 * x, dy: (N, C, H, W), both NCHW or both NHWC; gamma, mean, var: (C).
 * @throws ShapeError / ArgumentValueError / ArgumentTypeError on bad arguments.
 * @example const { dx, dgamma, dbeta } = await batchNormBackward(x, dy, gamma, stats.mean, stats.var);
 */
export async function batchNormBackward(
  x: HostTensor, dy: HostTensor, gamma: HostTensor, mean: HostTensor, variance: HostTensor, options: { eps?: number } = {},
): Promise<BatchNormGrads> {
  const { native, grads } = prepareBatchNormBackward(x, dy, gamma, mean, variance, options);
  await runTrainingOp('batchNormBackward', native);
  return grads;
}

/** Synchronous batchNormBackward (blocks the event loop). */
export function batchNormBackwardSync(
  x: HostTensor, dy: HostTensor, gamma: HostTensor, mean: HostTensor, variance: HostTensor, options: { eps?: number } = {},
): BatchNormGrads {
  const { native, grads } = prepareBatchNormBackward(x, dy, gamma, mean, variance, options);
  runTrainingOpSync('batchNormBackward', native);
  return grads;
}

/**
 * PyTorch's running-statistics update of BatchNorm2d in training mode, in place:
 * runningMean = (1 - momentum) runningMean + momentum mean,
 * runningVar = (1 - momentum) runningVar + momentum var count / (count - 1) (the UNBIASED batch variance),
 * computed in float64 and rounded once to float32, as PyTorch's CPU kernel does.
 * mean and var are batchNormTrain's batch statistics; count = N*H*W, the values per channel they came from.
 * @throws ShapeError when the four tensors are not all (C); ArgumentValueError for count < 2 or momentum outside [0, 1].
 * @example updateRunningStats(bn.runningMean, bn.runningVar, stats.mean, stats.var, n * h * w);
 */
export function updateRunningStats(
  runningMean: HostTensor, runningVar: HostTensor, mean: HostTensor, variance: HostTensor, count: number, momentum = 0.1,
): void {
  const [c] = checkTensor(runningMean, 'runningMean', 1) as [number];
  checkShape(runningVar, 'runningVar', [c], 'same as runningMean');
  checkShape(mean, 'mean', [c], 'same as runningMean');
  checkShape(variance, 'var', [c], 'same as runningMean');
  checkPositiveInt(count, 'count', 2);
  if (typeof momentum !== 'number' || !(momentum >= 0 && momentum <= 1)) {
    throw new ArgumentValueError(`Expected a number in [0, 1] for momentum but received ${describeValue(momentum)}`);
  }
  for (let i = 0; i < c; i++) {
    const unbiased = ((variance.data[i] as number) * count) / (count - 1);
    runningMean.data[i] = momentum * (mean.data[i] as number) + (1 - momentum) * (runningMean.data[i] as number);
    runningVar.data[i] = momentum * unbiased + (1 - momentum) * (runningVar.data[i] as number);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Sums of batch-normalized branches (a RepVGG block)

/** At most this many branches per batchNormSum (a RepVGG block has 3x3, 1x1 and identity). */
export const MAX_BATCHNORM_SUM_BRANCHES = 3;

/** One branch of batchNormSum: x (N, C, H, W) NHWC, gamma and beta (C). */
export interface BatchNormSumBranch {
  x: HostTensor;
  gamma: HostTensor;
  beta: HostTensor;
}

/** Output of batchNormSum. */
export interface BatchNormSumResult {
  /** (N, C, H, W) NHWC: the sum of the normalized branches (after the ReLU when asked). */
  y: HostTensor;
  /** Per branch, in order: the batch mean and BIASED variance (C) it was normalized with. */
  stats: { mean: HostTensor; var: HostTensor }[];
}

/** Checks the branches' count and their x's common (N, C, H, W) and NHWC layout; returns the shape. */
function checkBranches(branches: readonly { x: HostTensor }[]): readonly [number, number, number, number] {
  if (!Array.isArray(branches) || branches.length < 1 || branches.length > MAX_BATCHNORM_SUM_BRANCHES) {
    throw new ArgumentValueError(`Expected an array of 1 to ${MAX_BATCHNORM_SUM_BRANCHES} branches but received ${describeValue(branches)}`);
  }
  const shape = checkTrainInput(branches[0]!.x);
  branches.forEach(({ x }, i) => {
    const name = `branches[${i}].x`;
    checkShape(x, name, [...shape], 'the shape of branches[0].x');
    if (layoutOf(x, name) !== 'nhwc') throw new ArgumentValueError(`Expected ${name} in layout 'nhwc' but received 'nchw'; convert it with toLayout()`);
  });
  return shape;
}

/**
 * y = relu?(BN_1(x_1) + ... + BN_k(x_k)), each BN in training mode (batch mean and biased variance over (N, H, W), as
 * batchNormTrain), in one native op: the sum of a RepVGG block's branches without a normalized tensor per branch or
 * an intermediate sum. The same bits as batchNormTrain per branch, then add (and the ReLU) left to right. NHWC only
 * (the training tape's layout), 1 to MAX_BATCHNORM_SUM_BRANCHES branches of equal shape; runs off the event loop.
 * @throws ShapeError / ArgumentValueError on bad branches (shape, layout, count), gamma/beta or eps.
 * @example const { y, stats } = await batchNormSum([{ x: dense, gamma: g3, beta: b3 }, { x: pointwise, gamma: g1, beta: b1 }], { relu: true });
 */
export async function batchNormSum(
  branches: readonly BatchNormSumBranch[], options: { eps?: number; relu?: boolean } = {},
): Promise<BatchNormSumResult> {
  const [n, c, h, w] = checkBranches(branches);
  branches.forEach((b, i) => {
    checkShape(b.gamma, `branches[${i}].gamma`, [c], 'x channels');
    checkShape(b.beta, `branches[${i}].beta`, [c], 'x channels');
  });
  const eps = checkEps(options.eps ?? DEFAULT_EPS);
  const y = withLayout([n, c, h, w], outputArray(n * c * h * w), 'nhwc');
  const stats = branches.map(() => ({ mean: { shape: [c], data: outputArray(c) }, var: { shape: [c], data: outputArray(c) } }));
  await runTrainingOp('batchNormSum', {
    branches: branches.map((b, i) => ({ x: b.x.data, gamma: b.gamma.data, beta: b.beta.data, mean: stats[i]!.mean.data, var: stats[i]!.var.data })),
    y: y.data, eps, relu: options.relu === true, batch: n, channels: c, height: h, width: w,
  });
  return { y, stats };
}

/** One branch of batchNormSumBackward: the forward's x and gamma and the statistics batchNormSum returned for it. */
export interface BatchNormSumGradBranch {
  x: HostTensor;
  gamma: HostTensor;
  mean: HostTensor;
  var: HostTensor;
}

/**
 * Backward pass of batchNormSum from its output y and the output gradient dy (both NHWC like the branches): per
 * branch dx, dgamma, dbeta, as reluBackward (when relu) then batchNormBackward per branch compute them, bit for bit.
 * @throws ShapeError / ArgumentValueError on bad arguments.
 */
export async function batchNormSumBackward(
  branches: readonly BatchNormSumGradBranch[], y: HostTensor, dy: HostTensor, options: { eps?: number; relu?: boolean } = {},
): Promise<BatchNormGrads[]> {
  const [n, c, h, w] = checkBranches(branches);
  checkShape(y, 'y', [n, c, h, w], 'the shape of the branches');
  checkShape(dy, 'dy', [n, c, h, w], 'the shape of the branches');
  checkSameLayout(branches[0]!.x, 'branches[0].x', y, 'y');
  checkSameLayout(y, 'y', dy, 'dy');
  branches.forEach((b, i) => {
    for (const key of ['gamma', 'mean', 'var'] as const) checkShape(b[key], `branches[${i}].${key}`, [c], 'x channels');
  });
  const eps = checkEps(options.eps ?? DEFAULT_EPS);
  const grads: BatchNormGrads[] = branches.map(() => ({
    dx: withLayout([n, c, h, w], outputArray(n * c * h * w), 'nhwc'),
    dgamma: { shape: [c], data: outputArray(c) },
    dbeta: { shape: [c], data: outputArray(c) },
  }));
  await runTrainingOp('batchNormSumBackward', {
    branches: branches.map((b, i) => ({
      x: b.x.data, gamma: b.gamma.data, mean: b.mean.data, var: b.var.data, dx: grads[i]!.dx.data, dgamma: grads[i]!.dgamma.data, dbeta: grads[i]!.dbeta.data,
    })),
    y: y.data, dy: dy.data, eps, relu: options.relu === true, batch: n, channels: c, height: h, width: w,
  });
  return grads;
}
