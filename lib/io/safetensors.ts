// safetensors files, the library's native weight format: an 8-byte little-endian header length, a JSON header
// (dtype, shape and byte range of each tensor, plus string metadata) and the raw tensor bytes. Reads any dtype
// and validates the header fully; writes float32 state dicts in the Map's order.
// Not for: checking that weights fit an architecture (lib/models), PyTorch .pth pickles, or memory-mapping.

import { ArgumentTypeError, ArgumentValueError, FormatError, ShapeError, describeValue, formatShape } from '../errors.js';
import { numel } from '../tensor.js';
import type { HostTensor, StateDict } from '../tensor.js';
import { readFileChecked, writeFileAtomic } from './atomic.js';

/** Bytes per element of every dtype the format defines. */
const ITEM_SIZES = {
  BOOL: 1,
  U8: 1,
  I8: 1,
  F8_E4M3: 1,
  F8_E5M2: 1,
  I16: 2,
  U16: 2,
  F16: 2,
  BF16: 2,
  I32: 4,
  U32: 4,
  F32: 4,
  I64: 8,
  U64: 8,
  F64: 8,
} as const;

export type SafetensorsDtype = keyof typeof ITEM_SIZES;

export type SafetensorsTypedArray =
  | Uint8Array
  | Int8Array
  | Int16Array
  | Uint16Array
  | Int32Array
  | Uint32Array
  | Float32Array
  | BigInt64Array
  | BigUint64Array
  | Float64Array;

/** How each dtype's elements are held: F16 and BF16 as raw 16-bit patterns, BOOL and F8 as raw bytes. */
const ARRAY_TYPES: Record<SafetensorsDtype, new (length: number) => SafetensorsTypedArray> = {
  BOOL: Uint8Array,
  U8: Uint8Array,
  I8: Int8Array,
  F8_E4M3: Uint8Array,
  F8_E5M2: Uint8Array,
  I16: Int16Array,
  U16: Uint16Array,
  F16: Uint16Array,
  BF16: Uint16Array,
  I32: Int32Array,
  U32: Uint32Array,
  F32: Float32Array,
  I64: BigInt64Array,
  U64: BigUint64Array,
  F64: Float64Array,
};

/** One tensor as stored; `data` is a fresh, aligned copy (see ARRAY_TYPES for the array type of each dtype). */
export interface SafetensorsTensor {
  readonly dtype: SafetensorsDtype;
  readonly shape: number[];
  readonly data: SafetensorsTypedArray;
}

export interface SafetensorsFile {
  /** Tensors by name, in the order their bytes appear in the file. */
  readonly tensors: Map<string, SafetensorsTensor>;
  readonly metadata: Record<string, string>;
}

const METADATA_KEY = '__metadata__';
const LENGTH_FIELD_BYTES = 8;
/** The reference implementation's limit; a larger value means the file is not safetensors at all. */
const MAX_HEADER_BYTES = 100_000_000;
/** Writers pad the header so that tensor data starts 8-byte aligned. */
const HEADER_ALIGNMENT = 8;
/**
 * Most tensors in one file: a D2se training checkpoint (weights, momentum, EMA) holds about 3,000 and large
 * language-model shards hold a few thousand; the bound stops a header of millions of empty tensors.
 */
const MAX_TENSORS = 100_000;

// ---------------------------------------------------------------------------------------------------------------
// Decoding

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function isIndexArray(value: unknown): value is number[] {
  return Array.isArray(value) && value.every((d) => typeof d === 'number' && Number.isSafeInteger(d) && d >= 0);
}

/** The parsed JSON header and the offset in bytes where the tensor data buffer starts. */
function parseHeaderJson(bytes: Uint8Array, source: string): { header: Record<string, unknown>; dataStart: number } {
  if (bytes.length < LENGTH_FIELD_BYTES) {
    throw new FormatError(`${source}: file is ${bytes.length} bytes, too short for the 8-byte safetensors header length`);
  }
  const headerLength = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getBigUint64(0, true);
  const available = bytes.length - LENGTH_FIELD_BYTES;
  if (headerLength > BigInt(Math.min(available, MAX_HEADER_BYTES))) {
    throw new FormatError(
      `${source}: header length ${headerLength} exceeds the ${available} bytes after the length field ` +
        '(not a safetensors file, or truncated)',
    );
  }
  const headerBytes = bytes.subarray(LENGTH_FIELD_BYTES, LENGTH_FIELD_BYTES + Number(headerLength));
  let header: unknown;
  try {
    header = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(headerBytes));
  } catch (error) {
    throw new FormatError(`${source}: safetensors header is not valid UTF-8 JSON (${(error as Error).message})`);
  }
  if (!isPlainObject(header)) throw new FormatError(`${source}: safetensors header is not a JSON object`);
  const tensorCount = Object.keys(header).length - (Object.hasOwn(header, METADATA_KEY) ? 1 : 0);
  if (tensorCount > MAX_TENSORS) {
    throw new FormatError(`${source}: safetensors header lists ${tensorCount} tensors, more than the ${MAX_TENSORS} we accept`);
  }
  const duplicate = findDuplicateKey(headerBytes);
  if (duplicate !== undefined) {
    const where = duplicate.parent === undefined ? '' : ` in '${duplicate.parent}'`;
    throw new FormatError(`${source}: safetensors header has the duplicate key '${duplicate.key}'${where}`);
  }
  return { header, dataStart: LENGTH_FIELD_BYTES + headerBytes.length };
}

const QUOTE = 0x22;
const BACKSLASH = 0x5c;

/**
 * The first key that appears twice in one object of a header JSON.parse has accepted (JSON.parse keeps the last
 * silently; the reference implementation rejects the file). One linear scan: strings are skipped, and in an object
 * the first string after '{' or ',' is a key, compared after unescaping ("\u0077" and "w" are the same key).
 * @param json - UTF-8 bytes of valid JSON (already parsed), so brackets balance and strings terminate.
 */
function findDuplicateKey(json: Uint8Array): { key: string; parent: string | undefined } | undefined {
  interface Scope {
    /** Keys seen so far; undefined for an array. */
    readonly keys: Set<string> | undefined;
    /** The key this object is the value of, for messages. */
    readonly name: string | undefined;
    expectingKey: boolean;
  }
  const scopes: Scope[] = [];
  let lastKey: string | undefined;
  for (let i = 0; i < json.length; i++) {
    const byte = json[i];
    const scope = scopes[scopes.length - 1];
    if (byte === QUOTE) {
      const start = i;
      let escaped = false;
      for (i++; i < json.length && json[i] !== QUOTE; i++) {
        if (json[i] === BACKSLASH) {
          escaped = true;
          i++;
        }
      }
      if (scope?.keys !== undefined && scope.expectingKey) {
        const quoted = Buffer.from(json.buffer, json.byteOffset + start, i + 1 - start).toString('utf8');
        const key = escaped ? (JSON.parse(quoted) as string) : quoted.slice(1, -1);
        if (scope.keys.has(key)) return { key, parent: scope.name };
        scope.keys.add(key);
        scope.expectingKey = false;
        lastKey = key;
      }
    } else if (byte === 0x7b /* { */ || byte === 0x5b /* [ */) {
      const name = scope?.keys !== undefined ? lastKey : scope?.name;
      scopes.push({ keys: byte === 0x7b ? new Set() : undefined, name, expectingKey: true });
    } else if (byte === 0x7d /* } */ || byte === 0x5d /* ] */) {
      scopes.pop();
    } else if (byte === 0x2c /* , */ && scope !== undefined) {
      scope.expectingKey = true;
    }
  }
  return undefined;
}

function parseMetadata(value: unknown, source: string): Record<string, string> {
  if (!isPlainObject(value)) throw new FormatError(`${source}: '${METADATA_KEY}' is not a JSON object of strings`);
  const metadata: Record<string, string> = {};
  for (const [key, entry] of Object.entries(value)) {
    if (typeof entry !== 'string') {
      throw new FormatError(`${source}: '${METADATA_KEY}' entry '${key}' is ${JSON.stringify(entry)}; expected a string`);
    }
    metadata[key] = entry;
  }
  return metadata;
}

interface TensorEntry {
  readonly name: string;
  readonly dtype: SafetensorsDtype;
  readonly shape: number[];
  readonly begin: number;
  readonly end: number;
}

function parseTensorEntry(name: string, value: unknown, bufferLength: number, source: string): TensorEntry {
  const where = `${source}: tensor '${name}'`;
  if (!isPlainObject(value)) throw new FormatError(`${where} is not a JSON object`);
  const { dtype, shape, data_offsets: offsets } = value;
  if (typeof dtype !== 'string' || !Object.hasOwn(ITEM_SIZES, dtype)) {
    throw new FormatError(
      `${where} has unknown dtype ${JSON.stringify(dtype)} (expected one of ${Object.keys(ITEM_SIZES).join(', ')})`,
    );
  }
  if (!isIndexArray(shape)) {
    throw new FormatError(`${where} has shape ${JSON.stringify(shape)}; expected an array of non-negative integers`);
  }
  if (!isIndexArray(offsets) || offsets.length !== 2 || offsets[0]! > offsets[1]!) {
    throw new FormatError(`${where} has data_offsets ${JSON.stringify(offsets)}; expected [begin, end] with begin <= end`);
  }
  const [begin, end] = offsets as [number, number];
  const knownDtype = dtype as SafetensorsDtype;
  const expectedBytes = numel(shape) * ITEM_SIZES[knownDtype];
  if (end - begin !== expectedBytes) {
    throw new FormatError(
      `${where} spans ${end - begin} bytes but shape ${formatShape(shape)} ${dtype} needs ${expectedBytes}`,
    );
  }
  if (end > bufferLength) {
    throw new FormatError(
      `${where} has data_offsets [${begin}, ${end}] beyond the ${bufferLength}-byte data buffer (bad offsets or truncated file)`,
    );
  }
  return { name, dtype: knownDtype, shape, begin, end };
}

/**
 * As in the reference implementation, the tensors (sorted by offset) must tile the data buffer exactly: each begins
 * where the previous one ended, the first at 0, and the last ends with the file. Unused bytes could hide anything.
 */
function checkLayout(sorted: readonly TensorEntry[], bufferLength: number, source: string): void {
  let previous: TensorEntry | undefined;
  for (const entry of sorted) {
    if (previous !== undefined && entry.begin < previous.end) {
      throw new FormatError(
        `${source}: tensor '${entry.name}' data_offsets [${entry.begin}, ${entry.end}] overlap those of ` +
          `'${previous.name}' [${previous.begin}, ${previous.end}]`,
      );
    }
    const expectedBegin = previous?.end ?? 0;
    if (entry.begin > expectedBegin) {
      const after = previous === undefined ? 'at the start of the data buffer' : `after '${previous.name}'`;
      throw new FormatError(
        `${source}: tensor '${entry.name}' data_offsets [${entry.begin}, ${entry.end}] leave ` +
          `${entry.begin - expectedBegin} unused bytes ${after}`,
      );
    }
    previous = entry;
  }
  const dataEnd = previous?.end ?? 0;
  if (dataEnd !== bufferLength) {
    const after = previous === undefined ? 'after the header, which lists no tensors' : `after the last tensor '${previous.name}'`;
    throw new FormatError(`${source}: ${bufferLength - dataEnd} unused bytes ${after} (a damaged or padded file)`);
  }
}

/**
 * Decode the bytes of a safetensors file, validating the header completely.
 * @param source - the file name (or another label) that error messages start with.
 * @throws FormatError for a bad header length, invalid JSON, a duplicate key, more than MAX_TENSORS tensors, an
 *   unknown dtype, data_offsets that disagree with the shape, overlap another tensor, leave unused bytes (before,
 *   between or after the tensors) or run past the data (truncated file); the message names the tensor.
 */
export function decodeSafetensors(bytes: Uint8Array, source = 'input'): SafetensorsFile {
  const { header, dataStart } = parseHeaderJson(bytes, source);
  const bufferLength = bytes.length - dataStart;
  let metadata: Record<string, string> = {};
  const entries: TensorEntry[] = [];
  for (const [name, value] of Object.entries(header)) {
    if (name === METADATA_KEY) metadata = parseMetadata(value, source);
    else entries.push(parseTensorEntry(name, value, bufferLength, source));
  }
  entries.sort((a, b) => a.begin - b.begin || a.end - b.end);
  checkLayout(entries, bufferLength, source);
  const tensors = new Map<string, SafetensorsTensor>();
  for (const entry of entries) {
    const data = new ARRAY_TYPES[entry.dtype](numel(entry.shape));
    const entryBytes = bytes.subarray(dataStart + entry.begin, dataStart + entry.end);
    new Uint8Array(data.buffer, data.byteOffset, data.byteLength).set(entryBytes);
    tensors.set(entry.name, { dtype: entry.dtype, shape: entry.shape, data });
  }
  return { tensors, metadata };
}

/**
 * Read a safetensors file with tensors of any dtype.
 * @param argName - how the caller's user named this path (e.g. '--weights'), used in error messages.
 * @throws ArgumentValueError when the file is missing or unreadable.
 * @throws FormatError when it is not a valid safetensors file (see {@link decodeSafetensors}).
 */
export async function readSafetensors(path: string, argName = 'path'): Promise<SafetensorsFile> {
  return decodeSafetensors(await readFileChecked(path, argName), path);
}

// ---------------------------------------------------------------------------------------------------------------
// State dicts (float32 weights)

/** IEEE 754 half precision to a JS number (exact: every half value is representable in float32). */
function halfToNumber(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exponent = (bits >> 10) & 0x1f;
  const fraction = bits & 0x3ff;
  if (exponent === 0) return sign * fraction * 2 ** -24; // zero and subnormals
  if (exponent === 0x1f) return fraction === 0 ? sign * Infinity : NaN;
  return sign * (1 + fraction / 1024) * 2 ** (exponent - 15);
}

/** The tensor's values as float32. */
function toFloat32(name: string, tensor: SafetensorsTensor, source: string): Float32Array {
  const { dtype, data } = tensor;
  switch (dtype) {
    case 'F32':
      return data as Float32Array;
    case 'F64':
      return new Float32Array(data as Float64Array);
    case 'F16':
      return Float32Array.from(data as Uint16Array, halfToNumber);
    case 'BF16':
      // bfloat16 is the upper half of a float32's bit pattern.
      return new Float32Array(Uint32Array.from(data as Uint16Array, (bits) => bits << 16).buffer);
    default:
      throw new FormatError(`${source}: tensor '${name}' has dtype ${dtype}; weights must be F32, F64, F16 or BF16`);
  }
}

/**
 * Decode a safetensors file as a float32 state dict: F64, F16 and BF16 are converted, `*num_batches_tracked`
 * counters (int64 in PyTorch files) are skipped.
 * @param source - the file name (or another label) that error messages start with.
 * @throws FormatError for any other non-float tensor, or a file that is not valid safetensors.
 */
export function decodeStateDict(bytes: Uint8Array, source = 'input'): { state: StateDict; metadata: Record<string, string> } {
  const { tensors, metadata } = decodeSafetensors(bytes, source);
  const state: StateDict = new Map();
  for (const [name, tensor] of tensors) {
    // BatchNorm's step counter plays no part in inference or re-parameterization, whatever dtype it was saved as.
    if (name.endsWith('num_batches_tracked')) continue;
    state.set(name, { shape: tensor.shape, data: toFloat32(name, tensor, source) });
  }
  return { state, metadata };
}

/**
 * Read a weights file as a float32 state dict (see {@link decodeStateDict}).
 * @param argName - how the caller's user named this path (e.g. '--weights'), used in error messages.
 * @throws ArgumentValueError when the file is missing or unreadable.
 * @throws FormatError when it is not valid safetensors or holds non-float weights.
 * @example const { state, metadata } = await readStateDict('RepVGG-A0-train.safetensors', '--weights');
 */
export async function readStateDict(
  path: string,
  argName = 'path',
): Promise<{ state: StateDict; metadata: Record<string, string> }> {
  return decodeStateDict(await readFileChecked(path, argName), path);
}

// ---------------------------------------------------------------------------------------------------------------
// Encoding

function checkTensor(name: string, tensor: HostTensor | undefined): HostTensor {
  if (name === '' || name === METADATA_KEY) {
    throw new ArgumentValueError(`Expected a tensor name other than '' and '${METADATA_KEY}' for state but received '${name}'`);
  }
  if (!isPlainObject(tensor) || !(tensor.data instanceof Float32Array)) {
    throw new ArgumentTypeError(`Expected a Float32Array for state '${name}' data but received ${describeValue(tensor?.data)}`);
  }
  if (!isIndexArray(tensor.shape)) {
    throw new ArgumentValueError(
      `Expected an array of non-negative integers for state '${name}' shape but received ${describeValue(tensor.shape)}`,
    );
  }
  if (numel(tensor.shape) !== tensor.data.length) {
    throw new ShapeError(
      `Expected state '${name}' data of ${numel(tensor.shape)} elements for shape ${formatShape(tensor.shape)} ` +
        `but received ${tensor.data.length}`,
    );
  }
  return tensor;
}

/** The length field and padded header followed by views of each tensor's bytes (no copy). */
function safetensorsChunks(state: StateDict, metadata: Record<string, string>): Buffer[] {
  if (!(state instanceof Map)) {
    throw new ArgumentTypeError(`Expected a Map of tensors for state but received ${describeValue(state)}`);
  }
  if (!isPlainObject(metadata)) {
    throw new ArgumentTypeError(`Expected an object of strings for metadata but received ${describeValue(metadata)}`);
  }
  for (const [key, value] of Object.entries(metadata)) {
    if (typeof value !== 'string') {
      throw new ArgumentTypeError(`Expected a string for metadata '${key}' but received ${describeValue(value)}`);
    }
  }
  // The header is assembled by hand: a JS object would move integer-like keys ('0', '1') to the front.
  const headerParts: string[] = [];
  if (Object.keys(metadata).length > 0) headerParts.push(`${JSON.stringify(METADATA_KEY)}:${JSON.stringify(metadata)}`);
  const dataChunks: Buffer[] = [];
  let offset = 0;
  for (const [name, value] of state) {
    const { shape, data } = checkTensor(name, value);
    const info = { dtype: 'F32', shape, data_offsets: [offset, offset + data.byteLength] };
    headerParts.push(`${JSON.stringify(name)}:${JSON.stringify(info)}`);
    dataChunks.push(Buffer.from(data.buffer, data.byteOffset, data.byteLength));
    offset += data.byteLength;
  }
  const json = Buffer.from(`{${headerParts.join(',')}}`, 'utf8');
  const paddedLength = Math.ceil(json.length / HEADER_ALIGNMENT) * HEADER_ALIGNMENT;
  const head = Buffer.alloc(LENGTH_FIELD_BYTES + paddedLength, 0x20);
  head.writeBigUInt64LE(BigInt(paddedLength), 0);
  json.copy(head, LENGTH_FIELD_BYTES);
  return [head, ...dataChunks];
}

/**
 * Encode a float32 state dict as the bytes of a safetensors file, tensors in the Map's order.
 * @param metadata - stored as `__metadata__` (arch, num_classes, form, normalization...); omitted when empty.
 * @throws ArgumentTypeError when state is not a Map of Float32Array tensors or a metadata value is not a string;
 *   ShapeError when a tensor's shape and data length disagree; ArgumentValueError for a reserved tensor name.
 */
export function encodeSafetensors(state: StateDict, metadata: Record<string, string> = {}): Buffer {
  return Buffer.concat(safetensorsChunks(state, metadata));
}

/**
 * Write a float32 state dict to a safetensors file atomically (see {@link writeFileAtomic}), without copying
 * tensor data.
 * @param argName - how the caller's user named this path (e.g. '--out'), used in error messages.
 * @throws as {@link encodeSafetensors}; ArgumentValueError when the destination cannot be written.
 * @example await writeSafetensors('deploy.safetensors', state, { arch: 'RepVGG-A0', form: 'deploy' });
 */
export async function writeSafetensors(
  path: string,
  state: StateDict,
  metadata: Record<string, string> = {},
  argName = 'path',
): Promise<void> {
  await writeFileAtomic(path, safetensorsChunks(state, metadata), argName);
}
