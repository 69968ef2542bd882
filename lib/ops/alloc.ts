// Output buffers of the single ops. Every native op writes each element of its outputs, so large outputs skip the
// zero-fill of `new Float32Array(n)`: a training step of the default network allocates a few hundred MB of
// activations and gradients, and zeroing them (or faulting in freshly zeroed pages) cost about 2 ms per 12.8 MB
// against 0.6 ms for uninitialized memory. Arrays whose owner knows they are dead (an autograd tape's) can be
// handed back with recycleArray and are reused without allocating at all; that also saves the garbage collections
// that hundreds of MB of fresh ArrayBuffers per step trigger. (A native pool fed by the collector's finalizers
// measured only 0.1 ms better per 12.8 MB than fresh buffers: it still pays those collections.)
// Not for: buffers that are read before every element is written.

import { ArgumentValueError, describeValue } from '../errors.js';
import { runTrainingOpSync } from './native-op.js';

/** Below this many floats the zero-fill is negligible and an ordinary Float32Array is used. */
const UNINITIALIZED_MIN_LENGTH = 4096;

/** Arrays handed back with recycleArray, by length, for reuse as outputs. */
const recycled = new Map<number, Float32Array[]>();
/** The same arrays as a set: recycling one twice must not hand it out twice. */
const pooled = new WeakSet<Float32Array>();
let recycledBytes = 0;
/** Recycled memory kept at most (beyond it recycleArray drops arrays to the garbage collector). */
const MAX_RECYCLED_BYTES = 2 ** 30;

/**
 * A Float32Array of `length` elements whose contents are unspecified (zeros for small lengths); it owns its whole
 * ArrayBuffer (byteOffset 0), like `new Float32Array(length)`. Reuses an array given to recycleArray when one of
 * that length is there.
 */
export function outputArray(length: number): Float32Array {
  if (length < UNINITIALIZED_MIN_LENGTH) return new Float32Array(length);
  const reuse = recycled.get(length)?.pop();
  if (reuse !== undefined) {
    pooled.delete(reuse);
    recycledBytes -= reuse.byteLength;
    return reuse;
  }
  // allocUnsafeSlow: uninitialized and never carved out of Buffer's shared pool.
  const bytes = Buffer.allocUnsafeSlow(length * Float32Array.BYTES_PER_ELEMENT);
  return new Float32Array(bytes.buffer, bytes.byteOffset, length);
}

/**
 * Hands an array that nothing will read or write again to the single ops, which reuse it for a later output of
 * the same length instead of allocating: an autograd tape that recycles its intermediate gradients and, once
 * backward is done, its activations allocates nothing in steady state, which saves the garbage collections that
 * hundreds of MB of fresh ArrayBuffers per step trigger (about 5% of a step of the default network). Arrays that
 * do not own their whole buffer, and small ones, are ignored. Recycling an array that is still in use corrupts
 * whatever uses it: only for buffers whose every reference is known, such as a tape's.
 * @example recycleArray(intermediateGrad);
 */
export function recycleArray(array: Float32Array): void {
  if (!(array instanceof Float32Array) || array.length < UNINITIALIZED_MIN_LENGTH) return;
  if (array.byteOffset !== 0 || array.byteLength !== array.buffer.byteLength || pooled.has(array)) return;
  if (recycledBytes + array.byteLength > MAX_RECYCLED_BYTES) return;
  let list = recycled.get(array.length);
  if (list === undefined) {
    list = [];
    recycled.set(array.length, list);
  }
  list.push(array);
  pooled.add(array);
  recycledBytes += array.byteLength;
}

/**
 * Makes the process's C allocator (glibc) serve allocations up to 64 MB from its heap and keep up to maxFreeBytes
 * of freed memory for reuse instead of returning it to the kernel. A training step allocates and frees the same
 * few hundred MB of outputs every step; by default each large buffer is a fresh mapping that the kernel zero-fills
 * page by page on first touch, which measured about 10% of a step of the default network. Call it once before
 * training; it is process-wide and stays in effect (the process then holds on to up to maxFreeBytes it no longer
 * uses). A no-op where the C library is not glibc.
 * @throws ArgumentValueError for a negative or non-finite maxFreeBytes.
 * @example retainFreedMemory(); // before the first training step
 */
export function retainFreedMemory(maxFreeBytes = 2 ** 30): void {
  if (typeof maxFreeBytes !== 'number' || !Number.isFinite(maxFreeBytes) || maxFreeBytes < 0) {
    throw new ArgumentValueError(`Expected a non-negative byte count for maxFreeBytes but received ${describeValue(maxFreeBytes)}`);
  }
  runTrainingOpSync('retainFreedMemory', { maxFreeBytes });
}
