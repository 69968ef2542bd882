// A restricted Python unpickler for the pickles torch.save writes (protocols 2 to 5): it builds plain values
// (numbers, strings, lists, tuples, dicts) and calls only the globals its caller allows; every other global is
// refused by name. Sizes, stack depth, memo and value counts are bounded, so a hostile pickle can neither run code
// nor make us allocate without limit.
// Not for: torch semantics (lib/io/pth.ts supplies the allowed callables and the persistent-id loader), or
// general-purpose unpickling (protocol 0/1 text opcodes, sets, extension registries are deliberately missing).
//
// Why hand-written: the npm package `pickleparser` (0.2.1, the maintained one) turns every unknown global into a
// generic stub object by default and leaves refusing them to a resolver hook, but it has no bound on stack, memo,
// mark nesting or string lengths, builds dicts as plain JS objects by default (a '__proto__' key reaches the
// prototype setter), decodes LONG1 as unsigned, rejects protocol 5 and needs the whole pickle in one buffer with no
// way to learn where it ended (the legacy torch format is five pickles back to back). The opcodes a state dict uses
// fit in a few hundred lines we can bound completely.

import { FormatError } from '../errors.js';

/** A module-level name a pickle referenced, resolved through the caller's allowlist. */
export interface PickleGlobal {
  readonly kind: 'global';
  /** 'module.name' as written in the pickle, e.g. 'torch.FloatStorage'. */
  readonly qualifiedName: string;
  /** Present when REDUCE may call it; storage type markers (torch.FloatStorage) have none. */
  readonly call?: (args: readonly PickleValue[]) => PickleValue;
}

/** A value created by a caller's callable or persistent loader (e.g. a tensor reference), opaque to the unpickler. */
export interface PickleOpaque {
  readonly kind: 'opaque';
}

/** Python values as the unpickler builds them: tuples are frozen arrays, lists mutable arrays, dicts Maps. */
export type PickleValue =
  | null
  | boolean
  | number
  | bigint
  | string
  | Uint8Array
  | PickleValue[]
  | PickleDict
  | PickleGlobal
  | PickleOpaque;

export type PickleDict = Map<PickleValue, PickleValue>;

export interface UnpickleOptions {
  /** The file (and entry) name error messages start with. */
  readonly source: string;
  /** The only globals the pickle may reference, by 'module.name'. */
  readonly globals: ReadonlyMap<string, PickleGlobal>;
  /** Turns a BINPERSID id into a value; without it any persistent id is refused. */
  readonly persistentLoad?: (pid: PickleValue) => PickleValue;
}

/** A finished pickle's value and the offset just past its STOP opcode; 'incomplete' when the bytes ran out first. */
export type UnpickleResult = { readonly complete: true; readonly value: PickleValue; readonly end: number } | { readonly complete: false };

/** Longest pickle we parse; a state dict's pickle is ~100 bytes per tensor (B3 with 1,000+ tensors: under 200 KB). */
export const MAX_PICKLE_BYTES = 16 * 1024 * 1024;
/** Most nested MARKs (open tuples/lists/dict batches); torch.save nests 3 deep. */
const MAX_MARK_DEPTH = 256;
/** Most values on the stack and all open marks together; pickle batches items by 1,000. */
const MAX_STACK_ITEMS = 1_000_000;
/** Most memo entries; torch.save memoizes a handful of values per tensor. */
const MAX_MEMO_ENTRIES = 1_000_000;
/** Most values created and container insertions in total, a bound on the memory one pickle can make us hold. */
const MAX_VALUES = 4_000_000;
/** Longest GLOBAL module or name line. */
const MAX_NAME_BYTES = 256;
/** Longest LONG1 integer in bytes (the legacy magic number needs 10). */
const MAX_LONG_BYTES = 16;
/** Highest pickle protocol defined (Python 3.8+). */
const HIGHEST_PROTOCOL = 5;

/** Opcodes, inlined by the compiler so that the dispatch switch compares constants. */
const enum OP {
  PROTO = 0x80,
  FRAME = 0x95,
  STOP = 0x2e, // '.'
  MARK = 0x28, // '('
  POP = 0x30, // '0'
  POP_MARK = 0x31, // '1'
  DUP = 0x32, // '2'
  NONE = 0x4e, // 'N'
  NEWTRUE = 0x88,
  NEWFALSE = 0x89,
  BININT = 0x4a, // 'J'
  BININT1 = 0x4b, // 'K'
  BININT2 = 0x4d, // 'M'
  LONG1 = 0x8a,
  BINFLOAT = 0x47, // 'G'
  BINUNICODE = 0x58, // 'X'
  SHORT_BINUNICODE = 0x8c,
  BINUNICODE8 = 0x8d,
  BINBYTES = 0x42, // 'B'
  SHORT_BINBYTES = 0x43, // 'C'
  EMPTY_TUPLE = 0x29, // ')'
  TUPLE = 0x74, // 't'
  TUPLE1 = 0x85,
  TUPLE2 = 0x86,
  TUPLE3 = 0x87,
  EMPTY_LIST = 0x5d, // ']'
  LIST = 0x6c, // 'l'
  APPEND = 0x61, // 'a'
  APPENDS = 0x65, // 'e'
  EMPTY_DICT = 0x7d, // '}'
  DICT = 0x64, // 'd'
  SETITEM = 0x73, // 's'
  SETITEMS = 0x75, // 'u'
  BINPUT = 0x71, // 'q'
  LONG_BINPUT = 0x72, // 'r'
  MEMOIZE = 0x94,
  BINGET = 0x68, // 'h'
  LONG_BINGET = 0x6a, // 'j'
  GLOBAL = 0x63, // 'c'
  STACK_GLOBAL = 0x93,
  REDUCE = 0x52, // 'R'
  BUILD = 0x62, // 'b'
  BINPERSID = 0x51, // 'Q'
}

/** Thrown internally when the input ends before STOP; unpickle() turns it into { complete: false }. */
class EndOfInput extends Error {}

function isDict(value: PickleValue | undefined): value is PickleDict {
  return value instanceof Map;
}

function isList(value: PickleValue | undefined): value is PickleValue[] {
  return Array.isArray(value) && !Object.isFrozen(value);
}

/** A Python tuple: a frozen array, so that list opcodes cannot append to it. */
function tuple(items: PickleValue[]): PickleValue[] {
  return Object.freeze(items) as PickleValue[];
}

/** A short description of a value for error messages (never its whole content). */
export function describePickleValue(value: PickleValue | undefined): string {
  if (value === undefined) return 'nothing';
  if (value === null) return 'None';
  if (typeof value === 'string') return `string '${value.length > 60 ? `${value.slice(0, 60)}...` : value}'`;
  if (typeof value === 'number' || typeof value === 'bigint' || typeof value === 'boolean') return `${typeof value} ${String(value)}`;
  if (value instanceof Uint8Array) return `bytes(${value.length})`;
  if (Array.isArray(value)) return `${Object.isFrozen(value) ? 'tuple' : 'list'} of ${value.length}`;
  if (isDict(value)) return `dict of ${value.size}`;
  if (value.kind === 'global') return `global '${value.qualifiedName}'`;
  return 'object';
}

class Unpickler {
  private position: number;
  private stack: PickleValue[] = [];
  /** The stacks below each open MARK. */
  private readonly marks: PickleValue[][] = [];
  private markedItems = 0;
  /** Indexed by memo slot: pickles number their slots densely from 0, so an array is the fast choice. */
  private readonly memo: PickleValue[] = [];
  private memoEntries = 0;
  private valuesMade = 0;
  private readonly decoder = new TextDecoder('utf-8', { fatal: true });
  private readonly view: DataView;

  constructor(
    private readonly bytes: Uint8Array,
    start: number,
    private readonly options: UnpickleOptions,
  ) {
    this.position = start;
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  private fail(what: string, at = this.position): never {
    throw new FormatError(`${this.options.source}: ${what} (pickle byte ${at})`);
  }

  private take(count: number): number {
    if (count > this.bytes.length - this.position) throw new EndOfInput();
    const at = this.position;
    this.position += count;
    return at;
  }

  private u8(): number {
    return this.bytes[this.take(1)] as number;
  }

  /** A length field of `size` bytes (little-endian), checked against the bytes that remain before use. */
  private length(size: 1 | 4 | 8): number {
    const at = this.take(size);
    const remaining = this.bytes.length - this.position;
    if (size === 8) {
      const value = this.view.getBigUint64(at, true);
      if (value > BigInt(remaining)) throw new EndOfInput();
      return Number(value);
    }
    const value = size === 1 ? (this.bytes[at] as number) : this.view.getUint32(at, true);
    if (value > remaining) throw new EndOfInput();
    return value;
  }

  private text(count: number): string {
    const at = this.take(count);
    try {
      return this.decoder.decode(this.bytes.subarray(at, at + count));
    } catch {
      return this.fail('string is not valid UTF-8', at);
    }
  }

  /** One newline-terminated line of a GLOBAL opcode, searched for within MAX_NAME_BYTES only. */
  private line(): string {
    const limit = Math.min(this.bytes.length, this.position + MAX_NAME_BYTES + 1);
    const length = this.bytes.subarray(this.position, limit).indexOf(0x0a);
    if (length === -1) {
      if (limit === this.bytes.length) throw new EndOfInput();
      this.fail(`GLOBAL name longer than ${MAX_NAME_BYTES} bytes`);
    }
    const value = this.text(length);
    this.position++;
    return value;
  }

  private count(added = 1): void {
    this.valuesMade += added;
    if (this.valuesMade > MAX_VALUES) this.fail(`pickle creates more than ${MAX_VALUES} values`);
  }

  private push(value: PickleValue): void {
    if (this.stack.length + this.markedItems >= MAX_STACK_ITEMS) this.fail(`pickle stack exceeds ${MAX_STACK_ITEMS} items`);
    this.count();
    this.stack.push(value);
  }

  private pop(): PickleValue {
    if (this.stack.length === 0) this.fail('pickle pops from an empty stack');
    return this.stack.pop() as PickleValue;
  }

  private top(): PickleValue {
    if (this.stack.length === 0) this.fail('pickle reads the top of an empty stack');
    return this.stack[this.stack.length - 1] as PickleValue;
  }

  private mark(): void {
    if (this.marks.length >= MAX_MARK_DEPTH) this.fail(`pickle nests more than ${MAX_MARK_DEPTH} MARKs`);
    this.marks.push(this.stack);
    this.markedItems += this.stack.length;
    this.stack = [];
  }

  /** The items since the last MARK; the stack below the mark becomes current again. */
  private popMark(): PickleValue[] {
    const below = this.marks.pop();
    if (below === undefined) this.fail('pickle closes a MARK that was never opened');
    const items = this.stack;
    this.markedItems -= below.length;
    this.stack = below;
    return items;
  }

  private memoPut(index: number): void {
    if (this.memo[index] === undefined && ++this.memoEntries > MAX_MEMO_ENTRIES) {
      this.fail(`pickle memo exceeds ${MAX_MEMO_ENTRIES} entries`);
    }
    this.memo[index] = this.top();
  }

  private memoGet(index: number): void {
    const value = this.memo[index];
    if (value === undefined) this.fail(`pickle reads memo entry ${index}, which was never stored`);
    this.push(value);
  }

  private resolveGlobal(module: string, name: string): void {
    const qualifiedName = `${module}.${name}`;
    const resolved = this.options.globals.get(qualifiedName);
    if (resolved === undefined) {
      throw new FormatError(
        `${this.options.source}: pickle references the global '${qualifiedName}', which a state dict never needs; refusing to load`,
      );
    }
    this.push(resolved);
  }

  private setItems(dict: PickleValue, items: readonly PickleValue[]): void {
    if (!isDict(dict)) this.fail(`pickle sets dict items on ${describePickleValue(dict)}`);
    if (items.length % 2 !== 0) this.fail('pickle sets dict items from an odd number of values');
    this.count(items.length / 2);
    for (let i = 0; i < items.length; i += 2) dict.set(items[i] as PickleValue, items[i + 1] as PickleValue);
  }

  private appendItems(list: PickleValue, items: readonly PickleValue[]): void {
    if (!isList(list)) this.fail(`pickle appends to ${describePickleValue(list)}`);
    this.count(items.length);
    for (const item of items) list.push(item);
  }

  private reduce(): void {
    const args = this.pop();
    const callee = this.pop();
    if (!Array.isArray(args) || !Object.isFrozen(args)) this.fail(`pickle calls with ${describePickleValue(args)} as arguments`);
    if (callee === null || typeof callee !== 'object' || !('kind' in callee) || callee.kind !== 'global' || callee.call === undefined) {
      this.fail(`pickle calls ${describePickleValue(callee)}, which is not callable`);
    }
    this.push(callee.call(args));
  }

  /**
   * BUILD sets an object's attributes. A state dict pickles as an OrderedDict whose only attribute is
   * `_metadata` (module versions), which we drop; BUILD on anything else is refused.
   */
  private build(): void {
    const state = this.pop();
    const target = this.top();
    if (!isDict(target) || !(state === null || isDict(state))) {
      this.fail(`pickle sets attributes ${describePickleValue(state)} on ${describePickleValue(target)}`);
    }
  }

  run(): UnpickleResult {
    try {
      for (;;) {
        const at = this.position;
        const opcode = this.u8();
        if (opcode === OP.STOP) {
          if (this.marks.length !== 0 || this.stack.length !== 1) this.fail('pickle stops with unbalanced MARKs or stack', at);
          return { complete: true, value: this.stack[0] as PickleValue, end: this.position };
        }
        this.step(opcode, at);
      }
    } catch (error) {
      if (error instanceof EndOfInput) return { complete: false };
      throw error;
    }
  }

  private step(opcode: number, at: number): void {
    switch (opcode) {
      case OP.PROTO: {
        const protocol = this.u8();
        if (protocol < 2 || protocol > HIGHEST_PROTOCOL) this.fail(`pickle protocol ${protocol} is not one of 2..${HIGHEST_PROTOCOL}`, at);
        return;
      }
      case OP.FRAME:
        // Frames only group opcodes for buffered reading; the length must still fit in what remains.
        this.length(8);
        return;
      case OP.MARK:
        return this.mark();
      case OP.POP:
        this.pop();
        return;
      case OP.POP_MARK:
        this.popMark();
        return;
      case OP.DUP:
        return this.push(this.top());
      case OP.NONE:
        return this.push(null);
      case OP.NEWTRUE:
        return this.push(true);
      case OP.NEWFALSE:
        return this.push(false);
      case OP.BININT:
        return this.push(this.view.getInt32(this.take(4), true));
      case OP.BININT1:
        return this.push(this.u8());
      case OP.BININT2:
        return this.push(this.view.getUint16(this.take(2), true));
      case OP.LONG1:
        return this.push(this.long1());
      case OP.BINFLOAT:
        return this.push(this.view.getFloat64(this.take(8), false));
      case OP.BINUNICODE:
        return this.push(this.text(this.length(4)));
      case OP.SHORT_BINUNICODE:
        return this.push(this.text(this.length(1)));
      case OP.BINUNICODE8:
        return this.push(this.text(this.length(8)));
      case OP.BINBYTES:
      case OP.SHORT_BINBYTES: {
        const count = this.length(opcode === OP.BINBYTES ? 4 : 1);
        const start = this.take(count);
        return this.push(this.bytes.slice(start, start + count));
      }
      case OP.EMPTY_TUPLE:
        return this.push(tuple([]));
      case OP.TUPLE: {
        const items = this.popMark();
        return this.push(tuple(items));
      }
      case OP.TUPLE1:
      case OP.TUPLE2:
      case OP.TUPLE3: {
        const size = opcode - OP.TUPLE1 + 1;
        if (this.stack.length < size) this.fail(`pickle builds a ${size}-tuple from ${this.stack.length} values`, at);
        return this.push(tuple(this.stack.splice(this.stack.length - size, size)));
      }
      case OP.EMPTY_LIST:
        return this.push([]);
      case OP.LIST: {
        const items = this.popMark();
        return this.push(items);
      }
      case OP.APPEND: {
        const item = this.pop();
        return this.appendItems(this.top(), [item]);
      }
      case OP.APPENDS: {
        const items = this.popMark();
        return this.appendItems(this.top(), items);
      }
      case OP.EMPTY_DICT:
        return this.push(new Map());
      case OP.DICT: {
        const items = this.popMark();
        const dict: PickleDict = new Map();
        this.setItems(dict, items);
        return this.push(dict);
      }
      case OP.SETITEM: {
        const value = this.pop();
        const key = this.pop();
        return this.setItems(this.top(), [key, value]);
      }
      case OP.SETITEMS: {
        const items = this.popMark();
        return this.setItems(this.top(), items);
      }
      case OP.BINPUT:
        return this.memoPut(this.u8());
      case OP.LONG_BINPUT:
        return this.memoPut(this.view.getUint32(this.take(4), true));
      case OP.MEMOIZE:
        return this.memoPut(this.memoEntries);
      case OP.BINGET:
        return this.memoGet(this.u8());
      case OP.LONG_BINGET:
        return this.memoGet(this.view.getUint32(this.take(4), true));
      case OP.GLOBAL: {
        const module = this.line();
        return this.resolveGlobal(module, this.line());
      }
      case OP.STACK_GLOBAL: {
        const name = this.pop();
        const module = this.pop();
        if (typeof module !== 'string' || typeof name !== 'string') this.fail('STACK_GLOBAL needs two strings', at);
        return this.resolveGlobal(module, name);
      }
      case OP.REDUCE:
        return this.reduce();
      case OP.BUILD:
        return this.build();
      case OP.BINPERSID: {
        const pid = this.pop();
        if (this.options.persistentLoad === undefined) this.fail('pickle has a persistent id where none is expected', at);
        return this.push(this.options.persistentLoad(pid));
      }
      default:
        this.fail(`unsupported pickle opcode 0x${opcode.toString(16).padStart(2, '0')}`, at);
    }
  }

  /** LONG1: a little-endian two's-complement integer of up to MAX_LONG_BYTES bytes; a number when safe. */
  private long1(): number | bigint {
    const size = this.u8();
    if (size > MAX_LONG_BYTES) this.fail(`LONG1 integer of ${size} bytes exceeds ${MAX_LONG_BYTES}`);
    const start = this.take(size);
    let value = 0n;
    for (let i = size - 1; i >= 0; i--) value = (value << 8n) | BigInt(this.bytes[start + i] as number);
    if (size > 0 && ((this.bytes[start + size - 1] as number) & 0x80) !== 0) value -= 1n << BigInt(8 * size);
    return value >= BigInt(Number.MIN_SAFE_INTEGER) && value <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(value) : value;
  }
}

/**
 * Unpickle one pickle starting at `start`.
 * @returns the value and the offset after its STOP opcode, or `{ complete: false }` when the bytes end first
 *   (the caller decides whether more bytes exist or the file is truncated).
 * @throws FormatError naming `options.source` for a global outside `options.globals`, an unsupported opcode, a
 *   malformed pickle or one that exceeds a bound (size, stack, MARK nesting, memo, values).
 */
export function unpickle(bytes: Uint8Array, start: number, options: UnpickleOptions): UnpickleResult {
  const available = Math.min(bytes.length, start + MAX_PICKLE_BYTES);
  const result = new Unpickler(bytes.subarray(0, available), start, options).run();
  if (!result.complete && available < bytes.length) {
    throw new FormatError(`${options.source}: pickle is longer than ${MAX_PICKLE_BYTES} bytes; refusing to parse it`);
  }
  return result;
}
