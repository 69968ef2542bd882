// IDX files (the MNIST family's format), gzipped or plain: a 4-byte magic (0, 0, type, rank), big-endian uint32
// dimensions, then the data. Reads unsigned-byte data, the only type MNIST-style datasets use.
// Not for: writing IDX files, or the other IDX element types (int8/int16/int32/float/double, all rejected).

import { gunzip } from 'node:zlib';
import { promisify } from 'node:util';

import { FormatError, formatShape } from '../errors.js';
import { readFileChecked } from '../io/atomic.js';

const gunzipAsync = promisify(gunzip);

/** A decoded IDX array of unsigned bytes; `data` is row-major with `shape`'s element count. */
export interface IdxArray {
  readonly shape: number[];
  readonly data: Uint8Array;
}

/** IDX type codes (third magic byte) and their names, for error messages. */
const TYPE_NAMES: Record<number, string> = {
  0x08: 'unsigned byte',
  0x09: 'signed byte',
  0x0b: 'int16',
  0x0c: 'int32',
  0x0d: 'float32',
  0x0e: 'float64',
};
const UBYTE = 0x08;
const GZIP_MAGIC = [0x1f, 0x8b];

/** True when the bytes start like a gzip stream (RFC 1952 ID1, ID2). */
export function isGzip(bytes: Uint8Array): boolean {
  return bytes[0] === GZIP_MAGIC[0] && bytes[1] === GZIP_MAGIC[1];
}

/**
 * Decode the (already decompressed) bytes of an IDX file of unsigned bytes.
 * @param source - the file name that error messages start with.
 * @throws FormatError when the magic is wrong, the type is not unsigned byte, or the data length does not match
 *   the dimensions, e.g. `train-labels-idx1-ubyte.gz: expected 60000 data bytes for shape [60000] but the file has 59990`.
 * @example decodeIdx(new Uint8Array([0, 0, 8, 1, 0, 0, 0, 2, 7, 9]), 'x.idx') // { shape: [2], data: [7, 9] }
 */
export function decodeIdx(bytes: Uint8Array, source = 'input'): IdxArray {
  if (bytes.length < 4 || bytes[0] !== 0 || bytes[1] !== 0) {
    const head = Array.from(bytes.subarray(0, 4), (b) => b.toString(16).padStart(2, '0')).join(' ');
    throw new FormatError(`${source}: not an IDX file (it starts with bytes ${head || '(none)'}, expected 00 00 <type> <rank>)`);
  }
  const type = bytes[2] as number;
  const rank = bytes[3] as number;
  if (type !== UBYTE) {
    const name = TYPE_NAMES[type];
    throw new FormatError(
      name === undefined
        ? `${source}: not an IDX file (unknown element type 0x${type.toString(16)})`
        : `${source}: IDX element type ${name} is not supported (expected unsigned byte, type 0x08)`,
    );
  }
  if (rank === 0) throw new FormatError(`${source}: IDX file has rank 0; expected at least one dimension`);
  const dataStart = 4 + 4 * rank;
  if (bytes.length < dataStart) {
    throw new FormatError(`${source}: IDX file is truncated inside its ${rank} dimensions (${bytes.length} bytes in all)`);
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const shape: number[] = [];
  for (let i = 0; i < rank; i++) shape.push(view.getUint32(4 + 4 * i, false));
  const expected = shape.reduce((p, d) => p * d, 1);
  const available = bytes.length - dataStart;
  if (available !== expected) {
    const what = available < expected ? 'the file is truncated' : 'the file has trailing bytes';
    throw new FormatError(
      `${source}: expected ${expected} data bytes for shape ${formatShape(shape)} but the file has ${available} (${what})`,
    );
  }
  // A copy (not Buffer#slice, which would be a view), so the file buffer can be freed and the data is a plain
  // Uint8Array starting at offset 0.
  return { shape, data: new Uint8Array(bytes.subarray(dataStart)) };
}

/**
 * Read an IDX file, decompressing it first when it is gzipped (detected by content, not by name).
 * Decompression runs on libuv's thread pool, so the event loop stays free.
 * @param argName - how the caller's user named this path, used when the file is missing.
 * @throws ArgumentValueError when the file is missing or unreadable.
 * @throws FormatError when the gzip stream is corrupt or truncated, or the IDX content is invalid.
 */
export async function readIdx(path: string, argName = 'path'): Promise<IdxArray> {
  let bytes: Uint8Array = await readFileChecked(path, argName);
  if (isGzip(bytes)) {
    try {
      bytes = await gunzipAsync(bytes);
    } catch (error) {
      const reason = error instanceof Error ? error.message : String(error);
      const wrapped = new FormatError(`${path}: corrupt or truncated gzip data (${reason})`);
      wrapped.cause = error;
      throw wrapped;
    }
  }
  return decodeIdx(bytes, path);
}
