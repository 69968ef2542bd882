// NumPy .npy files: how images (float32, NCHW) and labels (int64/int32) travel on the command line, and how
// logits come back out. Reads format versions 1.0, 2.0 and 3.0, writes 1.0 (2.0 when the header needs it).
// Not for: .npz archives, structured or object dtypes, big-endian or Fortran-ordered data (all rejected).
// Assumes a little-endian host, as are all platforms this library builds for (x64, arm64).

import { ArgumentTypeError, ArgumentValueError, FormatError, ShapeError, describeValue, formatShape } from '../errors.js';
import type { HostTensor } from '../tensor.js';
import { readFileChecked, writeFileAtomic } from './atomic.js';

export type NpyDtype = 'float32' | 'float64' | 'int64' | 'int32' | 'uint8';

/** A decoded .npy array; `data` is a fresh, aligned copy in row-major (C) order. */
export type NpyArray =
  | { readonly dtype: 'float32'; readonly shape: number[]; readonly data: Float32Array }
  | { readonly dtype: 'float64'; readonly shape: number[]; readonly data: Float64Array }
  | { readonly dtype: 'int64'; readonly shape: number[]; readonly data: BigInt64Array }
  | { readonly dtype: 'int32'; readonly shape: number[]; readonly data: Int32Array }
  | { readonly dtype: 'uint8'; readonly shape: number[]; readonly data: Uint8Array };

export type NpyTypedArray = NpyArray['data'];

/** NumPy's type code (descr without the byte-order character) and item size of each supported dtype. */
const DTYPES: Record<NpyDtype, { readonly typeCode: string; readonly itemSize: number }> = {
  float32: { typeCode: 'f4', itemSize: 4 },
  float64: { typeCode: 'f8', itemSize: 8 },
  int64: { typeCode: 'i8', itemSize: 8 },
  int32: { typeCode: 'i4', itemSize: 4 },
  uint8: { typeCode: 'u1', itemSize: 1 },
};
const SUPPORTED_DESCRS = "'<f4', '<f8', '<i8', '<i4', '|u1'";

const MAGIC = [0x93, ...Buffer.from('NUMPY', 'latin1')];
/** Writers align the data start to this many bytes, as NumPy does, so the file can be memory-mapped. */
const DATA_ALIGNMENT = 64;
const HEADER_PREVIEW_CHARS = 200;
/**
 * Longest header we parse. NumPy's reader refuses more than 10,000 bytes by default (max_header_size); its writer
 * switches to format 2.0 above 64 KiB. 1 MiB reads anything either writes while a 4 GiB length field in a hostile
 * v2/v3 file cannot make us decode and scan gigabytes of text.
 */
const MAX_HEADER_BYTES = 2 ** 20;
/** Deepest nesting of dicts, tuples and lists in a header: NumPy writes 2 levels (3 for old structured dtypes). */
const MAX_HEADER_NESTING = 32;

// ---------------------------------------------------------------------------------------------------------------
// Header: a Python dict literal such as {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }

type PyLiteral = string | number | boolean | null | PyLiteral[] | { [key: string]: PyLiteral };

/** A recursive-descent parser for the subset of Python literals NumPy writes (and older NumPy versions wrote). */
class PyLiteralParser {
  private position = 0;
  /** Open dicts, tuples and lists around the current position; bounded so hostile nesting cannot overflow the stack. */
  private depth = 0;

  constructor(
    private readonly text: string,
    private readonly source: string,
  ) {}

  parseAll(): PyLiteral {
    const value = this.parseValue();
    this.skipSpace();
    if (this.position < this.text.length) this.fail('unexpected text after the dict');
    return value;
  }

  private fail(what: string): never {
    const preview =
      this.text.length > HEADER_PREVIEW_CHARS ? this.text.slice(0, HEADER_PREVIEW_CHARS) + '...' : this.text.trimEnd();
    throw new FormatError(
      `${this.source}: malformed .npy header (${what} at character ${this.position}): ${JSON.stringify(preview)}`,
    );
  }

  private skipSpace(): void {
    while (this.position < this.text.length && ' \t\r\n'.includes(this.text[this.position] ?? '')) this.position++;
  }

  private parseValue(): PyLiteral {
    this.skipSpace();
    const char = this.text[this.position];
    if (char === undefined) this.fail('unexpected end');
    if (char === '{' || char === '(' || char === '[') {
      if (this.depth === MAX_HEADER_NESTING) this.fail(`nesting deeper than ${MAX_HEADER_NESTING} levels`);
      this.depth++;
      const container = char === '{' ? this.parseDict() : this.parseSequence(char === '(' ? ')' : ']');
      this.depth--;
      return container;
    }
    if (char === "'" || char === '"') return this.parseString();
    if (char === '-' || (char >= '0' && char <= '9')) return this.parseInteger();
    return this.parseKeyword();
  }

  private parseDict(): { [key: string]: PyLiteral } {
    // No prototype, so that a key such as '__proto__' is stored like any other.
    const dict: { [key: string]: PyLiteral } = Object.create(null);
    this.position++; // '{'
    for (;;) {
      this.skipSpace();
      if (this.text[this.position] === '}') break;
      const key = this.parseValue();
      if (typeof key !== 'string') this.fail('expected a string key');
      this.skipSpace();
      if (this.text[this.position] !== ':') this.fail("expected ':'");
      this.position++;
      dict[key] = this.parseValue();
      this.skipSpace();
      if (this.text[this.position] === ',') this.position++;
      else if (this.text[this.position] !== '}') this.fail("expected ',' or '}'");
    }
    this.position++; // '}'
    return dict;
  }

  /** Tuples and lists both become arrays; a trailing comma is allowed, so (3,) and () parse as expected. */
  private parseSequence(close: string): PyLiteral[] {
    const items: PyLiteral[] = [];
    this.position++; // '(' or '['
    for (;;) {
      this.skipSpace();
      if (this.text[this.position] === close) break;
      items.push(this.parseValue());
      this.skipSpace();
      if (this.text[this.position] === ',') this.position++;
      else if (this.text[this.position] !== close) this.fail(`expected ',' or '${close}'`);
    }
    this.position++; // close
    return items;
  }

  private parseString(): string {
    const quote = this.text[this.position];
    let result = '';
    this.position++;
    for (;;) {
      const char = this.text[this.position];
      if (char === undefined) this.fail('unterminated string');
      this.position++;
      if (char === quote) return result;
      if (char === '\\') {
        const escaped = this.text[this.position];
        if (escaped === undefined) this.fail('unterminated string');
        this.position++;
        result += escaped === 'n' ? '\n' : escaped === 't' ? '\t' : escaped;
      } else {
        result += char;
      }
    }
  }

  /** Integers, including Python 2's long suffix: NumPy under Python 2 wrote shapes as (3L, 224L). */
  private parseInteger(): number {
    const match = /^-?\d+L?/.exec(this.text.slice(this.position, this.position + 32));
    if (match === null) this.fail('expected an integer');
    const value = Number(match[0].replace('L', ''));
    if (!Number.isSafeInteger(value)) this.fail(`integer ${match[0]} is too large`);
    this.position += match[0].length;
    return value;
  }

  private parseKeyword(): boolean | null {
    for (const [word, value] of [['True', true], ['False', false], ['None', null]] as const) {
      if (this.text.startsWith(word, this.position)) {
        this.position += word.length;
        return value;
      }
    }
    return this.fail('unexpected character');
  }
}

interface NpyHeader {
  readonly dtype: NpyDtype;
  readonly shape: number[];
}

function parseDescr(descr: PyLiteral | undefined, source: string): NpyDtype {
  if (typeof descr !== 'string') {
    throw new FormatError(
      `${source}: .npy header 'descr' is ${JSON.stringify(descr)}; structured dtypes are not supported ` +
        `(expected one of ${SUPPORTED_DESCRS})`,
    );
  }
  const byteOrder = descr.slice(0, 1);
  const typeCode = descr.slice(1);
  const dtype = (Object.keys(DTYPES) as NpyDtype[]).find((d) => DTYPES[d].typeCode === typeCode);
  if (dtype === undefined || !'<>|='.includes(byteOrder)) {
    throw new FormatError(`${source}: unsupported .npy dtype '${descr}' (expected one of ${SUPPORTED_DESCRS})`);
  }
  // Byte order only matters for items wider than one byte; NumPy writes '|' for those that have none.
  if (DTYPES[dtype].itemSize > 1 && byteOrder !== '<') {
    const advice = `convert it with arr.astype('<${typeCode}') before saving`;
    throw new FormatError(
      byteOrder === '>'
        ? `${source}: big-endian data ('${descr}') is not supported; ${advice}`
        : `${source}: .npy dtype '${descr}' does not say little-endian; ${advice}`,
    );
  }
  return dtype;
}

function parseHeader(text: string, source: string): NpyHeader {
  const dict = new PyLiteralParser(text, source).parseAll();
  if (dict === null || typeof dict !== 'object' || Array.isArray(dict)) {
    throw new FormatError(`${source}: .npy header is not a dict: ${JSON.stringify(text.slice(0, HEADER_PREVIEW_CHARS))}`);
  }
  for (const key of ['descr', 'fortran_order', 'shape']) {
    if (!(key in dict)) throw new FormatError(`${source}: .npy header has no '${key}' key`);
  }
  const dtype = parseDescr(dict['descr'], source);
  const fortranOrder = dict['fortran_order'];
  if (fortranOrder === true) {
    throw new FormatError(`${source}: Fortran-ordered arrays are not supported; save np.ascontiguousarray(arr) instead`);
  }
  if (fortranOrder !== false) {
    throw new FormatError(`${source}: .npy header 'fortran_order' is ${JSON.stringify(fortranOrder)}; expected True or False`);
  }
  const shape = dict['shape'];
  if (!Array.isArray(shape) || !shape.every((d): d is number => typeof d === 'number' && Number.isSafeInteger(d) && d >= 0)) {
    throw new FormatError(
      `${source}: .npy header 'shape' is ${JSON.stringify(shape)}; expected a tuple of non-negative integers`,
    );
  }
  return { dtype, shape };
}

// ---------------------------------------------------------------------------------------------------------------
// Decoding

function copyBytesInto<T extends NpyTypedArray>(target: T, bytes: Uint8Array): T {
  new Uint8Array(target.buffer, target.byteOffset, target.byteLength).set(bytes);
  return target;
}

/** Copy the data bytes into a new typed array of the header's dtype, which also fixes any misalignment. */
function makeArray(dtype: NpyDtype, shape: number[], bytes: Uint8Array, length: number): NpyArray {
  switch (dtype) {
    case 'float32':
      return { dtype, shape, data: copyBytesInto(new Float32Array(length), bytes) };
    case 'float64':
      return { dtype, shape, data: copyBytesInto(new Float64Array(length), bytes) };
    case 'int64':
      return { dtype, shape, data: copyBytesInto(new BigInt64Array(length), bytes) };
    case 'int32':
      return { dtype, shape, data: copyBytesInto(new Int32Array(length), bytes) };
    case 'uint8':
      return { dtype, shape, data: copyBytesInto(new Uint8Array(length), bytes) };
  }
}

/**
 * Decode the bytes of a .npy file.
 * @param source - the file name (or another label) that error messages start with.
 * @throws FormatError when the magic, version, header or data size is wrong, or the dtype/order is unsupported,
 *   e.g. `x.npy: expected 1204224 data bytes for shape [2, 3, 224, 224] float32 but the file has 1000`.
 */
export function decodeNpy(bytes: Uint8Array, source = 'input'): NpyArray {
  if (bytes.length < MAGIC.length || MAGIC.some((b, i) => bytes[i] !== b)) {
    throw new FormatError(`${source}: not a .npy file (it does not start with the magic string \\x93NUMPY)`);
  }
  const major = bytes[6];
  const minor = bytes[7];
  if (major === undefined || minor === undefined) throw new FormatError(`${source}: .npy file is truncated inside its preamble`);
  if (minor !== 0 || (major !== 1 && major !== 2 && major !== 3)) {
    throw new FormatError(`${source}: unsupported .npy format version ${major}.${minor} (expected 1.0, 2.0 or 3.0)`);
  }
  const lengthFieldSize = major === 1 ? 2 : 4;
  const headerStart = 8 + lengthFieldSize;
  if (bytes.length < headerStart) throw new FormatError(`${source}: .npy file is truncated inside its preamble`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const headerLength = major === 1 ? view.getUint16(8, true) : view.getUint32(8, true);
  if (headerLength > MAX_HEADER_BYTES) {
    throw new FormatError(`${source}: .npy header says it is ${headerLength} bytes, more than the ${MAX_HEADER_BYTES} we accept`);
  }
  const dataStart = headerStart + headerLength;
  if (bytes.length < dataStart) {
    throw new FormatError(
      `${source}: .npy header says it is ${headerLength} bytes but the file ends after ${bytes.length - headerStart}`,
    );
  }
  const headerBytes = Buffer.from(bytes.buffer, bytes.byteOffset + headerStart, headerLength);
  const headerText = headerBytes.toString(major === 3 ? 'utf8' : 'latin1');
  const { dtype, shape } = parseHeader(headerText, source);

  const length = shape.reduce((p, d) => p * d, 1);
  const expectedBytes = length * DTYPES[dtype].itemSize;
  const availableBytes = bytes.length - dataStart;
  if (availableBytes !== expectedBytes) {
    throw new FormatError(
      `${source}: expected ${expectedBytes} data bytes for shape ${formatShape(shape)} ${dtype} but the file has ${availableBytes}`,
    );
  }
  return makeArray(dtype, shape, bytes.subarray(dataStart), length);
}

/**
 * Read a .npy file of any supported dtype.
 * @param argName - how the caller's user named this path (e.g. '--input'), used in error messages.
 * @throws ArgumentValueError when the file is missing or unreadable.
 * @throws FormatError when it is not a valid, supported .npy file (see {@link decodeNpy}).
 */
export async function readNpy(path: string, argName = 'path'): Promise<NpyArray> {
  return decodeNpy(await readFileChecked(path, argName), path);
}

/**
 * Read a float32 .npy file as a HostTensor (images, activations).
 * @throws ArgumentValueError when the file is missing or unreadable.
 * @throws FormatError when it is not a valid, supported .npy file.
 * @throws ArgumentTypeError when its dtype is not float32, e.g.
 *   `Expected a float32 .npy file for --input but received 'x.npy' of dtype float64`.
 * @example const images = await readNpyFloat32('batch.npy', '--input'); // images.shape: [N, C, H, W]
 */
export async function readNpyFloat32(path: string, argName: string): Promise<HostTensor> {
  const array = await readNpy(path, argName);
  if (array.dtype !== 'float32') {
    throw new ArgumentTypeError(
      `Expected a float32 .npy file for ${argName} but received '${path}' of dtype ${array.dtype}; ` +
        'convert it with arr.astype(np.float32)',
    );
  }
  return { shape: array.shape, data: array.data };
}

// ---------------------------------------------------------------------------------------------------------------
// Encoding

function dtypeOfArray(array: unknown): NpyDtype | undefined {
  if (array instanceof Float32Array) return 'float32';
  if (array instanceof Float64Array) return 'float64';
  if (array instanceof BigInt64Array) return 'int64';
  if (array instanceof Int32Array) return 'int32';
  if (array instanceof Uint8Array) return 'uint8';
  return undefined;
}

/** Python's repr of a shape tuple: (), (3,), (2, 3). */
function shapeRepr(shape: readonly number[]): string {
  return shape.length === 1 ? `(${shape[0]},)` : `(${shape.join(', ')})`;
}

/** The preamble and header of a .npy file followed by a view of the array's bytes (no copy). */
function npyChunks(array: NpyTypedArray, shape: readonly number[]): [Buffer, Buffer] {
  const dtype = dtypeOfArray(array);
  if (dtype === undefined) {
    throw new ArgumentTypeError(
      'Expected a Float32Array, Float64Array, BigInt64Array, Int32Array or Uint8Array for array ' +
        `but received ${describeValue(array)}`,
    );
  }
  if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
    throw new ArgumentValueError(`Expected an array of non-negative integers for shape but received ${describeValue(shape)}`);
  }
  const length = shape.reduce((p, d) => p * d, 1);
  if (length !== array.length) {
    throw new ShapeError(
      `Expected an array of ${length} elements for shape ${formatShape(shape)} but received ${describeValue(array)}`,
    );
  }
  const byteOrder = DTYPES[dtype].itemSize === 1 ? '|' : '<';
  const dict = `{'descr': '${byteOrder}${DTYPES[dtype].typeCode}', 'fortran_order': False, 'shape': ${shapeRepr(shape)}, }`;
  // The header ends with '\n' and is padded with spaces so that the data starts on an aligned offset.
  const paddedLength = (preambleLength: number): number =>
    dict.length + 1 + ((DATA_ALIGNMENT - ((preambleLength + dict.length + 1) % DATA_ALIGNMENT)) % DATA_ALIGNMENT);
  const major = paddedLength(10) <= 0xffff ? 1 : 2;
  const preambleLength = major === 1 ? 10 : 12;
  const headerLength = paddedLength(preambleLength);
  const head = Buffer.alloc(preambleLength + headerLength, 0x20);
  head.set(MAGIC, 0);
  head[6] = major;
  head[7] = 0;
  if (major === 1) head.writeUInt16LE(headerLength, 8);
  else head.writeUInt32LE(headerLength, 8);
  head.write(dict, preambleLength, 'latin1');
  head[head.length - 1] = 0x0a;
  return [head, Buffer.from(array.buffer, array.byteOffset, array.byteLength)];
}

/**
 * Encode an array as the bytes of a .npy file (format 1.0, or 2.0 when the header exceeds 64 KiB).
 * @param shape - row-major shape; its product must equal array.length.
 * @throws ArgumentTypeError for an unsupported array type; ArgumentValueError for a malformed shape;
 *   ShapeError when shape and array length disagree.
 * @example encodeNpy(new Float32Array([1, 2, 3, 4, 5, 6]), [2, 3])
 */
export function encodeNpy(array: NpyTypedArray, shape: readonly number[]): Buffer {
  return Buffer.concat(npyChunks(array, shape));
}

/**
 * Write an array to a .npy file atomically (see {@link writeFileAtomic}), without copying its data.
 * @param argName - how the caller's user named this path (e.g. '--output'), used in error messages.
 * @throws ArgumentTypeError, ArgumentValueError, ShapeError as {@link encodeNpy};
 *   ArgumentValueError when the destination cannot be written.
 */
export async function writeNpy(path: string, array: NpyTypedArray, shape: readonly number[], argName = 'path'): Promise<void> {
  await writeFileAtomic(path, npyChunks(array, shape), argName);
}
