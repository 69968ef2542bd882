// Output buffers of the single ops. Every native op writes each element of its outputs, so large outputs skip the
// zero-fill of `new Float32Array(n)`: a training step of the default network allocates a few hundred MB of
// activations and gradients, and zeroing them (or faulting in freshly zeroed pages) cost about 2 ms per 12.8 MB
// against 0.6 ms for uninitialized memory. Not for: buffers that are read before every element is written.

/** Below this many floats the zero-fill is negligible and an ordinary Float32Array is used. */
const UNINITIALIZED_MIN_LENGTH = 4096;

/**
 * A Float32Array of `length` elements whose contents are unspecified (zeros for small lengths); it owns its whole
 * ArrayBuffer (byteOffset 0), like `new Float32Array(length)`.
 */
export function outputArray(length: number): Float32Array {
  if (length < UNINITIALIZED_MIN_LENGTH) return new Float32Array(length);
  // allocUnsafeSlow: uninitialized and never carved out of Buffer's shared pool.
  const bytes = Buffer.allocUnsafeSlow(length * Float32Array.BYTES_PER_ELEMENT);
  return new Float32Array(bytes.buffer, bytes.byteOffset, length);
}
