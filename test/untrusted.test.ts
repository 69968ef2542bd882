// Hostile files and metadata built in a temp dir: lying or malformed repvgg specs, checkpoint positions, configs
// and histories, deeply nested or huge .npy headers, huge labels, non-finite weights, safetensors with gaps or
// duplicate keys. Each must fail fast with one typed error naming the file and the field. Not for: the
// well-formed paths of these readers (io.test.ts, models.test.ts, data.test.ts, train.test.ts).

import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import test from 'ava';

import { loadNpyDataset } from '../lib/data/datasets.js';
import { ArgumentValueError, FormatError, WeightsMismatchError } from '../lib/errors.js';
import { decodeNpy, encodeNpy } from '../lib/io/npy.js';
import { decodeSafetensors, writeSafetensors } from '../lib/io/safetensors.js';
import { checkWeightValues } from '../lib/io/weight-values.js';
import { loadWeights, weightsMetadata } from '../lib/io/weights.js';
import {
  MAX_CHANNELS,
  MAX_CLASSES,
  MAX_SPEC_JSON_LENGTH,
  MAX_STAGE_DEPTH,
  checkSpecAgainstKeys,
  customSpec,
  expectedWeights,
  officialSpec,
  parseSpecJson,
  validateSpec,
  type RepVGGSpec,
} from '../lib/models/repvgg.js';
import type { StateDict } from '../lib/tensor.js';
import { readCheckpoint, writeCheckpoint } from '../lib/train/checkpoint.js';
import { cli, describeResult } from './helpers/cli-runner.js';
import { makeRng, randomArray, randomTrainState } from './helpers/reference.js';

let scratch = '';
test.before(async () => {
  scratch = await mkdtemp(join(tmpdir(), 'repvgg-untrusted-test-'));
});
test.after.always(async () => {
  if (scratch !== '') await rm(scratch, { recursive: true, force: true });
});

/** A tiny network: 1 + 4 blocks of 8 channels, so files stay a few KiB. */
const tinySpec = (): RepVGGSpec =>
  customSpec({ arch: 'tiny', numClasses: 3, stemChannels: 8, stageChannels: [8, 8, 8, 16], stageDepths: [1, 1, 1, 1] });

/** Random deployed weights with exactly the keys and shapes of spec. */
function randomDeployState(spec: RepVGGSpec, seed: number): StateDict {
  const rng = makeRng(seed);
  const state: StateDict = new Map();
  for (const [key, shape] of expectedWeights(spec, 'deploy')) {
    state.set(key, { shape, data: randomArray(shape.reduce((p, d) => p * d, 1), rng, 0.5) });
  }
  return state;
}

/** The spec as JSON with some fields replaced (values a hostile file could hold). */
const specJson = (spec: RepVGGSpec, changes: Record<string, unknown>): string => JSON.stringify({ ...spec, ...changes });

// ---------------------------------------------------------------------------------------------------------------
// repvgg_spec metadata

test('export-onnx rejects a spec claiming 10^7 blocks before any work: exit 1, one line naming stageDepths', async (t) => {
  const spec = tinySpec();
  const blocks = 10_000_000;
  const path = join(scratch, 'ten-million-blocks.safetensors');
  // A consistent lie: depths and one group per block agree, so only a bound (or the tensors present) can stop it.
  const lie = specJson(spec, { stageDepths: [blocks, 1, 1, 1], blockGroups: new Array(blocks + 3).fill(1) });
  await writeSafetensors(path, randomDeployState(spec, 1), { ...weightsMetadata(spec, 'deploy'), repvgg_spec: lie });
  const out = join(scratch, 'never-written.onnx');
  // The time limit only ends a hang of the unfixed code; the assertions are about the error.
  const result = await cli(['export-onnx', '--weights', path, '--out', out], 60_000);
  t.is(result.code, 1, describeResult(result));
  const lines = result.stderr.trimEnd().split('\n');
  t.is(lines.length, 1, describeResult(result));
  t.regex(lines[0] ?? '', /^repvgg: .*ten-million-blocks\.safetensors metadata repvgg_spec: \d+ characters, more than/);
  t.notRegex(result.stderr, /unexpected error|    at /);
});

test('loadWeights rejects a spec within bounds whose block count disagrees with the tensors present', async (t) => {
  const spec = tinySpec();
  const path = join(scratch, 'lying-depths.safetensors');
  const lie = specJson(spec, { stageDepths: [1, 1, 300, 1], blockGroups: new Array(303).fill(1) });
  await writeSafetensors(path, randomDeployState(spec, 2), { ...weightsMetadata(spec, 'deploy'), repvgg_spec: lie });
  const error = await t.throwsAsync(loadWeights(path), { instanceOf: WeightsMismatchError });
  t.regex(error?.message ?? '', /lying-depths\.safetensors/);
  t.regex(error?.message ?? '', /\[1, 1, 1, 1\]/, 'names the blocks present');
  t.regex(error?.message ?? '', /\[1, 1, 300, 1\]/, 'names the blocks the spec claims');
});

test('loadWeights rejects malformed repvgg_spec JSON with a FormatError naming the file', async (t) => {
  const spec = tinySpec();
  const path = join(scratch, 'malformed-spec.safetensors');
  await writeSafetensors(path, randomDeployState(spec, 3), { ...weightsMetadata(spec, 'deploy'), repvgg_spec: '{"arch": "tiny",' });
  const error = await t.throwsAsync(loadWeights(path), { instanceOf: FormatError });
  t.regex(error?.message ?? '', /malformed-spec\.safetensors.*repvgg_spec.*not valid JSON/);
});

test('parseSpecJson round-trips every official spec and a custom one', (t) => {
  for (const spec of [officialSpec('A0'), officialSpec('B2g4', { numClasses: 7 }), officialSpec('D2se'), tinySpec()]) {
    t.deepEqual(parseSpecJson(JSON.stringify(spec), 'x'), spec);
  }
});

test('parseSpecJson rejects text longer than any valid spec before parsing it', (t) => {
  const blocks = MAX_STAGE_DEPTH * 4;
  const largest = specJson(tinySpec(), { stageDepths: new Array(4).fill(MAX_STAGE_DEPTH), blockGroups: new Array(blocks).fill(MAX_CHANNELS) });
  t.true(largest.length < MAX_SPEC_JSON_LENGTH, `the largest spec within bounds (${largest.length} characters) fits`);
  t.throws(() => parseSpecJson(' '.repeat(MAX_SPEC_JSON_LENGTH + 1), 's'), {
    instanceOf: FormatError,
    message: `s: ${MAX_SPEC_JSON_LENGTH + 1} characters, more than the ${MAX_SPEC_JSON_LENGTH} any valid spec needs`,
  });
});

test('parseSpecJson rejects wrong types, nulls, nesting and out-of-bound values naming the source and field', (t) => {
  const spec = tinySpec();
  const cases: [Record<string, unknown>, RegExp][] = [
    [{ numClasses: '3' }, /numClasses but received string '3'/],
    [{ numClasses: null }, /numClasses but received null/],
    [{ numClasses: MAX_CLASSES + 1 }, new RegExp(`numClasses but received number ${MAX_CLASSES + 1}`)],
    [{ inChannels: 2.5 }, /inChannels but received number 2.5/],
    [{ stemChannels: 1e300 }, /stemChannels but received number 1e\+300/],
    [{ stageChannels: [[8], 8, 8, 16] }, /stageChannels\[0\] but received array \[8\]/],
    [{ stageChannels: [8, 8, MAX_CHANNELS + 1, 16] }, new RegExp(`stageChannels\\[2\\] but received number ${MAX_CHANNELS + 1}`)],
    [{ stageChannels: { length: 4 } }, /stageChannels but received object/],
    [{ stageDepths: [1, 1, MAX_STAGE_DEPTH + 1, 1] }, new RegExp(`stageDepths\\[2\\] but received number ${MAX_STAGE_DEPTH + 1}`)],
    [{ stageStrides: [2, 2, 3, 2] }, /stageStrides\[2\] but received number 3/],
    [{ blockGroups: [1, 1, '2', 1] }, /blockGroups\[2\] but received string '2'/],
    [{ blockGroups: 'all' }, /blockGroups but received string 'all'/],
    [{ seReduction: -1 }, /seReduction but received number -1/],
    [{ arch: 'x'.repeat(10_000) }, /arch but received string 'xxxx/],
    [{ arch: 7 }, /arch but received number 7/],
  ];
  for (const [changes, pattern] of cases) {
    const error = t.throws(() => parseSpecJson(specJson(spec, changes), 'w.safetensors metadata repvgg_spec'), {
      instanceOf: FormatError,
    });
    t.regex(error?.message ?? '', pattern, JSON.stringify(changes).slice(0, 80));
    t.true(error?.message.startsWith('w.safetensors metadata repvgg_spec: '), error?.message);
  }
  for (const text of ['[1, 2]', 'null', '"A0"', '{"arch": "tiny"']) {
    const error = t.throws(() => parseSpecJson(text, 'm.safetensors metadata repvgg_spec'), { instanceOf: FormatError });
    t.true(error?.message.startsWith('m.safetensors metadata repvgg_spec: '), error?.message);
  }
});

test('validateSpec bounds specs built in code with ArgumentValueError naming the field', (t) => {
  const base = { numClasses: 3, stemChannels: 8, stageChannels: [8, 8, 8, 16], stageDepths: [1, 1, 1, 1] };
  t.throws(() => customSpec({ ...base, stageDepths: [1, 10_000_000, 1, 1] }), {
    instanceOf: ArgumentValueError,
    message: /stageDepths\[1\] but received number 10000000/,
  });
  t.throws(() => customSpec({ ...base, stemChannels: MAX_CHANNELS * 2 }), { instanceOf: ArgumentValueError, message: /stemChannels/ });
  t.throws(() => officialSpec('A0', { numClasses: 2 ** 31 - 1 }), { instanceOf: ArgumentValueError, message: /numClasses/ });
  t.throws(() => validateSpec({ ...tinySpec(), blockGroups: [1, 1, 1, null as unknown as number] }), {
    instanceOf: ArgumentValueError,
    message: /blockGroups\[3\] but received null/,
  });
});

test('checkSpecAgainstKeys accepts the keys of the spec and rejects another depth in either form', (t) => {
  const a0 = officialSpec('A0');
  const b0 = officialSpec('B0');
  for (const form of ['train', 'deploy'] as const) {
    t.notThrows(() => checkSpecAgainstKeys(a0, expectedWeights(a0, form).keys(), form, 'a0.safetensors'));
    const error = t.throws(() => checkSpecAgainstKeys(b0, expectedWeights(a0, form).keys(), form, 'a0.safetensors'), {
      instanceOf: WeightsMismatchError,
    });
    t.regex(error?.message ?? '', /a0\.safetensors.*\[2, 4, 14, 1\].*RepVGG-B0.*\[4, 6, 16, 1\]/);
  }
  const noStem = [...expectedWeights(a0, 'deploy').keys()].filter((k) => !k.startsWith('stage0.'));
  t.throws(() => checkSpecAgainstKeys(a0, noStem, 'deploy', 'x.safetensors'), { instanceOf: WeightsMismatchError, message: /stage0/ });
});

// ---------------------------------------------------------------------------------------------------------------
// Checkpoints

/** Writes a valid checkpoint of tinySpec, then returns a writer of the same file with some metadata replaced. */
async function checkpointWriter(): Promise<(name: string, metadata: Record<string, string>) => Promise<string>> {
  const spec = tinySpec();
  const weights = randomTrainState(spec, makeRng(11));
  const momentum = new Map([...weights].map(([k, v]) => [k, randomArray(v.data.length, makeRng(12), 0.1)]));
  const good = {
    format: 'repvgg-checkpoint',
    position: JSON.stringify({ epoch: 2, stepInEpoch: 3, globalStep: 23 }),
    config: JSON.stringify({ spec, epochs: 5, batchSize: 4 }),
    history: JSON.stringify({ loss: [[20, 1.5]], testAccuracy: [[10, 0.5]] }),
  };
  const state: StateDict = new Map(weights);
  for (const [k, v] of momentum) state.set(`optimizer.momentum.${k}`, { shape: [v.length], data: v });
  return async (name, changes) => {
    const path = join(scratch, name);
    await writeSafetensors(path, state, { ...good, ...changes });
    return path;
  };
}

test('readCheckpoint reads back what writeCheckpoint wrote', async (t) => {
  const spec = tinySpec();
  const weights = randomTrainState(spec, makeRng(13));
  const momentum = new Map([...weights].map(([k, v]) => [k, randomArray(v.data.length, makeRng(14), 0.1)]));
  const path = join(scratch, 'good-checkpoint.safetensors');
  const position = { epoch: 1, stepInEpoch: 0, globalStep: 8 };
  const history = { loss: [[4, 2.25]], testAccuracy: [[8, 0.25]] };
  await writeCheckpoint(path, { weights, momentum, ema: undefined, position, config: { spec, epochs: 3 }, history });
  const read = await readCheckpoint(path);
  t.deepEqual(read.position, position);
  t.deepEqual(read.config, { spec, epochs: 3 });
  t.deepEqual(read.history, history);
  t.deepEqual(read.momentum, momentum);
});

test('readCheckpoint rejects malformed position, config and history with a FormatError naming file and field', async (t) => {
  const write = await checkpointWriter();
  const cases: [Record<string, string>, RegExp][] = [
    [{ position: '{"epoch": 1,' }, /position.*not valid JSON/],
    [{ position: '[1, 2, 3]' }, /position/],
    [{ position: JSON.stringify({ epoch: -1, stepInEpoch: 0, globalStep: 0 }) }, /position\.epoch but received number -1/],
    [{ position: JSON.stringify({ epoch: 0, stepInEpoch: 0.5, globalStep: 0 }) }, /position\.stepInEpoch but received number 0\.5/],
    [{ position: JSON.stringify({ epoch: 0, stepInEpoch: 0, globalStep: '7' }) }, /position\.globalStep but received string '7'/],
    [{ position: JSON.stringify({ epoch: 0, stepInEpoch: 0, globalStep: 2 ** 60 }) }, /position\.globalStep/],
    [{ config: 'not json' }, /config.*not valid JSON/],
    [{ config: '"a string"' }, /config but received string/],
    [{ config: JSON.stringify({ epochs: 3 }) }, /config\.spec/],
    [{ config: JSON.stringify({ spec: { ...tinySpec(), stageDepths: [1, 1e7, 1, 1] } }) }, /config\.spec.*stageDepths\[1\]/],
    [{ history: '{"loss": [' }, /history.*not valid JSON/],
    [{ history: JSON.stringify({ loss: 'many', testAccuracy: [] }) }, /history\.loss but received string/],
    [{ history: JSON.stringify({ loss: [[1, 2, 3]], testAccuracy: [] }) }, /history\.loss\[0\]/],
    [{ history: JSON.stringify({ loss: [], testAccuracy: [['1', 0.5]] }) }, /history\.testAccuracy\[0\]/],
  ];
  for (const [i, [changes, pattern]] of cases.entries()) {
    const path = await write(`bad-checkpoint-${i}.safetensors`, changes);
    const error = await t.throwsAsync(readCheckpoint(path), { instanceOf: FormatError }, JSON.stringify(changes).slice(0, 80));
    t.regex(error?.message ?? '', pattern);
    t.true(error?.message.includes(`bad-checkpoint-${i}.safetensors`), error?.message);
  }
});

test('readCheckpoint rejects a config spec that does not match the weights it holds', async (t) => {
  const write = await checkpointWriter();
  const other = { ...tinySpec(), stageDepths: [1, 2, 1, 1], blockGroups: [1, 1, 1, 1, 1] };
  const path = await write('checkpoint-other-spec.safetensors', { config: JSON.stringify({ spec: other }) });
  await t.throwsAsync(readCheckpoint(path), { instanceOf: WeightsMismatchError, message: /checkpoint-other-spec/ });
});

// ---------------------------------------------------------------------------------------------------------------
// .npy headers

/** A .npy v2 file whose header is the given text (padded with spaces and '\n' to a multiple of 64 bytes). */
function npyWithHeader(header: string, data: Uint8Array = new Uint8Array(0)): Buffer {
  const padded = header + ' '.repeat((64 - ((12 + header.length + 1) % 64)) % 64) + '\n';
  const preamble = Buffer.from([0x93, ...Buffer.from('NUMPY', 'latin1'), 2, 0, 0, 0, 0, 0]);
  preamble.writeUInt32LE(padded.length, 8);
  return Buffer.concat([preamble, Buffer.from(padded, 'latin1'), data]);
}

test('a .npy header nested 5,000 deep is a FormatError, not a stack overflow', (t) => {
  const deep = `{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'x': ${'['.repeat(5000)}${']'.repeat(5000)}}`;
  t.throws(() => decodeNpy(npyWithHeader(deep, new Uint8Array(4)), 'deep.npy'), {
    instanceOf: FormatError,
    message: /^deep\.npy: .*nest/,
  });
  // Modest nesting stays readable: older NumPy wrote nested descr lists for structured dtypes.
  const nested = `{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'x': [[[(1, 2)]]]}`;
  t.deepEqual(decodeNpy(npyWithHeader(nested, new Uint8Array(4)), 'nested.npy').shape, [1]);
});

test('a .npy header longer than the bound is a FormatError naming its length', (t) => {
  const huge = `{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }${' '.repeat(4 * 2 ** 20)}`;
  t.throws(() => decodeNpy(npyWithHeader(huge, new Uint8Array(4)), 'huge.npy'), {
    instanceOf: FormatError,
    message: /^huge\.npy: .*header.*\d+ bytes/,
  });
});

// ---------------------------------------------------------------------------------------------------------------
// Labels

test('loadNpyDataset rejects a label of 2^31-2 naming the file, index and label', async (t) => {
  const rng = makeRng(21);
  const count = 6;
  const xPath = join(scratch, 'images.npy');
  const yPath = join(scratch, 'huge-label.npy');
  await writeFile(xPath, encodeNpy(randomArray(count * 4 * 4, rng, 1), [count, 1, 4, 4]));
  const labels = BigInt64Array.from({ length: count }, (_, i) => BigInt(Math.floor(rng() * 10) + i));
  labels[4] = BigInt(2 ** 31 - 2);
  await writeFile(yPath, encodeNpy(labels, [count]));
  const error = await t.throwsAsync(loadNpyDataset(xPath, yPath), { instanceOf: ArgumentValueError });
  t.regex(error?.message ?? '', /2147483646 at index 4 of '.*huge-label\.npy'/);
  t.regex(error?.message ?? '', new RegExp(String(MAX_CLASSES)));
  await t.throwsAsync(loadNpyDataset(xPath, yPath, { numClasses: MAX_CLASSES + 1 }), {
    instanceOf: ArgumentValueError,
    message: /numClasses/,
  });
});

// ---------------------------------------------------------------------------------------------------------------
// Weight values

test('checkWeightValues accepts random weights and names the key, index and value of NaN, Inf and negative running_var', (t) => {
  const spec = tinySpec();
  const state = randomTrainState(spec, makeRng(31));
  t.notThrows(() => checkWeightValues(state, 'ok.safetensors'));
  const keys = [...state.keys()];
  const rng = makeRng(32);
  const corrupt = (key: string, value: number): { copy: StateDict; index: number } => {
    const tensor = state.get(key)!;
    const data = tensor.data.slice();
    const index = Math.floor(rng() * data.length);
    data[index] = value;
    return { copy: new Map([...state, [key, { shape: tensor.shape, data }]]), index };
  };
  for (const [key, value, shown] of [
    [keys[Math.floor(rng() * keys.length)]!, NaN, 'NaN'],
    ['linear.weight', Infinity, 'Infinity'],
    ['stage2.0.rbr_dense.conv.weight', -Infinity, '-Infinity'],
    ['stage1.0.rbr_1x1.bn.running_var', -0.25, '-0.25'],
  ] as const) {
    const { copy, index } = corrupt(key, value);
    const error = t.throws(() => checkWeightValues(copy, 'bad.safetensors'), { instanceOf: FormatError });
    t.true(error?.message.startsWith('bad.safetensors: '), error?.message);
    t.true(error?.message.includes(`'${key}'`), error?.message);
    t.true(error?.message.includes(`${shown} at index ${index}`), error?.message);
  }
  // A negative value elsewhere (a bias, a mean) is fine; only variances must be non-negative.
  t.notThrows(() => checkWeightValues(corrupt('stage1.0.rbr_1x1.bn.running_mean', -0.25).copy, 'ok.safetensors'));
});

// ---------------------------------------------------------------------------------------------------------------
// safetensors layout

/** Bytes of a safetensors file with the given header text (padded to 8 bytes) and data buffer. */
function safetensorsBytes(header: string, data: Uint8Array): Buffer {
  const json = Buffer.from(header + ' '.repeat((8 - (header.length % 8)) % 8), 'utf8');
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt(json.length));
  return Buffer.concat([length, json, data]);
}

const entry = (begin: number, end: number): string => `{"dtype":"F32","shape":[${(end - begin) / 4}],"data_offsets":[${begin},${end}]}`;

test('safetensors: a gap before, between or after the tensors is a FormatError', (t) => {
  const data = Buffer.from(randomArray(6, makeRng(41), 1).buffer);
  t.is(decodeSafetensors(safetensorsBytes(`{"a":${entry(0, 8)},"b":${entry(8, 24)}}`, data), 'ok').tensors.size, 2);
  const cases: [string, Uint8Array, RegExp][] = [
    [`{"a":${entry(0, 8)},"b":${entry(12, 24)}}`, data, /'b'.*\[12, 24\].*4 unused bytes after 'a'/],
    [`{"a":${entry(4, 8)},"b":${entry(8, 24)}}`, data, /'a'.*\[4, 8\].*4 unused bytes at the start/],
    [`{"a":${entry(0, 8)},"b":${entry(8, 20)}}`, data, /4 unused bytes after the last tensor 'b'/],
    [`{"__metadata__":{"k":"v"}}`, data, /24 unused bytes/],
  ];
  for (const [header, bytes, pattern] of cases) {
    const error = t.throws(() => decodeSafetensors(safetensorsBytes(header, bytes), 'gap.safetensors'), { instanceOf: FormatError });
    t.regex(error?.message ?? '', pattern);
    t.true(error?.message.startsWith('gap.safetensors: '), error?.message);
  }
  // Empty tensors share an offset with their neighbour: no gap, as in the reference implementation.
  const empty = `{"a":${entry(0, 8)},"e":${entry(8, 8)},"b":${entry(8, 24)}}`;
  t.is(decodeSafetensors(safetensorsBytes(empty, data), 'ok').tensors.size, 3);
});

test('safetensors: duplicate keys at any level are a FormatError naming the key', (t) => {
  const data = Buffer.from(randomArray(2, makeRng(42), 1).buffer);
  const cases: [string, RegExp][] = [
    [`{"w":${entry(0, 8)},"w":${entry(0, 8)}}`, /duplicate key 'w'/],
    [`{"w":${entry(0, 8)},"\\u0077":${entry(0, 8)}}`, /duplicate key 'w'/],
    [`{"__metadata__":{"a":"1"},"w":${entry(0, 8)},"__metadata__":{"a":"2"}}`, /duplicate key '__metadata__'/],
    [`{"__metadata__":{"arch":"A0","arch":"B0"},"w":${entry(0, 8)}}`, /duplicate key 'arch' in '__metadata__'/],
    [`{"w":{"dtype":"F32","dtype":"I32","shape":[2],"data_offsets":[0,8]}}`, /duplicate key 'dtype' in 'w'/],
  ];
  for (const [header, pattern] of cases) {
    const error = t.throws(() => decodeSafetensors(safetensorsBytes(header, data), 'dup.safetensors'), { instanceOf: FormatError });
    t.regex(error?.message ?? '', pattern);
    t.true(error?.message.startsWith('dup.safetensors: '), error?.message);
  }
  // Equal strings as values, and keys equal to ones of another object, are not duplicates.
  const fine = `{"__metadata__":{"dtype":"F32","x":"F32"},"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`;
  t.is(decodeSafetensors(safetensorsBytes(fine, data), 'ok').tensors.size, 1);
});

test('safetensors: more tensors than the bound is a FormatError', (t) => {
  const count = 200_001;
  const parts = Array.from({ length: count }, (_, i) => `"t${i}":${entry(0, 0)}`);
  const error = t.throws(() => decodeSafetensors(safetensorsBytes(`{${parts.join(',')}}`, new Uint8Array(0)), 'many.safetensors'), {
    instanceOf: FormatError,
  });
  t.regex(error?.message ?? '', /^many\.safetensors: .*200001 tensors/);
});
