// A bounded free list of reusable buffers by size, shared by the inference server's pools of decoded images
// (sample-pool.ts) and of request bodies (body.ts).
// Not for: deciding when a buffer is free again (the pools' callers do) or making new buffers (the pools do).

/** Free items by size (in whatever unit the pool counts: values, bytes), holding at most maxRetained of it in all. */
export class SizedFreeList<T> {
  readonly #free = new Map<number, T[]>();
  #retained = 0;

  constructor(readonly maxRetained: number) {}

  /** A free item of exactly `size`, taken off the list, or undefined when there is none. */
  take(size: number): T | undefined {
    const item = this.#free.get(size)?.pop();
    if (item !== undefined) this.#retained -= size;
    return item;
  }

  /** Keeps `item` of `size` for a later take(); false, keeping nothing, when that would pass maxRetained. */
  give(size: number, item: T): boolean {
    if (this.#retained + size > this.maxRetained) return false;
    const list = this.#free.get(size);
    if (list === undefined) this.#free.set(size, [item]);
    else list.push(item);
    this.#retained += size;
    return true;
  }

  /** Size held by free items now. */
  get retained(): number {
    return this.#retained;
  }
}
