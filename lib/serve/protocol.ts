// KServe v2 / Open Inference Protocol request parsing and response encoding for one image classifier: JSON tensors,
// the binary tensor extension (Inference-Header-Content-Length, binary_data_size, binary_data_output / binary_data),
// BYTES inputs carrying encoded images, and the classification extension. Not for: HTTP routing, decoding images.

import { ArgumentValueError, FormatError, describeValue, formatShape } from '../errors.js';
import { topIndices } from '../tensor.js';

/** What the server's model accepts; every declared size in a request is checked against these before allocating. */
export interface ModelLimits {
  /** Input channels C of FP32 inputs [N, C, H, W]. */
  readonly inChannels: number;
  /** Smallest H and W (the network's total stride). */
  readonly minSide: number;
  /** Most images per request. */
  readonly maxBatch: number;
  /** Most values C * H * W of one FP32 image. */
  readonly maxImageValues: number;
  readonly numClasses: number;
}

/** One request's input: a float32 batch, or encoded images. */
export type InferInput =
  | { readonly kind: 'tensor'; readonly shape: readonly [number, number, number, number]; readonly data: Float32Array }
  | { readonly kind: 'images'; readonly images: readonly Uint8Array[] };

/** How the (single) output 'logits' is returned. */
export interface OutputRequest {
  /** Top-k as BYTES "score:index[:label]" rows instead of the logits (the classification extension); 0 for logits. */
  readonly classification: number;
  /** Binary tensor extension for this output. */
  readonly binary: boolean;
}

export interface InferRequest {
  readonly id: string | undefined;
  readonly inputName: string;
  readonly input: InferInput;
  readonly output: OutputRequest;
  /** The request's `timeout` parameter, converted from microseconds (Triton's unit) to milliseconds. */
  readonly timeoutMs: number | undefined;
}

/** The name of the model's only output. */
export const OUTPUT_NAME = 'logits';
/** Header of the binary tensor extension: byte length of the JSON part at the start of the body. */
export const HEADER_LENGTH_HEADER = 'inference-header-content-length';
/** Deepest array nesting accepted in JSON tensor data (a shape has at most 4 dimensions here). */
const MAX_NESTING = 8;
/** Most dimensions a declared shape may have. */
const MAX_RANK = 8;

type Json = Record<string, unknown>;

function isObject(value: unknown): value is Json {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function bad(message: string): never {
  throw new ArgumentValueError(message);
}

/**
 * Splits a request body into its JSON header and the binary part that follows it.
 * @param headerLength the Inference-Header-Content-Length header (undefined: the whole body is JSON).
 * @throws FormatError for a lying header length or malformed JSON.
 */
export function splitBody(body: Uint8Array, headerLength: string | undefined): { header: Json; binary: Uint8Array } {
  let jsonBytes = body;
  let binary: Uint8Array = new Uint8Array(0);
  if (headerLength !== undefined) {
    const length = /^\d{1,15}$/.test(headerLength) ? Number(headerLength) : NaN;
    if (!(length > 0 && length <= body.length)) {
      throw new FormatError(`Expected ${HEADER_LENGTH_HEADER} from 1 to the body's ${body.length} bytes but received '${headerLength.slice(0, 40)}'`);
    }
    jsonBytes = body.subarray(0, length);
    binary = body.subarray(length);
  }
  let header: unknown;
  try {
    header = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(jsonBytes));
  } catch (error) {
    throw new FormatError(`Expected a JSON inference request but the body is not JSON: ${(error as Error).message}`);
  }
  if (!isObject(header)) throw new FormatError(`Expected a JSON object as the inference request but received ${describeValue(header)}`);
  return { header, binary };
}

/** A declared shape: at most MAX_RANK non-negative safe integers whose product stays below 2^31. */
function checkShape(value: unknown, name: string): number[] {
  if (!Array.isArray(value) || value.length < 1 || value.length > MAX_RANK || !value.every((d) => Number.isSafeInteger(d) && d >= 0)) {
    bad(`Expected ${name} to be 1 to ${MAX_RANK} non-negative integers but received ${describeValue(value)}`);
  }
  let product = 1;
  for (const d of value as number[]) {
    product *= d;
    if (product > 2 ** 31) bad(`Expected ${name} to hold fewer than 2^31 elements but received ${formatShape(value as number[])}`);
  }
  return value as number[];
}

function elementCount(shape: readonly number[]): number {
  return shape.reduce((p, d) => p * d, 1);
}

/** Flattens nested JSON arrays (row-major) of at most `expected` leaves, failing as soon as there are more. */
function flattenJson(data: unknown, expected: number, name: string): unknown[] {
  const out: unknown[] = [];
  const visit = (value: unknown, depth: number): void => {
    if (!Array.isArray(value)) {
      if (out.length >= expected) bad(`Expected ${expected} elements (the shape's) in ${name} but received more`);
      out.push(value);
      return;
    }
    if (depth > MAX_NESTING) bad(`Expected at most ${MAX_NESTING} levels of nesting in ${name}`);
    for (const item of value) visit(item, depth + 1);
  };
  if (!Array.isArray(data)) bad(`Expected an array for ${name} but received ${describeValue(data)}`);
  visit(data, 0);
  if (out.length !== expected) bad(`Expected ${expected} elements (the shape's) in ${name} but received ${out.length}`);
  return out;
}

/** Reads a boolean parameter; absent is false. */
function booleanParameter(parameters: Json | undefined, key: string, name: string): boolean {
  const value = parameters?.[key];
  if (value === undefined) return false;
  if (typeof value !== 'boolean') bad(`Expected a boolean for ${name}.${key} but received ${describeValue(value)}`);
  return value;
}

function parametersOf(value: unknown, name: string): Json | undefined {
  if (value === undefined) return undefined;
  if (!isObject(value)) bad(`Expected an object for ${name} but received ${describeValue(value)}`);
  return value;
}

/** Checks an FP32 image batch shape against the model. */
function checkTensorShape(shape: readonly number[], limits: ModelLimits, name: string): [number, number, number, number] {
  if (shape.length !== 4) bad(`Expected ${name} [N, ${limits.inChannels}, H, W] but received ${formatShape(shape)}`);
  const [n, c, h, w] = shape as [number, number, number, number];
  if (n < 1 || n > limits.maxBatch) bad(`Expected 1 to ${limits.maxBatch} images in ${name} but received shape ${formatShape(shape)}`);
  if (c !== limits.inChannels) bad(`Expected ${limits.inChannels} channels in ${name} but received shape ${formatShape(shape)}`);
  if (h < limits.minSide || w < limits.minSide) bad(`Expected H and W of at least ${limits.minSide} in ${name} but received shape ${formatShape(shape)}`);
  if (c * h * w > limits.maxImageValues) bad(`Expected at most ${limits.maxImageValues} values per image in ${name} but received shape ${formatShape(shape)}`);
  return [n, c, h, w];
}

/** Splits BYTES binary data: each element a 4-byte little-endian length followed by that many bytes. */
function splitBytesElements(bytes: Uint8Array, count: number, name: string): Uint8Array[] {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out: Uint8Array[] = [];
  let offset = 0;
  for (let i = 0; i < count; i++) {
    if (offset + 4 > bytes.length) throw new FormatError(`Expected ${count} length-prefixed elements in ${name} but it ends after ${i}`);
    const length = view.getUint32(offset, true);
    offset += 4;
    if (offset + length > bytes.length) {
      throw new FormatError(`Expected ${length} bytes for element ${i} of ${name} but only ${bytes.length - offset} remain`);
    }
    out.push(bytes.subarray(offset, offset + length));
    offset += length;
  }
  if (offset !== bytes.length) throw new FormatError(`Expected ${offset} bytes of ${count} elements in ${name} but received ${bytes.length}`);
  return out;
}

const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/**
 * Parses and validates an inference request for a model with one image input and the output 'logits'.
 * FP32 inputs are [N, C, H, W]; BYTES inputs hold N encoded images (shape [N] or [N, 1]), base64 strings in JSON or
 * length-prefixed elements in binary form.
 * @throws ArgumentValueError / FormatError (HTTP 400) naming the field and the value received.
 */
export function parseInferRequest(header: Json, binary: Uint8Array, limits: ModelLimits): InferRequest {
  const id = header.id;
  if (id !== undefined && typeof id !== 'string') bad(`Expected a string for id but received ${describeValue(id)}`);
  const parameters = parametersOf(header.parameters, 'parameters');
  const timeout = parameters?.timeout;
  if (timeout !== undefined && !(typeof timeout === 'number' && Number.isSafeInteger(timeout) && timeout > 0)) {
    bad(`Expected a positive integer of microseconds for parameters.timeout but received ${describeValue(timeout)}`);
  }
  const inputs = header.inputs;
  if (!Array.isArray(inputs) || inputs.length !== 1) bad(`Expected exactly one tensor in inputs but received ${describeValue(inputs)}`);
  const raw: unknown = inputs[0];
  if (!isObject(raw)) bad(`Expected an object for inputs[0] but received ${describeValue(raw)}`);
  const name = raw.name;
  if (typeof name !== 'string' || name.length === 0 || name.length > 256) bad(`Expected a name for inputs[0] but received ${describeValue(name)}`);
  const where = `input '${name}'`;
  const shape = checkShape(raw.shape, `the shape of ${where}`);
  const inputParameters = parametersOf(raw.parameters, `the parameters of ${where}`);
  const binarySize = inputParameters?.binary_data_size;
  if (binarySize !== undefined) {
    if (!Number.isSafeInteger(binarySize) || (binarySize as number) < 0) bad(`Expected a byte count for binary_data_size of ${where} but received ${describeValue(binarySize)}`);
    if (binarySize !== binary.length) throw new FormatError(`Expected binary_data_size ${binary.length} (the bytes after the JSON header) for ${where} but received ${binarySize as number}`);
    if (raw.data !== undefined) bad(`Expected either data or binary_data_size for ${where} but received both`);
  } else if (binary.length > 0) {
    throw new FormatError(`Expected no bytes after the JSON header (no input has binary_data_size) but received ${binary.length}`);
  }
  const count = elementCount(shape);
  let input: InferInput;
  if (raw.datatype === 'FP32') {
    const tensorShape = checkTensorShape(shape, limits, where);
    let data: Float32Array;
    if (binarySize !== undefined) {
      if (binary.length !== count * 4) throw new FormatError(`Expected ${count * 4} bytes (FP32 ${formatShape(shape)}) for ${where} but received ${binary.length}`);
      // The protocol's binary tensors are little-endian, as every host we run on. Aligned bytes are used in place.
      if (binary.byteOffset % Float32Array.BYTES_PER_ELEMENT === 0) {
        data = new Float32Array(binary.buffer, binary.byteOffset, count);
      } else {
        data = new Float32Array(count);
        new Uint8Array(data.buffer).set(binary);
      }
    } else {
      const values = flattenJson(raw.data, count, `the data of ${where}`);
      data = new Float32Array(count);
      values.forEach((v, i) => {
        if (typeof v !== 'number') bad(`Expected numbers in the data of ${where} but element ${i} is ${describeValue(v)}`);
        data[i] = v;
      });
    }
    input = { kind: 'tensor', shape: tensorShape, data };
  } else if (raw.datatype === 'BYTES') {
    if (!(shape.length === 1 || (shape.length === 2 && shape[1] === 1)) || count < 1 || count > limits.maxBatch) {
      bad(`Expected BYTES shape [N] or [N, 1] with N from 1 to ${limits.maxBatch} for ${where} but received ${formatShape(shape)}`);
    }
    let images: Uint8Array[];
    if (binarySize !== undefined) {
      images = splitBytesElements(binary, count, where);
    } else {
      images = flattenJson(raw.data, count, `the data of ${where}`).map((v, i) => {
        if (typeof v !== 'string' || !BASE64.test(v)) bad(`Expected base64 strings (encoded images) in the data of ${where} but element ${i} is ${describeValue(v)}`);
        return Buffer.from(v, 'base64');
      });
    }
    input = { kind: 'images', images };
  } else {
    bad(`Expected datatype FP32 or BYTES for ${where} but received ${describeValue(raw.datatype)}`);
  }
  return {
    id: id as string | undefined,
    inputName: name,
    input,
    output: parseOutputRequest(header.outputs, booleanParameter(parameters, 'binary_data_output', 'parameters'), limits),
    timeoutMs: timeout === undefined ? undefined : (timeout as number) / 1000,
  };
}

function parseOutputRequest(outputs: unknown, binaryDefault: boolean, limits: ModelLimits): OutputRequest {
  if (outputs === undefined) return { classification: 0, binary: binaryDefault };
  if (!Array.isArray(outputs) || outputs.length !== 1) bad(`Expected one requested output ('${OUTPUT_NAME}') in outputs but received ${describeValue(outputs)}`);
  const output: unknown = outputs[0];
  if (!isObject(output) || output.name !== OUTPUT_NAME) bad(`Expected the output '${OUTPUT_NAME}' in outputs[0] but received ${describeValue(isObject(output) ? output.name : output)}`);
  const parameters = parametersOf(output.parameters, 'outputs[0].parameters');
  const classification = parameters?.classification ?? 0;
  if (!Number.isSafeInteger(classification) || (classification as number) < 0 || (classification as number) > limits.numClasses) {
    bad(`Expected an integer from 0 to ${limits.numClasses} for outputs[0].parameters.classification but received ${describeValue(classification)}`);
  }
  const binary = parameters?.binary_data === undefined ? binaryDefault : booleanParameter(parameters, 'binary_data', 'outputs[0].parameters');
  return { classification: classification as number, binary };
}

/** The classification extension's rows: the k largest logits of each image as "score:index[:label]", best first. */
export function classificationStrings(logits: Float32Array, images: number, k: number, labels: readonly string[] | undefined): string[] {
  const classes = logits.length / images;
  const out: string[] = [];
  for (let i = 0; i < images; i++) {
    const row = logits.subarray(i * classes, (i + 1) * classes);
    for (const index of topIndices(row, k)) {
      const label = labels?.[index];
      out.push(label === undefined ? `${row[index] as number}:${index}` : `${row[index] as number}:${index}:${label}`);
    }
  }
  return out;
}

/** An encoded response: the body, and the Inference-Header-Content-Length value when the binary extension is used. */
export interface EncodedResponse {
  readonly body: Buffer;
  readonly headerLength: number | undefined;
}

/**
 * The inference response for logits (N, K): the logits as FP32 [N, K], or with classification k the top-k strings as
 * BYTES [N, k]; in JSON or (output.binary) as binary data after the JSON header.
 */
export function encodeInferResponse(
  modelName: string, request: InferRequest, logits: Float32Array, images: number, labels: readonly string[] | undefined,
): EncodedResponse {
  const { classification, binary } = request.output;
  const classes = logits.length / images;
  let tensor: Json;
  let bytes: Buffer | undefined;
  if (classification > 0) {
    const strings = classificationStrings(logits, images, classification, labels);
    tensor = { name: OUTPUT_NAME, datatype: 'BYTES', shape: [images, classification] };
    if (binary) {
      const encoded = strings.map((s) => Buffer.from(s, 'utf8'));
      bytes = Buffer.alloc(encoded.reduce((sum, b) => sum + 4 + b.length, 0));
      let offset = 0;
      for (const b of encoded) {
        offset = bytes.writeUInt32LE(b.length, offset);
        offset += b.copy(bytes, offset);
      }
    } else {
      tensor.data = strings;
    }
  } else {
    tensor = { name: OUTPUT_NAME, datatype: 'FP32', shape: [images, classes] };
    if (binary) bytes = Buffer.from(logits.buffer, logits.byteOffset, logits.byteLength);
    else tensor.data = Array.from(logits);
  }
  if (bytes !== undefined) tensor.parameters = { binary_data_size: bytes.length };
  const response: Json = { model_name: modelName, outputs: [tensor] };
  if (request.id !== undefined) response.id = request.id;
  const json = Buffer.from(JSON.stringify(response), 'utf8');
  if (bytes === undefined) return { body: json, headerLength: undefined };
  return { body: Buffer.concat([json, bytes]), headerLength: json.length };
}
