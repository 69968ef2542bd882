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

/** From this k on, topIndices sorts the whole row instead of keeping a sorted list of the best k. */
const TOP_SELECTION_MAX_K = 64;

/**
 * The indices of the k largest values of a row, largest first; equal values in index order (what a stable sort
 * gives). One pass keeping the best k for small k (a server ranks 1000 logits per image on its event loop: a full
 * sort cost ~0.5 ms each), a full sort above TOP_SELECTION_MAX_K.
 * @example topIndices(Float32Array.of(0.1, 0.7, 0.2), 2) // [1, 2]
 */
export function topIndices(row: ArrayLike<number>, k: number): number[] {
  const count = Math.max(0, Math.min(k, row.length));
  if (count > TOP_SELECTION_MAX_K) {
    return Array.from({ length: row.length }, (_, i) => i).sort((a, b) => (row[b] as number) - (row[a] as number)).slice(0, count);
  }
  const best: number[] = []; // indices, values descending
  for (let i = 0; i < row.length && count > 0; i++) {
    const value = row[i] as number;
    if (best.length === count && !(value > (row[best[count - 1] as number] as number))) continue;
    let at = best.length;
    while (at > 0 && (row[best[at - 1] as number] as number) < value) at--;
    best.splice(at, 0, i);
    if (best.length > count) best.pop();
  }
  return best;
}
