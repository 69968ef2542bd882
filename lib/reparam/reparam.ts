// Structural re-parameterization: folds each training-time block (3x3 conv+BN, 1x1 conv+BN, identity BN; or
// QARepVGG's BN(conv3x3+BN + conv1x1 + identity)) into one 3x3 conv with bias, in float64, rounding to float32 only
// at the end. SE and the classifier pass through.
// Not for: checking that a state dict fits a spec (lib/io/weights.ts does that first).

import { blocksOf, featureChannels, type BlockDesc, type RepVGGSpec } from '../models/repvgg.js';
import type { HostTensor, StateDict } from '../tensor.js';
import type { DeployedLayer, DeployedModel, SEWeights } from './types.js';

/** BatchNorm eps of the official code (PyTorch's default). */
export const BN_EPS = 1e-5;

function tensorOf(state: StateDict, key: string): Float32Array {
  const t = state.get(key);
  if (!t) throw new Error(`internal: ${key} missing after weight validation`);
  return t.data;
}

/** An eval-mode BN's parameters and its per-channel scale t = gamma / sqrt(running_var + eps), in float64. */
export function batchNormOf(state: StateDict, prefix: string): { beta: Float32Array; mean: Float32Array; t: Float64Array } {
  const gamma = tensorOf(state, `${prefix}.weight`);
  const variance = tensorOf(state, `${prefix}.running_var`);
  return {
    beta: tensorOf(state, `${prefix}.bias`),
    mean: tensorOf(state, `${prefix}.running_mean`),
    t: Float64Array.from(gamma, (g, o) => g / Math.sqrt((variance[o] as number) + BN_EPS)),
  };
}

/**
 * Adds one BN-folded branch into the accumulating kernel and bias.
 * kernel64: (O, C/g, 3, 3) float64; branchKernel: (O, C/g, k, k) with k = 1 or 3 (a 1x1 lands on the centre tap).
 */
function addFoldedBranch(
  kernel64: Float64Array,
  bias64: Float64Array,
  branchKernel: Float32Array,
  k: number,
  bnPrefix: string,
  state: StateDict,
): void {
  const { beta, mean, t: scale } = batchNormOf(state, bnPrefix);
  const outChannels = bias64.length;
  const perOut = kernel64.length / outChannels; // (C/g) * 9
  const inPerGroup = perOut / 9;
  for (let o = 0; o < outChannels; o++) {
    const t = scale[o] as number;
    bias64[o] = (bias64[o] as number) + (beta[o] as number) - (mean[o] as number) * t;
    for (let i = 0; i < inPerGroup; i++) {
      if (k === 3) {
        for (let tap = 0; tap < 9; tap++) {
          const idx = (o * inPerGroup + i) * 9 + tap;
          kernel64[idx] = (kernel64[idx] as number) + (branchKernel[idx] as number) * t;
        }
      } else {
        const idx = (o * inPerGroup + i) * 9 + 4; // centre of the 3x3
        kernel64[idx] = (kernel64[idx] as number) + (branchKernel[o * inPerGroup + i] as number) * t;
      }
    }
  }
}

/** Adds the identity branch: BN(x) as a 3x3 kernel with t at the centre of [o, o mod (C/g)]. */
function addIdentityBranch(kernel64: Float64Array, bias64: Float64Array, block: BlockDesc, state: StateDict): void {
  const { beta, mean, t: scale } = batchNormOf(state, `${block.name}.rbr_identity`);
  const inPerGroup = block.inChannels / block.groups;
  for (let o = 0; o < block.outChannels; o++) {
    const t = scale[o] as number;
    bias64[o] = (bias64[o] as number) + (beta[o] as number) - (mean[o] as number) * t;
    const idx = (o * inPerGroup + (o % inPerGroup)) * 9 + 4;
    kernel64[idx] = (kernel64[idx] as number) + t;
  }
}

/** QARepVGG's plain branches: the 1x1 kernel on the centre tap, and the identity as 1 at the centre of [o, o mod (C/g)]. */
function addPlainBranches(kernel64: Float64Array, block: BlockDesc, pointwise: Float32Array): void {
  const inPerGroup = block.inChannels / block.groups;
  for (let o = 0; o < block.outChannels; o++) {
    for (let i = 0; i < inPerGroup; i++) {
      const idx = (o * inPerGroup + i) * 9 + 4;
      kernel64[idx] = (kernel64[idx] as number) + (pointwise[o * inPerGroup + i] as number);
    }
    if (block.hasIdentity) {
      const idx = (o * inPerGroup + (o % inPerGroup)) * 9 + 4;
      kernel64[idx] = (kernel64[idx] as number) + 1;
    }
  }
}

/** QARepVGG's BN after the sum, folded into the summed kernel and bias: k * t and (b - mean) * t + beta. */
function foldPostBn(kernel64: Float64Array, bias64: Float64Array, prefix: string, state: StateDict): void {
  const { beta, mean, t: scale } = batchNormOf(state, prefix);
  const perOut = kernel64.length / bias64.length;
  for (let o = 0; o < bias64.length; o++) {
    const t = scale[o] as number;
    bias64[o] = ((bias64[o] as number) - (mean[o] as number)) * t + (beta[o] as number);
    for (let j = o * perOut; j < (o + 1) * perOut; j++) kernel64[j] = (kernel64[j] as number) * t;
  }
}

function seWeightsOf(block: BlockDesc, state: StateDict): SEWeights | undefined {
  if (block.seChannels === 0) return undefined;
  const p = `${block.name}.se`;
  return {
    channels: block.seChannels,
    downWeight: tensorOf(state, `${p}.down.weight`),
    downBias: tensorOf(state, `${p}.down.bias`),
    upWeight: tensorOf(state, `${p}.up.weight`),
    upBias: tensorOf(state, `${p}.up.bias`),
  };
}

function withSe(layer: Omit<DeployedLayer, 'se'>, se: SEWeights | undefined): DeployedLayer {
  return se ? { ...layer, se } : layer;
}

/** Fuses one training-time block (RepVGG's, or QARepVGG's when qa) into its deployed 3x3 conv + bias. */
export function fuseBlock(block: BlockDesc, state: StateDict, qa = false): DeployedLayer {
  const inPerGroup = block.inChannels / block.groups;
  const kernel64 = new Float64Array(block.outChannels * inPerGroup * 9); // (O, C/g, 3, 3)
  const bias64 = new Float64Array(block.outChannels); // (O)
  addFoldedBranch(kernel64, bias64, tensorOf(state, `${block.name}.rbr_dense.conv.weight`), 3, `${block.name}.rbr_dense.bn`, state);
  if (qa) {
    addPlainBranches(kernel64, block, tensorOf(state, `${block.name}.rbr_1x1.weight`));
    foldPostBn(kernel64, bias64, `${block.name}.bn`, state);
  } else {
    addFoldedBranch(kernel64, bias64, tensorOf(state, `${block.name}.rbr_1x1.conv.weight`), 1, `${block.name}.rbr_1x1.bn`, state);
    if (block.hasIdentity) addIdentityBranch(kernel64, bias64, block, state);
  }
  return withSe(
    {
      name: block.name,
      inChannels: block.inChannels,
      outChannels: block.outChannels,
      stride: block.stride,
      groups: block.groups,
      weight: Float32Array.from(kernel64),
      bias: Float32Array.from(bias64),
    },
    seWeightsOf(block, state),
  );
}

/**
 * Re-parameterizes a validated training-time state dict into the deployed model.
 * @example const deployed = reparameterize(spec, trainState); // then deployedStateDict(deployed)
 */
export function reparameterize(spec: RepVGGSpec, trainState: StateDict): DeployedModel {
  return {
    spec,
    layers: blocksOf(spec).map((block) => fuseBlock(block, trainState, spec.block === 'qa')),
    linearWeight: tensorOf(trainState, 'linear.weight'),
    linearBias: tensorOf(trainState, 'linear.bias'),
  };
}

/** Reads a validated deployed-form state dict (rbr_reparam keys) as a DeployedModel. */
export function deployedModelFromState(spec: RepVGGSpec, deployState: StateDict): DeployedModel {
  return {
    spec,
    layers: blocksOf(spec).map((block) =>
      withSe(
        {
          name: block.name,
          inChannels: block.inChannels,
          outChannels: block.outChannels,
          stride: block.stride,
          groups: block.groups,
          weight: tensorOf(deployState, `${block.name}.rbr_reparam.weight`),
          bias: tensorOf(deployState, `${block.name}.rbr_reparam.bias`),
        },
        seWeightsOf(block, deployState),
      ),
    ),
    linearWeight: tensorOf(deployState, 'linear.weight'),
    linearBias: tensorOf(deployState, 'linear.bias'),
  };
}

/** The deployed model as a state dict with the official key names (stageN.M.rbr_reparam.*, se.*, linear.*). */
export function deployedStateDict(model: DeployedModel): StateDict {
  const state: StateDict = new Map<string, HostTensor>();
  for (const layer of model.layers) {
    state.set(`${layer.name}.rbr_reparam.weight`, {
      shape: [layer.outChannels, layer.inChannels / layer.groups, 3, 3],
      data: layer.weight,
    });
    state.set(`${layer.name}.rbr_reparam.bias`, { shape: [layer.outChannels], data: layer.bias });
    if (layer.se) {
      const { channels, downWeight, downBias, upWeight, upBias } = layer.se;
      state.set(`${layer.name}.se.down.weight`, { shape: [channels, layer.outChannels, 1, 1], data: downWeight });
      state.set(`${layer.name}.se.down.bias`, { shape: [channels], data: downBias });
      state.set(`${layer.name}.se.up.weight`, { shape: [layer.outChannels, channels, 1, 1], data: upWeight });
      state.set(`${layer.name}.se.up.bias`, { shape: [layer.outChannels], data: upBias });
    }
  }
  const classes = model.spec.numClasses;
  state.set('linear.weight', { shape: [classes, featureChannels(model.spec)], data: model.linearWeight });
  state.set('linear.bias', { shape: [classes], data: model.linearBias });
  return state;
}
