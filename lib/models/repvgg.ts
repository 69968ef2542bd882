// RepVGG architectures: the official variants (A0..D2se), user-defined small-input variants, and the block list
// and weight-key layout derived from them. Pure description: no tensors are computed here.
// Not for: running networks (lib/engine.ts) or re-parameterization math (lib/reparam/).

import { ArgumentValueError, FormatError, WeightsMismatchError, describeValue } from '../errors.js';

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
  /**
   * The training-time block. Absent: RepVGG's (BN on each of the 3x3, 1x1 and identity branches). 'qa': QARepVGG's
   * (Chu et al., "Make RepVGG Greater Again", AAAI 2024): BN only on the 3x3 branch, a plain 1x1 conv and a plain
   * identity, and one BN after their sum — kinder to int8 quantization; the deployed form is the same.
   */
  readonly block?: 'qa';
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
  /** 'qa': the variant with QARepVGG training-time blocks (see RepVGGSpec.block). */
  block?: 'qa';
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
    ...(options.block !== undefined && { block: options.block }),
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
  /** 'qa': QARepVGG training-time blocks (see RepVGGSpec.block). */
  block?: 'qa';
}

/**
 * A user-defined RepVGG, e.g. for 28x28 or 32x32 inputs (smaller stem stride and fewer stride-2 stages).
 * @example customSpec({ inChannels: 1, numClasses: 10, stemChannels: 32, stemStride: 1,
 *   stageChannels: [32, 64, 128, 256], stageDepths: [1, 2, 2, 1], stageStrides: [1, 2, 2, 2] })
 */
export function customSpec(o: CustomSpecOptions): RepVGGSpec {
  // Bounded before the per-block group list below is built from it.
  const depthSum = checkStageDepths(o.stageDepths, failWithArgumentValue).reduce((s, d) => s + d, 0);
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
    ...(o.block !== undefined && { block: o.block }),
  });
}

// ---------------------------------------------------------------------------------------------------------------
// Validation. A spec may come from an untrusted file (weights metadata, a checkpoint's config), so every field's
// type is checked and every size is bounded before anything loops over blocks or builds key lists.

/** Most channels of any layer (input, stem, stage): over 6x the widest official layer (2560 in B3 and D2se). */
export const MAX_CHANNELS = 16_384;
/** Most blocks in one stage: about 40x the deepest official stage (24 in D2se's stage 3). */
export const MAX_STAGE_DEPTH = 1_000;
/** Most classes: ImageNet-21k, the largest common label set, has 21,841. */
export const MAX_CLASSES = 100_000;
/** Longest arch display name ('RepVGG-B3g4' or a user's label). */
export const MAX_ARCH_NAME_LENGTH = 128;
/**
 * Longest spec JSON parsed: the largest spec within the bounds above is about 25,000 characters (4,000 group counts),
 * so longer text is rejected before JSON.parse spends seconds on it.
 */
export const MAX_SPEC_JSON_LENGTH = 65_536;

/** Throws the caller's error type: ArgumentValueError for specs built in code, FormatError for specs read from files. */
type Fail = (message: string) => never;

/** A spec whose fields have not been checked yet (e.g. parsed from JSON). */
type UncheckedSpec = { readonly [K in keyof RepVGGSpec]?: unknown };

function checkInteger(value: unknown, name: string, min: number, max: number, fail: Fail): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    fail(`Expected an integer in [${min}, ${max}] for ${name} but received ${describeValue(value)}`);
  }
  return value as number;
}

function checkStride(value: unknown, name: string, fail: Fail): number {
  if (value !== 1 && value !== 2) fail(`Expected 1 or 2 for ${name} but received ${describeValue(value)}`);
  return value as number;
}

/** A list of exactly `length` entries, each checked by `entry`. */
function checkList(
  value: unknown,
  name: string,
  length: number,
  entry: (item: unknown, itemName: string) => number,
  fail: Fail,
): number[] {
  if (!Array.isArray(value) || value.length !== length) {
    fail(`Expected an array of ${length} integers for ${name} but received ${describeValue(value)}`);
  }
  return (value as unknown[]).map((item, i) => entry(item, `${name}[${i}]`));
}

/** Checked first: the block count decides how long blockGroups may be and how many blocks are built. */
function checkStageDepths(value: unknown, fail: Fail): number[] {
  return checkList(value, 'stageDepths', 4, (depth, name) => checkInteger(depth, name, 1, MAX_STAGE_DEPTH, fail), fail);
}

/** Checks types, bounds and consistency of every field; returns a fresh spec holding only the known fields. */
function checkSpec(spec: UncheckedSpec, fail: Fail): RepVGGSpec {
  if (typeof spec.arch !== 'string' || spec.arch.length === 0 || spec.arch.length > MAX_ARCH_NAME_LENGTH) {
    fail(`Expected a string of 1 to ${MAX_ARCH_NAME_LENGTH} characters for arch but received ${describeValue(spec.arch)}`);
  }
  const channels = (value: unknown, name: string): number => checkInteger(value, name, 1, MAX_CHANNELS, fail);
  const stageDepths = checkStageDepths(spec.stageDepths, fail);
  const blockCount = stageDepths.reduce((s, d) => s + d, 0);
  const checked: RepVGGSpec = {
    arch: spec.arch as string,
    inChannels: channels(spec.inChannels, 'inChannels'),
    numClasses: checkInteger(spec.numClasses, 'numClasses', 1, MAX_CLASSES, fail),
    stemChannels: channels(spec.stemChannels, 'stemChannels'),
    stemStride: checkStride(spec.stemStride, 'stemStride', fail),
    stageChannels: checkList(spec.stageChannels, 'stageChannels', 4, channels, fail),
    stageDepths,
    stageStrides: checkList(spec.stageStrides, 'stageStrides', 4, (v, n) => checkStride(v, n, fail), fail),
    // One group count per block of stages 1..4; a count never exceeds the channels it must divide.
    blockGroups: checkList(spec.blockGroups, 'blockGroups', blockCount, channels, fail),
    seReduction: checkInteger(spec.seReduction, 'seReduction', 0, MAX_CHANNELS, fail),
  };
  if (spec.block !== undefined) {
    if (spec.block !== 'qa') fail(`Expected 'qa' or no block for block but received ${describeValue(spec.block)}`);
    // The block's BN follows the sum; with SE between them (SE(x) then BN) it could not fold into the conv.
    if (checked.seReduction > 0) fail('Expected seReduction 0 with block qa (QARepVGG blocks have no squeeze-excitation)');
    (checked as { block?: 'qa' }).block = 'qa';
  }
  // Every grouped block must divide its input and output channels.
  for (const block of blocksOf(checked)) {
    if (block.inChannels % block.groups !== 0 || block.outChannels % block.groups !== 0) {
      fail(
        `Block ${block.name} has groups ${block.groups}, which does not divide its channels ${block.inChannels} -> ${block.outChannels}`,
      );
    }
    if (checked.seReduction > 0 && block.seChannels < 1) {
      fail(`Block ${block.name} has ${block.outChannels} channels, fewer than seReduction ${checked.seReduction}`);
    }
  }
  return checked;
}

function failWithArgumentValue(message: string): never {
  throw new ArgumentValueError(message);
}

/**
 * Checks a spec's field types, bounds (MAX_CHANNELS, MAX_STAGE_DEPTH, MAX_CLASSES, MAX_ARCH_NAME_LENGTH) and
 * internal consistency (one group count per block, groups dividing channels, SE width of at least 1).
 * @returns a fresh copy holding only the spec's fields.
 * @throws ArgumentValueError naming the first bad field, e.g. `Expected an integer in [1, 1000] for stageDepths[1]
 *   but received number 10000000`.
 */
export function validateSpec(spec: RepVGGSpec): RepVGGSpec {
  return checkSpec(spec, failWithArgumentValue);
}

/**
 * A spec from untrusted data (a parsed JSON value, e.g. a checkpoint's config.spec): checked as by validateSpec.
 * Fields other than RepVGGSpec's are ignored.
 * @param source - names the data in messages, e.g. 'a0.safetensors metadata repvgg_spec'.
 * @throws FormatError starting with source and naming the first bad field.
 */
export function parseSpec(value: unknown, source: string): RepVGGSpec {
  const fail: Fail = (message) => {
    throw new FormatError(`${source}: ${message}`);
  };
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    fail(`Expected a JSON object for the RepVGG spec but received ${describeValue(value)}`);
  }
  return checkSpec(value as UncheckedSpec, fail);
}

/**
 * A spec from JSON text (the `repvgg_spec` metadata this library writes next to weights).
 * @param source - names the text in messages, e.g. 'a0.safetensors metadata repvgg_spec'.
 * @throws FormatError starting with source for text over MAX_SPEC_JSON_LENGTH, malformed JSON or a bad field
 *   (see {@link parseSpec}).
 * @example parseSpecJson(metadata.repvgg_spec, `${path} metadata repvgg_spec`)
 */
export function parseSpecJson(text: string, source: string): RepVGGSpec {
  if (text.length > MAX_SPEC_JSON_LENGTH) {
    throw new FormatError(`${source}: ${text.length} characters, more than the ${MAX_SPEC_JSON_LENGTH} any valid spec needs`);
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new FormatError(`${source}: not valid JSON (${(error as Error).message})`);
  }
  return parseSpec(value, source);
}

/** Matches the one key every block has in each form; captures the block name ('stage0' or 'stageS.I') and the stage. */
const BLOCK_KEY: Record<WeightForm, RegExp> = {
  train: /^(stage(\d+)(?:\.\d+)?)\.rbr_dense\.conv\.weight$/,
  deploy: /^(stage(\d+)(?:\.\d+)?)\.rbr_reparam\.weight$/,
};

/**
 * Cheap first check of a spec against a file's keys, before expectedWeights is built: the blocks present per stage
 * (stage0, then stages 1..4) must be as many as the spec describes, so a spec that lies about its depth fails here
 * instead of making us build its block and key lists. Keys and shapes are compared afterwards by checkWeights.
 * @param keys - the file's tensor names (bounded by the file's size).
 * @throws WeightsMismatchError naming source and both block counts.
 */
export function checkSpecAgainstKeys(spec: RepVGGSpec, keys: Iterable<string>, form: WeightForm, source: string): void {
  const blocksPerStage = new Map<string, Set<string>>();
  for (const key of keys) {
    const match = BLOCK_KEY[form].exec(key);
    if (match === null) continue;
    const [, block = '', stage = ''] = match;
    const blocks = blocksPerStage.get(stage) ?? new Set<string>();
    blocks.add(block);
    blocksPerStage.set(stage, blocks);
  }
  const counts = ['0', '1', '2', '3', '4'].map((stage) => blocksPerStage.get(stage)?.size ?? 0);
  const otherStages = [...blocksPerStage.keys()].filter((stage) => !/^[0-4]$/.test(stage));
  const expected = [1, ...spec.stageDepths];
  if (otherStages.length === 0 && counts.every((count, i) => count === expected[i])) return;
  const describe = (c: readonly number[]): string => `${c[0]} stage0 block(s) and [${c.slice(1).join(', ')}] in stages 1..4`;
  throw new WeightsMismatchError(
    `${source} holds ${describe(counts)}${otherStages.length > 0 ? ` plus stage${otherStages[0]}` : ''} (${form} form) ` +
      `but its spec ${spec.arch} describes ${describe(expected)}`,
  );
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
    } else if (spec.block === 'qa') {
      // QARepVGG (the names of its reference code): conv+BN 3x3, a plain 1x1 conv, a plain identity, BN after the sum.
      keys.set(`${b.name}.rbr_dense.conv.weight`, [b.outChannels, icg, 3, 3]);
      bn(`${b.name}.rbr_dense.bn`, b.outChannels);
      keys.set(`${b.name}.rbr_1x1.weight`, [b.outChannels, icg, 1, 1]);
      bn(`${b.name}.bn`, b.outChannels);
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
