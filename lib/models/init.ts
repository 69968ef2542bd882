// Random weights for a spec: Kaiming-uniform convs, random (non-trivial) BN statistics and affine parameters.
// Used by the demo, benchmarks and tests; training initialization lives with the trainer.

import { expectedWeights, type RepVGGSpec, type WeightForm } from './repvgg.js';
import type { StateDict } from '../tensor.js';

/** A small seeded PRNG (mulberry32): uniform in [0, 1). */
export function seededUniform(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * A full state dict of random weights. BN running statistics are random too (mean in [-0.1, 0.1], var in
 * [0.5, 1.5]) so that re-parameterization is exercised with non-trivial statistics.
 */
export function randomStateDict(spec: RepVGGSpec, form: WeightForm, seed = 1): StateDict {
  const uniform = seededUniform(seed);
  const state: StateDict = new Map();
  for (const [key, shape] of expectedWeights(spec, form)) {
    const data = new Float32Array(shape.reduce((p, d) => p * d, 1));
    const fanIn = shape.slice(1).reduce((p, d) => p * d, 1);
    const fill = (f: (u: number) => number): void => {
      for (let i = 0; i < data.length; i++) data[i] = f(uniform());
    };
    if (key.endsWith('running_mean')) fill((u) => 0.2 * u - 0.1);
    else if (key.endsWith('running_var')) fill((u) => 0.5 + u);
    else if (shape.length === 1 && (key.includes('bn.') || key.includes('rbr_identity.'))) {
      fill(key.endsWith('weight') ? (u) => 0.5 + 0.5 * u : (u) => 0.2 * u - 0.1);
    } else if (shape.length === 1) fill((u) => 0.1 * (2 * u - 1));
    else {
      const bound = Math.sqrt(6 / fanIn); // Kaiming uniform for ReLU
      fill((u) => bound * (2 * u - 1));
    }
    state.set(key, { shape, data });
  }
  return state;
}
