// Seeded randomness for the data pipeline: a small 32-bit generator and a key derivation that turns
// (seed, epoch, stream, position) into an independent generator, so any batch can be rebuilt on its own.
// Not for: weight initialization (lib/models/init.ts) or anything that needs cryptographic quality.

/** Murmur3's 32-bit finalizer: a bijection on uint32 that spreads every input bit over the whole word. */
function fmix32(x: number): number {
  let z = x >>> 0;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
  return (z ^ (z >>> 16)) >>> 0;
}

const GOLDEN = 0x9e3779b9; // 2^32 / golden ratio: the Weyl increment, odd so the sequence visits every uint32

/** What a generator stream is used for; each gets unrelated numbers from the same seed. */
export const STREAM_SHUFFLE = 1;
export const STREAM_AUGMENT = 2;

/**
 * Derive a 32-bit key from a seed and any number of non-negative integer coordinates (epoch, stream, position).
 * Each coordinate passes through the mixer before the next is combined, so (a, b) and (b, a) differ.
 * Seeds may be any safe integer: the high and low 32-bit halves are both mixed in.
 */
export function deriveKey(seed: number, ...coordinates: number[]): number {
  const low = seed >>> 0; // two's complement low word, also for negative seeds
  const high = Math.floor(seed / 4294967296) >>> 0;
  let key = fmix32(low ^ fmix32(high + GOLDEN));
  for (const c of coordinates) key = fmix32((key + GOLDEN) ^ fmix32((c >>> 0) + Math.floor(c / 4294967296)));
  return key;
}

/**
 * A Weyl sequence passed through fmix32 (the SplitMix idea at 32 bits): period 2^32, fast, good enough for
 * shuffles and augmentation draws, and cheap to create, so each sample can get its own.
 * @example const rng = new Rng(deriveKey(seed, epoch, STREAM_SHUFFLE)); rng.below(10)
 */
export class Rng {
  private state: number;

  constructor(key: number) {
    this.state = key >>> 0;
  }

  /** A uniform uint32. */
  nextUint32(): number {
    this.state = (this.state + GOLDEN) >>> 0;
    return fmix32(this.state);
  }

  /** A uniform float in [0, 1) with 32 random bits. */
  nextFloat(): number {
    return this.nextUint32() / 4294967296;
  }

  /** A uniform integer in [0, n) without modulo bias (rejects the top sliver of uint32 values); n in [1, 2^32]. */
  below(n: number): number {
    const limit = 4294967296 - (4294967296 % n);
    for (;;) {
      const r = this.nextUint32();
      if (r < limit) return r % n;
    }
  }
}

/**
 * The order in which an epoch visits a dataset: 0..count-1, or a Fisher-Yates shuffle keyed by (seed, epoch).
 * @returns Int32Array (count) of dataset indices; position p of the epoch uses sample order[p].
 */
export function epochOrder(count: number, shuffle: boolean, seed: number, epoch: number): Int32Array {
  const order = new Int32Array(count);
  for (let i = 0; i < count; i++) order[i] = i;
  if (!shuffle) return order;
  const rng = new Rng(deriveKey(seed, epoch, STREAM_SHUFFLE));
  for (let i = count - 1; i > 0; i--) {
    const j = rng.below(i + 1);
    const t = order[i] as number;
    order[i] = order[j] as number;
    order[j] = t;
  }
  return order;
}
