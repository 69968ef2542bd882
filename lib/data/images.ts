// Encoded images (JPEG, PNG, WebP) to network input: decoding off the event loop (plain JPEGs by libjpeg-turbo in our
// addon, everything else by sharp), torchvision's evaluation and training transforms bit-compatible with PIL, the
// decoding worker threads, and class labels.
// Not for: image folders, epochs and batching for training (image-folder.ts does those).

import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { open } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Worker } from 'node:worker_threads';

import sharp from 'sharp';

import { callNative, callNativeSync, loadCpuAddon } from '../backend/native.js';
import { ArgumentTypeError, ArgumentValueError, FormatError, RepvggError, describeValue } from '../errors.js';
import { checkNice } from '../nice.js';
import { hostTensor } from '../tensor.js';
import type { HostTensor } from '../tensor.js';
import { startWorker } from './loader.js';
import { Rng } from './random.js';
import type { Normalization } from './transforms.js';

// ---------------------------------------------------------------------------------------------------------------
// Decoding

/**
 * Largest image (width * height) decoded by default: 64 megapixels covers every camera photo while bounding
 * what a hostile file can make us allocate (64 Mpx * 3 bytes = 192 MiB before resizing). Override per call
 * with `maxPixels`.
 */
export const DEFAULT_MAX_PIXELS = 64 * 1024 * 1024;

/**
 * Largest encoded image file read by default: 256 MiB is far above any photo (a 64-megapixel JPEG is ~30 MiB) and
 * bounds what one file can make us hold in memory. Override per call with `maxFileBytes`.
 */
export const DEFAULT_MAX_FILE_BYTES = 256 * 1024 * 1024;

/** Decoded pixels: 8-bit sRGB, interleaved. */
export interface RgbImage {
  readonly data: Uint8Array; // (H, W, 3)
  readonly width: number;
  readonly height: number;
}

export interface DecodeOptions {
  /** Refuse images of more pixels than this (decompression bombs). Default DEFAULT_MAX_PIXELS. */
  readonly maxPixels?: number;
  /** Refuse image files larger than this many bytes. Default DEFAULT_MAX_FILE_BYTES. */
  readonly maxFileBytes?: number;
  /** How errors name an in-memory input (a path input is named by its path). Default 'image buffer'. */
  readonly name?: string;
}

/** An encoded image: a file path or its bytes. */
export type ImageInput = string | Uint8Array;

function inputName(input: ImageInput, options: DecodeOptions): string {
  return typeof input === 'string' ? input : (options.name ?? 'image buffer');
}

function positiveOption(value: unknown, name: string): number {
  if (!Number.isSafeInteger(value) || (value as number) < 1) {
    throw new ArgumentValueError(`Expected a positive integer for ${name} but received ${describeValue(value)}`);
  }
  return value as number;
}

/**
 * A whole file, refusing one over `maxBytes` before reading it.
 * @throws FormatError naming the file when it is missing, unreadable or too large.
 */
async function readBoundedFile(path: string, maxBytes: number, what: string): Promise<Buffer> {
  try {
    const handle = await open(path, 'r');
    try {
      const { size } = await handle.stat();
      if (size > maxBytes) throw new FormatError(`Expected ${what} of at most ${maxBytes} bytes for ${path} but received ${size} bytes`);
      const bytes = Buffer.alloc(size);
      const { bytesRead } = await handle.read(bytes, 0, size, 0);
      return bytes.subarray(0, bytesRead);
    } finally {
      await handle.close();
    }
  } catch (error) {
    if (error instanceof FormatError) throw error;
    const wrapped = new FormatError(`Expected a readable file (${what}) for ${path} but received an error: ${(error as Error).message}`);
    wrapped.cause = error;
    throw wrapped;
  }
}

/** sharp's message for an image over limitInputPixels. */
const PIXEL_LIMIT_MESSAGE = 'exceeds pixel limit';

/**
 * Decode a JPEG, PNG or WebP image to 8-bit RGB, on libuv's thread pool (libjpeg-turbo for plain JPEGs, else sharp),
 * never on the event loop.
 * EXIF orientation is applied; grayscale and palette images are expanded, 16-bit samples reduced to 8 bits, CMYK
 * converted; an alpha channel is dropped (not composited), as torchvision's `Image.convert('RGB')` does, and an
 * embedded ICC profile is ignored, as PIL ignores it.
 * Truncated or corrupt data is an error (sharp `failOn: 'warning'`), never a partly grey image.
 * @throws FormatError naming the file for a missing, empty, corrupt, truncated or non-image input, or one over
 *   maxPixels; ArgumentTypeError / ArgumentValueError for bad arguments.
 * @example const { data, width, height } = await decodeImage('cat.jpg');
 */
export async function decodeImage(input: ImageInput, options: DecodeOptions = {}): Promise<RgbImage> {
  if (typeof input !== 'string' && !(input instanceof Uint8Array)) {
    throw new ArgumentTypeError(`Expected a file path or a Uint8Array for input but received ${describeValue(input)}`);
  }
  const name = inputName(input, options);
  const maxPixels = positiveOption(options.maxPixels ?? DEFAULT_MAX_PIXELS, 'maxPixels');
  const maxFileBytes = positiveOption(options.maxFileBytes ?? DEFAULT_MAX_FILE_BYTES, 'maxFileBytes');
  // Reading the file ourselves and handing sharp the bytes measured 30-50% less CPU per 500x375 JPEG than
  // letting libvips open the path.
  const bytes = typeof input === 'string' ? await readBoundedFile(input, maxFileBytes, 'an image file') : input;
  if (bytes.length === 0) {
    throw new FormatError(`Expected an encoded JPEG, PNG or WebP image for ${name} but received 0 bytes`);
  }
  // Plain JPEGs (most photos) go straight to libjpeg-turbo: 1.1 ms of CPU per 500x375 photo instead of sharp's 2.9,
  // the same pixels (the same library underneath). Whatever it declines (EXIF rotation, CMYK, corrupt or truncated
  // data, too many pixels, ...) takes sharp's path below, which keeps rotating, erroring and limiting as it did.
  if (bytes.length >= 3 && bytes[0] === 0xff && bytes[1] === 0xd8 && bytes[2] === 0xff) {
    const fast = await callNative(() => loadCpuAddon().decodeJpeg({ bytes, maxPixels }));
    if ('data' in fast) return fast;
  }
  try {
    // ignoreIcc: pixels are taken as stored, as PIL (so torchvision, so every pretrained RepVGG) takes them,
    // rather than colour-converted from an embedded profile (Adobe RGB, Display P3) to sRGB.
    const { data, info } = await sharp(bytes, { limitInputPixels: maxPixels, failOn: 'warning', autoOrient: true, ignoreIcc: true })
      .removeAlpha()
      .toColourspace('srgb')
      .raw({ depth: 'uchar' })
      .toBuffer({ resolveWithObject: true });
    if (info.channels !== 3 || data.length !== info.width * info.height * 3) {
      throw new FormatError(`Expected 3 decoded channels for ${name} but received ${info.channels}`);
    }
    return { data: new Uint8Array(data.buffer, data.byteOffset, data.length), width: info.width, height: info.height };
  } catch (error) {
    if (error instanceof FormatError) throw error;
    const message = error instanceof Error ? error.message : String(error);
    if (message.includes(PIXEL_LIMIT_MESSAGE)) {
      throw new FormatError(
        `Expected an image of at most ${maxPixels} pixels (maxPixels) for ${name} but received a larger one; ` +
          'raise maxPixels if the file is trusted',
      );
    }
    const detail = message.split('\n', 1)[0] ?? message;
    const wrapped = new FormatError(`Expected a readable JPEG, PNG or WebP image for ${name} but received bad data: ${detail}`);
    wrapped.cause = error;
    throw wrapped;
  }
}

/**
 * A limiter that runs at most `concurrency` of the tasks given to it at once and queues the rest in order:
 * how many images are decoded in flight (each holds its decoded pixels in memory).
 * @example const limit = createLimiter(8); await Promise.all(files.map((f) => limit(() => decodeImage(f))));
 */
export function createLimiter(concurrency: number): <T>(task: () => Promise<T>) => Promise<T> {
  if (!Number.isSafeInteger(concurrency) || concurrency < 1) {
    throw new ArgumentValueError(`Expected a positive integer for concurrency but received ${describeValue(concurrency)}`);
  }
  let running = 0;
  const waiting: (() => void)[] = [];
  const release = (): void => {
    running--;
    waiting.shift()?.();
  };
  return async <T>(task: () => Promise<T>): Promise<T> => {
    if (running >= concurrency) await new Promise<void>((resolve) => waiting.push(resolve));
    running++;
    try {
      return await task();
    } finally {
      release();
    }
  };
}

// ---------------------------------------------------------------------------------------------------------------
// PIL's bilinear resampling, restricted to a window of the output

/** A rectangle in pixels: columns [left, left + width), rows [top, top + height). */
export interface Box {
  readonly left: number;
  readonly top: number;
  readonly width: number;
  readonly height: number;
}

/** PIL's fixed-point precision for 8-bit resampling (Resample.c PRECISION_BITS = 32 - 8 - 2). */
const PRECISION_BITS = 22;

/** The filter taps of a set of output positions along one axis, as PIL computes them. */
interface Taps {
  readonly first: Int32Array; // (n) first input index of each output position
  readonly count: Int32Array; // (n) taps of each output position
  readonly weights: Int32Array; // (n, maxTaps) fixed-point weights
  readonly maxTaps: number;
}

/**
 * PIL's precompute_coeffs + normalize_coeffs_8bpc for the bilinear (triangle) filter, for output positions
 * [start, start + n) of a resize from inSize to outSize. When downscaling the triangle is widened by the scale
 * factor (antialiasing); weights are normalized in float64 and rounded to 22-bit fixed point.
 */
function bilinearTaps(inSize: number, outSize: number, start: number, n: number): Taps {
  const scale = inSize / outSize;
  const filterScale = Math.max(scale, 1);
  const support = filterScale; // the triangle's support, 1, times the filter scale
  const maxTaps = Math.ceil(support) * 2 + 1;
  const first = new Int32Array(n);
  const count = new Int32Array(n);
  const weights = new Int32Array(n * maxTaps);
  const raw = new Float64Array(maxTaps);
  for (let i = 0; i < n; i++) {
    const center = (start + i + 0.5) * scale;
    const lo = Math.max(Math.trunc(center - support + 0.5), 0);
    const taps = Math.min(Math.trunc(center + support + 0.5), inSize) - lo;
    let total = 0;
    for (let t = 0; t < taps; t++) {
      const distance = Math.abs((t + lo - center + 0.5) / filterScale);
      raw[t] = distance < 1 ? 1 - distance : 0;
      total += raw[t] as number;
    }
    first[i] = lo;
    count[i] = taps;
    for (let t = 0; t < taps; t++) {
      const w = total !== 0 ? (raw[t] as number) / total : (raw[t] as number);
      weights[i * maxTaps + t] = Math.trunc(w < 0 ? w * (1 << PRECISION_BITS) - 0.5 : w * (1 << PRECISION_BITS) + 0.5);
    }
  }
  return { first, count, weights, maxTaps };
}

/**
 * `region` of `image` resized to outWidth x outHeight with PIL's bilinear filter (what torchvision 0.14 does to a
 * PIL image: crop, then `Image.resize(size, BILINEAR)`), computing only `window` of the result. Window pixels
 * outside the resized image are 0, as CenterCrop pads them. PIL's two passes (horizontal, rounded to bytes, then
 * vertical) and its fixed-point arithmetic are reproduced exactly, so results equal PIL's bit for bit.
 * @returns (window.height, window.width, 3) bytes.
 */
export function resampleBilinear(image: RgbImage, region: Box, outWidth: number, outHeight: number, window: Box): Uint8Array {
  const out = new Uint8Array(window.height * window.width * 3);
  // Output columns and rows of the window that fall inside the resized image.
  const x0 = Math.max(window.left, 0);
  const x1 = Math.min(window.left + window.width, outWidth);
  const y0 = Math.max(window.top, 0);
  const y1 = Math.min(window.top + window.height, outHeight);
  if (x0 >= x1 || y0 >= y1) return out;
  const columns = x1 - x0;
  const horizontal = bilinearTaps(region.width, outWidth, x0, columns);
  const vertical = bilinearTaps(region.height, outHeight, y0, y1 - y0);
  // Source rows (relative to the region) that the vertical pass reads.
  const rowFirst = vertical.first[0] as number;
  const lastRow = y1 - y0 - 1;
  const rowEnd = (vertical.first[lastRow] as number) + (vertical.count[lastRow] as number);
  // PIL's two passes (native/cpu/resample.cc; in JavaScript they took ~3 ms per 500x375 photo, on the decoding
  // workers that share the cores with inference). The addon checks every index against the buffers.
  callNativeSync(() =>
    loadCpuAddon().resampleBilinearRgb({
      src: image.data,
      srcOffset: (region.top * image.width + region.left) * 3,
      srcStride: image.width * 3,
      regionWidth: region.width,
      rowFirst,
      rowEnd,
      hFirst: horizontal.first,
      hCount: horizontal.count,
      hWeights: horizontal.weights,
      hMaxTaps: horizontal.maxTaps,
      vFirst: vertical.first,
      vCount: vertical.count,
      vWeights: vertical.weights,
      vMaxTaps: vertical.maxTaps,
      out,
      outOffset: ((y0 - window.top) * window.width + (x0 - window.left)) * 3,
      outStride: window.width * 3,
    }),
  );
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// The evaluation transform

/** ImageNet channel statistics used by torchvision and the official RepVGG code. */
export const IMAGENET_MEAN: readonly [number, number, number] = [0.485, 0.456, 0.406];
export const IMAGENET_STD: readonly [number, number, number] = [0.229, 0.224, 0.225];

/**
 * Resize the short side to `resize`, center-crop `crop` x `crop`, scale bytes to [0, 1] (ToTensor), then
 * (x - mean[c]) / std[c] (Normalize).
 */
export interface EvalPreprocess {
  readonly resize: number;
  readonly crop: number;
  readonly mean: readonly [number, number, number];
  readonly std: readonly [number, number, number];
}

/** The official ImageNet evaluation transform: Resize(256), CenterCrop(224), ImageNet mean/std. */
export const IMAGENET_PREPROCESS: EvalPreprocess = { resize: 256, crop: 224, mean: IMAGENET_MEAN, std: IMAGENET_STD };

/** Largest resize/crop side accepted: bounds the output buffer (3 * 4096^2 floats = 192 MiB). */
export const MAX_PREPROCESS_SIZE = 4096;

/**
 * The `imagenet` preset with other sizes (the CLI's --resize / --crop), e.g. resize 73 / crop 64 for 64x64 inputs.
 * @throws ArgumentValueError naming `name` for sizes outside [1, MAX_PREPROCESS_SIZE].
 */
export function imagenetPreprocess(resize = 256, crop = 224, name = 'preprocess'): EvalPreprocess {
  return checkEvalPreprocess({ resize, crop, mean: IMAGENET_MEAN, std: IMAGENET_STD }, name);
}

/**
 * The `imagenet` preset at these sizes with a model's own input normalization: the recorded per-channel mean and
 * std when it lists three channels, ImageNet's otherwise.
 * @throws ArgumentValueError naming `name` for sizes outside [1, MAX_PREPROCESS_SIZE].
 */
export function preprocessWithNormalization(
  normalization: { readonly mean: readonly number[]; readonly std: readonly number[] }, resize: number, crop: number, name = 'preprocess',
): EvalPreprocess {
  const sizes = imagenetPreprocess(resize, crop, name);
  if (normalization.mean.length !== 3) return sizes;
  return { ...sizes, mean: normalization.mean as [number, number, number], std: normalization.std as [number, number, number] };
}

function checkSize(value: unknown, name: string): number {
  if (!Number.isSafeInteger(value) || (value as number) < 1 || (value as number) > MAX_PREPROCESS_SIZE) {
    throw new ArgumentValueError(`Expected an integer in [1, ${MAX_PREPROCESS_SIZE}] for ${name} but received ${describeValue(value)}`);
  }
  return value as number;
}

/** @throws ArgumentTypeError / ArgumentValueError naming `name` and the field at fault. */
export function checkEvalPreprocess(preprocess: EvalPreprocess, name = 'preprocess'): EvalPreprocess {
  if (typeof preprocess !== 'object' || preprocess === null) {
    throw new ArgumentTypeError(`Expected an object { resize, crop, mean, std } for ${name} but received ${describeValue(preprocess)}`);
  }
  checkSize(preprocess.resize, `${name}.resize`);
  checkSize(preprocess.crop, `${name}.crop`);
  checkChannelStatistics(preprocess.mean, preprocess.std, name);
  return preprocess;
}

/** @throws ArgumentValueError unless mean and std hold 3 finite numbers each, std positive. */
export function checkChannelStatistics(mean: readonly number[], std: readonly number[], name: string): void {
  for (const [key, values] of [['mean', mean], ['std', std]] as const) {
    if (!Array.isArray(values) || values.length !== 3 || !values.every((v) => typeof v === 'number' && Number.isFinite(v))) {
      throw new ArgumentValueError(`Expected 3 finite numbers (R, G, B) for ${name}.${key} but received ${describeValue(values)}`);
    }
  }
  if (!std.every((s) => s > 0)) throw new ArgumentValueError(`Expected positive values for ${name}.std but received ${describeValue(std)}`);
}

/** The preprocessing as the library's Normalization record (saved in weights metadata, used by DataLoader). */
export function normalizationOf(mean: readonly number[], std: readonly number[]): Normalization {
  return { scale: 1 / 255, mean: [...mean], std: [...std] };
}

/** Python's round(): halves go to the even neighbour (torchvision's CenterCrop uses it). */
export function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return Math.abs(x - Math.trunc(x)) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/**
 * torchvision's Resize(size) output for an int size: the short side becomes `size`, the long side
 * int(size * long / short) (truncated, as torchvision 0.14 computes it).
 */
export function resizedSize(width: number, height: number, size: number): { width: number; height: number } {
  if (width <= height) return { width: size, height: Math.trunc((size * height) / width) };
  return { width: Math.trunc((size * width) / height), height: size };
}

/**
 * torchvision's CenterCrop window in the resized image: top/left = int(round((size - crop) / 2)), or, where the
 * crop is larger than the image, a negative offset (the zero padding CenterCrop adds: (crop - size) // 2 before).
 */
export function centerCropBox(width: number, height: number, crop: number): Box {
  const offset = (size: number): number => (crop <= size ? roundHalfEven((size - crop) / 2) : -Math.floor((crop - size) / 2));
  return { left: offset(width), top: offset(height), width: crop, height: crop };
}

/**
 * ToTensor + Normalize as torchvision computes them in float32: fround(fround(v / 255) - mean) / std, per
 * channel and byte value. Indexing this table is bit-identical to torchvision and faster than the arithmetic.
 * @returns (3, 256) float32.
 */
export function normalizationTable(mean: readonly number[], std: readonly number[]): Float32Array {
  const table = new Float32Array(3 * 256);
  for (let c = 0; c < 3; c++) {
    const m = Math.fround(mean[c] as number);
    const s = Math.fround(std[c] as number);
    for (let v = 0; v < 256; v++) table[c * 256 + v] = Math.fround(Math.fround(v / 255) - m) / s;
  }
  return table;
}

/**
 * Write interleaved bytes (H, W, 3) as normalized planar float32 (3, H, W) at `offset` of `out`, optionally
 * mirrored left-right.
 * @param table - normalizationTable(mean, std).
 */
export function writeNormalizedChw(
  pixels: Uint8Array, // (H, W, 3)
  width: number,
  height: number,
  table: Float32Array, // (3, 256)
  out: Float32Array,
  offset: number,
  flip = false,
): void {
  const plane = width * height;
  for (let y = 0; y < height; y++) {
    const row = offset + y * width;
    for (let x = 0; x < width; x++) {
      const s = (y * width + (flip ? width - 1 - x : x)) * 3;
      out[row + x] = table[pixels[s] as number] as number;
      out[row + plane + x] = table[256 + (pixels[s + 1] as number)] as number;
      out[row + 2 * plane + x] = table[512 + (pixels[s + 2] as number)] as number;
    }
  }
}

/**
 * The evaluation transform's geometry on decoded pixels: (crop, crop, 3) bytes, before normalization.
 * Equal to torchvision's Resize(resize) + CenterCrop(crop) on the PIL image, byte for byte.
 */
export function resizeCenterCrop(image: RgbImage, resize: number, crop: number): Uint8Array {
  const resized = resizedSize(image.width, image.height, resize);
  const box = centerCropBox(resized.width, resized.height, crop);
  const full: Box = { left: 0, top: 0, width: image.width, height: image.height };
  return resampleBilinear(image, full, resized.width, resized.height, box);
}

export interface PreprocessOptions extends DecodeOptions {
  /** Default IMAGENET_PREPROCESS. */
  readonly preprocess?: EvalPreprocess;
}

/**
 * Decode one image and apply the evaluation transform.
 * @returns (3, crop, crop) float32, normalized.
 * @throws FormatError naming the file for unreadable images (see decodeImage).
 * @example const chw = await preprocessImage('cat.jpg'); // IMAGENET_PREPROCESS
 */
export async function preprocessImage(input: ImageInput, options: PreprocessOptions = {}): Promise<Float32Array> {
  const preprocess = checkEvalPreprocess(options.preprocess ?? IMAGENET_PREPROCESS, 'options.preprocess');
  const image = await decodeImage(input, options);
  const { crop } = preprocess;
  const out = new Float32Array(3 * crop * crop);
  writeNormalizedChw(resizeCenterCrop(image, preprocess.resize, crop), crop, crop, normalizationTable(preprocess.mean, preprocess.std), out, 0);
  return out;
}

/** Decodes in flight by default: enough to keep sharp's pool busy, few enough to bound decoded memory. */
export const DEFAULT_DECODE_CONCURRENCY = 8;

export interface PreprocessBatchOptions extends PreprocessOptions {
  /** Images decoded at once. Default DEFAULT_DECODE_CONCURRENCY. */
  readonly concurrency?: number;
  /** How errors name each in-memory input, by index (default `${name} ${index}`). */
  readonly names?: readonly string[];
  /**
   * The (N, 3, crop, crop) array to fill, instead of a new one. On a SharedArrayBuffer the workers write each image
   * into it directly: no array per image (the server reuses these, see lib/serve/sample-pool.ts).
   */
  readonly into?: Float32Array;
}

/**
 * Decode and preprocess several images into one batch, `concurrency` at a time, on the decoding worker threads
 * (decodeWorkerPool): the same bytes as preprocessImage, without the main thread's time. Buffer inputs are
 * named `options.names[index]`, else `${options.name} ${index}`, in errors.
 * @returns (N, 3, crop, crop) float32 HostTensor, images in the order given (its data is options.into when given).
 * @throws FormatError naming the first file (in input order) that failed; ArgumentTypeError / ArgumentValueError
 *   for an options.into that is not a Float32Array of N * 3 * crop * crop values.
 * @example const batch = await preprocessBatch(['a.jpg', 'b.png']);
 */
export async function preprocessBatch(inputs: readonly ImageInput[], options: PreprocessBatchOptions = {}): Promise<HostTensor> {
  if (!Array.isArray(inputs)) throw new ArgumentTypeError(`Expected an array of images for inputs but received ${describeValue(inputs)}`);
  const preprocess = checkEvalPreprocess(options.preprocess ?? IMAGENET_PREPROCESS, 'options.preprocess');
  const limit = createLimiter(options.concurrency ?? DEFAULT_DECODE_CONCURRENCY);
  const { crop } = preprocess;
  const sample = 3 * crop * crop;
  const transform = resolveTransform(centerCropTransform(preprocess.resize, crop), 'options.preprocess');
  const { into } = options;
  if (into !== undefined && !(into instanceof Float32Array)) {
    throw new ArgumentTypeError(`Expected a Float32Array for options.into but received ${describeValue(into)}`);
  }
  if (into !== undefined && into.length !== inputs.length * sample) {
    throw new ArgumentValueError(
      `Expected options.into to hold (${inputs.length}, 3, ${crop}, ${crop}) = ${inputs.length * sample} values but it holds ${into.length}`,
    );
  }
  const shared = into !== undefined && into.buffer instanceof SharedArrayBuffer;
  const pool = decodeWorkerPool();
  // One image and no destination: the worker's own (transferred) array is the batch, with no copy on this thread.
  let out: Float32Array | undefined = into ?? (inputs.length === 1 ? undefined : new Float32Array(inputs.length * sample)); // (N, 3, crop, crop)
  const settled = await Promise.allSettled(
    inputs.map((input, i) =>
      limit(async () => {
        const task: SampleTask = {
          input,
          transform,
          key: 0,
          mean: preprocess.mean,
          std: preprocess.std,
          ...(typeof input === 'string' ? {} : { name: options.names?.[i] ?? `${options.name ?? 'image buffer'} ${i}` }),
          ...(options.maxPixels === undefined ? {} : { maxPixels: options.maxPixels }),
          ...(options.maxFileBytes === undefined ? {} : { maxFileBytes: options.maxFileBytes }),
          ...(shared && { output: into.subarray(i * sample, (i + 1) * sample) }),
        };
        const chw = await pool.run(task); // (3, crop, crop)
        if (out === undefined) out = chw;
        else if (!shared) out.set(chw, i * sample);
      }),
    ),
  );
  for (const result of settled) if (result.status === 'rejected') throw result.reason;
  return hostTensor(out as Float32Array, [inputs.length, 3, crop, crop], 'image batch'); // set: every task succeeded
}

// ---------------------------------------------------------------------------------------------------------------
// Per-sample transforms

/** torchvision RandomResizedCrop(size, scale, ratio) + RandomHorizontalFlip(p): the ImageNet training recipe. */
export interface RandomResizedCropTransform {
  readonly kind: 'random-resized-crop';
  readonly size: number;
  /** Range of the crop's area as a fraction of the image's. Default [0.08, 1]. */
  readonly scale?: readonly [number, number];
  /** Range of the crop's width / height. Default [3/4, 4/3]. */
  readonly ratio?: readonly [number, number];
  /** Default 0.5. */
  readonly flipProbability?: number;
}

/**
 * For small images (e.g. <= 64 px): the evaluation geometry (short side to `size`, center crop `size`), then
 * RandomCrop(size, padding) + RandomHorizontalFlip(p), the CIFAR-style recipe.
 */
export interface PadCropTransform {
  readonly kind: 'pad-crop';
  readonly size: number;
  /** Zero padding on each side before the random crop. Default 4. */
  readonly padding?: number;
  /** Default 0.5. */
  readonly flipProbability?: number;
}

/** Evaluation: Resize(resize) + CenterCrop(crop), no randomness (the `imagenet` preset's geometry). */
export interface CenterCropTransform {
  readonly kind: 'center-crop';
  readonly resize: number;
  readonly crop: number;
}

export type ImageTransform = RandomResizedCropTransform | PadCropTransform | CenterCropTransform;

/** The official training augmentation at `size` (224 for ImageNet). */
export function imagenetTrainTransform(size = 224): RandomResizedCropTransform {
  return { kind: 'random-resized-crop', size, scale: [0.08, 1], ratio: [3 / 4, 4 / 3], flipProbability: 0.5 };
}

/** The small-image training augmentation (images of about `size` pixels or fewer). */
export function smallImageTrainTransform(size: number, padding = 4): PadCropTransform {
  return { kind: 'pad-crop', size, padding, flipProbability: 0.5 };
}

/** The evaluation transform (e.g. 256/224 for ImageNet, 73/64 for 64x64 fine-tuning). */
export function centerCropTransform(resize = 256, crop = 224): CenterCropTransform {
  return { kind: 'center-crop', resize, crop };
}

/** A transform with every default filled in and every value checked (what the decoding workers receive). */
export type ResolvedTransform =
  | {
      readonly kind: 'random-resized-crop';
      readonly size: number;
      readonly scale: readonly [number, number];
      readonly ratio: readonly [number, number];
      readonly flipProbability: number;
    }
  | { readonly kind: 'pad-crop'; readonly size: number; readonly padding: number; readonly flipProbability: number }
  | { readonly kind: 'center-crop'; readonly resize: number; readonly crop: number };

function checkProbability(value: unknown, name: string): number {
  if (typeof value !== 'number' || !(value >= 0 && value <= 1)) {
    throw new ArgumentValueError(`Expected a number in [0, 1] for ${name} but received ${describeValue(value)}`);
  }
  return value;
}

function checkRange(value: unknown, name: string): readonly [number, number] {
  const positive = (v: unknown): boolean => typeof v === 'number' && Number.isFinite(v) && v > 0;
  if (!Array.isArray(value) || value.length !== 2 || !value.every(positive) || value[0] > value[1]) {
    throw new ArgumentValueError(`Expected [low, high] with 0 < low <= high for ${name} but received ${describeValue(value)}`);
  }
  return [value[0] as number, value[1] as number];
}

/** @throws ArgumentTypeError / ArgumentValueError naming `name` and the field at fault. */
export function resolveTransform(transform: ImageTransform, name: string): ResolvedTransform {
  if (typeof transform !== 'object' || transform === null) {
    throw new ArgumentTypeError(`Expected a transform object for ${name} but received ${describeValue(transform)}`);
  }
  switch (transform.kind) {
    case 'random-resized-crop':
      return {
        kind: transform.kind,
        size: checkSize(transform.size, `${name}.size`),
        scale: checkRange(transform.scale ?? [0.08, 1], `${name}.scale`),
        ratio: checkRange(transform.ratio ?? [3 / 4, 4 / 3], `${name}.ratio`),
        flipProbability: checkProbability(transform.flipProbability ?? 0.5, `${name}.flipProbability`),
      };
    case 'pad-crop': {
      const padding = transform.padding ?? 4;
      if (!Number.isSafeInteger(padding) || padding < 0 || padding > MAX_PREPROCESS_SIZE) {
        throw new ArgumentValueError(
          `Expected an integer in [0, ${MAX_PREPROCESS_SIZE}] for ${name}.padding but received ${describeValue(padding)}`,
        );
      }
      return {
        kind: transform.kind,
        size: checkSize(transform.size, `${name}.size`),
        padding,
        flipProbability: checkProbability(transform.flipProbability ?? 0.5, `${name}.flipProbability`),
      };
    }
    case 'center-crop':
      return { kind: transform.kind, resize: checkSize(transform.resize, `${name}.resize`), crop: checkSize(transform.crop, `${name}.crop`) };
    default:
      throw new ArgumentValueError(
        `Expected 'random-resized-crop', 'pad-crop' or 'center-crop' for ${name}.kind but received ` +
          describeValue((transform as { kind: unknown }).kind),
      );
  }
}

/** Side of the square images a transform produces. */
export function outputSize(transform: ResolvedTransform): number {
  return transform.kind === 'center-crop' ? transform.crop : transform.size;
}

/**
 * torchvision 0.14 RandomResizedCrop.get_params with our generator: up to 10 tries of an area fraction uniform
 * in `scale` and a log-uniform aspect ratio in `ratio`, w = round(sqrt(area * r)), h = round(sqrt(area / r))
 * (Python's round), top/left uniform; if none fits, the central crop clamped to the ratio range.
 */
export function randomResizedCropBox(
  width: number,
  height: number,
  scale: readonly [number, number],
  ratio: readonly [number, number],
  rng: Rng,
): Box {
  const area = width * height;
  const logLow = Math.log(ratio[0]);
  const logHigh = Math.log(ratio[1]);
  for (let attempt = 0; attempt < 10; attempt++) {
    const targetArea = area * (scale[0] + (scale[1] - scale[0]) * rng.nextFloat());
    const aspect = Math.exp(logLow + (logHigh - logLow) * rng.nextFloat());
    const w = roundHalfEven(Math.sqrt(targetArea * aspect));
    const h = roundHalfEven(Math.sqrt(targetArea / aspect));
    if (w > 0 && w <= width && h > 0 && h <= height) {
      const top = rng.below(height - h + 1);
      const left = rng.below(width - w + 1);
      return { left, top, width: w, height: h };
    }
  }
  const inRatio = width / height;
  let w = width;
  let h = height;
  if (inRatio < ratio[0]) h = roundHalfEven(w / ratio[0]);
  else if (inRatio > ratio[1]) w = roundHalfEven(h * ratio[1]);
  return { left: Math.floor((width - w) / 2), top: Math.floor((height - h) / 2), width: w, height: h };
}

/**
 * One sample through `transform`, written normalized as (3, S, S) float32 at `offset` of `out`. The random draws
 * come from a generator keyed by (seed, epoch, position): crop (RandomResizedCrop's tries, or the pad-crop's row
 * then column), then the flip.
 */
export function writeTransformed(
  image: RgbImage,
  transform: ResolvedTransform,
  rng: Rng,
  table: Float32Array, // (3, 256)
  out: Float32Array,
  offset: number,
): void {
  switch (transform.kind) {
    case 'center-crop':
      writeNormalizedChw(resizeCenterCrop(image, transform.resize, transform.crop), transform.crop, transform.crop, table, out, offset);
      return;
    case 'random-resized-crop': {
      const { size } = transform;
      const box = randomResizedCropBox(image.width, image.height, transform.scale, transform.ratio, rng);
      const flip = rng.nextFloat() < transform.flipProbability;
      const pixels = resampleBilinear(image, box, size, size, { left: 0, top: 0, width: size, height: size });
      writeNormalizedChw(pixels, size, size, table, out, offset, flip);
      return;
    }
    case 'pad-crop': {
      const { size, padding } = transform;
      const base = resizeCenterCrop(image, size, size); // (S, S, 3)
      const window = 2 * padding + 1;
      const dy = rng.below(window) - padding;
      const dx = rng.below(window) - padding;
      const flip = rng.nextFloat() < transform.flipProbability;
      // RandomCrop with zero padding: output (y, x) is base (y + dy, x + dx), zero bytes outside.
      const shifted = new Uint8Array(size * size * 3); // (S, S, 3)
      const x0 = Math.max(0, -dx);
      const x1 = Math.min(size, size - dx);
      for (let y = Math.max(0, -dy); y < Math.min(size, size - dy) && x0 < x1; y++) {
        shifted.set(base.subarray(((y + dy) * size + x0 + dx) * 3, ((y + dy) * size + x1 + dx) * 3), (y * size + x0) * 3);
      }
      writeNormalizedChw(shifted, size, size, table, out, offset, flip);
      return;
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Decoding workers: decode + transform + normalize off the main thread

/** What a decoding worker does for one image: decode it, apply `transform` with generator key `key`, normalize. */
export interface SampleTask {
  readonly input: ImageInput;
  /** How errors name an in-memory input. */
  readonly name?: string;
  readonly transform: ResolvedTransform;
  /** Key of the Rng for the random choices (random.ts deriveKey); unused by 'center-crop'. */
  readonly key: number;
  readonly mean: readonly number[];
  readonly std: readonly number[];
  readonly maxPixels?: number;
  readonly maxFileBytes?: number;
  /**
   * Where the (3, S, S) sample goes: a view of a SharedArrayBuffer, which the worker writes in place of sending a new
   * array back. Without it, each sample is an array of its own (transferred).
   */
  readonly output?: Float32Array;
}

/** Main thread -> worker. */
export interface SampleRequest {
  readonly id: number;
  readonly task: SampleTask;
}

/** Main thread -> worker: run at this nice value from now on (DecodeWorkerPool.setNice). */
export interface WorkerNice {
  readonly nice: number;
}

/**
 * Worker -> main thread: the (3, S, S) float32 sample's buffer (transferred), that it was written to the task's
 * output, or the error's class and text.
 */
export type SampleReply =
  | { readonly id: number; readonly data: ArrayBuffer }
  | { readonly id: number; readonly written: true }
  | { readonly id: number; readonly error: { readonly name: string; readonly message: string } };

/**
 * Run one sample task on the calling thread (what each worker runs).
 * @returns (3, S, S) float32, normalized: task.output when given.
 * @throws ArgumentValueError when task.output does not hold 3 * S * S values.
 */
export async function runSampleTask(task: SampleTask): Promise<Float32Array> {
  const image = await decodeImage(task.input, {
    ...(task.name === undefined ? {} : { name: task.name }),
    ...(task.maxPixels === undefined ? {} : { maxPixels: task.maxPixels }),
    ...(task.maxFileBytes === undefined ? {} : { maxFileBytes: task.maxFileBytes }),
  });
  const size = outputSize(task.transform);
  const length = 3 * size * size;
  if (task.output !== undefined && task.output.length !== length) {
    throw new ArgumentValueError(`Expected room for (3, ${size}, ${size}) = ${length} values in the task's output but it holds ${task.output.length}`);
  }
  const out = task.output ?? new Float32Array(length); // (3, S, S)
  writeTransformed(image, task.transform, new Rng(task.key), normalizationTable(task.mean, task.std), out, 0);
  return out;
}

/** The typed error a worker threw, rebuilt on this side of the thread boundary. */
function errorFromWorker(error: { readonly name: string; readonly message: string }): Error {
  switch (error.name) {
    case 'FormatError':
      return new FormatError(error.message);
    case 'ArgumentValueError':
      return new ArgumentValueError(error.message);
    case 'ArgumentTypeError':
      return new ArgumentTypeError(error.message);
    default:
      return new RepvggError('ERR_IMAGE_WORKER', `An image decoding worker failed: ${error.name}: ${error.message}`);
  }
}

interface WorkerSlot {
  readonly worker: Worker;
  readonly pending: Map<number, { output: Float32Array | undefined; resolve: (data: Float32Array) => void; reject: (error: Error) => void }>;
}

/**
 * Worker threads that run sample tasks, each several at once (decodes run on libuv's pool meanwhile). The
 * resampling, augmentation and normalization cost a few milliseconds per image (before the resampling passes
 * went native): on the main thread they capped the whole pipeline (measured main thread 93% busy at 8 decodes in
 * flight); here they spread over the cores. Workers start on first use and keep the process alive only while they
 * have work.
 */
export class DecodeWorkerPool {
  readonly size: number;
  private readonly slots: WorkerSlot[] = [];
  private nextId = 1;
  private nice = 0;

  constructor(size: number) {
    this.size = positiveOption(size, 'size');
  }

  /**
   * @returns the task's (3, S, S) float32 sample: task.output when given.
   * @throws the worker's FormatError / ArgumentValueError / ArgumentTypeError, or RepvggError 'ERR_IMAGE_WORKER';
   *   ArgumentValueError at once for a task.output that is not on a SharedArrayBuffer (the worker would write a copy).
   */
  run(task: SampleTask): Promise<Float32Array> {
    const { output } = task;
    if (output !== undefined && !(output instanceof Float32Array && output.buffer instanceof SharedArrayBuffer)) {
      return Promise.reject(new ArgumentValueError(`Expected a Float32Array on a SharedArrayBuffer for the task's output but received ${describeValue(output)}`));
    }
    const slot = this.pick();
    const id = this.nextId++;
    // postMessage clones a byte view's whole ArrayBuffer (a request body, a pooled Buffer): send the view's bytes only.
    const { input } = task;
    const sent = typeof input !== 'string' && input.byteLength !== input.buffer.byteLength ? { ...task, input: new Uint8Array(input) } : task;
    return new Promise<Float32Array>((resolve, reject) => {
      slot.pending.set(id, { output, resolve, reject });
      if (slot.pending.size === 1) slot.worker.ref();
      slot.worker.postMessage({ id, task: sent } satisfies SampleRequest);
    });
  }

  /** Workers running now (they start on first use, or with start()). */
  get running(): number {
    return this.slots.length;
  }

  /**
   * Starts every worker and decodes one tiny image on each, so that the first real images do not wait for a thread,
   * the module and sharp's first decode (a server calls it before it reports ready).
   */
  async start(): Promise<void> {
    const pixel = await sharp({ create: { width: 1, height: 1, channels: 3, background: { r: 0, g: 0, b: 0 } } }).png().toBuffer();
    const task: SampleTask = {
      input: pixel, name: 'warm-up pixel', transform: resolveTransform(centerCropTransform(1, 1), 'warm-up'), key: 0, mean: [0, 0, 0], std: [1, 1, 1],
    };
    // Concurrent tasks each start a worker while fewer than `size` run (pick()).
    await Promise.all(Array.from({ length: this.size }, () => this.run(task)));
  }

  /**
   * Runs the workers, those started and those to come, at nice value `nice` (0-19, Linux: per thread), e.g. below
   * a server's event loop. Their decoding on libuv's threads is not affected.
   */
  setNice(nice: number): void {
    this.nice = checkNice(nice);
    for (const slot of this.slots) slot.worker.postMessage({ nice: this.nice } satisfies WorkerNice);
  }

  /** The least busy worker, starting another while fewer than `size` run. */
  private pick(): WorkerSlot {
    let best: WorkerSlot | undefined;
    for (const slot of this.slots) if (best === undefined || slot.pending.size < best.pending.size) best = slot;
    if (best !== undefined && (best.pending.size === 0 || this.slots.length >= this.size)) return best;
    const worker = startWorker(new URL('./image-worker.js', import.meta.url));
    worker.unref();
    if (this.nice !== 0) worker.postMessage({ nice: this.nice } satisfies WorkerNice);
    const slot: WorkerSlot = { worker, pending: new Map() };
    worker.on('message', (reply: SampleReply) => {
      const waiter = slot.pending.get(reply.id);
      if (waiter === undefined) return;
      slot.pending.delete(reply.id);
      if (slot.pending.size === 0) worker.unref();
      if ('data' in reply) waiter.resolve(new Float32Array(reply.data));
      else if ('written' in reply && waiter.output !== undefined) waiter.resolve(waiter.output);
      else if ('error' in reply) waiter.reject(errorFromWorker(reply.error));
      else waiter.reject(new RepvggError('ERR_IMAGE_WORKER', 'An image decoding worker said it wrote a sample that had no output'));
    });
    const fail = (error: Error): void => {
      const index = this.slots.indexOf(slot);
      if (index >= 0) this.slots.splice(index, 1); // the next task starts a fresh worker
      for (const waiter of slot.pending.values()) waiter.reject(error);
      slot.pending.clear();
    };
    worker.on('error', (error: Error) => fail(new RepvggError('ERR_IMAGE_WORKER', `An image decoding worker failed: ${error.message}`)));
    worker.on('exit', (code) => fail(new RepvggError('ERR_IMAGE_WORKER', `An image decoding worker exited with code ${code}`)));
    this.slots.push(slot);
    return slot;
  }
}

/** Worker threads of the shared pool: one per core (the decoding itself runs on libuv's threads). */
export const DEFAULT_DECODE_WORKERS = Math.max(1, availableParallelism());

let sharedPool: DecodeWorkerPool | undefined;

/** The process-wide pool that preprocessBatch and ImageFolderLoader use. */
export function decodeWorkerPool(): DecodeWorkerPool {
  sharedPool ??= new DecodeWorkerPool(DEFAULT_DECODE_WORKERS);
  return sharedPool;
}

// ---------------------------------------------------------------------------------------------------------------
// Labels

/** Largest labels file read: 1 MiB holds 10^4 class names of 100 characters. */
export const MAX_LABELS_FILE_BYTES = 1024 * 1024;
/** Most labels accepted from a file. */
export const MAX_LABELS = 100_000;

/** The package root, from this file's compiled place dist/lib/data/ (tsc does not copy the .json to dist/). */
const packageRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

let imagenetClasses: readonly string[] | undefined;

/**
 * The 1000 ImageNet class names in index order (torchvision's weights metadata; scripts/make_imagenet_labels.py
 * writes lib/data/imagenet-classes.json).
 * @returns a new array each call.
 * @throws FormatError when the bundled file is missing or malformed.
 */
export function imagenetClassNames(): string[] {
  if (imagenetClasses === undefined) {
    const path = join(packageRoot, 'lib', 'data', 'imagenet-classes.json');
    let parsed: unknown;
    try {
      parsed = JSON.parse(readFileSync(path, 'utf8'));
    } catch (error) {
      const wrapped = new FormatError(`Expected the ImageNet class list at ${path} but could not read it: ${(error as Error).message}`);
      wrapped.cause = error;
      throw wrapped;
    }
    if (!Array.isArray(parsed) || parsed.length !== 1000 || !parsed.every((n) => typeof n === 'string' && n.length > 0)) {
      throw new FormatError(`Expected 1000 class names in ${path} but received ${describeValue(parsed)}`);
    }
    imagenetClasses = parsed as string[];
  }
  return [...imagenetClasses];
}

/**
 * Read class names from a text file, one per line in index order (a final newline and CRLF endings are fine).
 * @throws FormatError naming the file for a missing, oversized, binary or empty file, or an empty line.
 * @example const labels = await readLabelsFile('synset_words.txt');
 */
export async function readLabelsFile(path: string): Promise<string[]> {
  if (typeof path !== 'string' || path.length === 0) {
    throw new ArgumentTypeError(`Expected a file path for labels but received ${describeValue(path)}`);
  }
  const bytes = await readBoundedFile(path, MAX_LABELS_FILE_BYTES, 'a labels file');
  const text = bytes.toString('utf8');
  if (text.includes('\u0000') || text.includes('\uFFFD')) {
    throw new FormatError(`Expected UTF-8 text (one label per line) for ${path} but received binary data`);
  }
  const lines = text.replace(/\r?\n$/, '').split(/\r?\n/);
  if (text.length === 0 || lines.length > MAX_LABELS) {
    throw new FormatError(`Expected 1 to ${MAX_LABELS} labels in ${path} but received ${text.length === 0 ? 0 : lines.length}`);
  }
  const empty = lines.findIndex((line) => line.trim().length === 0);
  if (empty >= 0) throw new FormatError(`Expected a label on every line of ${path} but line ${empty + 1} is empty`);
  return lines.map((line) => line.trim());
}
