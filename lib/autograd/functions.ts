// Differentiable ops for the tape: each runs the native forward op and records its gradient rule right here,
// next to the forward. Shapes are checked by the ops in lib/ops/ themselves.
// Not for: optimizers or modules (lib/train/); inference (lib/engine.ts runs whole networks natively).

import * as ops from '../ops/index.js';
import type { HostTensor } from '../tensor.js';
import { Tape, Var } from './tape.js';

export interface ConvOptions {
  stride: number;
  pad: number;
  groups: number;
}

/** y = conv2d(x, weight) without bias. x: (N, C, H, W), weight: (O, C/g, K, K). */
export async function conv2d(tape: Tape, x: Var, weight: Var, o: ConvOptions): Promise<Var> {
  const y = await ops.conv2d(x.value, weight.value, o);
  return tape.record(y, [x, weight], async (dy) => {
    const grads = await ops.conv2dBackward(x.value, weight.value, { shape: y.shape, data: dy }, { ...o, needInputGrad: x.requiresGrad });
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
    const g = await ops.batchNormBackward(x.value, { shape: y.shape, data: dy }, gamma.value, mean, variance, { eps });
    return [g.dx.data, g.dgamma.data, g.dbeta.data];
  });
  return { y: out, mean, variance };
}

/** a + b (same shape). */
export async function add(tape: Tape, a: Var, b: Var): Promise<Var> {
  const y = await ops.add(a.value, b.value);
  return tape.record(y, [a, b], async (dy) => [dy, dy]);
}

export async function relu(tape: Tape, x: Var): Promise<Var> {
  const y = await ops.relu(x.value);
  return tape.record(y, [x], async (dy) => [(await ops.reluBackward(y, { shape: y.shape, data: dy })).data]);
}

export async function sigmoid(tape: Tape, x: Var): Promise<Var> {
  const y = await ops.sigmoid(x.value);
  return tape.record(y, [x], async (dy) => [(await ops.sigmoidBackward(y, { shape: y.shape, data: dy })).data]);
}

/** (N, C, H, W) -> (N, C) mean over H and W. */
export async function globalAvgPool(tape: Tape, x: Var): Promise<Var> {
  const y = await ops.globalAvgPool(x.value);
  const [, , h, w] = x.shape as [number, number, number, number];
  return tape.record(y, [x], async (dy) => [(await ops.globalAvgPoolBackward({ shape: y.shape, data: dy }, h, w)).data]);
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
    const g = await ops.channelScaleBackward(x.value, scale.value, { shape: y.shape, data: dy });
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
