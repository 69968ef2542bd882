// Fully connected layer of the single-op API on oneDNN: x (N, C), weight (K, C), bias (K) -> (N, K).

import { callNative, callNativeSync, loadCpuAddon } from '../backend/native.js';
import { ShapeError, formatShape } from '../errors.js';
import type { HostTensor } from '../tensor.js';
import { checkTensor } from './check.js';

function prepare(x: HostTensor, weight: HostTensor, bias: HostTensor, relu: boolean) {
  const [n, c] = checkTensor(x, 'x', 2) as [number, number];
  const [k, wc] = checkTensor(weight, 'weight', 2) as [number, number];
  const [bk] = checkTensor(bias, 'bias', 1) as [number];
  if (wc !== c) throw new ShapeError(`Expected weight of shape [${k}, ${c}] for x ${formatShape(x.shape)} but received ${formatShape(weight.shape)}`);
  if (bk !== k) throw new ShapeError(`Expected bias of shape [${k}] but received [${bk}]`);
  const y: HostTensor = { shape: [n, k], data: new Float32Array(n * k) };
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
