// Value checks on loaded weights: every element finite, BatchNorm running variances non-negative. Weights with NaN
// or Inf give NaN logits, and a negative variance makes sqrt(var + eps) NaN in the BN fusion, so both are rejected
// at load with the key named. Not for: key or shape checks (weights.ts checkWeights) or inputs (engine.ts).

import { FormatError } from '../errors.js';
import type { StateDict } from '../tensor.js';

/** BatchNorm's running variance: a variance, so never negative (PyTorch stores it as such). */
const RUNNING_VAR_SUFFIX = 'running_var';

/**
 * One pass over every tensor of a state dict (about 30 ms for A0's 8M floats on one core).
 * @param source - the file the state came from, which messages start with.
 * @throws FormatError naming the key, the first bad index and its value, e.g.
 *   `a0.safetensors: tensor 'stage1.0.rbr_dense.bn.running_var' has -0.25 at index 7; expected a variance >= 0`.
 */
export function checkWeightValues(state: StateDict, source: string): void {
  for (const [key, { data }] of state) {
    const isVariance = key.endsWith(RUNNING_VAR_SUFFIX);
    for (let i = 0; i < data.length; i++) {
      const value = data[i] as number;
      // value - value is 0 for every finite value and NaN for NaN and +-Infinity: one comparison per element.
      if (value - value !== 0) {
        throw new FormatError(`${source}: tensor '${key}' has ${value} at index ${i}; expected finite weights`);
      }
      if (isVariance && value < 0) {
        throw new FormatError(`${source}: tensor '${key}' has ${value} at index ${i}; expected a variance >= 0`);
      }
    }
  }
}
