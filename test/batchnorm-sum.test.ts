// batchNormSum / batchNormSumBackward, the fused branch sum of a RepVGG block on the CPU: against the float64
// reference, bit for bit against the separate ops it replaces (batchNormTrain per branch, add, the ReLU), every
// rejected argument, and whole training steps with and without it (the same bits), so CPU training is unchanged.
// Not for: the single batch-norm ops (backward.test.ts) or training against PyTorch (train.test.ts).

import test from 'ava';
import type { ExecutionContext } from 'ava';

import { cpuBackend } from '../lib/autograd/cpu-backend.js';
import { ArgumentValueError, ShapeError } from '../lib/errors.js';
import { customSpec } from '../lib/models/repvgg.js';
import {
  add,
  batchNormBackward,
  batchNormSum,
  batchNormSumBackward,
  batchNormTrain,
  reluBackward,
  toLayout,
  type BatchNormSumBranch,
} from '../lib/ops/index.js';
import type { HostTensor } from '../lib/tensor.js';
import { TrainableRepVGG } from '../lib/train/model.js';
import { SGD } from '../lib/train/optimizer.js';
import { batchNormBackwardRef, batchNormTrainRef } from './helpers/reference-backward.js';
import { makeRng, randomArray } from './helpers/reference.js';
import { trainStep } from './helpers/train-fixture.js';
import { OP_FP32, checkClose } from './helpers/tolerances.js';

/** Seeded random NCHW tensor with values in [offset - scale, offset + scale]. */
function randomTensor(shape: readonly number[], seed: number, scale = 1, offset = 0): HostTensor {
  const data = randomArray(shape.reduce((p, d) => p * d, 1), makeRng(seed), scale);
  for (let i = 0; i < data.length; i++) data[i] = (data[i] as number) + offset;
  return { shape: [...shape], data };
}

/** Seeded random branches, NHWC, each with its own mean offset, and their NCHW originals for the reference. */
function randomBranches(shape: readonly [number, number, number, number], count: number, seed: number) {
  const channels = shape[1];
  const plain = Array.from({ length: count }, (_, k) => randomTensor(shape, seed + 10 * k, 2, k - 1));
  const branches: BatchNormSumBranch[] = plain.map((x, k) => ({
    x: toLayout(x, 'nhwc'),
    gamma: randomTensor([channels], seed + 10 * k + 1, 0.5, 1),
    beta: randomTensor([channels], seed + 10 * k + 2, 0.5),
  }));
  return { plain, branches };
}

/** Equal as numbers (0 and -0 are equal; NaN equals NaN): what "the same result" means for float outputs. */
function assertSameValues(t: ExecutionContext, label: string, ours: Float32Array, theirs: Float32Array): void {
  t.is(ours.length, theirs.length, `${label}: length`);
  let differing = 0;
  for (let i = 0; i < ours.length; i++) {
    const [a, b] = [ours[i] as number, theirs[i] as number];
    if (a !== b && !(Number.isNaN(a) && Number.isNaN(b))) differing++;
  }
  t.is(differing, 0, `${label}: ${differing} of ${ours.length} values differ from the separate ops`);
}

const cases: { name: string; shape: [number, number, number, number]; branches: number; relu: boolean }[] = [
  { name: '3 branches, ReLU, [4, 37, 5, 7] (odd channels)', shape: [4, 37, 5, 7], branches: 3, relu: true },
  { name: '2 branches, ReLU, [16, 48, 14, 14] (many row blocks)', shape: [16, 48, 14, 14], branches: 2, relu: true },
  { name: '3 branches, no ReLU, [8, 192, 4, 4] (an SE block)', shape: [8, 192, 4, 4], branches: 3, relu: false },
  { name: '3 branches, ReLU, [2, 2100, 2, 2] (two column chunks)', shape: [2, 2100, 2, 2], branches: 3, relu: true },
  { name: '1 branch, ReLU, [3, 5, 1, 1]', shape: [3, 5, 1, 1], branches: 1, relu: true },
];

cases.forEach((c, index) => {
  test(`batchNormSum ${c.name}: matches the float64 reference and the separate ops bit for bit`, async (t) => {
    const seed = 7000 + 100 * index;
    const { plain, branches } = randomBranches(c.shape, c.branches, seed);
    const dyPlain = randomTensor(c.shape, seed + 99);
    const dy = toLayout(dyPlain, 'nhwc');
    const { y, stats } = await batchNormSum(branches, { relu: c.relu });

    // Float64 reference: relu?(sum of BN_k(x_k)); the gradient masked by OUR y (the tape hands the op its own output).
    const refs = plain.map((x, k) => batchNormTrainRef(x, branches[k]!.gamma.data, branches[k]!.beta.data));
    const refY = new Float64Array(y.data.length);
    for (const r of refs) for (let i = 0; i < refY.length; i++) refY[i] = (refY[i] as number) + (r.y.data[i] as number);
    if (c.relu) for (let i = 0; i < refY.length; i++) refY[i] = Math.max(refY[i] as number, 0);
    const yPlain = toLayout(y, 'nchw').data;
    checkClose(t, 'y', yPlain, refY, OP_FP32);
    stats.forEach((s, k) => {
      checkClose(t, `mean ${k}`, s.mean.data, refs[k]!.mean, OP_FP32);
      checkClose(t, `var ${k}`, s.var.data, refs[k]!.var, OP_FP32);
    });
    const masked = Float64Array.from(dyPlain.data, (g, i) => (!c.relu || (yPlain[i] as number) > 0 ? g : 0));
    const grads = await batchNormSumBackward(
      branches.map((b, k) => ({ x: b.x, gamma: b.gamma, mean: stats[k]!.mean, var: stats[k]!.var })), y, dy, { relu: c.relu },
    );
    grads.forEach((g, k) => {
      const ref = batchNormBackwardRef(plain[k]!, { data: masked, shape: c.shape }, branches[k]!.gamma.data, stats[k]!.mean.data, stats[k]!.var.data);
      checkClose(t, `dx ${k}`, toLayout(g.dx, 'nchw').data, ref.dx.data, OP_FP32);
      checkClose(t, `dgamma ${k}`, g.dgamma.data, ref.dgamma, OP_FP32);
      checkClose(t, `dbeta ${k}`, g.dbeta.data, ref.dbeta, OP_FP32);
    });
    if (c.relu) t.true(masked.some((g) => g === 0) && masked.some((g) => g !== 0), 'the ReLU masks some gradients and passes others');

    // The separate ops, in the order the training tape ran them before this op existed.
    const separate = await Promise.all(branches.map((b) => batchNormTrain(b.x, b.gamma, b.beta)));
    let sum = separate[0]!.y;
    for (let k = 1; k < separate.length; k++) sum = await add(sum, separate[k]!.y, { relu: c.relu && k === separate.length - 1 });
    if (c.relu && separate.length === 1) sum = { ...sum, data: sum.data.map((v) => Math.max(v, 0)) };
    assertSameValues(t, 'y', y.data, sum.data);
    separate.forEach((s, k) => {
      assertSameValues(t, `mean ${k}`, stats[k]!.mean.data, s.mean.data);
      assertSameValues(t, `var ${k}`, stats[k]!.var.data, s.var.data);
    });
    const g = c.relu ? await reluBackward(y, dy) : dy;
    for (const [k, b] of branches.entries()) {
      const single = await batchNormBackward(b.x, g, b.gamma, separate[k]!.mean, separate[k]!.var);
      assertSameValues(t, `dx ${k}`, grads[k]!.dx.data, single.dx.data);
      assertSameValues(t, `dgamma ${k}`, grads[k]!.dgamma.data, single.dgamma.data);
      assertSameValues(t, `dbeta ${k}`, grads[k]!.dbeta.data, single.dbeta.data);
    }
  });
});

test('batchNormSum statistics of a branch far from zero (mean 1000, spread 0.01, many row blocks) match the float64 reference', async (t) => {
  const shape = [16, 24, 14, 14] as const;
  const plain = randomTensor(shape, 7800, 0.01, 1000);
  const gamma = randomTensor([24], 7801, 0.5, 1);
  const beta = randomTensor([24], 7802, 0.5);
  const ref = batchNormTrainRef(plain, gamma.data, beta.data);
  // The case is a hard one: E[x^2] - E[x]^2 summed in float32 (channel 0 here) is far off the variance.
  let sum = 0;
  let sumSquares = 0;
  for (let i = 0; i < plain.data.length; i += 24 * 14 * 14) {
    for (let s = 0; s < 14 * 14; s++) {
      const v = plain.data[i + s] as number;
      sum = Math.fround(sum + v);
      sumSquares = Math.fround(sumSquares + Math.fround(v * v));
    }
  }
  const count = 16 * 14 * 14;
  const naiveVar = sumSquares / count - (sum / count) ** 2;
  t.true(Math.abs(naiveVar - (ref.var[0] as number)) > (ref.var[0] as number), `float32 E[x^2] - E[x]^2: ${naiveVar} vs ${ref.var[0]}`);

  // Only the statistics: y = scale * x + shift itself cancels here (scale * x ~ 1.7e5 in float32).
  const { stats } = await batchNormSum([{ x: toLayout(plain, 'nhwc'), gamma, beta }], { relu: false });
  checkClose(t, 'mean', stats[0]!.mean.data, ref.mean, OP_FP32);
  checkClose(t, 'var', stats[0]!.var.data, ref.var, OP_FP32);
});

test('batchNormSum refuses bad branches by name, with what it received', async (t) => {
  const { branches } = randomBranches([2, 4, 3, 3], 3, 7900);
  const nchw = { ...branches[1]!, x: randomTensor([2, 4, 3, 3], 7950) };
  const refused = async (what: unknown, expected: typeof ShapeError | typeof ArgumentValueError, pattern: RegExp): Promise<void> => {
    const error = await t.throwsAsync(batchNormSum(what as BatchNormSumBranch[]), { instanceOf: expected });
    t.regex(error?.message ?? '', pattern);
  };
  await refused([], ArgumentValueError, /1 to 3 branches but received/);
  await refused([...branches, branches[0]], ArgumentValueError, /1 to 3 branches/);
  await refused([branches[0], nchw], ArgumentValueError, /branches\[1\]\.x in layout 'nhwc' but received 'nchw'/);
  await refused([branches[0], { ...branches[1]!, x: toLayout(randomTensor([2, 4, 3, 5], 7951), 'nhwc') }], ShapeError, /branches\[1\]\.x.*\[2, 4, 3, 3\]/);
  await refused([branches[0], { ...branches[1]!, gamma: randomTensor([5], 7952) }], ShapeError, /branches\[1\]\.gamma/);
  await refused([{ ...branches[0]!, x: toLayout(randomTensor([1, 4, 1, 1], 7953), 'nhwc') }], ShapeError, /more than 1 value per channel/);
  const { y, stats } = await batchNormSum(branches, { relu: true });
  const gradBranches = branches.map((b, k) => ({ x: b.x, gamma: b.gamma, mean: stats[k]!.mean, var: stats[k]!.var }));
  await t.throwsAsync(batchNormSumBackward(gradBranches, y, randomTensor([2, 4, 3, 3], 7954)), { instanceOf: ArgumentValueError, message: /dy in the layout of y/ });
  await t.throwsAsync(batchNormSumBackward(gradBranches, y, toLayout(randomTensor([2, 4, 3, 2], 7955), 'nhwc')), { instanceOf: ShapeError, message: /dy/ });
  await t.throwsAsync(batchNormSum(branches, { eps: 0 }), { instanceOf: ArgumentValueError, message: /eps/ });
});

test('training steps with the fused branch sum give the same bits as with the separate ops (identity and SE blocks)', async (t) => {
  const spec = customSpec({
    arch: 'bnsum-test', inChannels: 3, numClasses: 5, stemChannels: 8, stemStride: 1,
    stageChannels: [8, 8, 16, 16], stageDepths: [2, 1, 2, 1], stageStrides: [1, 2, 1, 2], seReduction: 4,
  });
  const plainSpec = { ...spec, seReduction: 0 };
  const images = randomTensor([6, 3, 12, 12], 8000);
  const labels = Int32Array.from([0, 1, 2, 3, 4, 1]);
  const recipe = { lr: 0.1, labelSmoothing: 0.1, customL2: false, weightDecay: 1e-4 };
  const { batchNormSum: _fused, batchNormSumBackward: _fusedBackward, ...separateOps } = cpuBackend;
  for (const s of [plainSpec, spec]) {
    const init = TrainableRepVGG.init(s, 3).stateDict();
    const runs = [];
    for (const backend of [cpuBackend, separateOps]) {
      const model = await TrainableRepVGG.onBackend(backend, s, init);
      const optimizer = new SGD(model.params, { momentum: 0.9, nesterov: true, weightDecay: recipe.weightDecay, customL2: false }, backend);
      const losses = [];
      for (let step = 0; step < 3; step++) losses.push((await trainStep(model, optimizer, images, labels, recipe)).ce);
      runs.push({ losses, state: await model.hostStateDict() });
    }
    const [fused, separate] = runs as [(typeof runs)[0], (typeof runs)[0]];
    const label = s.seReduction > 0 ? 'SE' : 'plain';
    t.deepEqual(fused.losses, separate.losses, `${label}: losses`);
    t.true(fused.losses[2]! < fused.losses[0]!, `${label}: the loss went down (${fused.losses.join(', ')})`);
    let changed = 0;
    for (const [key, value] of separate.state) {
      assertSameValues(t, `${label} ${key}`, fused.state.get(key)!.data, value.data);
      if (value.data.some((v, i) => v !== init.get(key)!.data[i])) changed++;
    }
    t.true(changed >= separate.state.size - 2, `${label}: ${changed} of ${separate.state.size} tensors changed in training`);
  }
});
