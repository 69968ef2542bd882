// Reusable float32 arrays on SharedArrayBuffers for the inference server's decoded images: the decoding workers write
// a request's (N, 3, S, S) input straight into one (images.ts preprocessBatch `into`), and a later request reuses it
// once the first is answered. A new 600 KB array per image instead (transferred from a worker) was external memory
// that made V8 run a full mark-compact about every 200 ms under load, whose pauses were the event loop's worst lags.
// Not for: FP32 tensor inputs (read in place from the request body) or anything that outlives its request.

import { SizedFreeList } from './free-list.js';

/** Reusable arrays, by length in values. */
export class SharedSamplePool {
  readonly #free: SizedFreeList<Float32Array>;

  /** maxRetainedValues: most values the free arrays may hold; an array released beyond it is left to the GC. */
  constructor(readonly maxRetainedValues: number) {
    this.#free = new SizedFreeList(maxRetainedValues);
  }

  /** A float32 array of `length` values on a SharedArrayBuffer of its own: a free one, or a new one (zeros). */
  acquire(length: number): Float32Array {
    return this.#free.take(length) ?? new Float32Array(new SharedArrayBuffer(length * Float32Array.BYTES_PER_ELEMENT));
  }

  /**
   * Takes back an array from acquire() that nothing reads or writes any more (its request answered, its decoding
   * settled); it keeps its old values until reused.
   */
  release(array: Float32Array): void {
    this.#free.give(array.length, array);
  }

  /** Values held by free arrays now. */
  get retainedValues(): number {
    return this.#free.retained;
  }
}
