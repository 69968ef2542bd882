// PyTorch checkpoints written by torch.save, read without Python: the zip format (`<archive>/data.pkl` plus one
// uncompressed entry per storage) and the legacy format (five pickles, then each storage's element count and raw
// bytes). Finds the state dict (plain, or under 'state_dict'/'model', EMA as fallback), strips DataParallel's
// 'module.' prefix and returns contiguous float32 tensors, reading one storage at a time straight from the file.
// Not for: mapping key names to an architecture (lib/io/weights.ts, keys.ts), or any pickle content beyond state
// dicts: the unpickler (pickle.ts) refuses every global a state dict does not need.

import { constants as bufferConstants } from 'node:buffer';
import { open } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import type { Readable } from 'node:stream';

import { RandomAccessReader, fromRandomAccessReaderPromise } from 'yauzl';
import type { Entry } from 'yauzl';

import { ArgumentValueError, FormatError, formatShape } from '../errors.js';
import type { HostTensor, StateDict } from '../tensor.js';
import { readFileHead } from './atomic.js';
import { MAX_PICKLE_BYTES, describePickleValue, unpickle } from './pickle.js';
import type { PickleDict, PickleGlobal, PickleOpaque, PickleValue } from './pickle.js';

/** Element types of torch's typed storages, by the global that names them in a pickle. */
const STORAGE_DTYPES = {
  'torch.FloatStorage': { dtype: 'float32', itemSize: 4 },
  'torch.HalfStorage': { dtype: 'float16', itemSize: 2 },
  'torch.BFloat16Storage': { dtype: 'bfloat16', itemSize: 2 },
  'torch.DoubleStorage': { dtype: 'float64', itemSize: 8 },
  'torch.LongStorage': { dtype: 'int64', itemSize: 8 },
  'torch.IntStorage': { dtype: 'int32', itemSize: 4 },
  'torch.ShortStorage': { dtype: 'int16', itemSize: 2 },
  'torch.CharStorage': { dtype: 'int8', itemSize: 1 },
  'torch.ByteStorage': { dtype: 'uint8', itemSize: 1 },
  'torch.BoolStorage': { dtype: 'bool', itemSize: 1 },
} as const;

type StorageTypeName = keyof typeof STORAGE_DTYPES;
type StorageDtype = (typeof STORAGE_DTYPES)[StorageTypeName]['dtype'];
type FloatDtype = 'float32' | 'float16' | 'bfloat16' | 'float64';

/** Keys under which training scripts wrap the state dict, in order of preference (EMA weights only as fallback). */
const WRAPPER_KEYS = ['state_dict', 'model', 'state_dict_ema', 'model_ema'];
/** nn.DataParallel / DistributedDataParallel prefix every key with this. */
const DATA_PARALLEL_PREFIX = 'module.';
/** Most tensors (and storages) one file may define; a RepVGG-B3 state dict has 453 (num_batches_tracked included). */
const MAX_TENSORS = 100_000;
/** Most zip entries: one per storage plus a few records (version, byteorder, serialization id). */
const MAX_ZIP_ENTRIES = MAX_TENSORS + 16;
/** Highest tensor rank accepted; weights have at most 4 (conv kernels). */
const MAX_RANK = 8;
/**
 * The float32 tensors returned may total at most this multiple of the file's size: a float16 file doubles when
 * converted, and two names for one storage (tied weights) double again. The bound keeps views of one storage
 * from asking for unbounded memory.
 */
const MAX_OUTPUT_EXPANSION = 8;
/** torch's legacy format starts with a pickled LONG of this value. */
const LEGACY_MAGIC_NUMBER = 0x1950a86a20f9469cfc6cn;
const LEGACY_PROTOCOL_VERSION = 1001;
/** The first read of a legacy file; grown (x4) until the five leading pickles fit. */
const LEGACY_FIRST_HEAD_BYTES = 64 * 1024;
/** Storage keys are short ids ('0', '1', ... in zip files, decimal addresses in legacy ones). */
const STORAGE_KEY_PATTERN = /^[A-Za-z0-9_.-]{1,64}$/;
/** One read() call is limited to 2 GiB by libuv; larger storages are read in pieces of this size. */
const READ_CHUNK_BYTES = 1 << 30;
/** Reads smaller than this are served from (and refill) one cached block; larger ones go straight to their target. */
const BLOCK_BYTES = 1 << 20;
/** A zip local file header: signature, versions, flags, ..., name length at byte 26, extra length at 28. */
const LOCAL_HEADER_BYTES = 30;
const LOCAL_HEADER_SIGNATURE = 0x04034b50;
/** Prefetch allowance for a local extra field: torch's padding aligns data to 64 bytes (plus a 4-byte field header). */
const LOCAL_EXTRA_ALLOWANCE = 128;
/** Each legacy storage starts with its element count as a little-endian int64. */
const LEGACY_COUNT_BYTES = 8;

const ZIP_MAGIC = [0x50, 0x4b, 0x03, 0x04]; // 'PK\x03\x04'
/** Pickle opcodes that open a legacy file: PROTO n, then (protocol 4+) FRAME with an 8-byte length, then LONG1. */
const PICKLE_PROTO_OPCODE = 0x80;
const PICKLE_FRAME_OPCODE = 0x95;
const PICKLE_FRAME_HEADER_BYTES = 9;
/** LONG1 of 10 bytes followed by the magic number, little-endian: how every legacy file's first pickle starts. */
const LEGACY_MAGIC_PREFIX = [0x8a, 10, ...Array.from({ length: 10 }, (_, i) => Number((LEGACY_MAGIC_NUMBER >> BigInt(8 * i)) & 0xffn))];
/** Enough of the magic to tell a legacy file from other data that happens to start with a PROTO opcode. */
const LEGACY_MAGIC_MIN_MATCH = 4;
/** Bytes pthFormatOf needs to see of a file (it also decides on fewer when the file is shorter). */
export const PTH_HEAD_BYTES = 16;

/** How a file starts: a zip archive (torch.save's default since 1.6) or a pickle (the legacy format). */
export type PthFormat = 'zip' | 'legacy';

/**
 * Tells from the first bytes of a file whether it may be a torch.save checkpoint, and which format.
 * @param head - the first PTH_HEAD_BYTES bytes of the file (fewer when the file is shorter).
 * @returns 'zip' for a zip archive, 'legacy' for a pickle of protocol 2 to 5 that starts with torch's legacy magic
 *   number, undefined otherwise.
 */
export function pthFormatOf(head: Uint8Array): PthFormat | undefined {
  if (ZIP_MAGIC.every((byte, i) => head[i] === byte)) return 'zip';
  const protocol = head[1];
  if (head[0] !== PICKLE_PROTO_OPCODE || protocol === undefined || protocol < 2 || protocol > 5) return undefined;
  const magicStart = 2 + (head[2] === PICKLE_FRAME_OPCODE ? PICKLE_FRAME_HEADER_BYTES : 0);
  const magic = head.subarray(magicStart, magicStart + LEGACY_MAGIC_PREFIX.length);
  return magic.length >= LEGACY_MAGIC_MIN_MATCH && magic.every((byte, i) => byte === LEGACY_MAGIC_PREFIX[i]) ? 'legacy' : undefined;
}

/** Whether the first bytes of a file look like a torch.save checkpoint (see {@link pthFormatOf}). */
export function isPthHead(head: Uint8Array): boolean {
  return pthFormatOf(head) !== undefined;
}

// ---------------------------------------------------------------------------------------------------------------
// What the pickle describes: storages and tensor views of them, nothing read yet

class StorageRef implements PickleOpaque {
  readonly kind = 'opaque';
  constructor(
    readonly key: string,
    readonly typeName: StorageTypeName,
    /** Elements the pickle says the storage holds, checked against the file before anything is read. */
    readonly numel: number,
  ) {}

  get dtype(): StorageDtype {
    return STORAGE_DTYPES[this.typeName].dtype;
  }

  get byteLength(): number {
    return this.numel * STORAGE_DTYPES[this.typeName].itemSize;
  }
}

class TensorRef implements PickleOpaque {
  readonly kind = 'opaque';
  constructor(
    readonly storage: StorageRef,
    readonly offset: number,
    readonly shape: readonly number[],
    readonly stride: readonly number[],
  ) {}

  get numel(): number {
    return this.shape.reduce((p, d) => p * d, 1);
  }
}

function isSafeIndex(value: PickleValue | undefined): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

function isTuple(value: PickleValue | undefined): value is PickleValue[] {
  return Array.isArray(value) && Object.isFrozen(value);
}

function isIndexTuple(value: PickleValue | undefined): value is number[] {
  return isTuple(value) && value.every(isSafeIndex);
}

function isEmptyDict(value: PickleValue | undefined): boolean {
  return value instanceof Map && value.size === 0;
}

/**
 * The globals a state dict's pickle may use, and the storages and tensors it defines. One per file: it counts
 * tensors and makes shared storages one StorageRef.
 */
class CheckpointPickle {
  readonly storages = new Map<string, StorageRef>();
  private tensorCount = 0;
  readonly globals: ReadonlyMap<string, PickleGlobal>;

  constructor(private readonly source: string) {
    const entries: PickleGlobal[] = [
      { kind: 'global', qualifiedName: 'collections.OrderedDict', call: (args) => this.orderedDict(args) },
      { kind: 'global', qualifiedName: 'torch._utils._rebuild_tensor_v2', call: (args) => this.rebuildTensor(args) },
      { kind: 'global', qualifiedName: 'torch._utils._rebuild_parameter', call: (args) => this.rebuildParameter(args) },
      ...Object.keys(STORAGE_DTYPES).map((qualifiedName): PickleGlobal => ({ kind: 'global', qualifiedName })),
    ];
    this.globals = new Map(entries.map((g) => [g.qualifiedName, g]));
  }

  private fail(what: string): never {
    throw new FormatError(`${this.source}: ${what}`);
  }

  private orderedDict(args: readonly PickleValue[]): PickleDict {
    if (args.length !== 0) this.fail(`OrderedDict is called with ${args.length} arguments; torch.save passes none`);
    return new Map();
  }

  /**
   * torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, backward_hooks). Newer torch
   * appends backend metadata only for tensors that have some (not CPU tensors), which we refuse.
   */
  private rebuildTensor(args: readonly PickleValue[]): TensorRef {
    const [storage, offset, shape, stride, requiresGrad, hooks] = args;
    if (
      args.length !== 6 ||
      !(storage instanceof StorageRef) ||
      !isSafeIndex(offset) ||
      !isIndexTuple(shape) ||
      !isIndexTuple(stride) ||
      typeof requiresGrad !== 'boolean' ||
      !isEmptyDict(hooks)
    ) {
      this.fail(
        `_rebuild_tensor_v2 is called with (${args.map(describePickleValue).join(', ')}); expected (storage, offset, ` +
          'size, stride, requires_grad, {})',
      );
    }
    if (++this.tensorCount > MAX_TENSORS) this.fail(`defines more than ${MAX_TENSORS} tensors`);
    if (shape.length > MAX_RANK || stride.length !== shape.length) {
      this.fail(
        `tensor of shape ${formatShape(shape)} has strides ${formatShape(stride)}; ` +
          `expected rank <= ${MAX_RANK} and one stride per dimension`,
      );
    }
    const tensor = new TensorRef(storage, offset, shape, stride);
    // Checked in float64: a product beyond 2^53 loses precision but stays far above any real storage size.
    const numel = tensor.numel;
    const lastIndex = offset + shape.reduce((sum, d, i) => sum + (d - 1) * (stride[i] as number), 0);
    const fits = numel === 0 ? offset <= storage.numel : numel <= storage.numel && lastIndex < storage.numel;
    if (!fits) {
      this.fail(
        `tensor of shape ${formatShape(shape)} (${numel} elements, strides ${formatShape(stride)}, offset ${offset}) ` +
          `does not fit in storage '${storage.key}' of ${storage.numel} elements`,
      );
    }
    return tensor;
  }

  /** torch._utils._rebuild_parameter(data, requires_grad, backward_hooks): an nn.Parameter is its tensor. */
  private rebuildParameter(args: readonly PickleValue[]): TensorRef {
    const [data, requiresGrad, hooks] = args;
    if (args.length !== 3 || !(data instanceof TensorRef) || typeof requiresGrad !== 'boolean' || !isEmptyDict(hooks)) {
      this.fail(`_rebuild_parameter is called with (${args.map(describePickleValue).join(', ')}); expected (tensor, requires_grad, {})`);
    }
    return data;
  }

  /**
   * A storage's persistent id: ('storage', torch.XStorage, key, location, numel) in zip files, with a sixth
   * element (view metadata, always None since PyTorch 0.4) in legacy ones.
   */
  persistentLoad(pid: PickleValue, format: PthFormat): StorageRef {
    const expectedLength = format === 'zip' ? 5 : 6;
    const [tag, type, key, location, numel, view] = isTuple(pid) ? pid : [];
    const typeName = type !== null && typeof type === 'object' && 'qualifiedName' in type ? type.qualifiedName : undefined;
    if (
      !isTuple(pid) ||
      pid.length !== expectedLength ||
      tag !== 'storage' ||
      typeName === undefined ||
      !Object.hasOwn(STORAGE_DTYPES, typeName) ||
      typeof key !== 'string' ||
      !STORAGE_KEY_PATTERN.test(key) ||
      typeof location !== 'string' ||
      !isSafeIndex(numel) ||
      (format === 'legacy' && view !== null)
    ) {
      const expected = `('storage', torch.XStorage, key, location, numel${format === 'zip' ? '' : ', None'})`;
      const items = isTuple(pid) ? pid.map(describePickleValue).join(', ') : '';
      this.fail(`storage id is ${describePickleValue(pid)} (${items}); expected ${expected}`);
    }
    const known = this.storages.get(key);
    if (known !== undefined) {
      if (known.typeName !== typeName || known.numel !== numel) {
        this.fail(
          `storage '${key}' is declared twice with different types or sizes ` +
            `(${known.typeName} ${known.numel}, ${typeName} ${numel})`,
        );
      }
      return known;
    }
    if (this.storages.size >= MAX_TENSORS) this.fail(`defines more than ${MAX_TENSORS} storages`);
    const storage = new StorageRef(key, typeName as StorageTypeName, numel);
    this.storages.set(key, storage);
    return storage;
  }

  /** Unpickle the main pickle of a checkpoint. */
  parse(bytes: Uint8Array, start: number, format: PthFormat, what: string): { value: PickleValue; end: number } | undefined {
    const result = unpickle(bytes, start, {
      source: `${this.source} (${what})`,
      globals: this.globals,
      persistentLoad: (pid) => this.persistentLoad(pid, format),
    });
    return result.complete ? result : undefined;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Finding the state dict

/** Whether a value is a dict of string keys to tensors (num_batches_tracked counters included). */
function isTensorDict(value: PickleValue | undefined): value is Map<string, TensorRef> {
  if (!(value instanceof Map) || value.size === 0) return false;
  for (const [key, tensor] of value) if (typeof key !== 'string' || !(tensor instanceof TensorRef)) return false;
  return true;
}

function describeTop(value: PickleValue): string {
  if (!(value instanceof Map)) return describePickleValue(value);
  const keys = [...value.keys()].slice(0, 8).map((k) => (typeof k === 'string' ? `'${k}'` : describePickleValue(k)));
  return `a dict with keys ${keys.join(', ')}${value.size > 8 ? ', ...' : ''}`;
}

/** The state dict: the top-level dict of tensors, or one stored under a WRAPPER_KEYS key. */
function findStateDict(root: PickleValue, source: string): Map<string, TensorRef> {
  if (isTensorDict(root)) return root;
  if (root instanceof Map) {
    for (const key of WRAPPER_KEYS) {
      const candidate = root.get(key);
      if (isTensorDict(candidate)) return candidate;
    }
  }
  throw new FormatError(
    `${source}: holds ${describeTop(root)}, not a state dict; expected a dict of tensors, plain or under ` +
      `${WRAPPER_KEYS.map((k) => `'${k}'`).join(', ')}`,
  );
}

/** The float tensors to return, by final name in the file's order: 'module.' stripped, step counters dropped. */
function selectTensors(stateDict: Map<string, TensorRef>, source: string): Map<string, TensorRef> {
  const names = [...stateDict.keys()];
  const stripPrefix = names.every((name) => name.startsWith(DATA_PARALLEL_PREFIX));
  const selected = new Map<string, TensorRef>();
  for (const [name, tensor] of stateDict) {
    // BatchNorm's step counter (int64) plays no part in inference or re-parameterization.
    if (name.endsWith('num_batches_tracked')) continue;
    const { dtype } = tensor.storage;
    if (dtype !== 'float32' && dtype !== 'float16' && dtype !== 'bfloat16' && dtype !== 'float64') {
      throw new FormatError(`${source}: tensor '${name}' has dtype ${dtype}; weights must be float32, float16, bfloat16 or float64`);
    }
    selected.set(stripPrefix ? name.slice(DATA_PARALLEL_PREFIX.length) : name, tensor);
  }
  return selected;
}

// ---------------------------------------------------------------------------------------------------------------
// Turning storages into float32 tensors

let halfTable: Float32Array | undefined;

/** float16 bit pattern -> value, for all 65536 patterns (exact: every half is a float32). */
function halfToFloatTable(): Float32Array {
  if (halfTable !== undefined) return halfTable;
  halfTable = new Float32Array(65536);
  for (let bits = 0; bits < 65536; bits++) {
    const sign = bits & 0x8000 ? -1 : 1;
    const exponent = (bits >> 10) & 0x1f;
    const fraction = bits & 0x3ff;
    if (exponent === 0) halfTable[bits] = sign * fraction * 2 ** -24; // zero and subnormals
    else if (exponent === 0x1f) halfTable[bits] = fraction === 0 ? sign * Infinity : NaN;
    else halfTable[bits] = sign * (1 + fraction / 1024) * 2 ** (exponent - 15);
  }
  return halfTable;
}

/**
 * Memory for `bytes` bytes that is not zeroed first, as torch's own allocator does: zeroing would touch every page
 * once more before the file read (or a conversion) overwrites it. Only for arrays that are filled completely
 * before anyone sees them: readDirect fills every byte or throws, and the loops below write every element.
 */
function uninitialized(bytes: number): ArrayBuffer {
  const buffer = Buffer.allocUnsafeSlow(bytes); // unpooled: its ArrayBuffer is exactly this allocation
  return buffer.buffer as ArrayBuffer;
}

/** A whole storage's elements as float32 (the same memory when it already is float32). */
function storageToFloat32(bytes: ArrayBuffer, dtype: FloatDtype): Float32Array {
  switch (dtype) {
    case 'float32':
      return new Float32Array(bytes);
    case 'float64':
      return new Float32Array(new Float64Array(bytes));
    case 'float16': {
      const table = halfToFloatTable();
      const half = new Uint16Array(bytes);
      const out = new Float32Array(uninitialized(half.length * Float32Array.BYTES_PER_ELEMENT));
      for (let i = 0; i < half.length; i++) out[i] = table[half[i] as number] as number;
      return out;
    }
    case 'bfloat16': {
      // bfloat16 is the upper half of a float32's bit pattern.
      const bf16 = new Uint16Array(bytes);
      const out = new Uint32Array(uninitialized(bf16.length * Uint32Array.BYTES_PER_ELEMENT));
      for (let i = 0; i < bf16.length; i++) out[i] = (bf16[i] as number) << 16;
      return new Float32Array(out.buffer);
    }
  }
}

function isRowMajor(tensor: TensorRef): boolean {
  let expected = 1;
  for (let d = tensor.shape.length - 1; d >= 0; d--) {
    const size = tensor.shape[d] as number;
    // torch ignores the stride of a size-1 dimension when judging contiguity.
    if (size !== 1 && tensor.stride[d] !== expected) return false;
    expected *= size;
  }
  return true;
}

/** The tensor's elements in row-major order, copied out of its storage (already bounds-checked). */
function gather(storage: Float32Array, tensor: TensorRef): Float32Array {
  const { shape, stride, offset } = tensor;
  const numel = tensor.numel;
  if (isRowMajor(tensor)) return storage.slice(offset, offset + numel);
  const out = new Float32Array(uninitialized(numel * Float32Array.BYTES_PER_ELEMENT));
  const rank = shape.length;
  // Not row-major implies rank >= 1: walk the outer indices like an odometer, the last dimension in the inner loop.
  const inner = shape[rank - 1] as number;
  const innerStride = stride[rank - 1] as number;
  const index = new Array<number>(rank - 1).fill(0);
  let base = offset;
  for (let o = 0; o < numel; o += inner) {
    for (let j = 0; j < inner; j++) out[o + j] = storage[base + j * innerStride] as number;
    for (let d = rank - 2; d >= 0; d--) {
      const size = shape[d] as number;
      const step = stride[d] as number;
      index[d] = (index[d] as number) + 1;
      base += step;
      if ((index[d] as number) < size) break;
      base -= step * size;
      index[d] = 0;
    }
  }
  return out;
}

/** Fills `target` from the file: a zip entry's data or a legacy storage's bytes. */
type StorageReader = (storage: StorageRef, target: Uint8Array) => Promise<void>;

/** Whether the tensor is all of its storage, in order. */
function coversStorage(tensor: TensorRef): boolean {
  return tensor.offset === 0 && tensor.numel === tensor.storage.numel && isRowMajor(tensor);
}

/** The tensors using each storage, storages in the order given. */
function groupByStorage(tensors: Map<string, TensorRef>, order: readonly StorageRef[]): Map<StorageRef, Array<[string, TensorRef]>> {
  const groups = new Map<StorageRef, Array<[string, TensorRef]>>(order.map((s) => [s, []]));
  for (const [name, tensor] of tensors) groups.get(tensor.storage)?.push([name, tensor]);
  for (const [storage, users] of groups) if (users.length === 0) groups.delete(storage);
  return groups;
}

/**
 * Reads each needed storage once, in file order, and builds the float32 tensors that use it before the next:
 * a float32 tensor that is its storage's only, whole, contiguous user is read straight into its own array.
 */
async function materialize(
  tensors: Map<string, TensorRef>,
  storageOrder: readonly StorageRef[],
  readStorage: StorageReader,
  fileSize: number,
  source: string,
): Promise<StateDict> {
  let outputBytes = 0;
  for (const tensor of tensors.values()) outputBytes += tensor.numel * Float32Array.BYTES_PER_ELEMENT;
  if (outputBytes > MAX_OUTPUT_EXPANSION * fileSize) {
    throw new FormatError(
      `${source}: its tensors would take ${outputBytes} bytes as float32, more than ${MAX_OUTPUT_EXPANSION}x the ` +
        `${fileSize}-byte file; refusing to allocate`,
    );
  }
  const built = new Map<string, Float32Array>();
  for (const [storage, users] of groupByStorage(tensors, storageOrder)) {
    const largestBuffer = Math.max(storage.byteLength, storage.numel * Float32Array.BYTES_PER_ELEMENT);
    if (largestBuffer > bufferConstants.MAX_LENGTH) {
      throw new FormatError(
        `${source}: storage '${storage.key}' needs a ${largestBuffer}-byte buffer, more than Node.js can hold`,
      );
    }
    const [first] = users;
    // The common case: one float32 tensor that is its whole storage is read straight into its own array.
    const whole = users.length === 1 && first !== undefined && coversStorage(first[1]);
    if (whole && storage.dtype === 'float32') {
      const data = new Float32Array(uninitialized(storage.byteLength));
      await readStorage(storage, new Uint8Array(data.buffer));
      built.set(first[0], data);
      continue;
    }
    const raw = uninitialized(storage.byteLength);
    await readStorage(storage, new Uint8Array(raw));
    const values = storageToFloat32(raw, storage.dtype as FloatDtype);
    for (const [name, tensor] of users) built.set(name, whole ? values : gather(values, tensor));
  }
  const state: StateDict = new Map();
  for (const [name, tensor] of tensors) {
    state.set(name, { shape: [...tensor.shape], data: built.get(name) as Float32Array } satisfies HostTensor);
  }
  return state;
}

// ---------------------------------------------------------------------------------------------------------------
// File access

/**
 * Reads a file through one cached block, so that the many small reads of a checkpoint (yauzl's central directory
 * records, local headers, BatchNorm vectors) cost one system call per block instead of one each, while large
 * storages are read straight into their destination.
 */
class BlockReader {
  private readonly block = new Uint8Array(BLOCK_BYTES);
  private blockStart = 0;
  private blockLength = 0;

  constructor(
    private readonly handle: FileHandle,
    readonly fileSize: number,
    private readonly source: string,
  ) {}

  /** Reads exactly target.length bytes at `position` straight from the file. */
  async readDirect(target: Uint8Array, position: number, what: string): Promise<void> {
    let done = 0;
    while (done < target.length) {
      const length = Math.min(target.length - done, READ_CHUNK_BYTES);
      const { bytesRead } = await this.handle.read(target, done, length, position + done);
      if (bytesRead === 0) {
        throw new FormatError(`${this.source}: file ends after ${position + done} bytes while reading ${what} (truncated)`);
      }
      done += bytesRead;
    }
  }

  /**
   * Reads target.length bytes at `position`: large reads directly, small ones from the cached block, which on a
   * miss is refilled from `position` up to `prefetchEnd` (at most BLOCK_BYTES; the hint keeps the block from
   * reaching into a large storage that will be read directly anyway).
   */
  async read(target: Uint8Array, position: number, prefetchEnd: number, what: string): Promise<void> {
    if (target.length >= BLOCK_BYTES) return this.readDirect(target, position, what);
    if (position < this.blockStart || position + target.length > this.blockStart + this.blockLength) {
      const wanted = Math.max(target.length, Math.min(prefetchEnd, position + BLOCK_BYTES) - position);
      const length = Math.min(wanted, this.fileSize - position);
      if (length < target.length) {
        throw new FormatError(`${this.source}: file ends after ${this.fileSize} bytes while reading ${what} (truncated)`);
      }
      this.blockLength = 0; // invalid until the read completes
      await this.readDirect(this.block.subarray(0, length), position, what);
      this.blockStart = position;
      this.blockLength = length;
    }
    target.set(this.block.subarray(position - this.blockStart, position - this.blockStart + target.length));
  }
}

/** yauzl's view of the file: its reads go through the BlockReader (the central directory is read in one block). */
class ZipFileReader extends RandomAccessReader {
  constructor(private readonly reader: BlockReader) {
    super();
  }

  override read(buffer: Buffer, offset: number, length: number, position: number, callback: (err: Error | null) => void): void {
    // yauzl expects fs.read's callback (err, bytesRead); its type declaration lists only err.
    const done = callback as (err: Error | null, bytesRead?: number) => void;
    this.reader.read(buffer.subarray(offset, offset + length), position, this.reader.fileSize, 'the zip directory').then(
      () => done(null, length),
      (error: Error) => done(error),
    );
  }

  override _readStreamForRange(): Readable {
    // Only openReadStream() uses streams, and entries are read through read() instead.
    throw new Error('ZipFileReader serves read() only');
  }
}

function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

// ---------------------------------------------------------------------------------------------------------------
// The zip format

async function openZip(reader: BlockReader, source: string): Promise<Map<string, Entry>> {
  const entries = new Map<string, Entry>();
  try {
    // autoClose off and close() never called: the FileHandle owns the descriptor.
    const options = { autoClose: false, validateEntrySizes: true };
    const zip = await fromRandomAccessReaderPromise(new ZipFileReader(reader), reader.fileSize, options);
    if (zip.entryCount > MAX_ZIP_ENTRIES) {
      throw new FormatError(`${source}: zip archive lists ${zip.entryCount} entries, more than ${MAX_ZIP_ENTRIES}`);
    }
    for await (const entry of zip.eachEntry()) entries.set(entry.fileName, entry);
  } catch (error) {
    if (error instanceof FormatError) throw error;
    const wrapped = new FormatError(`${source}: not a readable zip archive (${errorText(error)}); truncated or damaged?`);
    wrapped.cause = error;
    throw wrapped;
  }
  return entries;
}

/** Checks, from the central directory alone, that an entry is stored uncompressed and can fit in the file. */
function checkEntry(entry: Entry, fileSize: number, source: string): void {
  if (entry.compressionMethod !== 0 || entry.isEncrypted()) {
    throw new FormatError(
      `${source}: zip entry '${entry.fileName}' is compressed or encrypted (method ${entry.compressionMethod}); ` +
        'torch.save stores entries uncompressed',
    );
  }
  const dataStartAtLeast = entry.relativeOffsetOfLocalHeader + LOCAL_HEADER_BYTES + entry.fileNameLength;
  if (dataStartAtLeast + entry.uncompressedSize > fileSize) {
    throw new FormatError(
      `${source}: zip entry '${entry.fileName}' of ${entry.uncompressedSize} bytes at offset ${entry.relativeOffsetOfLocalHeader} ` +
        `runs past the ${fileSize}-byte file (truncated)`,
    );
  }
}

/**
 * Fills `target` with the first target.length bytes of an entry's data. The entry's local header gives where the
 * data starts (its extra field, torch's alignment padding, may differ from the central directory's).
 */
async function readEntry(reader: BlockReader, entry: Entry, target: Uint8Array, prefetchEnd: number, source: string): Promise<void> {
  const header = new Uint8Array(LOCAL_HEADER_BYTES);
  const at = entry.relativeOffsetOfLocalHeader;
  await reader.read(header, at, prefetchEnd, `the local header of '${entry.fileName}'`);
  const view = new DataView(header.buffer);
  if (view.getUint32(0, true) !== LOCAL_HEADER_SIGNATURE) {
    throw new FormatError(`${source}: zip entry '${entry.fileName}' has no local header at offset ${at}`);
  }
  const start = at + LOCAL_HEADER_BYTES + view.getUint16(26, true) + view.getUint16(28, true);
  if (start + target.length > reader.fileSize) {
    throw new FormatError(
      `${source}: zip entry '${entry.fileName}' spans bytes ${start}..${start + target.length}, ` +
        `past the ${reader.fileSize}-byte file (truncated)`,
    );
  }
  await reader.read(target, start, prefetchEnd, `'${entry.fileName}'`);
}

/** How far a read may prefetch from an entry's header: through the entry, and never into the next large one. */
function entryPrefetchEnd(entry: Entry): number {
  return entry.relativeOffsetOfLocalHeader + LOCAL_HEADER_BYTES + entry.fileNameLength + LOCAL_EXTRA_ALLOWANCE + entry.uncompressedSize;
}

async function readZipCheckpoint(reader: BlockReader, source: string): Promise<StateDict> {
  const { fileSize } = reader;
  const entries = await openZip(reader, source);
  const pickles = [...entries.values()].filter((e) => /^[^/]+\/data\.pkl$/.test(e.fileName));
  const [pickleEntry] = pickles;
  if (pickles.length !== 1 || pickleEntry === undefined) {
    throw new FormatError(
      `${source}: zip archive has ${pickles.length} '<archive>/data.pkl' entries; a torch.save checkpoint has exactly one`,
    );
  }
  const prefix = pickleEntry.fileName.slice(0, -'data.pkl'.length);
  const byteorder = entries.get(`${prefix}byteorder`);
  if (byteorder !== undefined) {
    checkEntry(byteorder, fileSize, source);
    const bytes = new Uint8Array(Math.min(byteorder.uncompressedSize, 16));
    await readEntry(reader, byteorder, bytes, entryPrefetchEnd(byteorder), source);
    const text = new TextDecoder().decode(bytes);
    if (text !== 'little') throw new FormatError(`${source}: byteorder record is '${text}'; only little-endian files are supported`);
  }
  checkEntry(pickleEntry, fileSize, source);
  if (pickleEntry.uncompressedSize > MAX_PICKLE_BYTES) {
    throw new FormatError(
      `${source}: '${pickleEntry.fileName}' is ${pickleEntry.uncompressedSize} bytes, more than ${MAX_PICKLE_BYTES}; ` +
        'refusing to parse it',
    );
  }
  const pickleBytes = new Uint8Array(pickleEntry.uncompressedSize);
  await readEntry(reader, pickleEntry, pickleBytes, entryPrefetchEnd(pickleEntry), source);
  const checkpoint = new CheckpointPickle(source);
  const parsed = checkpoint.parse(pickleBytes, 0, 'zip', pickleEntry.fileName);
  if (parsed === undefined) throw new FormatError(`${source}: '${pickleEntry.fileName}' ends before its pickle does (truncated)`);
  const tensors = selectTensors(findStateDict(parsed.value, source), source);

  // Every needed storage's entry must exist and hold exactly what the pickle declares, before any allocation.
  const located: Array<{ storage: StorageRef; entry: Entry }> = [];
  for (const storage of new Set([...tensors.values()].map((t) => t.storage))) {
    const name = `${prefix}data/${storage.key}`;
    const entry = entries.get(name);
    if (entry === undefined) throw new FormatError(`${source}: storage '${storage.key}' has no zip entry '${name}'`);
    if (entry.uncompressedSize !== storage.byteLength) {
      throw new FormatError(
        `${source}: storage '${storage.key}' declares ${storage.numel} ${storage.dtype} elements (${storage.byteLength} bytes) ` +
          `but its entry '${name}' holds ${entry.uncompressedSize} bytes`,
      );
    }
    checkEntry(entry, fileSize, source);
    located.push({ storage, entry });
  }
  located.sort((a, b) => a.entry.relativeOffsetOfLocalHeader - b.entry.relativeOffsetOfLocalHeader);
  // A small storage's reads may prefetch up to the header of the next large one; a large one's, its header only.
  const prefetchEnds = new Map<StorageRef, number>();
  let nextLarge = fileSize;
  for (let i = located.length - 1; i >= 0; i--) {
    const { storage, entry } = located[i] as { storage: StorageRef; entry: Entry };
    const headerEnd = entry.relativeOffsetOfLocalHeader + LOCAL_HEADER_BYTES + entry.fileNameLength + LOCAL_EXTRA_ALLOWANCE;
    if (entry.uncompressedSize >= BLOCK_BYTES) nextLarge = headerEnd;
    prefetchEnds.set(storage, nextLarge);
  }
  const entryOf = new Map(located.map(({ storage, entry }) => [storage, entry]));
  const readStorage: StorageReader = (storage, target) =>
    readEntry(reader, entryOf.get(storage) as Entry, target, prefetchEnds.get(storage) as number, source);
  return materialize(tensors, located.map((l) => l.storage), readStorage, fileSize, source);
}

// ---------------------------------------------------------------------------------------------------------------
// The legacy format

interface LegacyHead {
  root: PickleValue;
  storageKeys: string[];
  /** Offset of the first storage's element count. */
  dataStart: number;
}

/** Parses the five leading pickles from `head`; undefined when they do not all fit in it. */
function parseLegacyHead(head: Uint8Array, checkpoint: CheckpointPickle, source: string): LegacyHead | undefined {
  const plain = (start: number, what: string): { value: PickleValue; end: number } | undefined => {
    const result = unpickle(head, start, { source: `${source} (${what})`, globals: new Map() });
    return result.complete ? result : undefined;
  };
  const magic = plain(0, 'magic number');
  if (magic === undefined) return undefined;
  if (magic.value !== LEGACY_MAGIC_NUMBER) {
    throw new FormatError(`${source}: starts with a pickle of ${describePickleValue(magic.value)}, not torch.save's legacy magic number`);
  }
  const protocol = plain(magic.end, 'protocol version');
  if (protocol === undefined) return undefined;
  if (protocol.value !== LEGACY_PROTOCOL_VERSION) {
    throw new FormatError(
      `${source}: legacy protocol version is ${describePickleValue(protocol.value)}; expected ${LEGACY_PROTOCOL_VERSION}`,
    );
  }
  const sysInfo = plain(protocol.end, 'system info');
  if (sysInfo === undefined) return undefined;
  if (!(sysInfo.value instanceof Map) || sysInfo.value.get('little_endian') !== true) {
    throw new FormatError(
      `${source}: system info is ${describePickleValue(sysInfo.value)} without little_endian=True; ` +
        'only little-endian files are supported',
    );
  }
  const main = checkpoint.parse(head, sysInfo.end, 'legacy', 'main pickle');
  if (main === undefined) return undefined;
  const keys = plain(main.end, 'storage keys');
  if (keys === undefined) return undefined;
  if (!Array.isArray(keys.value) || !keys.value.every((k): k is string => typeof k === 'string')) {
    throw new FormatError(`${source}: storage key list is ${describePickleValue(keys.value)}; expected a list of strings`);
  }
  return { root: main.value, storageKeys: keys.value, dataStart: keys.end };
}

async function readLegacyHead(reader: BlockReader, source: string): Promise<{ head: LegacyHead; checkpoint: CheckpointPickle }> {
  const maxHead = 2 * MAX_PICKLE_BYTES;
  const { fileSize } = reader;
  for (let size = Math.min(fileSize, LEGACY_FIRST_HEAD_BYTES); ; size = Math.min(fileSize, size * 4, maxHead)) {
    const bytes = new Uint8Array(size);
    await reader.readDirect(bytes, 0, 'the pickles');
    const checkpoint = new CheckpointPickle(source);
    const head = parseLegacyHead(bytes, checkpoint, source);
    if (head !== undefined) return { head, checkpoint };
    if (size === fileSize) throw new FormatError(`${source}: file ends inside its leading pickles (truncated)`);
    if (size === maxHead) throw new FormatError(`${source}: leading pickles exceed ${maxHead} bytes; refusing to parse them`);
  }
}

async function readLegacyCheckpoint(reader: BlockReader, source: string): Promise<StateDict> {
  const { fileSize } = reader;
  const { head, checkpoint } = await readLegacyHead(reader, source);
  const tensors = selectTensors(findStateDict(head.root, source), source);
  // The storages follow in key-list order, each as an 8-byte little-endian element count and the raw bytes; the
  // sizes the pickle declares locate every one and are checked against the file before any allocation.
  const positions = new Map<StorageRef, number>();
  let position = head.dataStart;
  for (const key of head.storageKeys) {
    const storage = checkpoint.storages.get(key);
    if (storage === undefined) {
      throw new FormatError(`${source}: storage key list names '${key.slice(0, 64)}', which the pickle never uses`);
    }
    if (position + LEGACY_COUNT_BYTES + storage.byteLength > fileSize) {
      throw new FormatError(
        `${source}: storage '${key}' (${storage.byteLength} bytes at offset ${position + LEGACY_COUNT_BYTES}) runs past the ` +
          `${fileSize}-byte file (truncated)`,
      );
    }
    positions.set(storage, position);
    position += LEGACY_COUNT_BYTES + storage.byteLength;
  }
  for (const tensor of tensors.values()) {
    if (!positions.has(tensor.storage)) {
      throw new FormatError(`${source}: storage '${tensor.storage.key}' is missing from the storage key list`);
    }
  }
  const order = [...positions.keys()];
  // A small storage's reads may prefetch up to the next large one's count; a large one's, its count only.
  const prefetchEnds = new Map<StorageRef, number>();
  let nextLarge = fileSize;
  for (let i = order.length - 1; i >= 0; i--) {
    const storage = order[i] as StorageRef;
    const countEnd = (positions.get(storage) as number) + LEGACY_COUNT_BYTES;
    if (storage.byteLength >= BLOCK_BYTES) nextLarge = countEnd;
    prefetchEnds.set(storage, nextLarge);
  }
  const countBytes = new Uint8Array(LEGACY_COUNT_BYTES);
  const readStorage: StorageReader = async (storage, target) => {
    const at = positions.get(storage) as number;
    const prefetchEnd = prefetchEnds.get(storage) as number;
    await reader.read(countBytes, at, prefetchEnd, `the element count of storage '${storage.key}'`);
    const count = new DataView(countBytes.buffer).getBigUint64(0, true);
    if (count !== BigInt(storage.numel)) {
      throw new FormatError(`${source}: storage '${storage.key}' has ${count} elements in the file but ${storage.numel} in the pickle`);
    }
    await reader.read(target, at + LEGACY_COUNT_BYTES, prefetchEnd, `storage '${storage.key}'`);
  };
  return materialize(tensors, order, readStorage, fileSize, source);
}

// ---------------------------------------------------------------------------------------------------------------
// Entry point

/**
 * Read the state dict of a PyTorch checkpoint written by torch.save (zip or legacy format) as float32 tensors.
 * Accepts a plain state dict or one under 'state_dict' / 'model' (then 'state_dict_ema' / 'model_ema'); strips a
 * 'module.' prefix present on every key; converts float16/bfloat16/float64 to float32; skips num_batches_tracked;
 * materializes views (offsets, strides, shared storages) as contiguous row-major arrays. Storages are read one
 * at a time, so peak memory stays near the size of the returned tensors.
 * @param argName - how the caller's user named this path (e.g. '--weights'), used in error messages.
 * @returns the tensors in the file's key order; metadata is empty (checkpoints carry none we use).
 * @throws ArgumentTypeError when path is not a non-empty string.
 * @throws ArgumentValueError when the file is missing or unreadable.
 * @throws FormatError when the file is not a torch.save checkpoint, is truncated or damaged, references a global a
 *   state dict does not need (e.g. `x.pth: pickle references the global 'posix.system', ...`), exceeds a bound,
 *   or holds no state dict of float tensors.
 * @example const { state } = await readPth('RepVGG-A0-train.pth', '--weights');
 */
export async function readPth(path: string, argName = 'path'): Promise<{ state: StateDict; metadata: Record<string, string> }> {
  const head = await readFileHead(path, PTH_HEAD_BYTES, argName);
  let handle: FileHandle;
  try {
    handle = await open(path, 'r');
  } catch (error) {
    // readFileHead just opened it: only a concurrent delete or permission change gets here.
    const wrapped = new ArgumentValueError(`Expected a readable file for ${argName} but received '${path}' (${errorText(error)})`);
    wrapped.cause = error;
    throw wrapped;
  }
  try {
    const { size: fileSize } = await handle.stat();
    if (fileSize === 0) throw new FormatError(`${path}: file is empty; expected a torch.save checkpoint`);
    const format = pthFormatOf(head);
    if (format === undefined) {
      const bytes = [...head].map((b) => b.toString(16).padStart(2, '0')).join(' ');
      throw new FormatError(`${path}: starts with bytes ${bytes}, neither a zip archive (torch.save) nor a legacy torch.save pickle`);
    }
    const reader = new BlockReader(handle, fileSize, path);
    const state = format === 'zip' ? await readZipCheckpoint(reader, path) : await readLegacyCheckpoint(reader, path);
    return { state, metadata: {} };
  } finally {
    await handle.close();
  }
}
