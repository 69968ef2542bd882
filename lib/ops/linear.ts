// Fully connected layer of the single-op API on oneDNN: x (N, C), weight (K, C), bias (K) -> (N, K), and its
// backward pass.

import { callNative, callNativeSync, loadCpuAddon } from '../backend/native.js';
import { ShapeError, formatShape } from '../errors.js';
import type { HostTensor } from '../tensor.js';
import { outputArray } from './alloc.js';
import { checkShape, checkTensor } from './check.js';
import { runTrainingOp, runTrainingOpSync } from './native-op.js';

function prepare(x: HostTensor, weight: HostTensor, bias: HostTensor, relu: boolean) {
  const [n, c] = checkTensor(x, 'x', 2) as [number, number];
  const [k, wc] = checkTensor(weight, 'weight', 2) as [number, number];
  const [bk] = checkTensor(bias, 'bias', 1) as [number];
  if (wc !== c) throw new ShapeError(`Expected weight of shape [${k}, ${c}] for x ${formatShape(x.shape)} but received ${formatShape(weight.shape)}`);
  if (bk !== k) throw new ShapeError(`Expected bias of shape [${k}] but received [${bk}]`);
  const y: HostTensor = { shape: [n, k], data: outputArray(n * k) };
  return { native: { x: x.data, weight: weight.data, bias: bias.data, y: y.data, batch: n, inFeatures: c, outFeatures: k, relu }, y };
}

export async function linear(x: HostTensor, weight: HostTensor, bias: HostTensor, options: { relu?: boolean } = {}): Promise<HostTensor> {
  const { native, y } = prepare(x, weight, bias, options.relu === true);
  await callNative(() => loadCpuAddon().linear(native));
  return y;
}

export function linearSync(x: HostTensor, weight: HostTensor, bias: HostTensor, options: { relu?: boolean } = {}): HostTensor {
  const { native, y } = prepare(x, weight, bias, options.relu === true);
  callNativeSync(() => loadCpuAddon().linearSync(native));
  return y;
}

// ---------------------------------------------------------------------------------------------------------------
// Backward

/** Gradients of linear. */
export interface LinearGrads {
  /** (N, C); absent when needInputGrad was false. */
  dx?: HostTensor;
  /** (K, C) = dy^T x */
  dweight: HostTensor;
  /** (K) = dy summed over the batch */
  dbias: HostTensor;
}

function prepareBackward(x: HostTensor, weight: HostTensor, dy: HostTensor, options: { needInputGrad?: boolean }) {
  const [n, c] = checkTensor(x, 'x', 2) as [number, number];
  const [k, wc] = checkTensor(weight, 'weight', 2) as [number, number];
  if (wc !== c) throw new ShapeError(`Expected weight of shape [${k}, ${c}] for x ${formatShape(x.shape)} but received ${formatShape(weight.shape)}`);
  checkShape(dy, 'dy', [n, k], `the output of x ${formatShape(x.shape)} and weight ${formatShape(weight.shape)}`);
  const dx: HostTensor | undefined = (options.needInputGrad ?? true) ? { shape: [n, c], data: outputArray(n * c) } : undefined;
  const dweight: HostTensor = { shape: [k, c], data: outputArray(k * c) };
  const dbias: HostTensor = { shape: [k], data: outputArray(k) };
  const native = { x: x.data, weight: weight.data, dy: dy.data, dx: dx?.data, dweight: dweight.data, dbias: dbias.data, batch: n, inFeatures: c, outFeatures: k };
  const grads: LinearGrads = dx === undefined ? { dweight, dbias } : { dx, dweight, dbias };
  return { native, grads };
}

/**
 * Backward pass of linear(x, weight, bias) (without the fused ReLU; apply reluBackward first):
 * dx = dy weight, dweight = dy^T x, dbias = sum over the batch of dy. x: (N, C), weight: (K, C), dy: (N, K).
 * @param options.needInputGrad compute dx (default true).
 * @throws ShapeError / ArgumentTypeError on bad arguments.
 * @example const { dx, dweight, dbias } = await linearBackward(x, w, dy);
 */
export async function linearBackward(x: HostTensor, weight: HostTensor, dy: HostTensor, options: { needInputGrad?: boolean } = {}): Promise<LinearGrads> {
  const { native, grads } = prepareBackward(x, weight, dy, options);
  await runTrainingOp('linearBackward', native);
  return grads;
}

/** Synchronous linearBackward (blocks the event loop). */
export function linearBackwardSync(x: HostTensor, weight: HostTensor, dy: HostTensor, options: { needInputGrad?: boolean } = {}): LinearGrads {
  const { native, grads } = prepareBackward(x, weight, dy, options);
  runTrainingOpSync('linearBackward', native);
  return grads;
}
