// Deterministic fixture weights: the TypeScript twin of the generator in test/fixtures/make_fixtures.py (bit-identical
// float32 values), plus access to the fixtures' <name>.json (spec, input shape, checksums).
// Not for: reading .npy files (lib/io/npy.ts) or realistic weights (values are only reproducible and well-scaled).

import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { expectedWeights, validateSpec, type RepVGGSpec } from '../../lib/models/repvgg.js';
import { hostTensor, numel, type HostTensor, type StateDict } from '../../lib/tensor.js';

/** Which value formula a tensor uses; fixtureKindOf derives it from the key. */
export type FixtureKind =
  | 'input'
  | 'conv'
  | 'bnWeight'
  | 'bnBias'
  | 'runningMean'
  | 'runningVar'
  | 'seBias'
  | 'linearWeight'
  | 'linearBias';

/** FNV-1a 32-bit hash of the UTF-8 bytes of key: the seed of that key's tensor. */
export function fnv1a32(key: string): number {
  let hash = 2166136261;
  for (const byte of new TextEncoder().encode(key)) hash = Math.imul(hash ^ byte, 16777619) >>> 0;
  return hash;
}

/** Uniform value in [0, 1) with 24 random bits for element index i of the tensor seeded by seed. */
export function hashUniform(seed: number, i: number): number {
  let x = (seed + Math.imul(i, 0x9e3779b1)) >>> 0;
  x ^= x >>> 16;
  x = Math.imul(x, 0x7feb352d);
  x ^= x >>> 15;
  x = Math.imul(x, 0x846ca68b);
  x ^= x >>> 16;
  return (x >>> 8) / 16777216;
}

/** The formula a key uses, by its official name ('input' names the image batch). */
export function fixtureKindOf(key: string): FixtureKind {
  const endsWith = (...suffixes: string[]): boolean => suffixes.some((s) => key.endsWith(s));
  if (key === 'input') return 'input';
  if (endsWith('.conv.weight', 'se.down.weight', 'se.up.weight', 'rbr_1x1.weight')) return 'conv'; // QARepVGG's plain 1x1 too
  if (endsWith('bn.weight', 'rbr_identity.weight')) return 'bnWeight';
  if (endsWith('bn.bias', 'rbr_identity.bias')) return 'bnBias';
  if (endsWith('running_mean')) return 'runningMean';
  if (endsWith('running_var')) return 'runningVar';
  if (endsWith('se.down.bias', 'se.up.bias')) return 'seBias';
  if (key === 'linear.weight') return 'linearWeight';
  if (key === 'linear.bias') return 'linearBias';
  throw new Error(`No fixture formula for key '${key}'`);
}

/** Maps u in [0, 1) to a float64 value; the same operation order as make_fixtures.py keeps results bit-identical. */
function valueFormula(kind: FixtureKind, shape: readonly number[]): (u: number) => number {
  switch (kind) {
    case 'input':
      return (u) => 2 * u - 1;
    case 'conv': {
      // shape [out, in/groups, kh, kw]
      const fanIn = (shape[1] as number) * (shape[2] as number) * (shape[3] as number);
      const bound = Math.sqrt(3 / fanIn);
      return (u) => (2 * u - 1) * bound;
    }
    case 'bnWeight':
      return (u) => 0.5 + 0.4 * u;
    case 'bnBias':
    case 'runningMean':
      return (u) => 0.2 * (2 * u - 1);
    case 'runningVar':
      return (u) => 0.5 + u;
    case 'seBias':
    case 'linearBias':
      return (u) => 0.1 * (2 * u - 1);
    case 'linearWeight': {
      // shape [classes, inFeatures]
      const bound = Math.sqrt(3 / (shape[1] as number));
      return (u) => (2 * u - 1) * bound;
    }
  }
}

/** The deterministic tensor of a key: formula in float64 on hashUniform(fnv1a32(key), i), rounded to float32. */
export function fixtureTensor(key: string, shape: readonly number[], kind: FixtureKind = fixtureKindOf(key)): HostTensor {
  const seed = fnv1a32(key);
  const formula = valueFormula(kind, shape);
  const data = new Float32Array(numel(shape));
  for (let i = 0; i < data.length; i++) data[i] = formula(hashUniform(seed, i));
  return hostTensor(data, shape, key);
}

/** Training-time weights of a network, keyed and ordered as expectedWeights(spec, 'train'). */
export function fixtureStateDict(spec: RepVGGSpec): StateDict {
  const state: StateDict = new Map();
  for (const [key, shape] of expectedWeights(spec, 'train')) state.set(key, fixtureTensor(key, shape));
  return state;
}

/** Sum of the float32 bit patterns mod 2^32: the exact, order-independent fingerprint make_fixtures.py records. */
export function float32BitsSum(data: Float32Array): number {
  let sum = 0;
  for (const bits of new Uint32Array(data.buffer, data.byteOffset, data.length)) sum = (sum + bits) >>> 0;
  return sum;
}

export interface FixtureChecksum {
  readonly first5: readonly number[];
  /** float64 sum; compare with a tolerance since summation order differs between NumPy and a plain loop. */
  readonly sum: number;
  readonly bitsSum: number;
}

/** Contents of test/fixtures/<name>.json. */
export interface FixtureJson extends RepVGGSpec {
  /** [N, C, H, W] of <name>.input.npy. */
  readonly inputShape: readonly number[];
  /** Max |train - deploy| of PyTorch's float64 logits. */
  readonly maxAbsDiffTrainDeploy: number;
  readonly maxAbsLogit: number;
  /** Number of training-time tensors (num_batches_tracked excluded). */
  readonly tensorCount: number;
  /** Sum over all training-time tensors of float32BitsSum, mod 2^32. */
  readonly stateBitsSum: number;
  readonly checksums: Readonly<Record<string, FixtureChecksum>>;
}

/** The spec recorded in a fixture's json, validated. */
export function fixtureSpec(json: FixtureJson): RepVGGSpec {
  return validateSpec({
    arch: json.arch,
    inChannels: json.inChannels,
    numClasses: json.numClasses,
    stemChannels: json.stemChannels,
    stemStride: json.stemStride,
    stageChannels: json.stageChannels,
    stageDepths: json.stageDepths,
    stageStrides: json.stageStrides,
    blockGroups: json.blockGroups,
    seReduction: json.seReduction,
  });
}

/** Absolute path of a file in test/fixtures/, found from the repository root (works from test/ and dist/test/). */
export function fixturePath(fileName: string): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  while (!existsSync(path.join(dir, 'package.json'))) {
    const parent = path.dirname(dir);
    if (parent === dir) throw new Error(`No package.json above ${fileURLToPath(import.meta.url)}`);
    dir = parent;
  }
  return path.join(dir, 'test', 'fixtures', fileName);
}

/** Parsed test/fixtures/<name>.json, e.g. readFixtureJson('a0'). */
export function readFixtureJson(name: string): FixtureJson {
  return JSON.parse(readFileSync(fixturePath(`${name}.json`), 'utf8')) as FixtureJson;
}
