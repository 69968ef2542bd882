// Global average pooling of the single-op API on oneDNN: (N, C, H, W) -> (N, C), and its backward pass; the 4-D
// side NCHW or NHWC (layout.ts).

import { callNative, callNativeSync, loadCpuAddon } from '../backend/native.js';
import type { HostTensor } from '../tensor.js';
import { outputArray } from './alloc.js';
import { checkPositiveInt, checkTensor } from './check.js';
import { checkLayoutOption, layoutOf, withLayout, type Layout } from './layout.js';
import { runTrainingOp, runTrainingOpSync } from './native-op.js';

function prepare(x: HostTensor) {
  const [n, c, h, w] = checkTensor(x, 'x', 4) as [number, number, number, number];
  const y: HostTensor = { shape: [n, c], data: outputArray(n * c) };
  return { native: { x: x.data, y: y.data, batch: n, channels: c, height: h, width: w, channelsLast: layoutOf(x, 'x') === 'nhwc' }, y };
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

export interface GlobalAvgPoolBackwardOptions {
  /** Data layout of dx (default 'nchw'): that of the pooled input. */
  layout?: Layout;
}

function prepareBackward(dy: HostTensor, height: number, width: number, options: GlobalAvgPoolBackwardOptions) {
  const [n, c] = checkTensor(dy, 'dy', 2) as [number, number];
  checkPositiveInt(height, 'height');
  checkPositiveInt(width, 'width');
  const layout = checkLayoutOption(options.layout) ?? 'nchw';
  const dx = withLayout([n, c, height, width], outputArray(n * c * height * width), layout);
  return { native: { dy: dy.data, dx: dx.data, batch: n, channels: c, height, width, channelsLast: layout === 'nhwc' }, dx };
}

/**
 * Backward pass of globalAvgPool for an input of height x width: dx[n, c, h, w] = dy[n, c] / (height * width).
 * dy: (N, C) -> dx: (N, C, height, width) in options.layout (default NCHW).
 * @throws ShapeError / ArgumentTypeError for a bad dy; ArgumentValueError for a height or width that is not a positive integer.
 */
export async function globalAvgPoolBackward(
  dy: HostTensor, height: number, width: number, options: GlobalAvgPoolBackwardOptions = {},
): Promise<HostTensor> {
  const { native, dx } = prepareBackward(dy, height, width, options);
  await runTrainingOp('globalAvgPoolBackward', native);
  return dx;
}

/** Synchronous globalAvgPoolBackward (blocks the event loop). */
export function globalAvgPoolBackwardSync(dy: HostTensor, height: number, width: number, options: GlobalAvgPoolBackwardOptions = {}): HostTensor {
  const { native, dx } = prepareBackward(dy, height, width, options);
  runTrainingOpSync('globalAvgPoolBackward', native);
  return dx;
}
