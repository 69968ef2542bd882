// Global average pooling of the single-op API on oneDNN: (N, C, H, W) -> (N, C), and its backward pass.

import { callNative, callNativeSync, loadCpuAddon } from '../backend/native.js';
import type { HostTensor } from '../tensor.js';
import { outputArray } from './alloc.js';
import { checkPositiveInt, checkTensor } from './check.js';
import { runTrainingOp, runTrainingOpSync } from './native-op.js';

function prepare(x: HostTensor) {
  const [n, c, h, w] = checkTensor(x, 'x', 4) as [number, number, number, number];
  const y: HostTensor = { shape: [n, c], data: outputArray(n * c) };
  return { native: { x: x.data, y: y.data, batch: n, channels: c, height: h, width: w }, y };
}

export async function globalAvgPool(x: HostTensor): Promise<HostTensor> {
  const { native, y } = prepare(x);
  await callNative(() => loadCpuAddon().globalAvgPool(native));
  return y;
}

export function globalAvgPoolSync(x: HostTensor): HostTensor {
  const { native, y } = prepare(x);
  callNativeSync(() => loadCpuAddon().globalAvgPoolSync(native));
  return y;
}

function prepareBackward(dy: HostTensor, height: number, width: number) {
  const [n, c] = checkTensor(dy, 'dy', 2) as [number, number];
  checkPositiveInt(height, 'height');
  checkPositiveInt(width, 'width');
  const dx: HostTensor = { shape: [n, c, height, width], data: outputArray(n * c * height * width) };
  return { native: { dy: dy.data, dx: dx.data, batch: n, channels: c, height, width }, dx };
}

/**
 * Backward pass of globalAvgPool for an input of height x width: dx[n, c, h, w] = dy[n, c] / (height * width).
 * dy: (N, C) -> dx: (N, C, height, width).
 * @throws ShapeError / ArgumentTypeError for a bad dy; ArgumentValueError for a height or width that is not a positive integer.
 */
export async function globalAvgPoolBackward(dy: HostTensor, height: number, width: number): Promise<HostTensor> {
  const { native, dx } = prepareBackward(dy, height, width);
  await runTrainingOp('globalAvgPoolBackward', native);
  return dx;
}

/** Synchronous globalAvgPoolBackward (blocks the event loop). */
export function globalAvgPoolBackwardSync(dy: HostTensor, height: number, width: number): HostTensor {
  const { native, dx } = prepareBackward(dy, height, width);
  runTrainingOpSync('globalAvgPoolBackward', native);
  return dx;
}
