// NHWC ('channels last') activations in the single-op API (lib/ops/layout.ts): every op that takes a 4-D
// activation, run on NHWC data, against the float64 references of the NCHW ops (test/ops.test.ts and
// test/backward.test.ts check those paths); outputs keep the input's layout; mismatched layouts are refused; the
// autograd tape (which runs NHWC from the first conv on) converts an NCHW operand of add.
// Not for: NCHW numerics (ops.test.ts, backward.test.ts).

import test from 'ava';
import type { ExecutionContext } from 'ava';

import * as F from '../lib/autograd/functions.js';
import { Tape, Var } from '../lib/autograd/tape.js';
import { ArgumentValueError } from '../lib/errors.js';
import {
  add,
  addInPlaceSync,
  batchNormBackwardSync,
  batchNormSync,
  batchNormTrainSync,
  channelScaleBackwardSync,
  channelScaleSync,
  conv2dBackwardSync,
  conv2dSync,
  globalAvgPoolBackwardSync,
  globalAvgPoolSync,
  layoutOf,
  relu,
  reluBackwardSync,
  toLayout,
  type Layout,
} from '../lib/ops/index.js';
import type { HostTensor } from '../lib/tensor.js';
import { batchNormRef, conv2dRef, globalAvgPoolRef, makeRng, randomArray, randomBnStats } from './helpers/reference.js';
import type { ConvOptions, RefTensor } from './helpers/reference.js';
import {
  batchNormBackwardRef,
  batchNormTrainRef,
  channelScaleBackwardRef,
  channelScaleRef,
  conv2dBackwardRef,
  globalAvgPoolBackwardRef,
} from './helpers/reference-backward.js';
import { OP_FP32, checkClose } from './helpers/tolerances.js';

function randomTensor(shape: readonly number[], seed: number, scale = 1, offset = 0): HostTensor {
  const data = randomArray(shape.reduce((p, d) => p * d, 1), makeRng(seed), scale);
  if (offset !== 0) for (let i = 0; i < data.length; i++) data[i] = (data[i] as number) + offset;
  return { shape: [...shape], data };
}

const nhwc = (t: HostTensor): HostTensor => toLayout(t, 'nhwc');

/** Checks ours (any layout) against an NCHW reference, and that ours has the expected layout. */
function checkAgainst(t: ExecutionContext, label: string, ours: HostTensor | undefined, ref: RefTensor, layout: Layout): void {
  if (ours === undefined) {
    t.fail(`${label}: missing`);
    return;
  }
  t.is(layoutOf(ours), layout, `${label}: layout`);
  t.deepEqual([...ours.shape], [...ref.shape], `${label}: shape`);
  checkClose(t, label, toLayout(ours, 'nchw').data, ref.data, OP_FP32);
}

test('toLayout round-trips and puts channels last', (t) => {
  const x = randomTensor([2, 3, 4, 5], 1);
  const y = nhwc(x);
  t.is(layoutOf(y), 'nhwc');
  t.deepEqual([...y.shape], [2, 3, 4, 5]);
  // element (n=1, c=2, h=3, w=4) sits at ((1*4 + 3)*5 + 4)*3 + 2 in NHWC
  t.is(y.data[((1 * 4 + 3) * 5 + 4) * 3 + 2], x.data[((1 * 3 + 2) * 4 + 3) * 5 + 4]);
  t.deepEqual(toLayout(y, 'nchw').data, x.data);
  t.is(toLayout(x, 'nchw'), x);
  t.is(layoutOf(x), 'nchw');
});

const convCases: { name: string; x: [number, number, number, number]; o: number; k: number; conv: ConvOptions }[] = [
  { name: '3x3 pad 1, 16 -> 16', x: [3, 16, 9, 7], o: 16, k: 3, conv: { stride: 1, pad: 1, groups: 1 } },
  { name: '3x3 stride 2, 8 -> 24', x: [2, 8, 11, 10], o: 24, k: 3, conv: { stride: 2, pad: 1, groups: 1 } },
  { name: '1x1 stride 2, 16 -> 32', x: [2, 16, 7, 7], o: 32, k: 1, conv: { stride: 2, pad: 0, groups: 1 } },
  { name: '3x3 groups 4, 16 -> 32', x: [2, 16, 6, 6], o: 32, k: 3, conv: { stride: 1, pad: 1, groups: 4 } },
  { name: '3x3 on 1 channel (network input)', x: [4, 1, 12, 12], o: 16, k: 3, conv: { stride: 1, pad: 1, groups: 1 } },
  { name: '3x3 stride 2 on 3 channels (network input)', x: [2, 3, 10, 10], o: 16, k: 3, conv: { stride: 2, pad: 1, groups: 1 } },
];

convCases.forEach((c, index) => {
  test(`conv2d and conv2dBackward ${c.name}: every combination of NCHW and NHWC matches the float64 reference`, (t) => {
    const seed = 100 + 10 * index;
    const x = randomTensor(c.x, seed);
    const w = randomTensor([c.o, c.x[1] / c.conv.groups, c.k, c.k], seed + 1, 0.5);
    const y = conv2dRef(x, w, undefined, c.conv);
    const dy = randomTensor(y.shape, seed + 2);
    const ref = conv2dBackwardRef(x, w, dy, c.conv);
    for (const xLayout of ['nchw', 'nhwc'] as const) {
      const xin = toLayout(x, xLayout);
      for (const yLayout of ['nchw', 'nhwc'] as const) {
        checkAgainst(t, `y (x ${xLayout} -> ${yLayout})`, conv2dSync(xin, w, { ...c.conv, layout: yLayout }), y, yLayout);
        const grads = conv2dBackwardSync(xin, w, toLayout(dy, yLayout), c.conv);
        checkAgainst(t, `dx (x ${xLayout}, dy ${yLayout})`, grads.dx, ref.dx, xLayout);
        checkClose(t, `dweight (x ${xLayout}, dy ${yLayout})`, grads.dweight.data, ref.dweight.data, OP_FP32);
      }
      // Without a layout option the output follows x.
      t.is(layoutOf(conv2dSync(xin, w, c.conv)), xLayout);
    }
  });
});

// Planes of 1 to 80 values: NHWC always runs the column loops; the widths cover the 64-, 16- and 1-column tiles.
const bnShapes: [number, number, number, number][] = [
  [4, 3, 5, 7],
  [3, 80, 3, 3],
  [16, 32, 14, 14],
  [8, 16, 1, 1],
  [2, 5, 9, 9],
];

bnShapes.forEach((shape, index) => {
  test(`batchNormTrain, batchNormBackward and batchNorm on NHWC ${JSON.stringify(shape)} match the float64 reference`, (t) => {
    const seed = 300 + 10 * index;
    const c = shape[1];
    const x = randomTensor(shape, seed, 2, index === 1 ? 3 : 0); // one case with mean 3: the variance needs two passes
    const gamma = randomTensor([c], seed + 1, 0.5, 1);
    const beta = randomTensor([c], seed + 2, 0.5);
    const dy = randomTensor(shape, seed + 3);
    const ref = batchNormTrainRef(x, gamma.data, beta.data, 1e-5);
    const out = batchNormTrainSync(nhwc(x), gamma, beta);
    checkAgainst(t, 'y', out.y, ref.y, 'nhwc');
    checkClose(t, 'mean', out.mean.data, ref.mean, OP_FP32);
    checkClose(t, 'biased var', out.var.data, ref.var, OP_FP32);
    const grads = batchNormBackwardSync(nhwc(x), nhwc(dy), gamma, out.mean, out.var);
    const gref = batchNormBackwardRef(x, dy, gamma.data, out.mean.data, out.var.data, 1e-5);
    checkAgainst(t, 'dx', grads.dx, gref.dx, 'nhwc');
    checkClose(t, 'dgamma', grads.dgamma.data, gref.dgamma, OP_FP32);
    checkClose(t, 'dbeta', grads.dbeta.data, gref.dbeta, OP_FP32);

    const stats = randomBnStats(c, makeRng(seed + 4));
    const params = { mean: stats.mean, var: stats.var, gamma: stats.gamma, beta: stats.beta };
    const inference = batchNormRef(x, stats.mean, stats.var, stats.gamma, stats.beta);
    checkAgainst(t, 'inference y', batchNormSync(nhwc(x), params), inference, 'nhwc');
    const withRelu = { shape: inference.shape, data: inference.data.map((v) => Math.max(v, 0)) };
    checkAgainst(t, 'inference y + relu', batchNormSync(nhwc(x), params, { relu: true }), withRelu, 'nhwc');
  });
});

test('globalAvgPool and its backward on NHWC match the float64 reference', (t) => {
  for (const [index, shape] of ([[3, 20, 5, 7], [2, 33, 1, 1], [4, 16, 14, 14]] as [number, number, number, number][]).entries()) {
    const x = randomTensor(shape, 400 + index);
    const y = globalAvgPoolSync(nhwc(x));
    checkClose(t, `pool ${shape.join('x')}`, y.data, globalAvgPoolRef(x).data, OP_FP32);
    const dy = randomTensor([shape[0], shape[1]], 410 + index);
    const dx = globalAvgPoolBackwardSync(dy, shape[2], shape[3], { layout: 'nhwc' });
    checkAgainst(t, `pool backward ${shape.join('x')}`, dx, globalAvgPoolBackwardRef(dy, shape[2], shape[3]), 'nhwc');
    t.is(layoutOf(globalAvgPoolBackwardSync(dy, shape[2], shape[3])), 'nchw');
  }
});

test('channelScale and its backward on NHWC match the float64 reference', (t) => {
  const x = randomTensor([3, 24, 5, 6], 500);
  const scale = randomTensor([3, 24], 501, 0.5, 0.5);
  const dy = randomTensor([3, 24, 5, 6], 502);
  checkAgainst(t, 'y', channelScaleSync(nhwc(x), scale), channelScaleRef(x, scale), 'nhwc');
  const grads = channelScaleBackwardSync(nhwc(x), scale, nhwc(dy));
  const ref = channelScaleBackwardRef(x, scale, dy);
  checkAgainst(t, 'dx', grads.dx, ref.dx, 'nhwc');
  checkClose(t, 'dscale', grads.dscale.data, ref.dscale.data, OP_FP32);
});

test('elementwise ops keep the layout and refuse operands in different layouts', async (t) => {
  const x = randomTensor([2, 4, 3, 3], 600);
  const b = randomTensor([2, 4, 3, 3], 601);
  const y = await relu(nhwc(x));
  t.is(layoutOf(y), 'nhwc');
  t.is(layoutOf(await add(nhwc(x), nhwc(b))), 'nhwc');
  t.is(layoutOf(reluBackwardSync(y, nhwc(b))), 'nhwc');
  await t.throwsAsync(() => add(nhwc(x), b), { instanceOf: ArgumentValueError, message: /layout of a \('nhwc'\) but received 'nchw'/ });
  t.throws(() => reluBackwardSync(y, b), { instanceOf: ArgumentValueError });
  t.throws(() => batchNormBackwardSync(nhwc(x), b, randomTensor([4], 1), randomTensor([4], 2), randomTensor([4], 3, 0.1, 1)), {
    instanceOf: ArgumentValueError,
  });
  t.throws(() => addInPlaceSync(nhwc(x), b), { instanceOf: ArgumentValueError });
  t.throws(() => conv2dSync(x, randomTensor([4, 4, 1, 1], 5), { layout: 'nwhc' as Layout }), { instanceOf: ArgumentValueError });
  t.throws(() => layoutOf({ shape: [2, 4], data: new Float32Array(8), layout: 'nhwc' } as HostTensor), { message: /rank-4/ });
});

test('on the tape, conv2d outputs NHWC and add converts an NCHW operand, with the gradient converted back', async (t) => {
  const x = new Var(randomTensor([2, 4, 5, 5], 700), true);
  const w = new Var(randomTensor([4, 4, 3, 3], 701, 0.3), true);
  const tape = new Tape();
  const conv = await F.conv2d(tape, x, w, { stride: 1, pad: 1, groups: 1 });
  t.is(layoutOf(conv.value), 'nhwc');
  const sum = await F.add(tape, conv, x); // x is NCHW
  t.is(layoutOf(sum.value), 'nhwc');
  const pooled = await F.globalAvgPool(tape, sum);
  const seed = randomTensor([2, 4], 702);
  await tape.backward(pooled, seed.data);
  // d(sum)/dx through the identity path is the pooled gradient spread over the plane, in x's NCHW order, plus the
  // conv's input gradient of that same spread gradient.
  const spread = globalAvgPoolBackwardRef(seed, 5, 5);
  const convDx = conv2dBackwardRef(x.value, w.value, spread, { stride: 1, pad: 1, groups: 1 }).dx;
  const expected = spread.data.map((v, i) => v + (convDx.data[i] as number));
  checkClose(t, 'dx', x.grad ?? new Float32Array(), expected, OP_FP32);
  t.is(layoutOf(x.value), 'nchw');
});
