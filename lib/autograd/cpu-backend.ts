// The CPU training backend: TrainBackend over HostTensors (gradients as bare Float32Arrays), each method the
// lib/ops call the tape made before the backend interface existed, so CPU training is unchanged bit for bit.
// Activations are NHWC from the first convolution on (conv2d writes NHWC; every other op keeps its input's
// layout), the images and parameters plain NCHW/row-major; output and gradient arrays come from, and go back
// to, the ops' reuse pool (lib/ops/alloc.ts).
// Not for: the op implementations (lib/ops/, native/cpu/).

import * as ops from '../ops/index.js';
import { outputArray, recycleArray } from '../ops/alloc.js';
import { runTrainingOp } from '../ops/native-op.js';
import type { HostTensor } from '../tensor.js';
import type { ConvOptions, CustomL2BlockOf, SgdTensorOf, TrainBackend } from './backend.js';

/** The activation layout of the CPU tape (see the header). */
const TAPE_LAYOUT: ops.Layout = 'nhwc';

/** From this many values on, gradients are summed natively (ops.addInPlace, off the event loop); below, a JS loop is quicker. */
const NATIVE_ACCUMULATE_MIN_LENGTH = 4096;

/** The gradient dy of `like` as a tensor: like's shape and data layout. */
function gradOf(like: HostTensor, dy: Float32Array): HostTensor {
  return ops.withLayout(like.shape, dy, ops.layoutOf(like));
}

export const cpuBackend: TrainBackend<HostTensor, Float32Array> = {
  name: 'cpu',
  precision: 'fp32',

  async upload(t) {
    return { shape: [...t.shape], data: t.data.slice() };
  },
  async input(t) {
    return { value: t, owned: false };
  },
  async download(v) {
    return ops.layoutOf(v) === 'nchw' ? v : ops.toLayout(v, 'nchw');
  },
  async uploadGradient(dy, like) {
    return ops.layoutOf(like) === 'nhwc' ? ops.toLayout(dy, 'nhwc').data : dy.data.slice();
  },
  async downloadGradient(g, like) {
    return ops.layoutOf(like) === 'nchw' ? g : ops.toLayout(gradOf(like, g), 'nchw').data;
  },
  zeros(shape) {
    return { shape: [...shape], data: new Float32Array(shape.reduce((p, d) => p * d, 1)) };
  },
  zeroGradient(like) {
    return new Float32Array(like.data.length);
  },
  async seedGradient(like, seed) {
    return seed?.slice() ?? new Float32Array(like.data.length).fill(1); // a copy: gradients accumulate in place
  },
  copyGradient(g) {
    const copy = outputArray(g.length);
    copy.set(g);
    return copy;
  },
  async accumulate(acc, g) {
    if (acc.length >= NATIVE_ACCUMULATE_MIN_LENGTH) {
      await ops.addInPlace({ shape: [acc.length], data: acc }, { shape: [g.length], data: g });
      return;
    }
    for (let i = 0; i < acc.length; i++) acc[i] = (acc[i] as number) + (g[i] as number);
  },
  async allFinite(gs) {
    return gs.every((g) => g.every(Number.isFinite));
  },
  async scaleGradient(g, factor) {
    for (let i = 0; i < g.length; i++) g[i] = (g[i] as number) * factor;
  },
  releaseValue(v) {
    recycleArray(v.data);
  },
  releaseGradient(g) {
    recycleArray(g);
  },

  conv2d(x, weight, o: ConvOptions) {
    return ops.conv2d(x, weight, { ...o, layout: TAPE_LAYOUT });
  },
  async conv2dBackward(x, weight, y, dy, o) {
    const grads = await ops.conv2dBackward(x, weight, gradOf(y, dy), o);
    return { ...(grads.dx && { dx: grads.dx.data }), dweight: grads.dweight.data };
  },
  async batchNormTrain(x, gamma, beta, eps) {
    const { y, mean, var: variance } = await ops.batchNormTrain(x, gamma, beta, { eps });
    return { y, mean, variance };
  },
  async batchNormBackward(x, y, dy, gamma, mean, variance, eps) {
    const g = await ops.batchNormBackward(x, gradOf(y, dy), gamma, mean, variance, { eps });
    return { dx: g.dx.data, dgamma: g.dgamma.data, dbeta: g.dbeta.data };
  },
  async batchNormSum(branches, eps, relu) {
    if (branches.some((b) => ops.layoutOf(b.x) !== 'nhwc')) return undefined; // the native op is NHWC only
    const { y, stats } = await ops.batchNormSum(branches, { eps, relu });
    return { y, stats: stats.map((s) => ({ mean: s.mean, variance: s.var })) };
  },
  async batchNormSumBackward(branches, y, dy, eps, relu) {
    const native = branches.map((b) => ({ x: b.x, gamma: b.gamma, mean: b.mean, var: b.variance }));
    const grads = await ops.batchNormSumBackward(native, y, gradOf(y, dy), { eps, relu });
    return grads.map((g) => ({ dx: g.dx.data, dgamma: g.dgamma.data, dbeta: g.dbeta.data }));
  },
  async updateRunningStats(runningMean, runningVar, mean, variance, count, momentum) {
    ops.updateRunningStats(runningMean, runningVar, mean, variance, count, momentum);
  },
  matchLayout(a, b) {
    const layout = ops.layoutOf(a);
    const from = ops.layoutOf(b);
    if (from === layout) return undefined;
    const y = ops.toLayout(b, layout);
    return { y, back: (dy) => ops.toLayout(gradOf(y, dy), from).data };
  },
  add(a, b, relu) {
    return ops.add(a, b, { relu });
  },
  relu(x) {
    return ops.relu(x);
  },
  async reluBackward(y, dy) {
    return (await ops.reluBackward(y, gradOf(y, dy))).data;
  },
  sigmoid(x) {
    return ops.sigmoid(x);
  },
  async sigmoidBackward(y, dy) {
    return (await ops.sigmoidBackward(y, gradOf(y, dy))).data;
  },
  globalAvgPool(x) {
    return ops.globalAvgPool(x);
  },
  async globalAvgPoolBackward(x, y, dy) {
    const [, , h, w] = x.shape as [number, number, number, number];
    return (await ops.globalAvgPoolBackward({ shape: y.shape, data: dy }, h, w, { layout: ops.layoutOf(x) })).data;
  },
  linear(x, weight, bias) {
    return ops.linear(x, weight, bias);
  },
  async linearBackward(x, weight, y, dy, needInputGrad) {
    const g = await ops.linearBackward(x, weight, { shape: y.shape, data: dy }, { needInputGrad });
    return { ...(g.dx && { dx: g.dx.data }), dweight: g.dweight.data, dbias: g.dbias.data };
  },
  channelScale(x, scale) {
    return ops.channelScale(x, scale);
  },
  async channelScaleBackward(x, scale, y, dy) {
    const g = await ops.channelScaleBackward(x, scale, gradOf(y, dy));
    return { dx: g.dx.data, dscale: g.dscale.data };
  },
  async softmaxCrossEntropy(logits, labels, labelSmoothing) {
    const { loss, dlogits } = await ops.softmaxCrossEntropy(logits, labels, { labelSmoothing });
    return { loss, dlogits: dlogits.data };
  },
  async scaleLossGradient(dlogits, dloss) {
    const scale = dloss[0] as number;
    return scale === 1 ? dlogits : dlogits.map((v: number) => v * scale);
  },
  scalar(value) {
    return { shape: [1], data: Float32Array.of(value) };
  },

  async sgdStep(tensors: SgdTensorOf<HostTensor, Float32Array>[], lr, momentum, nesterov) {
    const native = tensors.map((t) => ({
      weight: t.weight.data, grad: t.grad, ...(t.momentumBuffer && { momentumBuffer: t.momentumBuffer.data }),
      weightDecay: t.weightDecay, first: t.first,
    }));
    await runTrainingOp('sgdStep', { tensors: native, lr, momentum, nesterov });
  },
  async emaUpdate(shadows, currents, decay) {
    await runTrainingOp('emaUpdate', { shadows: shadows.map((t) => t.data), currents: currents.map((t) => t.data), decay });
  },
  async customL2(blocks: CustomL2BlockOf<HostTensor, Float32Array>[], weightDecay) {
    const native = blocks.map((b) => ({
      k3: b.k3.data, k3Grad: b.k3Grad, k1: b.k1.data, k1Grad: b.k1Grad, t3: b.t3.data, t1: b.t1.data, outChannels: b.outChannels, perOut: b.perOut,
    }));
    const loss = new Float64Array(1);
    await runTrainingOp('customL2', { blocks: native, weightDecay, loss });
    return loss[0] as number;
  },
};
