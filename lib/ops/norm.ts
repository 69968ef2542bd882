// Batch normalization (inference mode, running statistics) of the single-op API, on oneDNN.

import { callNative, callNativeSync, loadCpuAddon } from '../backend/native.js';
import { ShapeError } from '../errors.js';
import type { HostTensor } from '../tensor.js';
import { checkTensor } from './check.js';

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
  const y: HostTensor = { shape: [n, c, h, w], data: new Float32Array(x.data.length) };
  const native = { x: x.data, y: y.data, mean: p.mean, var: p.var, gamma: p.gamma, beta: p.beta, eps: p.eps ?? 1e-5, batch: n, channels: c, height: h, width: w, relu };
  return { native, y };
}

/** y = gamma * (x - mean) / sqrt(var + eps) + beta per channel; x: (N, C, H, W). Optional fused ReLU. */
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
