// Elementwise ops of the single-op API on oneDNN: relu, sigmoid, add (optionally fused ReLU) and the per-channel
// scaling that squeeze-excitation needs, with the backward passes of relu, sigmoid and channelScale. add needs no
// backward op: its gradient is dy for both inputs.

import { callNative, callNativeSync, loadCpuAddon } from '../backend/native.js';
import { ShapeError, formatShape } from '../errors.js';
import type { HostTensor } from '../tensor.js';
import { outputArray } from './alloc.js';
import { checkShape, checkTensor } from './check.js';
import { checkSameLayout, layoutOf, withLayout } from './layout.js';
import { runTrainingOp, runTrainingOpSync } from './native-op.js';

function anyRank(t: HostTensor, name: string): readonly number[] {
  return checkTensor(t, name, Array.isArray(t?.shape) ? t.shape.length : 0);
}

/** An output like x: its shape and data layout (layout.ts), uninitialized. */
function sameShapeOutput(x: HostTensor): HostTensor {
  return withLayout([...x.shape], outputArray(x.data.length), layoutOf(x, 'x'));
}

export async function relu(x: HostTensor): Promise<HostTensor> {
  anyRank(x, 'x');
  const y = sameShapeOutput(x);
  await callNative(() => loadCpuAddon().relu({ x: x.data, y: y.data }));
  return y;
}

export function reluSync(x: HostTensor): HostTensor {
  anyRank(x, 'x');
  const y = sameShapeOutput(x);
  callNativeSync(() => loadCpuAddon().reluSync({ x: x.data, y: y.data }));
  return y;
}

export async function sigmoid(x: HostTensor): Promise<HostTensor> {
  anyRank(x, 'x');
  const y = sameShapeOutput(x);
  await callNative(() => loadCpuAddon().sigmoid({ x: x.data, y: y.data }));
  return y;
}

export function sigmoidSync(x: HostTensor): HostTensor {
  anyRank(x, 'x');
  const y = sameShapeOutput(x);
  callNativeSync(() => loadCpuAddon().sigmoidSync({ x: x.data, y: y.data }));
  return y;
}

function prepareAdd(a: HostTensor, b: HostTensor, relu: boolean) {
  const shape = anyRank(a, 'a');
  const bShape = anyRank(b, 'b');
  if (shape.length !== bShape.length || shape.some((d, i) => d !== bShape[i])) {
    throw new ShapeError(`Expected b of shape ${formatShape(shape)} (same as a) but received ${formatShape(bShape)}`);
  }
  checkSameLayout(a, 'a', b, 'b');
  const y = sameShapeOutput(a);
  return { native: { a: a.data, b: b.data, y: y.data, relu }, y };
}

/** a + b (same shapes and data layouts), optionally followed by ReLU. */
export async function add(a: HostTensor, b: HostTensor, options: { relu?: boolean } = {}): Promise<HostTensor> {
  const { native, y } = prepareAdd(a, b, options.relu === true);
  await callNative(() => loadCpuAddon().add(native));
  return y;
}

export function addSync(a: HostTensor, b: HostTensor, options: { relu?: boolean } = {}): HostTensor {
  const { native, y } = prepareAdd(a, b, options.relu === true);
  callNativeSync(() => loadCpuAddon().addSync(native));
  return y;
}

function prepareAddInPlace(acc: HostTensor, g: HostTensor) {
  const shape = anyRank(acc, 'acc');
  checkShape(g, 'g', shape, 'same as acc');
  checkSameLayout(acc, 'acc', g, 'g');
  return { a: acc.data, b: g.data, y: acc.data, relu: false };
}

/**
 * acc += g in place (same shapes): the gradient accumulation of an autograd tape, natively (about 5x faster than a
 * JavaScript loop on large tensors). acc and g may not share memory unless they are the same array.
 * @throws ShapeError / ArgumentTypeError on bad arguments.
 * @example await addInPlace(x.grad, dx);
 */
export async function addInPlace(acc: HostTensor, g: HostTensor): Promise<void> {
  const native = prepareAddInPlace(acc, g);
  await callNative(() => loadCpuAddon().add(native));
}

/** Synchronous addInPlace (blocks the event loop for about a millisecond per 3M values). */
export function addInPlaceSync(acc: HostTensor, g: HostTensor): void {
  const native = prepareAddInPlace(acc, g);
  callNativeSync(() => loadCpuAddon().addSync(native));
}

function prepareChannelScale(x: HostTensor, scale: HostTensor) {
  const [n, c, h, w] = checkTensor(x, 'x', 4) as [number, number, number, number];
  const [sn, sc] = checkTensor(scale, 'scale', 2) as [number, number];
  if (sn !== n || sc !== c) throw new ShapeError(`Expected scale of shape [${n}, ${c}] but received ${formatShape(scale.shape)}`);
  const y = sameShapeOutput(x);
  return { native: { x: x.data, scale: scale.data, y: y.data, batch: n, channels: c, spatial: h * w, channelsLast: layoutOf(x, 'x') === 'nhwc' }, y };
}

/** y[n, c] = x[n, c] * scale[n, c]; x: (N, C, H, W), NCHW or NHWC (y alike), scale: (N, C). */
export async function channelScale(x: HostTensor, scale: HostTensor): Promise<HostTensor> {
  const { native, y } = prepareChannelScale(x, scale);
  await callNative(() => loadCpuAddon().channelScale(native));
  return y;
}

export function channelScaleSync(x: HostTensor, scale: HostTensor): HostTensor {
  const { native, y } = prepareChannelScale(x, scale);
  callNativeSync(() => loadCpuAddon().channelScaleSync(native));
  return y;
}

// ---------------------------------------------------------------------------------------------------------------
// Backward

function prepareEltwiseBackward(y: HostTensor, dy: HostTensor) {
  const shape = anyRank(y, 'y');
  checkShape(dy, 'dy', shape, 'same as y');
  checkSameLayout(y, 'y', dy, 'dy');
  const dx = sameShapeOutput(y);
  return { native: { y: y.data, dy: dy.data, dx: dx.data }, dx };
}

/**
 * Backward pass of relu from its OUTPUT y = relu(x) (not from x): dx = dy where y > 0, else 0, which is PyTorch's
 * gradient (threshold_backward on the result; 0 at x == 0). y and dy: same shape, any rank.
 * @throws ShapeError / ArgumentTypeError on bad arguments.
 * @example const dx = await reluBackward(y, dy);
 */
export async function reluBackward(y: HostTensor, dy: HostTensor): Promise<HostTensor> {
  const { native, dx } = prepareEltwiseBackward(y, dy);
  await runTrainingOp('reluBackward', native);
  return dx;
}

/** Synchronous reluBackward (blocks the event loop). */
export function reluBackwardSync(y: HostTensor, dy: HostTensor): HostTensor {
  const { native, dx } = prepareEltwiseBackward(y, dy);
  runTrainingOpSync('reluBackward', native);
  return dx;
}

/**
 * Backward pass of sigmoid from its OUTPUT y = sigmoid(x): dx = dy * y * (1 - y). y and dy: same shape, any rank.
 * @throws ShapeError / ArgumentTypeError on bad arguments.
 */
export async function sigmoidBackward(y: HostTensor, dy: HostTensor): Promise<HostTensor> {
  const { native, dx } = prepareEltwiseBackward(y, dy);
  await runTrainingOp('sigmoidBackward', native);
  return dx;
}

/** Synchronous sigmoidBackward (blocks the event loop). */
export function sigmoidBackwardSync(y: HostTensor, dy: HostTensor): HostTensor {
  const { native, dx } = prepareEltwiseBackward(y, dy);
  runTrainingOpSync('sigmoidBackward', native);
  return dx;
}

/** Gradients of channelScale. */
export interface ChannelScaleGrads {
  /** (N, C, H, W) = dy * scale */
  dx: HostTensor;
  /** (N, C) = sum over (H, W) of dy * x */
  dscale: HostTensor;
}

function prepareChannelScaleBackward(x: HostTensor, scale: HostTensor, dy: HostTensor) {
  const [n, c, h, w] = checkTensor(x, 'x', 4) as [number, number, number, number];
  checkShape(scale, 'scale', [n, c], 'x batch and channels');
  checkShape(dy, 'dy', [n, c, h, w], 'same as x');
  const layout = checkSameLayout(x, 'x', dy, 'dy');
  const grads: ChannelScaleGrads = { dx: sameShapeOutput(x), dscale: { shape: [n, c], data: outputArray(n * c) } };
  const native = {
    x: x.data, scale: scale.data, dy: dy.data, dx: grads.dx.data, dscale: grads.dscale.data, batch: n, channels: c, spatial: h * w,
    channelsLast: layout === 'nhwc',
  };
  return { native, grads };
}

/**
 * Backward pass of channelScale(x, scale): dx = dy * scale[n, c], dscale[n, c] = sum over (H, W) of dy * x
 * (summed in float64). x, dy: (N, C, H, W); scale: (N, C).
 * @throws ShapeError / ArgumentTypeError on bad arguments.
 */
export async function channelScaleBackward(x: HostTensor, scale: HostTensor, dy: HostTensor): Promise<ChannelScaleGrads> {
  const { native, grads } = prepareChannelScaleBackward(x, scale, dy);
  await runTrainingOp('channelScaleBackward', native);
  return grads;
}

/** Synchronous channelScaleBackward (blocks the event loop). */
export function channelScaleBackwardSync(x: HostTensor, scale: HostTensor, dy: HostTensor): ChannelScaleGrads {
  const { native, grads } = prepareChannelScaleBackward(x, scale, dy);
  runTrainingOpSync('channelScaleBackward', native);
  return grads;
}
