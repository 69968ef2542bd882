// conv2d of the single-op API: shape checks in TypeScript, then oneDNN (native/cpu/conv.cc).
// NaN/Inf in inputs propagate as in PyTorch; only the model-level API rejects them.

import { callNative, callNativeSync, loadCpuAddon } from '../backend/native.js';
import { ArgumentValueError, ShapeError, formatShape } from '../errors.js';
import type { HostTensor } from '../tensor.js';
import { checkPositiveInt, checkTensor } from './check.js';

export interface Conv2dOptions {
  /** (outChannels) */
  bias?: HostTensor;
  stride?: number;
  pad?: number;
  groups?: number;
  /** Fuse a ReLU after the bias. */
  relu?: boolean;
}

function prepareConv2d(x: HostTensor, weight: HostTensor, options: Conv2dOptions) {
  const [n, c, h, w] = checkTensor(x, 'x', 4) as [number, number, number, number];
  const [o, cg, kh, kw] = checkTensor(weight, 'weight', 4) as [number, number, number, number];
  const stride = checkPositiveInt(options.stride ?? 1, 'stride');
  const pad = checkPositiveInt(options.pad ?? 0, 'pad', 0);
  const groups = checkPositiveInt(options.groups ?? 1, 'groups');
  if (kh !== kw) throw new ShapeError(`Expected a square kernel for weight but received shape ${formatShape(weight.shape)}`);
  if (c % groups !== 0 || o % groups !== 0) {
    throw new ArgumentValueError(`Expected groups to divide channels ${c} -> ${o} but received groups ${groups}`);
  }
  if (cg !== c / groups) {
    throw new ShapeError(
      `Expected weight of shape [${o}, ${c / groups}, ${kh}, ${kw}] for x ${formatShape(x.shape)} with groups ${groups} but received ${formatShape(weight.shape)}`,
    );
  }
  if (options.bias !== undefined) {
    const [bc] = checkTensor(options.bias, 'bias', 1) as [number];
    if (bc !== o) throw new ShapeError(`Expected bias of shape [${o}] but received [${bc}]`);
  }
  const oh = Math.floor((h + 2 * pad - kh) / stride) + 1;
  const ow = Math.floor((w + 2 * pad - kw) / stride) + 1;
  if (oh < 1 || ow < 1) {
    throw new ShapeError(`Expected x at least ${kh - 2 * pad}x${kw - 2 * pad} for a ${kh}x${kw} kernel with pad ${pad} but received ${h}x${w}`);
  }
  const y: HostTensor = { shape: [n, o, oh, ow], data: new Float32Array(n * o * oh * ow) };
  const native = {
    x: x.data, weight: weight.data, bias: options.bias?.data, y: y.data,
    batch: n, inChannels: c, height: h, width: w, outChannels: o, kernel: kh, stride, pad, groups, relu: options.relu === true,
  };
  return { native, y };
}

/**
 * 2-D convolution. x: (N, C, H, W), weight: (O, C/groups, K, K) -> (N, O, OH, OW). Runs off the event loop.
 * @throws ShapeError / ArgumentValueError / ArgumentTypeError on bad arguments.
 * @example const y = await conv2d(x, w, { stride: 2, pad: 1, bias, relu: true });
 */
export async function conv2d(x: HostTensor, weight: HostTensor, options: Conv2dOptions = {}): Promise<HostTensor> {
  const { native, y } = prepareConv2d(x, weight, options);
  await callNative(() => loadCpuAddon().conv2d(native));
  return y;
}

/** Synchronous conv2d (blocks the event loop: for small tensors and scripts). */
export function conv2dSync(x: HostTensor, weight: HostTensor, options: Conv2dOptions = {}): HostTensor {
  const { native, y } = prepareConv2d(x, weight, options);
  callNativeSync(() => loadCpuAddon().conv2dSync(native));
  return y;
}
