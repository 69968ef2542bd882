// Global average pooling of the single-op API on oneDNN: (N, C, H, W) -> (N, C).

import { callNative, callNativeSync, loadCpuAddon } from '../backend/native.js';
import type { HostTensor } from '../tensor.js';
import { checkTensor } from './check.js';

function prepare(x: HostTensor) {
  const [n, c, h, w] = checkTensor(x, 'x', 4) as [number, number, number, number];
  const y: HostTensor = { shape: [n, c], data: new Float32Array(n * c) };
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
