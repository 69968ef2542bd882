// Memory layouts of 4-D activation tensors in the single-op API. A tensor's shape is always the logical
// (N, C, H, W); its data is NCHW (row-major over N, C, H, W: the default, what every file, reference and user
// sees) or NHWC ('channels last', row-major over N, H, W, C), marked by an optional `layout` field. The training
// tape keeps activations NHWC: oneDNN convolves NHWC directly at blocked-layout speed, while NCHW data has to be
// reordered into a blocked layout and back around every convolution (about 15% of a training step).
// Ops take either layout and return their activation outputs in the layout of their input (conv2d: on request).
// Not for: weights (always plain row-major) or 2-D tensors (N, C).

import { ArgumentValueError, ShapeError, describeValue, formatShape } from '../errors.js';
import type { HostTensor } from '../tensor.js';
import { outputArray } from './alloc.js';

/** Memory order of a 4-D activation's data. */
export type Layout = 'nchw' | 'nhwc';

/** A HostTensor that may carry its data layout; no `layout` field means 'nchw'. */
export interface LayoutTensor extends HostTensor {
  readonly layout?: Layout;
}

/**
 * The data layout of t: its `layout` field, 'nchw' when absent.
 * @throws ArgumentValueError for a layout other than 'nchw' or 'nhwc', or 'nhwc' on a tensor that is not 4-D.
 */
export function layoutOf(t: HostTensor, name = 'tensor'): Layout {
  const layout = (t as LayoutTensor).layout;
  if (layout === undefined || layout === 'nchw') return 'nchw';
  if (layout !== 'nhwc') throw new ArgumentValueError(`Expected layout 'nchw' or 'nhwc' for ${name} but received ${describeValue(layout)}`);
  if (t.shape.length !== 4) throw new ShapeError(`Expected a rank-4 tensor for ${name} with layout 'nhwc' but received shape ${formatShape(t.shape)}`);
  return layout;
}

/** Checks a layout option (undefined passes through). */
export function checkLayoutOption(layout: unknown, name = 'layout'): Layout | undefined {
  if (layout === undefined || layout === 'nchw' || layout === 'nhwc') return layout;
  throw new ArgumentValueError(`Expected 'nchw' or 'nhwc' for ${name} but received ${describeValue(layout)}`);
}

/** A tensor of the given shape, data and layout (no layout field for 'nchw', as plain tensors have none). */
export function withLayout(shape: readonly number[], data: Float32Array, layout: Layout): LayoutTensor {
  return layout === 'nchw' ? { shape, data } : { shape, data, layout };
}

/** Throws unless b has a's layout (for elementwise ops, whose flat arrays must line up). */
export function checkSameLayout(a: HostTensor, aName: string, b: HostTensor, bName: string): Layout {
  const la = layoutOf(a, aName);
  const lb = layoutOf(b, bName);
  if (la !== lb) {
    throw new ArgumentValueError(`Expected ${bName} in the layout of ${aName} ('${la}') but received '${lb}'; convert it with toLayout()`);
  }
  return la;
}

/**
 * t's data in the given layout (t itself when it already is). Plain TypeScript loops: for conversions outside
 * the hot path (tests, inspecting activations of the training tape).
 * @example const plain = toLayout(activation, 'nchw');
 */
export function toLayout(t: HostTensor, layout: Layout): LayoutTensor {
  const from = layoutOf(t);
  checkLayoutOption(layout);
  if (from === layout) return t;
  const [n, c, h, w] = t.shape as [number, number, number, number];
  const out = outputArray(t.data.length);
  const src = t.data;
  const hw = h * w;
  for (let b = 0; b < n; b++) {
    for (let ch = 0; ch < c; ch++) {
      for (let i = 0; i < hw; i++) {
        const nchw = (b * c + ch) * hw + i;
        const nhwc = (b * hw + i) * c + ch;
        if (layout === 'nhwc') out[nhwc] = src[nchw] as number;
        else out[nchw] = src[nhwc] as number;
      }
    }
  }
  return withLayout([...t.shape], out, layout);
}
