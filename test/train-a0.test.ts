// Full-width RepVGG-A0 training steps against PyTorch float64 (test/fixtures/make_a0_steps_fixtures.py): 64x64,
// batch 8, lr 0.01, momentum 0 and 0.9, three steps in one process the way trainer.ts takes them (recycled tape
// buffers, retained freed memory, cached primitives, momentum carried over). Every step starts from fresh
// generated weights, so each step's update of every parameter and BN running statistic is compared with
// PyTorch's from the same weights. Not for: the tiny-net recipe checks (train.test.ts) or single ops.

import test from 'ava';
import type { ExecutionContext } from 'ava';

import * as F from '../lib/autograd/functions.js';
import { Tape } from '../lib/autograd/tape.js';
import { readSafetensors, type SafetensorsTensor } from '../lib/io/safetensors.js';
import { expectedWeights, validateSpec, type RepVGGSpec } from '../lib/models/repvgg.js';
import { retainFreedMemory } from '../lib/ops/alloc.js';
import type { HostTensor } from '../lib/tensor.js';
import { TrainableRepVGG } from '../lib/train/model.js';
import { SGD } from '../lib/train/optimizer.js';
import { fixtureKindOf, fixturePath, fixtureTensor, float32BitsSum } from './helpers/fixture-weights.js';
import { A0_STEP_UPDATE, MODEL_FP32 } from './helpers/tolerances.js';

interface StepsRecipe {
  batch: number;
  size: number;
  steps: number;
  lr: number;
  inputKey: string;
  cases: { name: string; momentum: number }[];
}

interface StepsFixture {
  spec: RepVGGSpec;
  recipe: StepsRecipe;
  inputBitsSum: number;
  labels: Int32Array;
  tensors: Map<string, SafetensorsTensor>;
}

const fixture: Promise<StepsFixture> = (async () => {
  const { tensors, metadata } = await readSafetensors(fixturePath('a0_steps.safetensors'));
  return {
    spec: validateSpec(JSON.parse(metadata.spec!) as RepVGGSpec),
    recipe: JSON.parse(metadata.recipe!) as StepsRecipe,
    inputBitsSum: Number(metadata.inputBitsSum),
    labels: Int32Array.from(tensors.get('labels')!.data as BigInt64Array, (v) => Number(v)),
    tensors,
  };
})();

function fixtureArray(fx: StepsFixture, key: string): Float64Array {
  const t = fx.tensors.get(key);
  if (!t) throw new Error(`a0_steps.safetensors has no tensor ${key}`);
  return Float64Array.from(t.data as ArrayLike<number | bigint>, (v) => Number(v)); // sample indices are int64
}

/** Sets every parameter and running statistic to the generated value the fixture used before `step`; returns copies. */
function setStepWeights(model: TrainableRepVGG, step: number): Map<string, Float32Array> {
  const start = new Map<string, Float32Array>();
  for (const [key, shape] of expectedWeights(model.spec, 'train')) {
    const value = fixtureTensor(`a0_steps.${step}.${key}`, shape, fixtureKindOf(key)).data;
    (model.buffers.get(key) ?? model.params.get(key)!.value).data.set(value);
    start.set(key, value);
  }
  return start;
}

/** ||a - b|| / ||b|| over the elements of b (a at `indices` when given). */
function relativeL2(a: Float64Array, b: Float64Array, indices?: Float64Array): number {
  let diff = 0;
  let norm = 0;
  for (let i = 0; i < b.length; i++) {
    const ours = a[indices === undefined ? i : (indices[i] as number)] as number;
    diff += (ours - (b[i] as number)) ** 2;
    norm += (b[i] as number) ** 2;
  }
  return Math.sqrt(diff) / Math.sqrt(norm);
}

function l2(a: Float64Array): number {
  return Math.sqrt(a.reduce((s, v) => s + v * v, 0));
}

/** Per tensor: relative L2 error of our update against the reference update (at the stored samples for large ones). */
function updateErrors(fx: StepsFixture, caseName: string, step: number, ours: Map<string, Float64Array>): Map<string, number> {
  const errors = new Map<string, number>();
  for (const [key, update] of ours) {
    const ref = fixtureArray(fx, `${caseName}.${step}.${key}`);
    if (!fx.tensors.has(`sample.${key}`)) {
      errors.set(key, relativeL2(update, ref));
      continue;
    }
    // Large tensors: the sampled values, and the L2 norm of the whole update against the stored one.
    const refNorm = fixtureArray(fx, `${caseName}.${step}.${key}.stats`)[1] as number; // stats: max |update|, L2 norm
    const normError = Math.abs(l2(update) - refNorm) / refNorm;
    errors.set(key, Math.max(relativeL2(update, ref, fixtureArray(fx, `sample.${key}`)), normError));
  }
  return errors;
}

/** One training step as trainer.ts takes it; returns the loss and every tensor's update (new - start). */
async function trainerStep(
  model: TrainableRepVGG, optimizer: SGD, images: HostTensor, labels: Int32Array, lr: number, start: Map<string, Float32Array>,
): Promise<{ loss: number; updates: Map<string, Float64Array> }> {
  const tape = new Tape();
  optimizer.zeroGrad();
  const logits = await model.forward(tape, images);
  const { loss, value } = await F.softmaxCrossEntropy(tape, logits, labels, 0);
  await tape.backward(loss);
  await optimizer.step(lr);
  tape.recycle();
  const updates = new Map<string, Float64Array>();
  for (const [key, { data }] of model.stateDict()) {
    const before = start.get(key)!;
    updates.set(key, Float64Array.from(data, (v, i) => v - (before[i] as number)));
  }
  return { loss: value, updates };
}

function worstOf(errors: Map<string, number>): { key: string; error: number } {
  let worst = { key: '', error: 0 };
  for (const [key, error] of errors) if (!(error <= worst.error)) worst = { key, error };
  return worst;
}

async function runCase(t: ExecutionContext, caseName: string): Promise<Map<string, Float64Array>[]> {
  const fx = await fixture;
  const r = fx.recipe;
  const momentum = r.cases.find((c) => c.name === caseName)!.momentum;
  const input = fixtureTensor(r.inputKey, [r.steps * r.batch, 3, r.size, r.size], 'input');
  t.is(float32BitsSum(input.data), fx.inputBitsSum, 'the generated input is the fixture generator\'s, bit for bit');
  retainFreedMemory(); // as train() does: freed native memory is reused, so stale contents would show
  const model = TrainableRepVGG.init(fx.spec, 1);
  const optimizer = new SGD(model.params, { momentum, nesterov: false, weightDecay: 0, customL2: false });
  const refLosses = fixtureArray(fx, `${caseName}.loss`);
  const imageSize = 3 * r.size * r.size;
  const allUpdates: Map<string, Float64Array>[] = [];
  for (let step = 0; step < r.steps; step++) {
    const start = setStepWeights(model, step);
    const images = { shape: [r.batch, 3, r.size, r.size], data: input.data.slice(step * r.batch * imageSize, (step + 1) * r.batch * imageSize) };
    const { loss, updates } = await trainerStep(model, optimizer, images, fx.labels.slice(step * r.batch, (step + 1) * r.batch), r.lr, start);
    const refLoss = refLosses[step] as number;
    t.true(Math.abs(loss - refLoss) <= MODEL_FP32 * Math.abs(refLoss), `step ${step + 1}: loss ${loss} vs PyTorch ${refLoss}`);
    const errors = updateErrors(fx, caseName, step, updates);
    t.is(errors.size, expectedWeights(fx.spec, 'train').size, 'every parameter and running statistic is compared');
    for (const [key, error] of errors) {
      t.true(error <= A0_STEP_UPDATE, `step ${step + 1}: ${key} update differs from PyTorch by ${error.toExponential(2)} (relative L2)`);
    }
    const worst = worstOf(errors);
    t.log(`${caseName} step ${step + 1}: loss ${loss.toFixed(6)}, worst update ${worst.key} ${worst.error.toExponential(2)}`);
    allUpdates.push(updates);
  }
  return allUpdates;
}

test.serial('A0 64x64, batch 8, SGD without momentum: three steps reproduce PyTorch\'s update of every tensor', async (t) => {
  const updates = await runCase(t, 'sgd');
  // The comparison can fail: step 3's updates against the momentum case's reference (0.9 x the carried buffer
  // added) are far outside the tolerance.
  const fx = await fixture;
  const mixed = worstOf(updateErrors(fx, 'momentum', 2, updates[2]!));
  t.true(mixed.error > 10 * A0_STEP_UPDATE, `sgd updates vs the momentum reference: ${mixed.key} ${mixed.error.toExponential(2)}`);
});

test.serial('A0 64x64, batch 8, SGD with momentum 0.9: three steps reproduce PyTorch\'s update of every tensor', async (t) => {
  await runCase(t, 'momentum');
});
