// Host-side tensors: a float32 buffer plus its shape. This is what files are read into, what the reparam math
// consumes and what the engine takes as input. Not for: device memory (backends own that behind handles).

import { ArgumentTypeError, ShapeError, describeValue, formatShape } from './errors.js';

/** A dense row-major float32 tensor in host memory. */
export interface HostTensor {
  readonly shape: readonly number[];
  readonly data: Float32Array;
}

/** Weights by official PyTorch key name (e.g. 'stage1.0.rbr_dense.conv.weight'). */
export type StateDict = Map<string, HostTensor>;

export function numel(shape: readonly number[]): number {
  return shape.reduce((p, d) => p * d, 1);
}

/**
 * Wrap data and shape into a HostTensor after checking that they agree.
 * @throws ArgumentTypeError when data is not a Float32Array; ShapeError when the sizes disagree.
 */
export function hostTensor(data: unknown, shape: readonly number[], name = 'tensor'): HostTensor {
  if (!(data instanceof Float32Array)) {
    throw new ArgumentTypeError(`Expected a Float32Array for ${name} but received ${describeValue(data)}`);
  }
  if (!shape.every((d) => Number.isInteger(d) && d >= 0) || numel(shape) !== data.length) {
    throw new ShapeError(`Expected ${name} data of ${numel(shape)} elements for shape ${formatShape(shape)} but received ${data.length}`);
  }
  return { shape: [...shape], data };
}
