// The training-time RepVGG as trainable parameters (Vars keyed by the official PyTorch names) plus BatchNorm
// running statistics, with a forward pass on the autograd tape. Initialization follows PyTorch's defaults so
// that recipes move between the two; a new classifier head for fine-tuning, and a frozen-backbone mode for
// linear probing. Not for: inference (RepVGGNetwork runs the native program instead).

import * as F from '../autograd/functions.js';
import { Tape, Var } from '../autograd/tape.js';
import { RepVGGNetwork } from '../engine.js';
import { blocksOf, expectedWeights, featureChannels, type RepVGGSpec } from '../models/repvgg.js';
import { seededUniform } from '../models/init.js';
import { updateRunningStats } from '../ops/norm.js';
import { BN_EPS, reparameterize } from '../reparam/reparam.js';
import type { HostTensor, StateDict } from '../tensor.js';

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

export class TrainableRepVGG {
  readonly spec: RepVGGSpec;
  /** Learnable parameters by official key, in the official order (frozen ones have requiresGrad false). */
  readonly params: Map<string, Var>;
  /** BatchNorm running statistics by official key (updated in place by training-mode forwards). */
  readonly buffers: Map<string, Float32Array>;
  readonly backboneFrozen: boolean;
  /** The frozen backbone as a deployed network whose 'classifier' is the identity: it outputs pooled features. */
  #featureNetwork: RepVGGNetwork | undefined;

  private constructor(spec: RepVGGSpec, params: Map<string, Var>, buffers: Map<string, Float32Array>, backboneFrozen: boolean) {
    this.spec = spec;
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

  /** Takes a validated training-time state dict (copied: the model owns its tensors). */
  static fromStateDict(spec: RepVGGSpec, state: StateDict, options: TrainableOptions = {}): TrainableRepVGG {
    const frozen = options.freezeBackbone === true;
    const params = new Map<string, Var>();
    const buffers = new Map<string, Float32Array>();
    for (const [key, shape] of expectedWeights(spec, 'train')) {
      const t = state.get(key);
      if (!t) throw new Error(`internal: ${key} missing after weight validation`);
      // SE's 1x1 convs, stored (out, in, 1, 1), are applied as (out, in) matrices: keep them 2-D here.
      const paramShape = key.includes('.se.') && shape.length === 4 ? shape.slice(0, 2) : shape;
      if (isRunningStat(key)) buffers.set(key, t.data.slice());
      else params.set(key, new Var({ shape: paramShape, data: t.data.slice() }, !frozen || isHead(key)));
    }
    return new TrainableRepVGG(spec, params, buffers, frozen);
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
      { backend: 'cpu', maxBatch: FEATURE_BATCH },
    );
    return this.#featureNetwork;
  }

  /** Parameters and running statistics as a state dict in the official key order (shares memory). */
  stateDict(): StateDict {
    const state: StateDict = new Map();
    for (const [key, shape] of expectedWeights(this.spec, 'train')) {
      const data = isRunningStat(key) ? this.buffers.get(key)! : this.params.get(key)!.value.data;
      state.set(key, { shape, data });
    }
    return state;
  }

  #param(key: string): Var {
    const p = this.params.get(key);
    if (!p) throw new Error(`internal: no parameter ${key}`);
    return p;
  }

  /** Training-mode BN: normalizes with batch statistics and updates the running ones (PyTorch semantics). */
  async #batchNorm(tape: Tape, prefix: string, x: Var): Promise<Var> {
    const { y, mean, variance } = await F.batchNormTrain(tape, x, this.#param(`${prefix}.weight`), this.#param(`${prefix}.bias`), BN_EPS);
    const [n, , h, w] = x.shape as [number, number, number, number];
    const channels = [mean.data.length];
    updateRunningStats(
      { shape: channels, data: this.buffers.get(`${prefix}.running_mean`)! },
      { shape: channels, data: this.buffers.get(`${prefix}.running_var`)! },
      mean, variance, n * h * w, BN_MOMENTUM,
    );
    return y;
  }

  /**
   * Training-mode forward: logits (N, numClasses) for images (N, C, H, W), recorded on the tape.
   * Updates the BN running statistics as a side effect, like PyTorch's model.train() forward.
   */
  async forward(tape: Tape, images: HostTensor): Promise<Var> {
    if (this.backboneFrozen) {
      const pooled = await this.#features().predict(images); // (N, featureChannels)
      return F.linear(tape, new Var(pooled, false), this.#param('linear.weight'), this.#param('linear.bias'));
    }
    let x = new Var(images, false);
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
      const dense = await this.#batchNorm(tape, `${b.name}.rbr_dense.bn`, await F.conv2d(tape, x, this.#param(`${b.name}.rbr_dense.conv.weight`), { ...conv, pad: 1 }));
      const pointwise = await this.#batchNorm(tape, `${b.name}.rbr_1x1.bn`, await F.conv2d(tape, x, this.#param(`${b.name}.rbr_1x1.conv.weight`), { ...conv, pad: 0 }));
      if (b.seChannels === 0) {
        // relu(dense + pointwise [+ identity]) with the ReLU fused into the last sum: one buffer and pass fewer.
        x = b.hasIdentity
          ? await F.addRelu(tape, await F.add(tape, dense, pointwise), await this.#batchNorm(tape, `${b.name}.rbr_identity`, x))
          : await F.addRelu(tape, dense, pointwise);
        continue;
      }
      let sum = await F.add(tape, dense, pointwise);
      if (b.hasIdentity) sum = await F.add(tape, sum, await this.#batchNorm(tape, `${b.name}.rbr_identity`, x));
      const se = `${b.name}.se`;
      const p = (name: string): Var => this.#param(`${se}.${name}`);
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
