// Argument checks shared by the single-op API: one message format everywhere,
// "Expected <what> for <name> but received <value>", and the right RepvggError subclass.

import { ArgumentTypeError, ArgumentValueError, ShapeError, describeValue, formatShape } from '../errors.js';
import { numel, type HostTensor } from '../tensor.js';

/** Checks that t is a HostTensor of float32 data with the given rank; returns its shape. */
export function checkTensor(t: unknown, name: string, rank: number): readonly number[] {
  const candidate = t as Partial<HostTensor> | null | undefined;
  if (candidate === null || typeof candidate !== 'object' || !Array.isArray(candidate.shape)) {
    throw new ArgumentTypeError(`Expected a tensor { shape, data } for ${name} but received ${describeValue(t)}`);
  }
  if (!(candidate.data instanceof Float32Array)) {
    throw new ArgumentTypeError(`Expected Float32Array data for ${name} but received ${describeValue(candidate.data)}`);
  }
  const shape = candidate.shape;
  if (shape.length !== rank) {
    throw new ShapeError(`Expected a rank-${rank} tensor for ${name} but received shape ${formatShape(shape)}`);
  }
  if (!shape.every((d) => Number.isInteger(d) && d >= 1)) {
    throw new ShapeError(`Expected every dimension of ${name} to be a positive integer but received shape ${formatShape(shape)}`);
  }
  if (numel(shape) !== candidate.data.length) {
    throw new ShapeError(`Expected ${name} data to fill shape ${formatShape(shape)} but received ${candidate.data.length} values`);
  }
  return shape;
}

export function checkPositiveInt(value: unknown, name: string, min = 1): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min) {
    throw new ArgumentValueError(`Expected an integer >= ${min} for ${name} but received ${describeValue(value)}`);
  }
  return value;
}

/** Throws ShapeError unless the dimension equals what the op needs. */
export function checkDim(actual: number, expected: number, what: string): void {
  if (actual !== expected) throw new ShapeError(`Expected ${what} ${expected} but received ${actual}`);
}

/** Throws ArgumentValueError naming the first non-finite element. */
export function checkFinite(data: Float32Array, name: string): void {
  for (let i = 0; i < data.length; i++) {
    const v = data[i] as number;
    if (!Number.isFinite(v)) {
      throw new ArgumentValueError(`Expected finite values for ${name} but received ${v} at flat index ${i}`);
    }
  }
}

/**
 * Checks that t is a float32 tensor of exactly the given shape (what a gradient or a per-channel parameter must
 * have); `of` says where the expected shape comes from, e.g. "the output of x [2, 3, 8, 8] and weight [...]".
 */
export function checkShape(t: unknown, name: string, expected: readonly number[], of?: string): void {
  const shape = checkTensor(t, name, Array.isArray((t as Partial<HostTensor> | null)?.shape) ? (t as HostTensor).shape.length : 0);
  if (shape.length !== expected.length || shape.some((d, i) => d !== expected[i])) {
    throw new ShapeError(`Expected ${name} of shape ${formatShape(expected)}${of === undefined ? '' : ` (${of})`} but received ${formatShape(shape)}`);
  }
}
