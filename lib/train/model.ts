// The training-time RepVGG as trainable parameters (Vars keyed by the official PyTorch names) plus BatchNorm
// running statistics, with a forward pass on the autograd tape, on one training backend (the CPU by default,
// or CUDA: parameters, statistics and activations then stay in GPU memory). Initialization follows PyTorch's
// defaults so that recipes move between the two; a new classifier head for fine-tuning, and a frozen-backbone
// mode for linear probing. Not for: inference (RepVGGNetwork runs the native program instead).

import type { TrainBackend } from '../autograd/backend.js';
import { cpuBackend } from '../autograd/cpu-backend.js';
import * as F from '../autograd/functions.js';
import { Tape, Var } from '../autograd/tape.js';
import { RepVGGNetwork } from '../engine.js';
import { ArgumentValueError } from '../errors.js';
import { blocksOf, expectedWeights, featureChannels, type RepVGGSpec } from '../models/repvgg.js';
import { seededUniform } from '../models/init.js';
import { BN_EPS, reparameterize } from '../reparam/reparam.js';
import type { HostTensor, StateDict } from '../tensor.js';

type Shaped = { readonly shape: readonly number[] };

/** BatchNorm2d momentum of PyTorch (weight of the new batch statistic in the running average). */
export const BN_MOMENTUM = 0.1;

const isRunningStat = (key: string): boolean => key.endsWith('running_mean') || key.endsWith('running_var');
const isHead = (key: string): boolean => key.startsWith('linear.');

/** Images per native call when a frozen backbone computes features. */
const FEATURE_BATCH = 256;

export interface TrainableOptions {
  /**
   * Linear probing: only the classifier (linear.*) learns. The backbone runs in inference mode (BN with its
   * running statistics, which stay as loaded) as the deployed native network, and no gradient flows into it.
   */
  freezeBackbone?: boolean;
}

/**
 * PyTorch's nn.Linear initialization for a classifier of `numClasses` outputs over `features` inputs: weight and
 * bias uniform in +-1/sqrt(features), seeded.
 */
export function initialHead(numClasses: number, features: number, seed: number): { weight: Float32Array; bias: Float32Array } {
  const uniform = seededUniform(seed);
  const bound = 1 / Math.sqrt(features);
  const weight = new Float32Array(numClasses * features).map(() => bound * (2 * uniform() - 1));
  const bias = new Float32Array(numClasses).map(() => bound * (2 * uniform() - 1));
  return { weight, bias };
}

/**
 * A training-time state dict for `numClasses` classes: the backbone of `state` (shared) with a freshly
 * initialized classifier (fine-tuning from weights trained on another label set).
 */
export function withNewHead(spec: RepVGGSpec, state: StateDict, numClasses: number, seed: number): { spec: RepVGGSpec; state: StateDict } {
  const newSpec = { ...spec, numClasses };
  const features = featureChannels(spec);
  const head = initialHead(numClasses, features, seed);
  const replaced: StateDict = new Map([...state].filter(([key]) => !isHead(key)));
  replaced.set('linear.weight', { shape: [numClasses, features], data: head.weight });
  replaced.set('linear.bias', { shape: [numClasses], data: head.bias });
  return { spec: newSpec, state: replaced };
}

/** SE's 1x1 convs, stored (out, in, 1, 1), are applied as (out, in) matrices: kept 2-D as parameters. */
function paramShape(key: string, shape: number[]): number[] {
  return key.includes('.se.') && shape.length === 4 ? shape.slice(0, 2) : shape;
}

export class TrainableRepVGG<V extends Shaped = HostTensor, G = Float32Array> {
  readonly spec: RepVGGSpec;
  readonly backend: TrainBackend<V, G>;
  /** Learnable parameters by official key, in the official order (frozen ones have requiresGrad false). */
  readonly params: Map<string, Var<V, G>>;
  /** BatchNorm running statistics by official key (updated in place by training-mode forwards). */
  readonly buffers: Map<string, V>;
  readonly backboneFrozen: boolean;
  /** The frozen backbone as a deployed network whose 'classifier' is the identity: it outputs pooled features. */
  #featureNetwork: RepVGGNetwork | undefined;

  private constructor(spec: RepVGGSpec, backend: TrainBackend<V, G>, params: Map<string, Var<V, G>>, buffers: Map<string, V>, backboneFrozen: boolean) {
    this.spec = spec;
    this.backend = backend;
    this.params = params;
    this.buffers = buffers;
    this.backboneFrozen = backboneFrozen;
  }

  /**
   * PyTorch's default initialization: convs and linear kaiming_uniform(a=sqrt(5)) (bound 1/sqrt(fan_in)),
   * linear bias uniform(+-1/sqrt(fan_in)), BN weight 1, bias 0, running mean 0, running var 1.
   */
  static init(spec: RepVGGSpec, seed: number): TrainableRepVGG {
    const uniform = seededUniform(seed);
    const state: StateDict = new Map();
    for (const [key, shape] of expectedWeights(spec, 'train')) {
      const data = new Float32Array(shape.reduce((p, d) => p * d, 1));
      if (shape.length > 1) {
        const bound = 1 / Math.sqrt(shape.slice(1).reduce((p, d) => p * d, 1));
        for (let i = 0; i < data.length; i++) data[i] = bound * (2 * uniform() - 1);
      } else if (key === 'linear.bias' || key.includes('.se.')) {
        const fanIn = expectedWeights(spec, 'train').get(key.replace(/bias$/, 'weight'))!.slice(1).reduce((p, d) => p * d, 1);
        const bound = 1 / Math.sqrt(fanIn);
        for (let i = 0; i < data.length; i++) data[i] = bound * (2 * uniform() - 1);
      } else if (key.endsWith('running_var') || key.endsWith('.weight')) {
        data.fill(1); // BN gamma and running variance
      } // BN beta and running mean stay 0
      state.set(key, { shape, data });
    }
    return TrainableRepVGG.fromStateDict(spec, state);
  }

  /** Takes a validated training-time state dict (copied: the model owns its tensors), on the CPU. */
  static fromStateDict(spec: RepVGGSpec, state: StateDict, options: TrainableOptions = {}): TrainableRepVGG {
    const frozen = options.freezeBackbone === true;
    const params = new Map<string, Var>();
    const buffers = new Map<string, HostTensor>();
    for (const [key, shape, t] of TrainableRepVGG.#tensors(spec, state)) {
      if (isRunningStat(key)) buffers.set(key, { shape, data: t.data.slice() });
      else params.set(key, new Var({ shape: paramShape(key, shape), data: t.data.slice() }, !frozen || isHead(key)));
    }
    return new TrainableRepVGG(spec, cpuBackend, params, buffers, frozen);
  }

  /** The same, on any training backend (the tensors are uploaded to it). */
  static async onBackend<V extends Shaped, G>(
    backend: TrainBackend<V, G>, spec: RepVGGSpec, state: StateDict, options: TrainableOptions = {},
  ): Promise<TrainableRepVGG<V, G>> {
    const frozen = options.freezeBackbone === true;
    const params = new Map<string, Var<V, G>>();
    const buffers = new Map<string, V>();
    for (const [key, shape, t] of TrainableRepVGG.#tensors(spec, state)) {
      if (isRunningStat(key)) buffers.set(key, await backend.upload({ shape, data: t.data }));
      else params.set(key, new Var<V, G>(await backend.upload({ shape: paramShape(key, shape), data: t.data }), !frozen || isHead(key)));
    }
    return new TrainableRepVGG(spec, backend, params, buffers, frozen);
  }

  /** Every expected key with its shape and tensor from a validated state dict. */
  static *#tensors(spec: RepVGGSpec, state: StateDict): Generator<[string, number[], HostTensor]> {
    for (const [key, shape] of expectedWeights(spec, 'train')) {
      const t = state.get(key);
      if (!t) throw new Error(`internal: ${key} missing after weight validation`);
      yield [key, shape, t];
    }
  }

  /** Frees the native network of a frozen backbone (rebuilt if forward runs again). Safe to call twice. */
  dispose(): void {
    this.#featureNetwork?.dispose();
    this.#featureNetwork = undefined;
  }

  #features(): RepVGGNetwork {
    if (this.#featureNetwork) return this.#featureNetwork;
    const deployed = reparameterize(this.spec, this.stateDict());
    const features = featureChannels(this.spec);
    const identity = new Float32Array(features * features);
    for (let i = 0; i < features; i++) identity[i * features + i] = 1;
    this.#featureNetwork = RepVGGNetwork.fromDeployed(
      { spec: { ...this.spec, numClasses: features }, layers: deployed.layers, linearWeight: identity, linearBias: new Float32Array(features) },
      { backend: this.backend.name, maxBatch: FEATURE_BATCH },
    );
    return this.#featureNetwork;
  }

  /**
   * Parameters and running statistics as a state dict in the official key order, sharing the model's memory
   * (CPU backend only; hostStateDict() works on every backend).
   */
  stateDict(): StateDict {
    if (this.backend.name !== 'cpu') {
      throw new ArgumentValueError(`Expected the cpu backend for stateDict() but the model trains on ${this.backend.name}: use await hostStateDict()`);
    }
    const values = this.values() as unknown as Map<string, HostTensor>;
    const state: StateDict = new Map();
    for (const [key, shape] of expectedWeights(this.spec, 'train')) state.set(key, { shape, data: values.get(key)!.data });
    return state;
  }

  /** The state dict in host memory (on the CPU the shared one of stateDict(); on CUDA a download). */
  async hostStateDict(): Promise<StateDict> {
    if (this.backend.name === 'cpu') return this.stateDict();
    const values = this.values();
    const state: StateDict = new Map();
    for (const [key, shape] of expectedWeights(this.spec, 'train')) state.set(key, { shape, data: (await this.backend.download(values.get(key)!)).data });
    return state;
  }

  /**
   * `state` (e.g. an EMA of values()) with every tensor in its state-dict shape: SE's 1x1 kernels are (out, in)
   * parameters here but (out, in, 1, 1) in files. Shares the data.
   */
  withStateShapes(state: StateDict): StateDict {
    const out: StateDict = new Map();
    for (const [key, shape] of expectedWeights(this.spec, 'train')) {
      const t = state.get(key);
      if (t) out.set(key, { shape, data: t.data });
    }
    return out;
  }

  /** Parameter values and running statistics by official key, in the official order (the EMA's inputs). */
  values(): Map<string, V> {
    const values = new Map<string, V>();
    for (const key of expectedWeights(this.spec, 'train').keys()) values.set(key, isRunningStat(key) ? this.buffers.get(key)! : this.params.get(key)!.value);
    return values;
  }

  #param(key: string): Var<V, G> {
    const p = this.params.get(key);
    if (!p) throw new Error(`internal: no parameter ${key}`);
    return p;
  }

  /** Training-mode BN: normalizes with batch statistics and updates the running ones (PyTorch semantics). */
  async #batchNorm(tape: Tape<V, G>, prefix: string, x: Var<V, G>): Promise<Var<V, G>> {
    const { y, mean, variance } = await F.batchNormTrain(tape, x, this.#param(`${prefix}.weight`), this.#param(`${prefix}.bias`), BN_EPS);
    await this.#updateRunningStats(prefix, x, mean, variance);
    return y;
  }

  /**
   * relu?(BN(dense) + BN(pointwise) [+ BN(identity)]): the sum of a block's branches with training-mode BNs, whose
   * running statistics it updates.
   */
  async #branchSum(tape: Tape<V, G>, block: string, dense: Var<V, G>, pointwise: Var<V, G>, identity: Var<V, G> | undefined, relu: boolean): Promise<Var<V, G>> {
    const branches = [
      { prefix: `${block}.rbr_dense.bn`, x: dense },
      { prefix: `${block}.rbr_1x1.bn`, x: pointwise },
      ...(identity === undefined ? [] : [{ prefix: `${block}.rbr_identity`, x: identity }]),
    ];
    const normBranches = branches.map(({ prefix, x }) => ({ x, gamma: this.#param(`${prefix}.weight`), beta: this.#param(`${prefix}.bias`) }));
    const { y, stats } = await F.batchNormSum(tape, normBranches, BN_EPS, relu);
    for (const [i, { prefix, x }] of branches.entries()) await this.#updateRunningStats(prefix, x, stats[i]!.mean, stats[i]!.variance);
    return y;
  }

  async #updateRunningStats(prefix: string, x: Var<V, G>, mean: V, variance: V): Promise<void> {
    const [n, , h, w] = x.shape as [number, number, number, number];
    await this.backend.updateRunningStats(
      this.buffers.get(`${prefix}.running_mean`)!, this.buffers.get(`${prefix}.running_var`)!, mean, variance, n * h * w, BN_MOMENTUM,
    );
  }

  /** images on the backend as a Var the tape reads (released with the tape's activations when it was uploaded). */
  async #input(tape: Tape<V, G>, images: HostTensor): Promise<Var<V, G>> {
    const { value, owned } = await this.backend.input(images);
    if (owned) tape.own(value);
    return new Var<V, G>(value, false);
  }

  /**
   * Training-mode forward: logits (N, numClasses) for images (N, C, H, W), recorded on the tape.
   * Updates the BN running statistics as a side effect, like PyTorch's model.train() forward.
   */
  async forward(tape: Tape<V, G>, images: HostTensor): Promise<Var<V, G>> {
    if (this.backboneFrozen) {
      const pooled = await this.#input(tape, await this.#features().predict(images)); // (N, featureChannels)
      return F.linear(tape, pooled, this.#param('linear.weight'), this.#param('linear.bias'));
    }
    let x = await this.#input(tape, images);
    for (const b of blocksOf(this.spec)) {
      const conv = { stride: b.stride, groups: b.groups };
      if (this.spec.block === 'qa') {
        // QARepVGG: relu(BN(BN(conv3x3(x)) + conv1x1(x) [+ x])).
        const dense = await this.#batchNorm(tape, `${b.name}.rbr_dense.bn`, await F.conv2d(tape, x, this.#param(`${b.name}.rbr_dense.conv.weight`), { ...conv, pad: 1 }));
        let sum = await F.add(tape, dense, await F.conv2d(tape, x, this.#param(`${b.name}.rbr_1x1.weight`), { ...conv, pad: 0 }));
        if (b.hasIdentity) sum = await F.add(tape, sum, x);
        x = await F.relu(tape, await this.#batchNorm(tape, `${b.name}.bn`, sum));
        continue;
      }
      const dense = await F.conv2d(tape, x, this.#param(`${b.name}.rbr_dense.conv.weight`), { ...conv, pad: 1 });
      const pointwise = await F.conv2d(tape, x, this.#param(`${b.name}.rbr_1x1.conv.weight`), { ...conv, pad: 0 });
      const identity = b.hasIdentity ? x : undefined;
      if (b.seChannels === 0) {
        x = await this.#branchSum(tape, b.name, dense, pointwise, identity, true);
        continue;
      }
      let sum = await this.#branchSum(tape, b.name, dense, pointwise, identity, false);
      const se = `${b.name}.se`;
      const p = (name: string): Var<V, G> => this.#param(`${se}.${name}`);
      const pooled = await F.globalAvgPool(tape, sum);
      const hidden = await F.relu(tape, await F.linear(tape, pooled, p('down.weight'), p('down.bias')));
      const gates = await F.sigmoid(tape, await F.linear(tape, hidden, p('up.weight'), p('up.bias')));
      sum = await F.channelScale(tape, sum, gates);
      x = await F.relu(tape, sum);
    }
    const pooled = await F.globalAvgPool(tape, x);
    return F.linear(tape, pooled, this.#param('linear.weight'), this.#param('linear.bias'));
  }
}
