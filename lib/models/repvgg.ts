// RepVGG architectures: the official variants (A0..D2se), user-defined small-input variants, and the block list
// and weight-key layout derived from them. Pure description: no tensors are computed here.
// Not for: running networks (lib/engine.ts) or re-parameterization math (lib/reparam/).

import { ArgumentValueError, describeValue } from '../errors.js';

/** Everything that determines a RepVGG network's structure. */
export interface RepVGGSpec {
  /** Display name, e.g. 'RepVGG-A0' or 'custom'. */
  readonly arch: string;
  readonly inChannels: number;
  readonly numClasses: number;
  /** Output channels of stage0 (the stem block). */
  readonly stemChannels: number;
  readonly stemStride: number;
  /** Output channels of stages 1..4. */
  readonly stageChannels: readonly number[];
  /** Blocks per stage 1..4. */
  readonly stageDepths: readonly number[];
  /** Stride of the first block of each stage 1..4. */
  readonly stageStrides: readonly number[];
  /** Groups of each block of stages 1..4 in order (the stem always has 1); length = sum(stageDepths). */
  readonly blockGroups: readonly number[];
  /** Squeeze-excitation reduction (internal = channels / seReduction), 0 = no SE. */
  readonly seReduction: number;
}

/** One RepVGG block, in network order. */
export interface BlockDesc {
  /** Weight-key prefix: 'stage0' or 'stageS.I'. */
  readonly name: string;
  readonly inChannels: number;
  readonly outChannels: number;
  readonly stride: number;
  readonly groups: number;
  /** True when the identity (BN-only) branch exists: inChannels == outChannels and stride 1. */
  readonly hasIdentity: boolean;
  /** SE internal width, 0 when the block has no SE. */
  readonly seChannels: number;
}

interface OfficialVariant {
  depths: readonly number[];
  widths: readonly number[]; // a, a, a, b
  groups: number; // groups on even-numbered blocks, 1 = none
  se: boolean;
}

const A_DEPTHS = [2, 4, 14, 1];
const B_DEPTHS = [4, 6, 16, 1];

/** The official variants, keyed without the 'RepVGG-' prefix. */
const OFFICIAL: Record<string, OfficialVariant> = {
  A0: { depths: A_DEPTHS, widths: [0.75, 0.75, 0.75, 2.5], groups: 1, se: false },
  A1: { depths: A_DEPTHS, widths: [1, 1, 1, 2.5], groups: 1, se: false },
  A2: { depths: A_DEPTHS, widths: [1.5, 1.5, 1.5, 2.75], groups: 1, se: false },
  B0: { depths: B_DEPTHS, widths: [1, 1, 1, 2.5], groups: 1, se: false },
  B1: { depths: B_DEPTHS, widths: [2, 2, 2, 4], groups: 1, se: false },
  B1g2: { depths: B_DEPTHS, widths: [2, 2, 2, 4], groups: 2, se: false },
  B1g4: { depths: B_DEPTHS, widths: [2, 2, 2, 4], groups: 4, se: false },
  B2: { depths: B_DEPTHS, widths: [2.5, 2.5, 2.5, 5], groups: 1, se: false },
  B2g2: { depths: B_DEPTHS, widths: [2.5, 2.5, 2.5, 5], groups: 2, se: false },
  B2g4: { depths: B_DEPTHS, widths: [2.5, 2.5, 2.5, 5], groups: 4, se: false },
  B3: { depths: B_DEPTHS, widths: [3, 3, 3, 5], groups: 1, se: false },
  B3g2: { depths: B_DEPTHS, widths: [3, 3, 3, 5], groups: 2, se: false },
  B3g4: { depths: B_DEPTHS, widths: [3, 3, 3, 5], groups: 4, se: false },
  D2se: { depths: [8, 14, 24, 1], widths: [2.5, 2.5, 2.5, 5], groups: 1, se: true },
};

/** Names of the official variants, in the order the paper lists them. */
export const OFFICIAL_ARCHS: readonly string[] = Object.keys(OFFICIAL);

/** 'RepVGG-A0', 'repvgg-a0' and 'A0' all name A0; returns the canonical short name or undefined. */
export function canonicalArchName(name: string): string | undefined {
  const short = name.replace(/^repvgg-/i, '');
  return OFFICIAL_ARCHS.find((a) => a.toLowerCase() === short.toLowerCase());
}

export interface OfficialOptions {
  numClasses?: number;
  inChannels?: number;
}

/**
 * The spec of an official variant.
 * @throws ArgumentValueError for an unknown name or a bad class count.
 * @example officialSpec('RepVGG-B1g4', { numClasses: 10 })
 */
export function officialSpec(name: string, options: OfficialOptions = {}): RepVGGSpec {
  const short = canonicalArchName(name);
  const variant = short === undefined ? undefined : OFFICIAL[short];
  if (short === undefined || variant === undefined) {
    throw new ArgumentValueError(
      `Expected one of ${OFFICIAL_ARCHS.join(', ')} (optionally prefixed 'RepVGG-') for arch but received ${describeValue(name)}`,
    );
  }
  const [a, , , b] = variant.widths as [number, number, number, number];
  const depthSum = variant.depths.reduce((s, d) => s + d, 0);
  // Official rule: groups apply to the even-numbered blocks 2, 4, ..., 26 of stages 1..4 (numbered from 1).
  const blockGroups = Array.from({ length: depthSum }, (_, i) => ((i + 1) % 2 === 0 && i + 1 <= 26 ? variant.groups : 1));
  return validateSpec({
    arch: `RepVGG-${short}`,
    inChannels: options.inChannels ?? 3,
    numClasses: options.numClasses ?? 1000,
    stemChannels: Math.min(64, Math.trunc(64 * a)),
    stemStride: 2,
    stageChannels: [Math.trunc(64 * a), Math.trunc(128 * a), Math.trunc(256 * a), Math.trunc(512 * b)],
    stageDepths: variant.depths,
    stageStrides: [2, 2, 2, 2],
    blockGroups,
    seReduction: variant.se ? 16 : 0,
  });
}

export interface CustomSpecOptions {
  arch?: string;
  inChannels?: number;
  numClasses: number;
  stemChannels: number;
  stemStride?: number;
  stageChannels: readonly number[];
  stageDepths: readonly number[];
  stageStrides?: readonly number[];
  /** Either one group count for the even-numbered blocks (official rule) or one per block. */
  groups?: number | readonly number[];
  seReduction?: number;
}

/**
 * A user-defined RepVGG, e.g. for 28x28 or 32x32 inputs (smaller stem stride and fewer stride-2 stages).
 * @example customSpec({ inChannels: 1, numClasses: 10, stemChannels: 32, stemStride: 1,
 *   stageChannels: [32, 64, 128, 256], stageDepths: [1, 2, 2, 1], stageStrides: [1, 2, 2, 2] })
 */
export function customSpec(o: CustomSpecOptions): RepVGGSpec {
  const depthSum = o.stageDepths.reduce((s, d) => s + d, 0);
  const groups = o.groups ?? 1;
  const blockGroups =
    typeof groups === 'number' ? Array.from({ length: depthSum }, (_, i) => ((i + 1) % 2 === 0 ? groups : 1)) : [...groups];
  return validateSpec({
    arch: o.arch ?? 'custom',
    inChannels: o.inChannels ?? 3,
    numClasses: o.numClasses,
    stemChannels: o.stemChannels,
    stemStride: o.stemStride ?? 2,
    stageChannels: [...o.stageChannels],
    stageDepths: [...o.stageDepths],
    stageStrides: [...(o.stageStrides ?? [2, 2, 2, 2])],
    blockGroups,
    seReduction: o.seReduction ?? 0,
  });
}

function positiveInt(value: unknown, name: string): void {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1) {
    throw new ArgumentValueError(`Expected a positive integer for ${name} but received ${describeValue(value)}`);
  }
}

/** Checks a spec's internal consistency; returns it unchanged. */
export function validateSpec(spec: RepVGGSpec): RepVGGSpec {
  positiveInt(spec.inChannels, 'inChannels');
  positiveInt(spec.numClasses, 'numClasses');
  positiveInt(spec.stemChannels, 'stemChannels');
  if (spec.stemStride !== 1 && spec.stemStride !== 2) {
    throw new ArgumentValueError(`Expected 1 or 2 for stemStride but received ${describeValue(spec.stemStride)}`);
  }
  for (const [name, list] of [
    ['stageChannels', spec.stageChannels],
    ['stageDepths', spec.stageDepths],
    ['stageStrides', spec.stageStrides],
  ] as const) {
    if (!Array.isArray(list) || list.length !== 4) {
      throw new ArgumentValueError(`Expected 4 entries (stages 1..4) for ${name} but received ${describeValue(list)}`);
    }
    list.forEach((v, i) => positiveInt(v, `${name}[${i}]`));
  }
  spec.stageStrides.forEach((s, i) => {
    if (s !== 1 && s !== 2) throw new ArgumentValueError(`Expected 1 or 2 for stageStrides[${i}] but received ${s}`);
  });
  const depthSum = spec.stageDepths.reduce((s, d) => s + d, 0);
  if (spec.blockGroups.length !== depthSum) {
    throw new ArgumentValueError(`Expected ${depthSum} entries for groups (one per block) but received ${spec.blockGroups.length}`);
  }
  if (!Number.isInteger(spec.seReduction) || spec.seReduction < 0) {
    throw new ArgumentValueError(`Expected a non-negative integer for seReduction but received ${describeValue(spec.seReduction)}`);
  }
  // Every grouped block must divide its input and output channels.
  for (const block of blocksOf(spec)) {
    if (block.inChannels % block.groups !== 0 || block.outChannels % block.groups !== 0) {
      throw new ArgumentValueError(
        `Block ${block.name} has groups ${block.groups}, which does not divide its channels ${block.inChannels} -> ${block.outChannels}`,
      );
    }
    if (spec.seReduction > 0 && block.seChannels < 1) {
      throw new ArgumentValueError(`Block ${block.name} has ${block.outChannels} channels, fewer than seReduction ${spec.seReduction}`);
    }
  }
  return spec;
}

/** The blocks of a network in execution order: stage0, stage1.0, stage1.1, ... */
export function blocksOf(spec: RepVGGSpec): BlockDesc[] {
  const se = (c: number): number => (spec.seReduction > 0 ? Math.trunc(c / spec.seReduction) : 0);
  const blocks: BlockDesc[] = [
    {
      name: 'stage0',
      inChannels: spec.inChannels,
      outChannels: spec.stemChannels,
      stride: spec.stemStride,
      groups: 1,
      hasIdentity: spec.inChannels === spec.stemChannels && spec.stemStride === 1,
      seChannels: se(spec.stemChannels),
    },
  ];
  let channels = spec.stemChannels;
  let blockNumber = 0;
  spec.stageDepths.forEach((depth, s) => {
    const out = spec.stageChannels[s] as number;
    for (let i = 0; i < depth; i++) {
      const stride = i === 0 ? (spec.stageStrides[s] as number) : 1;
      const groups = spec.blockGroups[blockNumber++] as number;
      blocks.push({
        name: `stage${s + 1}.${i}`,
        inChannels: channels,
        outChannels: out,
        stride,
        groups,
        hasIdentity: channels === out && stride === 1,
        seChannels: se(out),
      });
      channels = out;
    }
  });
  return blocks;
}

/** Channels entering the classifier. */
export function featureChannels(spec: RepVGGSpec): number {
  return spec.stageChannels[3] as number;
}

/** Product of all strides: the input side must be at least this large. */
export function totalStride(spec: RepVGGSpec): number {
  return spec.stemStride * spec.stageStrides.reduce((p, s) => p * s, 1);
}

/** Spatial size after a 3x3 conv with padding 1 and the given stride. */
export function convOutSize(size: number, stride: number): number {
  return Math.floor((size + 2 - 3) / stride) + 1;
}

export type WeightForm = 'train' | 'deploy';

/** Expected weight keys and shapes of a network in training-time or deployed form, in the official order. */
export function expectedWeights(spec: RepVGGSpec, form: WeightForm): Map<string, number[]> {
  const keys = new Map<string, number[]>();
  const bn = (prefix: string, c: number): void => {
    for (const p of ['weight', 'bias', 'running_mean', 'running_var']) keys.set(`${prefix}.${p}`, [c]);
  };
  for (const b of blocksOf(spec)) {
    const icg = b.inChannels / b.groups;
    if (form === 'deploy') {
      keys.set(`${b.name}.rbr_reparam.weight`, [b.outChannels, icg, 3, 3]);
      keys.set(`${b.name}.rbr_reparam.bias`, [b.outChannels]);
    } else {
      if (b.hasIdentity) bn(`${b.name}.rbr_identity`, b.inChannels);
      keys.set(`${b.name}.rbr_dense.conv.weight`, [b.outChannels, icg, 3, 3]);
      bn(`${b.name}.rbr_dense.bn`, b.outChannels);
      keys.set(`${b.name}.rbr_1x1.conv.weight`, [b.outChannels, icg, 1, 1]);
      bn(`${b.name}.rbr_1x1.bn`, b.outChannels);
    }
    if (b.seChannels > 0) {
      keys.set(`${b.name}.se.down.weight`, [b.seChannels, b.outChannels, 1, 1]);
      keys.set(`${b.name}.se.down.bias`, [b.seChannels]);
      keys.set(`${b.name}.se.up.weight`, [b.outChannels, b.seChannels, 1, 1]);
      keys.set(`${b.name}.se.up.bias`, [b.outChannels]);
    }
  }
  keys.set('linear.weight', [spec.numClasses, featureChannels(spec)]);
  keys.set('linear.bias', [spec.numClasses]);
  return keys;
}

/** Number of learnable parameters (BN running statistics excluded, as in the paper's tables). */
export function parameterCount(spec: RepVGGSpec, form: WeightForm): number {
  let total = 0;
  for (const [key, shape] of expectedWeights(spec, form)) {
    if (key.endsWith('running_mean') || key.endsWith('running_var')) continue;
    total += shape.reduce((p, d) => p * d, 1);
  }
  return total;
}
