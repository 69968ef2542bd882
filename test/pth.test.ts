// PyTorch checkpoint import (lib/io/pth.ts, lib/io/pickle.ts): files written by torch.save in both formats and
// their wrappings must give exactly the float32 values PyTorch reports (make_pth_fixtures.py), and hostile,
// damaged or foreign files must fail with a FormatError naming the file and the problem, before any allocation.
// Not for: mapping the keys onto an architecture (weights/keys tests) or the CLI.

import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import test from 'ava';

import { ArgumentValueError, FormatError } from '../lib/errors.js';
import { MAX_PICKLE_BYTES, unpickle } from '../lib/io/pickle.js';
import type { PickleGlobal, PickleValue } from '../lib/io/pickle.js';
import { isPthHead, pthFormatOf, readPth } from '../lib/io/pth.js';
import { readSafetensors } from '../lib/io/safetensors.js';

const FIXTURES = fileURLToPath(new URL('../../test/fixtures/pth/', import.meta.url));
const fixture = (name: string): string => join(FIXTURES, name);

function bytesOf(array: ArrayBufferView): Buffer {
  return Buffer.from(array.buffer, array.byteOffset, array.byteLength);
}

/** Every readable fixture and the safetensors file holding its expected float32 values. */
const READABLE: Array<[file: string, expected: string, what: string]> = [
  ['tiny_zip.pth', 'expected_tiny.safetensors', 'state_dict(), zip format'],
  ['tiny_legacy.pth', 'expected_tiny.safetensors', 'state_dict(), legacy format'],
  ['tiny_parameters_zip.pth', 'expected_tiny.safetensors', 'state_dict(keep_vars=True): nn.Parameter values'],
  ['tiny_protocol4_zip.pth', 'expected_tiny.safetensors', 'pickle protocol 4 (FRAME, MEMOIZE, STACK_GLOBAL)'],
  ['tiny_protocol5_legacy.pth', 'expected_tiny.safetensors', 'pickle protocol 5, legacy format'],
  ['tiny_archive_folder.pth', 'expected_tiny.safetensors', "archive folder 'archive' instead of the file stem"],
  ['tiny_byteorder_little_zip.pth', 'expected_tiny.safetensors', "torch 2.x's 'byteorder' record saying 'little'"],
  ['tiny_wrapped_model_zip.pth', 'expected_tiny.safetensors', "{'model': ..., 'optimizer': ...} with momentum tensors"],
  ['tiny_wrapped_module_legacy.pth', 'expected_tiny.safetensors', "{'state_dict': ...} with 'module.' prefixes"],
  ['tiny_ema_only_zip.pth', 'expected_tiny.safetensors', "{'state_dict_ema': ...} as the only state dict"],
  ['dtypes_zip.pth', 'expected_dtypes.safetensors', 'float16, bfloat16, float64 and float32 tensors, zip'],
  ['dtypes_legacy.pth', 'expected_dtypes.safetensors', 'float16, bfloat16, float64 and float32 tensors, legacy'],
  ['views_zip.pth', 'expected_views.safetensors', 'offset, transposed, strided, 0-d and empty views of one storage, zip'],
  ['views_legacy.pth', 'expected_views.safetensors', 'offset, transposed, strided, 0-d and empty views of one storage, legacy'],
];

for (const [file, expectedFile, what] of READABLE) {
  test(`readPth gives PyTorch's exact float32 values: ${what}`, async (t) => {
    const [{ state, metadata }, expected] = await Promise.all([readPth(fixture(file)), readSafetensors(fixture(expectedFile))]);
    t.deepEqual([...state.keys()], [...expected.tensors.keys()], 'same keys in the same order, num_batches_tracked dropped');
    for (const [name, want] of expected.tensors) {
      const got = state.get(name);
      if (got === undefined) continue; // reported by the key comparison above
      t.deepEqual(got.shape, want.shape, `${name}: shape`);
      t.true(got.data instanceof Float32Array, `${name}: float32 data`);
      t.true(bytesOf(got.data).equals(bytesOf(want.data)), `${name}: bitwise equal`);
    }
    t.deepEqual(metadata, {});
  });
}

test('views of one storage come back as separate arrays', async (t) => {
  const { state } = await readPth(fixture('views_zip.pth'));
  const buffers = [...state.values()].map((tensor) => tensor.data.buffer);
  t.is(new Set(buffers).size, buffers.length, 'writing one tensor must not change another');
});

test('missing file: ArgumentValueError naming the argument', async (t) => {
  const missing = fixture('does_not_exist.pth');
  await t.throwsAsync(readPth(missing, '--weights'), {
    instanceOf: ArgumentValueError,
    message: `Expected an existing file for --weights but received '${missing}' (not found)`,
  });
});

/** Hostile, damaged and foreign files, with what the error must say beyond the file name. */
const REJECTED: Array<[file: string, message: RegExp, what: string]> = [
  ['evil_system_zip.pth', /pickle references the global 'posix\.system', which a state dict never needs; refusing to load/, 'os.system via __reduce__'],
  ['evil_eval_legacy.pth', /pickle references the global '__builtin__\.eval', which a state dict never needs/, 'builtins.eval, legacy'],
  ['huge_storage_zip.pth', /storage '0' declares 1099511627776 float32 elements \(4398046511104 bytes\) but its entry 'archive\/data\/0' holds 16 bytes/, 'storage of 2^40 elements'],
  ['huge_shape_zip.pth', /tensor of shape \[1048576, 1048576\] \(1099511627776 elements.*does not fit in storage '0' of 4 elements/, 'shape of 2^40 elements'],
  ['out_of_storage_zip.pth', /tensor of shape \[2, 2\] \(4 elements, strides \[1, 2\], offset 2\) does not fit in storage '0'/, 'view past its storage'],
  ['huge_storage_legacy.pth', /storage '7' \(4398046511104 bytes at offset \d+\) runs past the 351-byte file \(truncated\)/, 'legacy storage of 2^40 elements'],
  ['many_views_zip.pth', /its tensors would take 409600 bytes as float32, more than 8x the \d+-byte file; refusing to allocate/, '100 names for one storage'],
  ['truncated_50_tiny_zip.pth', /not a readable zip archive \(End of central directory record signature not found/, 'zip cut in half'],
  ['truncated_90_tiny_legacy.pth', /storage '\d+' \(\d+ bytes at offset \d+\) runs past the \d+-byte file \(truncated\)/, 'legacy cut in the storages'],
  ['truncated_10_tiny_legacy.pth', /file ends inside its leading pickles \(truncated\)/, 'legacy cut in the pickles'],
  ['no_data_pkl_zip.pth', /zip archive has 0 '<archive>\/data\.pkl' entries/, 'zip without data.pkl'],
  ['big_endian_zip.pth', /byteorder record is 'big'; only little-endian files are supported/, 'a big-endian file'],
  ['empty.pth', /file is empty; expected a torch\.save checkpoint/, 'empty file'],
  ['not_state_dict_zip.pth', /holds a dict with keys 'epoch', 'lr', not a state dict/, 'a dict without tensors'],
  ['int_tensor_zip.pth', /tensor 'index' has dtype int64; weights must be float32, float16, bfloat16 or float64/, 'an int64 weight'],
  ['expected_tiny.safetensors', /starts with bytes [0-9a-f ]+, neither a zip archive \(torch\.save\) nor a legacy torch\.save pickle/, 'a safetensors file'],
];

for (const [file, message, what] of REJECTED) {
  test(`readPth rejects ${what} with a FormatError`, async (t) => {
    const error = await t.throwsAsync(readPth(fixture(file)), { instanceOf: FormatError, message });
    t.is(error?.code, 'ERR_FORMAT');
    t.true(error?.message.startsWith(fixture(file)), `the message names the file: ${error?.message}`);
  });
}

test('pthFormatOf tells zip and legacy checkpoints from other files by their first bytes', async (t) => {
  const head = async (name: string): Promise<Buffer> => (await readFile(fixture(name))).subarray(0, 16);
  t.is(pthFormatOf(await head('tiny_zip.pth')), 'zip');
  t.is(pthFormatOf(await head('tiny_legacy.pth')), 'legacy');
  t.is(pthFormatOf(await head('tiny_protocol5_legacy.pth')), 'legacy');
  t.is(pthFormatOf(await head('expected_tiny.safetensors')), undefined);
  t.is(pthFormatOf(new Uint8Array(0)), undefined);
  // A safetensors file with a 640-byte header starts with 80 02 too, and any pickle starts with PROTO.
  t.is(pthFormatOf(Uint8Array.from([0x80, 0x02, 0, 0, 0, 0, 0, 0, 0x7b, 0x22])), undefined);
  t.is(pthFormatOf(pickle('\x80\x02}q\x00(X\x01\x00\x00\x00a')), undefined);
  t.true(isPthHead(await head('views_legacy.pth')));
  t.false(isPthHead(await head('expected_views.safetensors')));
});

// ---------------------------------------------------------------------------------------------------------------
// The unpickler on hand-built pickles

const NO_GLOBALS = { source: 'test.pkl', globals: new Map<string, PickleGlobal>() };

function pickle(...parts: Array<string | number[] | Uint8Array>): Uint8Array {
  return Buffer.concat(parts.map((p) => (typeof p === 'string' ? Buffer.from(p, 'latin1') : Buffer.from(p))));
}

function valueOf(bytes: Uint8Array, options = NO_GLOBALS): PickleValue {
  const result = unpickle(bytes, 0, options);
  if (!result.complete) throw new Error('pickle incomplete');
  return result.value;
}

function u32(value: number): number[] {
  return [value & 0xff, (value >>> 8) & 0xff, (value >>> 16) & 0xff, value >>> 24];
}

test('unpickle builds numbers, strings, tuples, lists and dicts', (t) => {
  const random = Math.random();
  const float = Buffer.alloc(8);
  float.writeDoubleBE(random);
  // {'a': (-256, 2**70 + 1, random), 'b': [True, None, 'é']}
  const bytes = pickle(
    '\x80\x02}q\x00(X', u32(1), 'a', '\x8a\x02\x00\xff', '\x8a\x09\x01\x00\x00\x00\x00\x00\x00\x00\x40', 'G', float, '\x87',
    'X', u32(1), 'b', ']q\x01(\x88N', [0x8c, 2, 0xc3, 0xa9], 'eu.',
  );
  const value = valueOf(bytes);
  t.true(value instanceof Map);
  const map = value as Map<PickleValue, PickleValue>;
  t.deepEqual(map.get('a'), [-256, 2n ** 70n + 1n, random]);
  t.true(Object.isFrozen(map.get('a')), 'tuples are frozen');
  t.deepEqual(map.get('b'), [true, null, 'é']);
});

test('unpickle refuses globals outside the allowlist, GLOBAL and STACK_GLOBAL alike', (t) => {
  t.throws(() => unpickle(pickle('\x80\x02cos\nsystem\n.'), 0, NO_GLOBALS), {
    instanceOf: FormatError,
    message: "test.pkl: pickle references the global 'os.system', which a state dict never needs; refusing to load",
  });
  t.throws(() => unpickle(pickle('\x80\x04', [0x8c, 8], 'builtins', [0x8c, 4], 'exec', [0x93], '.'), 0, NO_GLOBALS), {
    instanceOf: FormatError,
    message: /the global 'builtins\.exec'/,
  });
});

test('unpickle calls only allowed callables and refuses calling markers', (t) => {
  const marker: PickleGlobal = { kind: 'global', qualifiedName: 'torch.FloatStorage' };
  const seen: Array<readonly PickleValue[]> = [];
  const call: PickleGlobal = { kind: 'global', qualifiedName: 'm.f', call: (args) => (seen.push(args), 'made') };
  const options = { source: 'test.pkl', globals: new Map([['torch.FloatStorage', marker], ['m.f', call]]) };
  t.is(valueOf(pickle('\x80\x02cm\nf\nK\x07\x85R.'), options), 'made');
  t.deepEqual(seen, [[7]]);
  t.throws(() => unpickle(pickle('\x80\x02ctorch\nFloatStorage\n)R.'), 0, options), { instanceOf: FormatError, message: /not callable/ });
});

test('unpickle reports running out of bytes as incomplete, and refuses pickles over the size bound', (t) => {
  t.deepEqual(unpickle(pickle('\x80\x02]q\x00(K\x01'), 0, NO_GLOBALS), { complete: false });
  t.deepEqual(unpickle(pickle('\x80\x02X', u32(1000), 'abc'), 0, NO_GLOBALS), { complete: false }, 'length past the end');
  const tooLong = Buffer.alloc(MAX_PICKLE_BYTES + 64, 0x4e); // NONE opcodes, never a STOP
  tooLong.set([0x80, 0x02, 0x8d], 0);
  tooLong.writeBigUInt64LE(BigInt(MAX_PICKLE_BYTES + 1), 3);
  t.throws(() => unpickle(tooLong, 0, NO_GLOBALS), { instanceOf: FormatError, message: /pickle is longer than 16777216 bytes/ });
});

test('unpickle bounds MARK nesting, stack size and memo size', (t) => {
  t.throws(() => unpickle(pickle('\x80\x02', '('.repeat(300)), 0, NO_GLOBALS), { instanceOf: FormatError, message: /nests more than 256 MARKs/ });
  t.throws(() => unpickle(pickle('\x80\x02', 'N'.repeat(1_000_001)), 0, NO_GLOBALS), {
    instanceOf: FormatError,
    message: /stack exceeds 1000000 items/,
  });
  const memo = Buffer.alloc(3 + 5 * 1_000_001);
  memo.set([0x80, 0x02, 0x4e], 0);
  for (let i = 0; i <= 1_000_000; i++) {
    memo[3 + 5 * i] = 0x72; // LONG_BINPUT i
    memo.writeUInt32LE(i, 4 + 5 * i);
  }
  t.throws(() => unpickle(memo, 0, NO_GLOBALS), { instanceOf: FormatError, message: /memo exceeds 1000000 entries/ });
});

test('unpickle rejects malformed pickles with the byte offset', (t) => {
  const cases: Array<[Uint8Array, RegExp]> = [
    [pickle('\x80\x02I1\n.'), /unsupported pickle opcode 0x49 \(pickle byte 2\)/],
    [pickle('\x80\x02h\x05.'), /reads memo entry 5, which was never stored/],
    [pickle('\x80\x02]K\x01b.'), /sets attributes number 1 on list of 0/],
    [pickle('\x80\x02)K\x01a.'), /appends to tuple of 0/],
    [pickle('\x80\x02K\x01K\x02.'), /unbalanced MARKs or stack/],
    [pickle('\x80\x09.'), /pickle protocol 9 is not one of 2\.\.5/],
    [pickle('\x80\x02X', u32(2), [0xff, 0xfe], '.'), /string is not valid UTF-8/],
  ];
  for (const [bytes, message] of cases) t.throws(() => unpickle(bytes, 0, NO_GLOBALS), { instanceOf: FormatError, message });
});
