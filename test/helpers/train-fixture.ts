// The PyTorch training fixtures (make_train_fixtures.py: three float64 SGD steps of tiny RepVGG / QARepVGG
// networks), one training step as the trainer takes it on any backend, and the check that a trained state
// reproduces a fixture, shared by the CPU (train.test.ts) and CUDA (cuda-training.test.ts) training tests.
// Not for: the tolerances (tolerances.ts) or the fixtures' generation (test/fixtures/).

import type { ExecutionContext } from 'ava';

import * as F from '../../lib/autograd/functions.js';
import { Tape } from '../../lib/autograd/tape.js';
import { readSafetensors } from '../../lib/io/safetensors.js';
import { validateSpec, type RepVGGSpec } from '../../lib/models/repvgg.js';
import type { HostTensor, StateDict } from '../../lib/tensor.js';
import type { TrainableRepVGG } from '../../lib/train/model.js';
import { SGD, addCustomL2 } from '../../lib/train/optimizer.js';
import { fixturePath, fixtureStateDict, fixtureTensor } from './fixture-weights.js';
import { maxRelativeError } from './reference.js';

type Shaped = { readonly shape: readonly number[] };

export interface TrainFixture {
  spec: RepVGGSpec;
  recipe: { lr: number; steps: number; momentum: number; nesterov: boolean; weightDecay: number; labelSmoothing: number; customL2: boolean; inputKey: string };
  loss: Float64Array;
  ceLoss: Float64Array;
  final: Map<string, Float64Array>;
  input: HostTensor;
  labels: Int32Array;
}

/** The fixtures make_train_fixtures.py writes: plain SGD with momentum, the custom L2 with Nesterov, QARepVGG blocks. */
export const TRAIN_FIXTURES = ['sgd', 'custom_l2', 'qa'] as const;

/** What training changed: values - start, in float64. */
export function delta(values: ArrayLike<number>, start: ArrayLike<number>): Float64Array {
  return Float64Array.from(values as ArrayLike<number>, (v, i) => v - (start[i] as number));
}

/**
 * How far a tensor's change in training differs from a reference's change from the same start: maxRelativeError of
 * the two deltas (the changes are 10..1000x smaller than the weights, and what a wrong gradient alters).
 */
export function changeError(ours: ArrayLike<number>, ref: ArrayLike<number>, start: ArrayLike<number>): number {
  return maxRelativeError(delta(ours, start), delta(ref, start));
}

export async function readTrainFixture(name: string): Promise<TrainFixture> {
  const { tensors, metadata } = await readSafetensors(fixturePath(`train_tiny.${name}.safetensors`));
  const get = (key: string): ArrayLike<number | bigint> => {
    const t = tensors.get(key);
    if (!t) throw new Error(`fixture ${name} has no tensor ${key}`);
    return t.data as ArrayLike<number | bigint>;
  };
  const final = new Map<string, Float64Array>();
  for (const [key, t] of tensors) if (key.startsWith('final.')) final.set(key.slice('final.'.length), t.data as Float64Array);
  const input = tensors.get('input')!;
  return {
    spec: validateSpec(JSON.parse(metadata.spec!) as RepVGGSpec),
    recipe: JSON.parse(metadata.recipe!) as TrainFixture['recipe'],
    loss: get('loss') as Float64Array,
    ceLoss: get('ce_loss') as Float64Array,
    final,
    input: { shape: input.shape, data: input.data as Float32Array },
    labels: Int32Array.from(get('labels') as BigInt64Array, (v) => Number(v)),
  };
}

/** One training step as trainer.ts takes it; returns CE loss and the custom L2 term. */
export async function trainStep<V extends Shaped, G>(
  model: TrainableRepVGG<V, G>,
  optimizer: SGD<V, G>,
  images: HostTensor,
  labels: Int32Array,
  o: { lr: number; labelSmoothing: number; customL2: boolean; weightDecay: number },
): Promise<{ ce: number; l2: number }> {
  const tape = new Tape(model.backend);
  optimizer.zeroGrad();
  const logits = await model.forward(tape, images);
  const { loss, value } = await F.softmaxCrossEntropy(tape, logits, labels, o.labelSmoothing);
  await tape.backward(loss);
  const l2 = o.customL2 ? await addCustomL2(model.spec, model.params, model.buffers, o.weightDecay, model.backend) : 0;
  await optimizer.step(o.lr);
  tape.recycle();
  return { ce: value, l2 };
}


/**
 * Runs a fixture's steps on `model` (built from fixtureStateDict(fx.spec) on any backend) and checks the losses and
 * every tensor's change (final - init) against PyTorch's within `tolerance` (see TRAIN_STEPS). Returns a log line.
 */
export async function checkFixtureSteps<V extends Shaped, G>(
  t: ExecutionContext, name: string, fx: TrainFixture, model: TrainableRepVGG<V, G>, tolerance: number,
): Promise<string> {
  const r = fx.recipe;
  // The fixture's input is the generator's 'train_input' tensor: checks the TS twin, bit for bit.
  const input = fixtureTensor(r.inputKey, fx.input.shape, 'input');
  t.deepEqual(Array.from(input.data), Array.from(fx.input.data), 'fixture input differs from fixtureTensor');
  const init = fixtureStateDict(fx.spec);
  const optimizer = new SGD(model.params, { momentum: r.momentum, nesterov: r.nesterov, weightDecay: r.weightDecay, customL2: r.customL2 }, model.backend);
  const losses: number[] = [];
  const ceLosses: number[] = [];
  for (let step = 0; step < r.steps; step++) {
    const { ce, l2 } = await trainStep(model, optimizer, input, fx.labels, r);
    losses.push(ce + l2);
    ceLosses.push(ce);
  }
  const lossError = maxRelativeError(losses, fx.loss);
  t.true(lossError <= tolerance, `losses ${losses.join(', ')} vs PyTorch ${Array.from(fx.loss).join(', ')}: ${lossError.toExponential(2)}`);
  t.true(maxRelativeError(ceLosses, fx.ceLoss) <= tolerance, 'cross-entropy part of the loss');
  if (r.customL2) t.true(Math.abs(losses[0]! - ceLosses[0]!) > 1e-3, 'the custom L2 term is not negligible');

  // Compare what training changed (final - init) per tensor: the change is what a wrong gradient, decay or
  // momentum alters, and it is 10..1000x smaller than the weights themselves.
  const state = await model.hostStateDict();
  t.is(state.size, fx.final.size, 'tensor count');
  let worst = { key: '', error: 0 };
  let worstWeight = 0;
  let unchanged = 0;
  for (const [key, ours] of state) {
    const ref = fx.final.get(key);
    if (!ref) {
      t.fail(`fixture lacks ${key}`);
      continue;
    }
    const start = init.get(key)!.data;
    const ourDelta = delta(ours.data, start);
    const refDelta = delta(ref, start);
    if (name === 'qa' && key.endsWith('.rbr_dense.bn.bias')) {
      // A zero gradient in exact arithmetic: the 3x3 branch's BN shift is cancelled by the BN after the sum (batch
      // statistics). PyTorch's change is float64 noise, ours must be float32 noise; a relative match of noise
      // means nothing.
      t.true(refDelta.every((v) => Math.abs(v) < 1e-12) && ourDelta.every((v) => Math.abs(v) < 1e-6), `${key} stays where it started`);
      continue;
    }
    if (refDelta.every((v) => v === 0)) unchanged++;
    const error = maxRelativeError(ourDelta, refDelta);
    if (error > worst.error) worst = { key, error };
    worstWeight = Math.max(worstWeight, maxRelativeError(ours.data, ref));
    t.true(error <= tolerance, `${key}: change differs from PyTorch by ${error.toExponential(2)} (relative to its max)`);
  }
  t.is(unchanged, 0, 'every tensor (parameters and running statistics) moves in the fixture');
  return `${name}: losses rel. error ${lossError.toExponential(2)}; worst tensor change ${worst.key} ${worst.error.toExponential(2)}; worst final weight ${worstWeight.toExponential(2)}`;
}
