// Differentiable ops for the tape: each runs its forward on the tape's backend (backend.ts) and records the
// gradient rule right here, next to the forward, so an op's forward and backward are found together. Shapes are
// the logical (N, C, H, W) on every backend; the CPU backend keeps activations NHWC in memory (cpu-backend.ts),
// CUDA NCHW: use tape.backend.download(v.value) to look at an activation in plain order.
// Not for: optimizers or modules (lib/train/); inference (lib/engine.ts runs whole networks natively).

import type { ConvOptions } from './backend.js';
import { Tape, Var } from './tape.js';

export type { ConvOptions } from './backend.js';

type Shaped = { readonly shape: readonly number[] };

/** y = conv2d(x, weight) without bias. x: (N, C, H, W), weight: (O, C/g, K, K). */
export async function conv2d<V extends Shaped, G>(tape: Tape<V, G>, x: Var<V, G>, weight: Var<V, G>, o: ConvOptions): Promise<Var<V, G>> {
  const b = tape.backend;
  const y = await b.conv2d(x.value, weight.value, o);
  return tape.record(y, [x, weight], async (dy) => {
    const grads = await b.conv2dBackward(x.value, weight.value, y, dy, { ...o, needInputGrad: x.requiresGrad });
    return [grads.dx, grads.dweight];
  });
}

/**
 * Training-mode batch norm over (N, H, W) per channel: normalizes with the batch mean and biased variance
 * and returns them so the module can update its running statistics (they belong to the tape: released by its
 * recycle()).
 */
export async function batchNormTrain<V extends Shaped, G>(
  tape: Tape<V, G>,
  x: Var<V, G>,
  gamma: Var<V, G>,
  beta: Var<V, G>,
  eps: number,
): Promise<{ y: Var<V, G>; mean: V; variance: V }> {
  const b = tape.backend;
  const { y, mean, variance } = await b.batchNormTrain(x.value, gamma.value, beta.value, eps);
  const out = tape.record(y, [x, gamma, beta], async (dy) => {
    const g = await b.batchNormBackward(x.value, y, dy, gamma.value, mean, variance, eps);
    return [g.dx, g.dgamma, g.dbeta];
  });
  // The statistics are read by the backward rule: they live as long as the tape's activations.
  tape.own(mean);
  tape.own(variance);
  return { y: out, mean, variance };
}

/** One branch of batchNormSum: the tensor and its BN's parameters. */
export interface NormBranch<V extends Shaped, G> {
  x: Var<V, G>;
  gamma: Var<V, G>;
  beta: Var<V, G>;
}

/**
 * relu?(BN_1(x_1) + ... + BN_k(x_k)) with training-mode BNs: the branch sum of a RepVGG block, and each branch's
 * batch statistics (owned by the tape) for the running-statistics update. One op on backends that have it (the
 * CPU: no normalized tensor per branch, no intermediate sums), else batchNormTrain per branch, then add left to
 * right with the ReLU fused into the last sum. Both give the same values and gradients.
 */
export async function batchNormSum<V extends Shaped, G>(
  tape: Tape<V, G>, branches: NormBranch<V, G>[], eps: number, withRelu: boolean,
): Promise<{ y: Var<V, G>; stats: { mean: V; variance: V }[] }> {
  const b = tape.backend;
  const fused = await b.batchNormSum?.(branches.map((br) => ({ x: br.x.value, gamma: br.gamma.value, beta: br.beta.value })), eps, withRelu);
  if (fused === undefined) return composedBatchNormSum(tape, branches, eps, withRelu);
  const { y, stats } = fused;
  const inputs = [...branches.map((br) => br.x), ...branches.flatMap((br) => [br.gamma, br.beta])];
  const out = tape.record(y, inputs, async (dy) => {
    const grads = await b.batchNormSumBackward!(
      branches.map((br, i) => ({ x: br.x.value, gamma: br.gamma.value, mean: stats[i]!.mean, variance: stats[i]!.variance })), y, dy, eps, withRelu,
    );
    return [...grads.map((g) => g.dx), ...grads.flatMap((g) => [g.dgamma, g.dbeta])];
  });
  for (const s of stats) {
    tape.own(s.mean);
    tape.own(s.variance);
  }
  return { y: out, stats };
}

async function composedBatchNormSum<V extends Shaped, G>(
  tape: Tape<V, G>, branches: NormBranch<V, G>[], eps: number, withRelu: boolean,
): Promise<{ y: Var<V, G>; stats: { mean: V; variance: V }[] }> {
  const normalized: Var<V, G>[] = [];
  const stats: { mean: V; variance: V }[] = [];
  for (const br of branches) {
    const { y, mean, variance } = await batchNormTrain(tape, br.x, br.gamma, br.beta, eps);
    normalized.push(y);
    stats.push({ mean, variance });
  }
  let sum = normalized[0]!;
  for (const [i, y] of normalized.entries()) {
    if (i === 0) continue;
    sum = withRelu && i === normalized.length - 1 ? await addRelu(tape, sum, y) : await add(tape, sum, y);
  }
  if (withRelu && normalized.length === 1) sum = await relu(tape, sum);
  return { y: sum, stats };
}

/** b in a's data layout (b itself when it already is); the conversion is recorded so that its gradient flows back. */
function matchLayout<V extends Shaped, G>(tape: Tape<V, G>, a: Var<V, G>, b: Var<V, G>): Var<V, G> {
  const converted = tape.backend.matchLayout(a.value, b.value);
  if (converted === undefined) return b;
  return tape.record(converted.y, [b], async (dy) => [converted.back(dy)]);
}

/** a + b (same shape). */
export async function add<V extends Shaped, G>(tape: Tape<V, G>, a: Var<V, G>, b: Var<V, G>): Promise<Var<V, G>> {
  b = matchLayout(tape, a, b);
  const y = await tape.backend.add(a.value, b.value, false);
  return tape.record(y, [a, b], async (dy) => [dy, dy]);
}

/**
 * relu(a + b) in one op: one output buffer and one memory pass instead of two, e.g. for the last sum of a RepVGG
 * block. Both inputs get dy masked by y > 0.
 */
export async function addRelu<V extends Shaped, G>(tape: Tape<V, G>, a: Var<V, G>, b: Var<V, G>): Promise<Var<V, G>> {
  b = matchLayout(tape, a, b);
  const backend = tape.backend;
  const y = await backend.add(a.value, b.value, true);
  return tape.record(y, [a, b], async (dy) => {
    const g = await backend.reluBackward(y, dy);
    return [g, g];
  });
}

export async function relu<V extends Shaped, G>(tape: Tape<V, G>, x: Var<V, G>): Promise<Var<V, G>> {
  const b = tape.backend;
  const y = await b.relu(x.value);
  return tape.record(y, [x], async (dy) => [await b.reluBackward(y, dy)]);
}

export async function sigmoid<V extends Shaped, G>(tape: Tape<V, G>, x: Var<V, G>): Promise<Var<V, G>> {
  const b = tape.backend;
  const y = await b.sigmoid(x.value);
  return tape.record(y, [x], async (dy) => [await b.sigmoidBackward(y, dy)]);
}

/** (N, C, H, W) -> (N, C) mean over H and W. */
export async function globalAvgPool<V extends Shaped, G>(tape: Tape<V, G>, x: Var<V, G>): Promise<Var<V, G>> {
  const b = tape.backend;
  const y = await b.globalAvgPool(x.value);
  return tape.record(y, [x], async (dy) => [await b.globalAvgPoolBackward(x.value, y, dy)]);
}

/** x (N, C) @ weight (K, C)^T + bias (K). */
export async function linear<V extends Shaped, G>(tape: Tape<V, G>, x: Var<V, G>, weight: Var<V, G>, bias: Var<V, G>): Promise<Var<V, G>> {
  const b = tape.backend;
  const y = await b.linear(x.value, weight.value, bias.value);
  return tape.record(y, [x, weight, bias], async (dy) => {
    const g = await b.linearBackward(x.value, weight.value, y, dy, x.requiresGrad);
    return [g.dx, g.dweight, g.dbias];
  });
}

/** x (N, C, H, W) scaled per (n, c) by scale (N, C): the excitation step of SE. */
export async function channelScale<V extends Shaped, G>(tape: Tape<V, G>, x: Var<V, G>, scale: Var<V, G>): Promise<Var<V, G>> {
  const b = tape.backend;
  const y = await b.channelScale(x.value, scale.value);
  return tape.record(y, [x, scale], async (dy) => {
    const g = await b.channelScaleBackward(x.value, scale.value, y, dy);
    return [g.dx, g.dscale];
  });
}

/** Mean softmax cross-entropy (PyTorch CrossEntropyLoss with label_smoothing) of logits (N, K). */
export async function softmaxCrossEntropy<V extends Shaped, G>(
  tape: Tape<V, G>,
  logits: Var<V, G>,
  labels: Int32Array,
  labelSmoothing: number,
): Promise<{ loss: Var<V, G>; value: number }> {
  const b = tape.backend;
  const { loss, dlogits } = await b.softmaxCrossEntropy(logits.value, labels, labelSmoothing);
  const out = tape.record(b.scalar(loss), [logits], async (dy) => [await b.scaleLossGradient(dlogits, dy)]);
  return { loss: out, value: loss };
}
