// Elementwise ops of the single-op API on oneDNN: relu, sigmoid, add (optionally fused ReLU) and the per-channel
// scaling that squeeze-excitation needs.

import { callNative, callNativeSync, loadCpuAddon } from '../backend/native.js';
import { ShapeError, formatShape } from '../errors.js';
import type { HostTensor } from '../tensor.js';
import { checkTensor } from './check.js';

function anyRank(t: HostTensor, name: string): readonly number[] {
  return checkTensor(t, name, Array.isArray(t?.shape) ? t.shape.length : 0);
}

function sameShapeOutput(x: HostTensor): HostTensor {
  return { shape: [...x.shape], data: new Float32Array(x.data.length) };
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
  const y = sameShapeOutput(a);
  return { native: { a: a.data, b: b.data, y: y.data, relu }, y };
}

/** a + b (same shapes), optionally followed by ReLU. */
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

function prepareChannelScale(x: HostTensor, scale: HostTensor) {
  const [n, c, h, w] = checkTensor(x, 'x', 4) as [number, number, number, number];
  const [sn, sc] = checkTensor(scale, 'scale', 2) as [number, number];
  if (sn !== n || sc !== c) throw new ShapeError(`Expected scale of shape [${n}, ${c}] but received ${formatShape(scale.shape)}`);
  const y = sameShapeOutput(x);
  return { native: { x: x.data, scale: scale.data, y: y.data, batch: n, channels: c, spatial: h * w }, y };
}

/** y[n, c] = x[n, c] * scale[n, c]; x: (N, C, H, W), scale: (N, C). */
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
