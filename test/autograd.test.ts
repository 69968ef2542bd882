// The autograd tape (lib/autograd/tape.ts) and its differentiable ops (lib/autograd/functions.ts): gradient
// accumulation for a Var used several times, no aliasing between the gradients that add hands to both inputs
// (nor with the caller's seed), backward visiting only the records that lead to the root, the seed scaling the
// loss gradient, and a small composite (conv -> BN -> ReLU -> GAP -> linear -> CE) against float64 finite differences.
// Not for: each native backward op alone (backward.test.ts) or whole training steps (train.test.ts).

import test from 'ava';

import * as F from '../lib/autograd/functions.js';
import { Tape, Var } from '../lib/autograd/tape.js';
import type { HostTensor } from '../lib/tensor.js';
import { conv2dRef, globalAvgPoolRef, linearRef, makeRng, randomArray, reluRef } from './helpers/reference.js';
import { batchNormTrainRef, numericGradient, softmaxCrossEntropyRef } from './helpers/reference-backward.js';
import { OP_FP32, checkClose } from './helpers/tolerances.js';

const tensor = (shape: number[], seed: number, scale = 1): HostTensor => ({
  shape,
  data: randomArray(shape.reduce((p, d) => p * d, 1), makeRng(seed), scale),
});

test('a Var used twice by one op gets the sum of both gradients: add(x, x)', async (t) => {
  const tape = new Tape();
  const x = new Var(tensor([2, 3], 1), true);
  const y = await F.add(tape, x, x);
  const seed = Float32Array.from(randomArray(6, makeRng(2), 1));
  const seedCopy = seed.slice();
  await tape.backward(y, seed);
  t.deepEqual(Array.from(x.grad!), Array.from(seedCopy, (v) => 2 * v));
  t.deepEqual(Array.from(seed), Array.from(seedCopy), "the caller's seed is left as it was");
});

test('a Var used by two ops gets the sum of both paths: relu(x) + sigmoid(x)', async (t) => {
  const tape = new Tape();
  const x = new Var(tensor([2, 2, 3, 3], 3, 2), true);
  const y = await F.add(tape, await F.relu(tape, x), await F.sigmoid(tape, x));
  const seed = randomArray(36, makeRng(4), 1);
  await tape.backward(y, seed);
  const expected = Array.from(x.value.data, (v, i) => {
    const s = 1 / (1 + Math.exp(-v));
    return (seed[i] as number) * ((v > 0 ? 1 : 0) + s * (1 - s));
  });
  checkClose(t, 'd(relu(x) + sigmoid(x))/dx', x.grad!, expected, 1e-6);
});

test('add hands the same gradient to both inputs without aliasing: each input owns its array, the seed is untouched', async (t) => {
  // s = p + q; root = p + s. Reverse order: root's rule gives dy to p and s; then s's rule gives it to p and q.
  // Done naively, p's gradient would be the seed array itself and the second visit would double the seed in place.
  const tape = new Tape();
  const p = new Var(tensor([4], 5), true);
  const q = new Var(tensor([4], 6), true);
  const s = await F.add(tape, p, q);
  const root = await F.add(tape, p, s);
  const seed = Float32Array.of(1, -2, 3, 0.5);
  await tape.backward(root, seed);
  t.deepEqual(Array.from(seed), [1, -2, 3, 0.5], "the caller's seed is left as it was");
  t.deepEqual(Array.from(p.grad!), [2, -4, 6, 1], 'p: both paths');
  t.deepEqual(Array.from(q.grad!), [1, -2, 3, 0.5], 'q: one path');
  t.not(p.grad, q.grad);
  t.not(p.grad, seed);
  t.not(q.grad, seed);
  q.grad![0] = 100;
  t.is(p.grad![0], 2, 'changing one gradient leaves the other');

  // The mirrored order: s = p + q; root = s + p.
  const tape2 = new Tape();
  const a = new Var(tensor([4], 5), true);
  const b = new Var(tensor([4], 6), true);
  const root2 = await F.add(tape2, await F.add(tape2, a, b), a);
  const seed2 = Float32Array.of(1, -2, 3, 0.5);
  await tape2.backward(root2, seed2);
  t.deepEqual(Array.from(seed2), [1, -2, 3, 0.5], "the caller's seed is left as it was (mirrored)");
  t.deepEqual(Array.from(a.grad!), [2, -4, 6, 1]);
  t.deepEqual(Array.from(b.grad!), [1, -2, 3, 0.5]);
  t.not(a.grad, b.grad);
});

test('gradients accumulate across two backward passes until zeroed (PyTorch semantics), without touching either seed', async (t) => {
  const w = new Var(tensor([3], 7), true);
  const other = new Var(tensor([3], 8), false);
  const seeds = [Float32Array.of(1, 2, 3), Float32Array.of(10, 20, 30)];
  for (const seed of seeds) {
    const tape = new Tape();
    await tape.backward(await F.add(tape, w, other), seed);
  }
  t.deepEqual(Array.from(w.grad!), [11, 22, 33]);
  t.deepEqual(Array.from(seeds[0]!), [1, 2, 3], 'first seed untouched');
  t.deepEqual(Array.from(seeds[1]!), [10, 20, 30], 'second seed untouched');
  t.is(other.grad, undefined, 'a Var without requiresGrad gets no gradient');
});

test('backward visits only the records that lead to the root', async (t) => {
  const tape = new Tape();
  const x = new Var(tensor([3], 9), true);
  const calls: string[] = [];
  const op = (name: string, inputs: Var[]): Var =>
    tape.record({ shape: [3], data: new Float32Array(3).fill(1) }, inputs, async (dy) => {
      calls.push(name);
      return inputs.map(() => dy.map((v) => 2 * v));
    });
  const a = op('a', [x]); // leads to the root
  op('side', [x]); // a branch off x that the root does not use
  const root = op('root', [a]);
  op('after', [root]); // recorded after the root: consumes it, not part of its graph
  op('after-side', [a]);
  const constant = new Var({ shape: [3], data: new Float32Array(3) }, false);
  const free = op('constant', [constant]);
  t.false(free.requiresGrad, 'an op on constants needs no gradient');
  await tape.backward(root, Float32Array.of(1, 1, 1));
  t.deepEqual(calls, ['root', 'a'], 'rules run in reverse order, only on the path to the root');
  t.deepEqual(Array.from(x.grad!), [4, 4, 4]);
});

test('the seed scales the softmax cross-entropy gradient', async (t) => {
  const logits = tensor([3, 4], 10, 2);
  const labels = Int32Array.of(0, 3, 1);
  const grads: Float32Array[] = [];
  for (const seed of [undefined, Float32Array.of(2.5)]) {
    const tape = new Tape();
    const z = new Var(logits, true);
    const { loss, value } = await F.softmaxCrossEntropy(tape, z, labels, 0.2);
    t.true(Math.abs(value - softmaxCrossEntropyRef(logits, labels, 0.2).loss) < 1e-6, `loss ${value}`);
    await tape.backward(loss, seed);
    grads.push(z.grad!);
  }
  checkClose(t, 'seed 1 vs reference', grads[0]!, softmaxCrossEntropyRef(logits, labels, 0.2).dlogits.data, 1e-6);
  checkClose(t, 'seed 2.5', grads[1]!, Array.from(grads[0]!, (v) => 2.5 * v), 1e-7);
});

// ---------------------------------------------------------------------------------------------------------------
// A small composite against float64 finite differences

const X_SHAPE = [2, 4, 7, 7];
const W_SHAPE = [6, 2, 3, 3]; // groups 2
const CONV = { stride: 2, pad: 1, groups: 2 };
const CLASSES = 5;
const LABELS = Int32Array.of(1, 4);
const SMOOTHING = 0.1;

interface CompositeInputs {
  x: ArrayLike<number>;
  w: ArrayLike<number>;
  gamma: ArrayLike<number>;
  beta: ArrayLike<number>;
  lw: ArrayLike<number>;
  lb: ArrayLike<number>;
}

/** The float64 reference of conv -> training-mode BN -> ReLU -> GAP -> linear -> mean CE. */
function compositeLossRef(v: CompositeInputs): number {
  const conv = conv2dRef({ data: v.x, shape: X_SHAPE }, { data: v.w, shape: W_SHAPE }, undefined, CONV);
  const bn = batchNormTrainRef(conv, v.gamma, v.beta);
  const pooled = globalAvgPoolRef(reluRef(bn.y));
  const logits = linearRef(pooled, { data: v.lw, shape: [CLASSES, 6] }, v.lb);
  return softmaxCrossEntropyRef(logits, LABELS, SMOOTHING).loss;
}

test('conv -> BN -> ReLU -> GAP -> linear -> CE on the tape: every gradient against float64 finite differences', async (t) => {
  const values: CompositeInputs = {
    x: tensor(X_SHAPE, 11).data,
    w: tensor(W_SHAPE, 12, 0.5).data,
    gamma: Float32Array.from(randomArray(6, makeRng(13), 0.3), (v) => 1 + v),
    beta: tensor([6], 14, 0.3).data,
    lw: tensor([CLASSES, 6], 15, 1).data,
    lb: tensor([CLASSES], 16, 0.1).data,
  };
  const shapes: Record<keyof CompositeInputs, number[]> = { x: X_SHAPE, w: W_SHAPE, gamma: [6], beta: [6], lw: [CLASSES, 6], lb: [CLASSES] };
  const vars = Object.fromEntries(
    Object.entries(values).map(([k, data]) => [k, new Var<HostTensor>({ shape: shapes[k as keyof CompositeInputs], data: Float32Array.from(data) }, true)]),
  ) as Record<keyof CompositeInputs, Var>;

  const tape = new Tape();
  const conv = await F.conv2d(tape, vars.x, vars.w, CONV);
  const { y } = await F.batchNormTrain(tape, conv, vars.gamma, vars.beta, 1e-5);
  const logits = await F.linear(tape, await F.globalAvgPool(tape, await F.relu(tape, y)), vars.lw, vars.lb);
  const { loss, value } = await F.softmaxCrossEntropy(tape, logits, LABELS, SMOOTHING);
  await tape.backward(loss);

  t.true(Math.abs(value - compositeLossRef(values)) <= 1e-5 * Math.abs(value), `loss ${value} vs ${compositeLossRef(values)}`);
  const errors: string[] = [];
  for (const key of Object.keys(values) as (keyof CompositeInputs)[]) {
    const numeric = numericGradient((v) => compositeLossRef({ ...values, [key]: v }), values[key]);
    const ours = vars[key].grad;
    if (!ours) {
      t.fail(`${key}: no gradient`);
      continue;
    }
    // Six float32 ops forward and back against the float64 truth: measured 1.6e-7 at most, so the single-op
    // budget OP_FP32 still leaves 60x headroom, while a dropped term (e.g. BN's path through the batch mean) is 1e-2.
    errors.push(`${key} ${checkClose(t, `d loss / d ${key}`, ours, numeric, OP_FP32).toExponential(1)}`);
    t.true(numeric.some((v) => Math.abs(v) > 1e-4), `${key}: the reference gradient is not all zero`);
  }
  t.log(`max relative error vs finite differences: ${errors.join(', ')}`);
});
