// Reusable float32 arrays on SharedArrayBuffers for the inference server's decoded images: the decoding workers write
// a request's (N, 3, S, S) input straight into one (images.ts preprocessBatch `into`), and a later request reuses it
// once the first is answered. A new 600 KB array per image instead (transferred from a worker) was external memory
// that made V8 run a full mark-compact about every 200 ms under load, whose pauses were the event loop's worst lags.
// Not for: FP32 tensor inputs (read in place from the request body) or anything that outlives its request.

/** Free arrays by length (values), and how many values they hold in all. */
export class SharedSamplePool {
  readonly #free = new Map<number, Float32Array[]>();
  #retainedValues = 0;

  /** maxRetainedValues: most values the free arrays may hold; an array released beyond it is left to the GC. */
  constructor(readonly maxRetainedValues: number) {}

  /** A float32 array of `length` values on a SharedArrayBuffer of its own: a free one, or a new one (zeros). */
  acquire(length: number): Float32Array {
    const reused = this.#free.get(length)?.pop();
    if (reused === undefined) return new Float32Array(new SharedArrayBuffer(length * Float32Array.BYTES_PER_ELEMENT));
    this.#retainedValues -= length;
    return reused;
  }

  /**
   * Takes back an array from acquire() that nothing reads or writes any more (its request answered, its decoding
   * settled); it keeps its old values until reused.
   */
  release(array: Float32Array): void {
    if (this.#retainedValues + array.length > this.maxRetainedValues) return;
    const list = this.#free.get(array.length);
    if (list === undefined) this.#free.set(array.length, [array]);
    else list.push(array);
    this.#retainedValues += array.length;
  }

  /** Values held by free arrays now. */
  get retainedValues(): number {
    return this.#retainedValues;
  }
}
