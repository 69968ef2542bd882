// File formats in lib/io: .npy and safetensors round trips, files written by real NumPy, hand-built headers
// (v2/v3 .npy, F64/F16/BF16 safetensors), every rejected input and atomic writes leaving no partial file.
// Not for: ONNX export (test/onnx.test.ts) or whether weights fit an architecture.

import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import test from 'ava';

import { ArgumentTypeError, ArgumentValueError, FormatError, ShapeError } from '../lib/errors.js';
import { readFileChecked, writeFileAtomic } from '../lib/io/atomic.js';
import { decodeNpy, encodeNpy, readNpy, readNpyFloat32, writeNpy } from '../lib/io/npy.js';
import type { NpyDtype, NpyTypedArray } from '../lib/io/npy.js';
import {
  decodeSafetensors,
  decodeStateDict,
  encodeSafetensors,
  readSafetensors,
  readStateDict,
  writeSafetensors,
} from '../lib/io/safetensors.js';
import type { HostTensor, StateDict } from '../lib/tensor.js';
import { makeRng, randomArray } from './helpers/reference.js';

/** Made once with NumPy 1.24: np.save(path, np.array(values, dtype)); the values are listed here. */
const NUMPY_FLOAT32 = fileURLToPath(new URL('../../test/fixtures/numpy_written.npy', import.meta.url));
const NUMPY_FLOAT32_VALUES = [1.5, -2.25, 3.0, 0.1, 1e-3, -7.0]; // shape (2, 3)
const NUMPY_INT64 = fileURLToPath(new URL('../../test/fixtures/numpy_written_i64.npy', import.meta.url));
const NUMPY_INT64_VALUES = [0n, -1n, 7n, 2n ** 40n + 3n, -(2n ** 62n)]; // shape (5,)

let scratch = '';
test.before(async () => {
  scratch = await mkdtemp(join(tmpdir(), 'repvgg-io-test-'));
});
test.after.always(async () => {
  if (scratch !== '') await rm(scratch, { recursive: true, force: true });
});

/** A fresh empty folder under the scratch folder, so tests can check listings independently. */
async function freshDir(name: string): Promise<string> {
  const dir = join(scratch, name);
  await mkdir(dir);
  return dir;
}

/** The preamble + header of a .npy file with the given version and header text (padded to 64 like NumPy). */
function npyPrefix(major: 1 | 2 | 3, header: string): Buffer {
  const lengthBytes = major === 1 ? 2 : 4;
  const text = Buffer.from(header, major === 3 ? 'utf8' : 'latin1');
  const padding = (64 - ((8 + lengthBytes + text.length + 1) % 64)) % 64;
  const headerLength = text.length + padding + 1;
  const prefix = Buffer.alloc(8 + lengthBytes + headerLength, 0x20);
  prefix.write('\x93NUMPY', 0, 'latin1');
  prefix[6] = major;
  prefix[7] = 0;
  if (major === 1) prefix.writeUInt16LE(headerLength, 8);
  else prefix.writeUInt32LE(headerLength, 8);
  text.copy(prefix, 8 + lengthBytes);
  prefix[prefix.length - 1] = 0x0a;
  return prefix;
}

function bytesOf(array: NpyTypedArray | Uint16Array): Buffer {
  return Buffer.from(array.buffer, array.byteOffset, array.byteLength);
}

/** A safetensors file from a header given as an object or raw text, followed by the data bytes. */
function buildSafetensors(header: object | string, data: Uint8Array = new Uint8Array(0)): Buffer {
  const json = Buffer.from(typeof header === 'string' ? header : JSON.stringify(header), 'utf8');
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt(json.length));
  return Buffer.concat([length, json, data]);
}

function randomInt64(n: number, seed: number): BigInt64Array {
  const rng = makeRng(seed);
  return BigInt64Array.from({ length: n }, () => BigInt(Math.floor((rng() - 0.5) * 2 ** 52)) * 4099n + 1n);
}

// ---------------------------------------------------------------------------------------------------------------
// .npy

const NPY_CASES: Array<{ name: NpyDtype; shape: number[]; make: (n: number) => NpyTypedArray }> = [
  { name: 'float32', shape: [2, 3, 4], make: (n) => randomArray(n, makeRng(1), 10) },
  { name: 'float64', shape: [5, 7], make: (n) => Float64Array.from(randomArray(n, makeRng(2), 1), (v) => v / 3) },
  { name: 'int64', shape: [9], make: (n) => randomInt64(n, 3) },
  { name: 'int32', shape: [3, 1, 2], make: (n) => Int32Array.from(randomArray(n, makeRng(4), 1), (v) => (v * 2 ** 30) | 1) },
  { name: 'uint8', shape: [4, 4], make: (n) => Uint8Array.from(randomArray(n, makeRng(5), 1), (v) => 1 + Math.abs(v) * 254) },
];

for (const { name, shape, make } of NPY_CASES) {
  test(`npy round trip keeps ${name} data, dtype and shape`, async (t) => {
    const data = make(shape.reduce((p, d) => p * d, 1));
    const path = join(scratch, `roundtrip-${name}.npy`);
    await writeNpy(path, data, shape);
    const bytes = await readFile(path);
    t.is(bytes.readUInt16LE(8) + 10, bytes.length - data.byteLength, 'data follows the header');
    t.is((bytes.length - data.byteLength) % 64, 0, 'data starts 64-byte aligned');
    const read = await readNpy(path);
    t.is(read.dtype, name);
    t.deepEqual(read.shape, shape);
    t.is(read.data.constructor, data.constructor);
    t.deepEqual(read.data, data);
  });
}

test('npy round trip of 0-d and empty arrays', (t) => {
  const scalar = decodeNpy(encodeNpy(new Float32Array([2.5]), []));
  t.deepEqual(scalar.shape, []);
  t.deepEqual(scalar.data, new Float32Array([2.5]));
  t.true(encodeNpy(new Float32Array([2.5]), []).toString('latin1').includes("'shape': (), }"));
  const empty = decodeNpy(encodeNpy(new Int32Array(0), [0, 3]));
  t.deepEqual(empty.shape, [0, 3]);
  t.is(empty.data.length, 0);
});

test('encodeNpy writes the same bytes as NumPy', async (t) => {
  const ours = encodeNpy(new Float32Array(NUMPY_FLOAT32_VALUES), [2, 3]);
  t.deepEqual(ours, await readFile(NUMPY_FLOAT32));
  const ours64 = encodeNpy(BigInt64Array.from(NUMPY_INT64_VALUES), [5]);
  t.deepEqual(ours64, await readFile(NUMPY_INT64));
});

test('reads float32 and int64 files written by NumPy', async (t) => {
  const images = await readNpyFloat32(NUMPY_FLOAT32, 'input');
  t.deepEqual(images.shape, [2, 3]);
  t.deepEqual(Array.from(images.data), NUMPY_FLOAT32_VALUES.map(Math.fround));
  const labels = await readNpy(NUMPY_INT64, 'labels');
  t.is(labels.dtype, 'int64');
  t.deepEqual(labels.shape, [5]);
  t.deepEqual(Array.from(labels.data as BigInt64Array), NUMPY_INT64_VALUES);
});

test('reads hand-built v2.0 and v3.0 headers with odd spacing, trailing commas and Python 2 longs', (t) => {
  const values = new Float64Array([1.25, -3.5, 1e-300, 7, -0.125, 42]);
  const v2Header = `{ "shape" :(2,3,),'fortran_order':False , 'descr':'<f8',}`;
  const v2 = decodeNpy(Buffer.concat([npyPrefix(2, v2Header), bytesOf(values)]));
  t.is(v2.dtype, 'float64');
  t.deepEqual(v2.shape, [2, 3]);
  t.deepEqual(v2.data, values);
  const python2Header = "{'descr': '<f8', 'fortran_order': False, 'shape': (6L,)}";
  const v1Long = decodeNpy(Buffer.concat([npyPrefix(1, python2Header), bytesOf(values)]));
  t.deepEqual(v1Long.shape, [6]);
  const labels = new Uint8Array([3, 1, 4]);
  const v3Header = "{'descr': '|u1', 'fortran_order': False, 'shape': [3], 'note': 'ünïcode'}";
  const v3 = decodeNpy(Buffer.concat([npyPrefix(3, v3Header), labels]));
  t.is(v3.dtype, 'uint8');
  t.deepEqual(v3.data, labels);
});

test('encodeNpy switches to format 2.0 when the header exceeds 64 KiB', (t) => {
  const shape = new Array<number>(30000).fill(1); // more dimensions than NumPy allows, but a legal header
  const bytes = encodeNpy(new Float32Array([4.5]), shape);
  t.is(bytes[6], 2);
  t.is((bytes.readUInt32LE(8) + 12) % 64, 0);
  const read = decodeNpy(bytes);
  t.is(read.shape.length, 30000);
  t.deepEqual(read.data, new Float32Array([4.5]));
});

test('decodeNpy copies data from an unaligned buffer into an aligned array', (t) => {
  const encoded = encodeNpy(new Float32Array([1, 2, 3]), [3]);
  const shifted = new Uint8Array(encoded.length + 1);
  shifted.set(encoded, 1);
  const read = decodeNpy(shifted.subarray(1));
  t.deepEqual(read.data, new Float32Array([1, 2, 3]));
  t.is(read.data.byteOffset % 4, 0);
});

test('readNpy of a missing file names the argument and the path', async (t) => {
  const path = join(scratch, 'does-not-exist.npy');
  const error = await t.throwsAsync(readNpy(path, '--input'), { instanceOf: ArgumentValueError });
  t.is(error?.message, `Expected an existing file for --input but received '${path}' (not found)`);
});

test('readNpyFloat32 rejects other dtypes, naming the dtype received', async (t) => {
  const error = await t.throwsAsync(readNpyFloat32(NUMPY_INT64, '--input'), { instanceOf: ArgumentTypeError });
  t.true(error?.message.startsWith(`Expected a float32 .npy file for --input but received '${NUMPY_INT64}' of dtype int64`));
});

test('truncated .npy data is rejected with the expected and actual sizes', async (t) => {
  const path = join(scratch, 'truncated.npy');
  const full = encodeNpy(new Float32Array(2 * 3 * 5 * 5).fill(1), [2, 3, 5, 5]);
  await writeFile(path, full.subarray(0, full.length - 7));
  const error = await t.throwsAsync(readNpy(path), { instanceOf: FormatError });
  t.is(error?.message, `${path}: expected 600 data bytes for shape [2, 3, 5, 5] float32 but the file has 593`);
  t.throws(() => decodeNpy(Buffer.concat([full, Buffer.from([0])]), 'x.npy'), {
    instanceOf: FormatError,
    message: 'x.npy: expected 600 data bytes for shape [2, 3, 5, 5] float32 but the file has 601',
  });
});

test('bad .npy magic, version, header and dtypes are rejected with FormatError naming the file', (t) => {
  const data = bytesOf(new Float32Array([1, 2]));
  const reject = (bytes: Uint8Array, pattern: RegExp): void => {
    const error = t.throws(() => decodeNpy(bytes, 'bad.npy'), { instanceOf: FormatError });
    t.regex(error?.message ?? '', pattern);
    t.true(error?.message.startsWith('bad.npy: '));
  };
  reject(Buffer.from('PK\x03\x04 this is a zip'), /not a \.npy file/);
  reject(Buffer.alloc(0), /not a \.npy file/);
  reject(Buffer.from('\x93NUMPY\x01', 'latin1'), /truncated inside its preamble/);
  const withHeader = (header: string): Buffer => Buffer.concat([npyPrefix(1, header), data]);
  const good = npyPrefix(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }");
  reject(good.subarray(0, 40), /header says it is 118 bytes but the file ends after 30/);
  const version4 = Buffer.from(good);
  version4[6] = 4;
  reject(Buffer.concat([version4, data]), /unsupported \.npy format version 4\.0/);
  reject(withHeader("{'descr': '<f4', 'fortran_order': False, 'shape': (2,"), /malformed \.npy header \(unexpected end at character 54\)/);
  reject(withHeader("{'descr' '<f4', 'fortran_order': False, 'shape': (2,)}"), /malformed \.npy header \(expected ':' at character 9\)/);
  reject(withHeader("{'descr': '<f4', 'fortran_order': Nope, 'shape': (2,)}"), /malformed .*unexpected character/);
  reject(withHeader("{'descr': '<f4', 'shape': (2,)}"), /no 'fortran_order' key/);
  reject(withHeader("{'descr': '<f4', 'fortran_order': False, 'shape': (2, -1)}"), /'shape' is \[2,-1\]/);
  reject(withHeader("{'descr': '>f4', 'fortran_order': False, 'shape': (2,)}"), /big-endian data \('>f4'\) is not supported/);
  reject(withHeader("{'descr': '<f4', 'fortran_order': True, 'shape': (2,)}"), /Fortran-ordered arrays are not supported/);
  reject(withHeader("{'descr': '<c8', 'fortran_order': False, 'shape': (1,)}"), /unsupported \.npy dtype '<c8'/);
  reject(withHeader("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,)}"), /structured dtypes/);
});

test('encodeNpy rejects unsupported arrays and shapes that do not match', (t) => {
  t.throws(() => encodeNpy(new Int16Array(2) as unknown as Int32Array, [2]), {
    instanceOf: ArgumentTypeError,
    message: /but received Int16Array\(2\)$/,
  });
  t.throws(() => encodeNpy(new Float32Array(6), [2, 4]), {
    instanceOf: ShapeError,
    message: 'Expected an array of 8 elements for shape [2, 4] but received Float32Array(6)',
  });
  t.throws(() => encodeNpy(new Float32Array(2), [2.5]), { instanceOf: ArgumentValueError });
});

// ---------------------------------------------------------------------------------------------------------------
// safetensors

function randomState(seed: number): StateDict {
  const rng = makeRng(seed);
  const tensor = (shape: number[]): HostTensor => ({ shape, data: randomArray(shape.reduce((p, d) => p * d, 1), rng, 2) });
  // Integer-like names ('10', '2') check that the Map's order survives, which a JS object's would not.
  return new Map([
    ['stage0.rbr_dense.conv.weight', tensor([4, 3, 3, 3])],
    ['stage0.rbr_dense.bn.weight', tensor([3])],
    ['10', tensor([1])],
    ['2', tensor([])],
    ['linear.weight', tensor([10, 4])],
  ]);
}

test('safetensors round trip keeps tensors, their order and the metadata', async (t) => {
  const state = randomState(7);
  const metadata = { arch: 'RepVGG-A0', num_classes: '10', form: 'train', mean: '0.485,0.456,0.406' };
  const path = join(scratch, 'roundtrip.safetensors');
  await writeSafetensors(path, state, metadata);
  const bytes = await readFile(path);
  t.is(Number(bytes.readBigUInt64LE(0)) % 8, 0, 'data starts 8-byte aligned');
  t.deepEqual(bytes, encodeSafetensors(state, metadata));
  const read = await readStateDict(path);
  t.deepEqual(read.metadata, metadata);
  t.deepEqual([...read.state.keys()], [...state.keys()]);
  for (const [name, tensor] of state) t.deepEqual(read.state.get(name), tensor, name);
  t.deepEqual((await readSafetensors(path)).tensors.get('linear.weight')?.dtype, 'F32');
});

test('safetensors without metadata reads back an empty metadata object', (t) => {
  const state: StateDict = new Map([['w', { shape: [2], data: new Float32Array([1, -1]) }]]);
  const bytes = encodeSafetensors(state);
  t.false(bytes.toString('utf8').includes('__metadata__'));
  t.deepEqual(decodeSafetensors(bytes).metadata, {});
});

test('readStateDict converts F64, F16 and BF16 to float32 and skips num_batches_tracked', async (t) => {
  const f64 = new Float64Array([0.1, -2.5, 1e-3]);
  const f16 = new Uint16Array([0x3c00, 0xc000, 0x3555, 0x0001, 0x7c00]); // 1, -2, 0.333251953125, 2^-24, Infinity
  const bf16 = new Uint16Array([0x3f80, 0xc0a0, 0x3eaa]); // 1, -5, 0.33203125
  const counter = new BigInt64Array([1234n]);
  const parts = [bytesOf(f64), bytesOf(f16), bytesOf(bf16), bytesOf(counter)];
  const offsets = parts.map((_, i) => {
    const begin = parts.slice(0, i).reduce((s, p) => s + p.length, 0);
    return [begin, begin + (parts[i]?.length ?? 0)];
  });
  const header = {
    __metadata__: { format: 'pt' },
    'a.f64': { dtype: 'F64', shape: [3], data_offsets: offsets[0] },
    'b.f16': { dtype: 'F16', shape: [5], data_offsets: offsets[1] },
    'c.bf16': { dtype: 'BF16', shape: [1, 3], data_offsets: offsets[2] },
    'stage0.rbr_dense.bn.num_batches_tracked': { dtype: 'I64', shape: [], data_offsets: offsets[3] },
  };
  const path = join(scratch, 'mixed.safetensors');
  await writeFile(path, buildSafetensors(header, Buffer.concat(parts)));

  const { state, metadata } = await readStateDict(path);
  t.deepEqual(metadata, { format: 'pt' });
  t.deepEqual([...state.keys()], ['a.f64', 'b.f16', 'c.bf16']);
  t.deepEqual(state.get('a.f64')?.data, new Float32Array(f64));
  t.deepEqual(Array.from(state.get('b.f16')?.data ?? []), [1, -2, 0.333251953125, 2 ** -24, Infinity]);
  t.deepEqual(state.get('c.bf16'), { shape: [1, 3], data: new Float32Array([1, -5, 0.33203125]) });

  const raw = await readSafetensors(path);
  t.is(raw.tensors.get('stage0.rbr_dense.bn.num_batches_tracked')?.dtype, 'I64');
  t.deepEqual(raw.tensors.get('stage0.rbr_dense.bn.num_batches_tracked')?.data, counter);
  t.deepEqual(raw.tensors.get('a.f64')?.data, f64);
});

test('readStateDict rejects integer tensors other than num_batches_tracked', (t) => {
  const bytes = buildSafetensors({ 'stage0.labels': { dtype: 'I32', shape: [2], data_offsets: [0, 8] } }, new Uint8Array(8));
  t.is(decodeSafetensors(bytes).tensors.get('stage0.labels')?.dtype, 'I32');
  t.throws(() => decodeStateDict(bytes, 'w.safetensors'), {
    instanceOf: FormatError,
    message: "w.safetensors: tensor 'stage0.labels' has dtype I32; weights must be F32, F64, F16 or BF16",
  });
});

test('readSafetensors of a missing file names the argument and the path', async (t) => {
  const path = join(scratch, 'missing.safetensors');
  await t.throwsAsync(readStateDict(path, '--weights'), {
    instanceOf: ArgumentValueError,
    message: `Expected an existing file for --weights but received '${path}' (not found)`,
  });
});

test('bad safetensors files are rejected with FormatError naming the file and the offending key', (t) => {
  const reject = (bytes: Uint8Array, pattern: RegExp): void => {
    const error = t.throws(() => decodeSafetensors(bytes, 'bad.safetensors'), { instanceOf: FormatError });
    t.regex(error?.message ?? '', pattern);
    t.true(error?.message.startsWith('bad.safetensors: '));
  };
  const eight = new Uint8Array(8);
  const entry = (extra: object): object => ({ w: { dtype: 'F32', shape: [2], data_offsets: [0, 8], ...extra } });
  reject(Buffer.from([1, 2, 3]), /too short for the 8-byte/);
  reject(encodeNpy(new Float32Array(4), [4]), /header length \d+ exceeds/);
  reject(buildSafetensors('{"w": {"dtype": "F32",', eight), /not valid UTF-8 JSON/);
  reject(buildSafetensors('[1, 2]'), /header is not a JSON object/);
  reject(buildSafetensors(entry({ dtype: 'Q7' }), eight), /tensor 'w' has unknown dtype "Q7"/);
  reject(buildSafetensors(entry({ dtype: 'toString' }), eight), /tensor 'w' has unknown dtype "toString"/);
  reject(buildSafetensors(entry({ shape: [2, -1] }), eight), /tensor 'w' has shape \[2,-1\]/);
  reject(buildSafetensors(entry({ data_offsets: [8, 0] }), eight), /tensor 'w' has data_offsets \[8,0\]/);
  reject(buildSafetensors(entry({ data_offsets: [0, 4] }), eight), /tensor 'w' spans 4 bytes but shape \[2\] F32 needs 8/);
  reject(buildSafetensors(entry({ data_offsets: [4, 12] }), eight), /'w' has data_offsets \[4, 12\] beyond the 8-byte data/);
  reject(buildSafetensors({ __metadata__: { epochs: 3 } }), /'__metadata__' entry 'epochs' is 3/);
  const overlapping = {
    a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] },
    b: { dtype: 'F32', shape: [2], data_offsets: [4, 12] },
  };
  reject(buildSafetensors(overlapping, new Uint8Array(12)), /tensor 'b' data_offsets \[4, 12\] overlap those of 'a'/);
});

test('a truncated safetensors file is rejected naming the tensor cut off', async (t) => {
  const path = join(scratch, 'truncated.safetensors');
  const full = encodeSafetensors(randomState(8));
  await writeFile(path, full.subarray(0, full.length - 3));
  await t.throwsAsync(readStateDict(path), {
    instanceOf: FormatError,
    message: /^.*truncated\.safetensors: tensor 'linear\.weight' has data_offsets \[\d+, \d+\] beyond/,
  });
});

test('encodeSafetensors rejects bad tensors and metadata', (t) => {
  const good: HostTensor = { shape: [2], data: new Float32Array(2) };
  t.throws(() => encodeSafetensors(new Map([['w', { shape: [2], data: new Float64Array(2) as unknown as Float32Array }]])), {
    instanceOf: ArgumentTypeError,
    message: "Expected a Float32Array for state 'w' data but received Float64Array(2)",
  });
  t.throws(() => encodeSafetensors(new Map([['w', { shape: [3], data: new Float32Array(2) }]])), {
    instanceOf: ShapeError,
    message: "Expected state 'w' data of 3 elements for shape [3] but received 2",
  });
  t.throws(() => encodeSafetensors(new Map([['__metadata__', good]])), { instanceOf: ArgumentValueError });
  t.throws(() => encodeSafetensors(new Map([['w', good]]), { epochs: 3 } as unknown as Record<string, string>), {
    instanceOf: ArgumentTypeError,
    message: "Expected a string for metadata 'epochs' but received number 3",
  });
});

// ---------------------------------------------------------------------------------------------------------------
// Atomic writes

test('a write into a missing folder fails naming the path and leaves nothing behind', async (t) => {
  const dir = await freshDir('missing-parent');
  const path = join(dir, 'no-such-folder', 'out.npy');
  await t.throwsAsync(writeNpy(path, new Float32Array(3), [3], '--output'), {
    instanceOf: ArgumentValueError,
    message: `Expected a writable path for --output but received '${path}' (folder does not exist)`,
  });
  t.deepEqual(await readdir(dir), []);
});

test('a write that fails after creating the temp file removes it', async (t) => {
  const dir = await freshDir('rename-fails');
  const target = join(dir, 'weights.safetensors');
  await mkdir(target); // renaming a file over a directory fails
  const error = await t.throwsAsync(writeSafetensors(target, randomState(9), {}, '--out'), { instanceOf: ArgumentValueError });
  t.true(error?.message.startsWith(`Expected a writable path for --out but received '${target}' (`));
  t.deepEqual(await readdir(dir), ['weights.safetensors']);
  t.deepEqual(await readdir(target), []);
});

test('writeFileAtomic replaces an existing file and accepts a list of chunks', async (t) => {
  const dir = await freshDir('replace');
  const path = join(dir, 'file.bin');
  await writeFile(path, 'old content that is longer than the new one');
  await writeFileAtomic(path, [Buffer.from('new '), Buffer.from('content')]);
  t.is(await readFile(path, 'utf8'), 'new content');
  t.deepEqual(await readdir(dir), ['file.bin']);
});

test('readFileChecked rejects folders and non-string paths', async (t) => {
  await t.throwsAsync(readFileChecked(scratch, '--input'), {
    instanceOf: ArgumentValueError,
    message: `Expected a readable file for --input but received '${scratch}' (is a directory)`,
  });
  await t.throwsAsync(readFileChecked(42 as unknown as string, '--input'), {
    instanceOf: ArgumentTypeError,
    message: 'Expected a non-empty string path for --input but received number 42',
  });
});
