// Host tensor helpers of lib/tensor.ts: topIndices against a stable full sort, on random rows with ties, for every
// kind of k (0, small, the selection's limit, above it, above the row's length).
// Not for: tensor files (io.test.ts) or the server's classification output (serve.test.ts).

import test from 'ava';

import { topIndices } from '../lib/tensor.js';
import { makeRng } from './helpers/reference.js';

/** The reference: every index sorted by value, largest first, equal values in index order (Array.sort is stable). */
function sortedIndices(row: Float32Array, k: number): number[] {
  return Array.from(row.keys()).sort((a, b) => (row[b] as number) - (row[a] as number)).slice(0, Math.max(0, k));
}

test('topIndices equals a stable descending sort, ties in index order', (t) => {
  const rng = makeRng(4242);
  let ties = 0;
  for (const length of [1, 7, 1000]) {
    for (let trial = 0; trial < 20; trial++) {
      // Values on a coarse grid: many exact ties, so their order is checked too.
      const row = Float32Array.from({ length }, () => Math.round(rng() * 40) / 8 - 2.5);
      ties += row.length - new Set(row).size;
      for (const k of [0, 1, 2, 5, 64, 65, 200, length, length + 3]) {
        t.deepEqual(topIndices(row, k), sortedIndices(row, k), `length ${length}, trial ${trial}, k ${k}`);
      }
    }
  }
  t.true(ties > 1000, `rows with ties were tested (${ties} tied values)`);
  t.deepEqual(topIndices(Float32Array.of(0.1, 0.7, 0.2), 2), [1, 2]);
  t.deepEqual(topIndices(Float32Array.of(3, 3, 1, 3), 2), [0, 1], 'equal values: lower index first');
});
