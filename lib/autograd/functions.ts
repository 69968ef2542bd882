// Differentiable ops for the tape: each runs the native forward op and records its gradient rule right here,
// next to the forward. Shapes are checked by the ops in lib/ops/ themselves.
// Layout: conv2d outputs NHWC ('channels last', lib/ops/layout.ts) whatever its input, and every other op keeps its
// input's layout, so the activations of a network on the tape are NHWC from the first conv on and oneDNN convolves
// them without reordering. A Var's gradient has the layout of its value. Shapes stay the logical (N, C, H, W);
// use ops.toLayout(v.value, 'nchw') to look at an intermediate activation in plain order.
// Not for: optimizers or modules (lib/train/); inference (lib/engine.ts runs whole networks natively).

import * as ops from '../ops/index.js';
import type { HostTensor } from '../tensor.js';

/** The activation layout of the tape (see the header). */
const TAPE_LAYOUT: ops.Layout = 'nhwc';

/** The gradient dy of `like` as a tensor: like's shape and data layout. */
function gradOf(like: HostTensor, dy: Float32Array): HostTensor {
  return ops.withLayout(like.shape, dy, ops.layoutOf(like));
}
import { Tape, Var } from './tape.js';

export interface ConvOptions {
  stride: number;
  pad: number;
  groups: number;
}

/** y = conv2d(x, weight) without bias, NHWC. x: (N, C, H, W) in either layout, weight: (O, C/g, K, K). */
export async function conv2d(tape: Tape, x: Var, weight: Var, o: ConvOptions): Promise<Var> {
  const y = await ops.conv2d(x.value, weight.value, { ...o, layout: TAPE_LAYOUT });
  return tape.record(y, [x, weight], async (dy) => {
    const grads = await ops.conv2dBackward(x.value, weight.value, gradOf(y, dy), { ...o, needInputGrad: x.requiresGrad });
    return [grads.dx?.data, grads.dweight.data];
  });
}

/**
 * Training-mode batch norm over (N, H, W) per channel: normalizes with the batch mean and biased variance
 * and returns them so the module can update its running statistics.
 */
export async function batchNormTrain(
  tape: Tape,
  x: Var,
  gamma: Var,
  beta: Var,
  eps: number,
): Promise<{ y: Var; mean: HostTensor; variance: HostTensor }> {
  const { y, mean, var: variance } = await ops.batchNormTrain(x.value, gamma.value, beta.value, { eps });
  const out = tape.record(y, [x, gamma, beta], async (dy) => {
    const g = await ops.batchNormBackward(x.value, gradOf(y, dy), gamma.value, mean, variance, { eps });
    return [g.dx.data, g.dgamma.data, g.dbeta.data];
  });
  return { y: out, mean, variance };
}

/** a + b (same shape; b is brought into a's layout first when they differ). */
export async function add(tape: Tape, a: Var, b: Var): Promise<Var> {
  const layout = ops.layoutOf(a.value);
  if (ops.layoutOf(b.value) !== layout) b = toLayout(tape, b, layout);
  const y = await ops.add(a.value, b.value);
  return tape.record(y, [a, b], async (dy) => [dy, dy]);
}

/**
 * relu(a + b) in one op (ops.add with its fused ReLU): one output buffer and one memory pass instead of two, e.g. for
 * the last sum of a RepVGG block. Both inputs get dy masked by y > 0.
 */
export async function addRelu(tape: Tape, a: Var, b: Var): Promise<Var> {
  const layout = ops.layoutOf(a.value);
  if (ops.layoutOf(b.value) !== layout) b = toLayout(tape, b, layout);
  const y = await ops.add(a.value, b.value, { relu: true });
  return tape.record(y, [a, b], async (dy) => {
    const g = (await ops.reluBackward(y, gradOf(y, dy))).data;
    return [g, g];
  });
}

/** x with its data in the given layout (x itself when it already is); the gradient is converted back. */
export function toLayout(tape: Tape, x: Var, layout: ops.Layout): Var {
  const from = ops.layoutOf(x.value);
  if (from === layout) return x;
  const y = ops.toLayout(x.value, layout);
  return tape.record(y, [x], async (dy) => [ops.toLayout(gradOf(y, dy), from).data]);
}

export async function relu(tape: Tape, x: Var): Promise<Var> {
  const y = await ops.relu(x.value);
  return tape.record(y, [x], async (dy) => [(await ops.reluBackward(y, gradOf(y, dy))).data]);
}

export async function sigmoid(tape: Tape, x: Var): Promise<Var> {
  const y = await ops.sigmoid(x.value);
  return tape.record(y, [x], async (dy) => [(await ops.sigmoidBackward(y, gradOf(y, dy))).data]);
}

/** (N, C, H, W) -> (N, C) mean over H and W. */
export async function globalAvgPool(tape: Tape, x: Var): Promise<Var> {
  const y = await ops.globalAvgPool(x.value);
  const [, , h, w] = x.shape as [number, number, number, number];
  const layout = ops.layoutOf(x.value);
  return tape.record(y, [x], async (dy) => [(await ops.globalAvgPoolBackward({ shape: y.shape, data: dy }, h, w, { layout })).data]);
}

/** x (N, C) @ weight (K, C)^T + bias (K). */
export async function linear(tape: Tape, x: Var, weight: Var, bias: Var): Promise<Var> {
  const y = await ops.linear(x.value, weight.value, bias.value);
  return tape.record(y, [x, weight, bias], async (dy) => {
    const g = await ops.linearBackward(x.value, weight.value, { shape: y.shape, data: dy }, { needInputGrad: x.requiresGrad });
    return [g.dx?.data, g.dweight.data, g.dbias.data];
  });
}

/** x (N, C, H, W) scaled per (n, c) by scale (N, C): the excitation step of SE. */
export async function channelScale(tape: Tape, x: Var, scale: Var): Promise<Var> {
  const y = await ops.channelScale(x.value, scale.value);
  return tape.record(y, [x, scale], async (dy) => {
    const g = await ops.channelScaleBackward(x.value, scale.value, gradOf(y, dy));
    return [g.dx.data, g.dscale.data];
  });
}

/** Mean softmax cross-entropy (PyTorch CrossEntropyLoss with label_smoothing) of logits (N, K). */
export async function softmaxCrossEntropy(
  tape: Tape,
  logits: Var,
  labels: Int32Array,
  labelSmoothing: number,
): Promise<{ loss: Var; value: number }> {
  const { loss, dlogits } = await ops.softmaxCrossEntropy(logits.value, labels, { labelSmoothing });
  const lossTensor: HostTensor = { shape: [1], data: Float32Array.of(loss) };
  const out = tape.record(lossTensor, [logits], async (dy) => {
    const scale = dy[0] as number;
    return [scale === 1 ? dlogits.data : dlogits.data.map((v: number) => v * scale)];
  });
  return { loss: out, value: loss };
}
