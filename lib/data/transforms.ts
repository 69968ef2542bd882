// Per-sample image transforms of the training pipeline: normalization, random crop with zero padding and
// horizontal flip (PyTorch's Normalize, RandomCrop(size, padding) and RandomHorizontalFlip(0.5) semantics), with
// every random choice drawn from a generator keyed by (seed, epoch, position) so any batch can be rebuilt alone.
// Not for: batching or threads (loader.ts), colour or scale augmentation.

import { ArgumentTypeError, ArgumentValueError, describeValue } from '../errors.js';
import { Rng, STREAM_AUGMENT, deriveKey } from './random.js';

/** Channels, height and width of one sample. */
export interface ImageGeometry {
  readonly channels: number;
  readonly height: number;
  readonly width: number;
}

/**
 * How raw stored values become network input: x = (raw * scale - mean[c]) / std[c].
 * `scale` is 1/255 for uint8 pixels (PyTorch's ToTensor), 1 for float data.
 */
export interface Normalization {
  readonly scale: number;
  readonly mean: readonly number[];
  readonly std: readonly number[];
}

/**
 * Fashion-MNIST's per-pixel mean and standard deviation over the 60000 training images (pixels / 255,
 * population std), computed from the data: 0.28604, 0.35302. test/data.test.ts recomputes them.
 */
export const FASHION_MNIST_MEAN = 0.286;
export const FASHION_MNIST_STD = 0.353;

/** The normalization every Fashion-MNIST model of this library is trained and evaluated with. */
export const FASHION_MNIST_NORMALIZATION: Normalization = {
  scale: 1 / 255,
  mean: [FASHION_MNIST_MEAN],
  std: [FASHION_MNIST_STD],
};

/** Training-time augmentation: random crop of the original size from the zero-padded image, then a flip. */
export interface AugmentOptions {
  /** Zero padding on each side before cropping (RandomCrop's `padding`); 0 disables the crop. */
  readonly padding: number;
  /** Probability of a horizontal flip (RandomHorizontalFlip's `p`); 0 disables it. */
  readonly flipProbability: number;
}

/** RandomCrop(size, padding=4) and RandomHorizontalFlip(0.5): the usual small-image recipe. */
export const DEFAULT_AUGMENT: AugmentOptions = { padding: 4, flipProbability: 0.5 };

/** The random choices for one sample. `top`/`left` index the padded image, each in [0, 2 * padding]. */
export interface CropFlip {
  readonly top: number;
  readonly left: number;
  readonly flip: boolean;
}

/** The choice that changes nothing: the centre window of the padded image, not flipped. */
export function identityCropFlip(padding: number): CropFlip {
  return { top: padding, left: padding, flip: false };
}

/**
 * The augmentation of the sample at `position` of epoch `epoch` (position in the epoch's order, not dataset
 * index). Depends on nothing else, which is what makes resuming mid-epoch reproduce the same batches.
 * Draw order: crop row, crop column, flip (as torchvision draws them).
 */
export function drawCropFlip(seed: number, epoch: number, position: number, augment: AugmentOptions): CropFlip {
  const rng = new Rng(deriveKey(seed, epoch, STREAM_AUGMENT, position));
  const window = 2 * augment.padding + 1;
  const top = augment.padding > 0 ? rng.below(window) : 0;
  const left = augment.padding > 0 ? rng.below(window) : 0;
  const flip = augment.flipProbability > 0 && rng.nextFloat() < augment.flipProbability;
  return { top, left, flip };
}

// ---------------------------------------------------------------------------------------------------------------
// Validation

/**
 * Check a normalization against a channel count; a single mean/std applies to every channel.
 * @throws ArgumentTypeError / ArgumentValueError naming `name` for non-numbers, wrong lengths, std <= 0.
 */
export function checkNormalization(norm: Normalization, channels: number, name = 'normalization'): Normalization {
  if (typeof norm !== 'object' || norm === null) {
    throw new ArgumentTypeError(`Expected an object { scale, mean, std } for ${name} but received ${describeValue(norm)}`);
  }
  if (typeof norm.scale !== 'number' || !Number.isFinite(norm.scale) || norm.scale <= 0) {
    throw new ArgumentValueError(`Expected a positive finite number for ${name}.scale but received ${describeValue(norm.scale)}`);
  }
  for (const key of ['mean', 'std'] as const) {
    const values = norm[key];
    if (!Array.isArray(values) || !values.every((v) => typeof v === 'number' && Number.isFinite(v))) {
      throw new ArgumentTypeError(`Expected an array of finite numbers for ${name}.${key} but received ${describeValue(values)}`);
    }
    if (values.length !== 1 && values.length !== channels) {
      throw new ArgumentValueError(
        `Expected 1 or ${channels} values (one per channel) for ${name}.${key} but received ${values.length}`,
      );
    }
  }
  if (!norm.std.every((s) => s > 0)) {
    throw new ArgumentValueError(`Expected positive values for ${name}.std but received ${describeValue(norm.std)}`);
  }
  return norm;
}

/** @throws ArgumentValueError naming `name` for a negative or non-integer padding or a probability outside [0, 1]. */
export function checkAugment(augment: AugmentOptions, name = 'augment'): AugmentOptions {
  if (typeof augment !== 'object' || augment === null) {
    throw new ArgumentTypeError(`Expected an object { padding, flipProbability } for ${name} but received ${describeValue(augment)}`);
  }
  if (!Number.isSafeInteger(augment.padding) || augment.padding < 0) {
    throw new ArgumentValueError(`Expected a non-negative integer for ${name}.padding but received ${describeValue(augment.padding)}`);
  }
  const p = augment.flipProbability;
  if (typeof p !== 'number' || !(p >= 0 && p <= 1)) {
    throw new ArgumentValueError(`Expected a number in [0, 1] for ${name}.flipProbability but received ${describeValue(p)}`);
  }
  return augment;
}

// ---------------------------------------------------------------------------------------------------------------
// The fused per-sample kernel used by the loader

/**
 * Per-channel affine coefficients: x = raw * a[c] + b[c], with a = scale / std and b = -mean / std, computed in
 * float64 once. Every path (fused or the reference functions below) uses these, so their outputs are identical.
 */
export interface AffineNormalization {
  readonly a: Float64Array; // (C)
  readonly b: Float64Array; // (C)
  /** For uint8 data: the normalized value of each byte per channel, (C, 256). */
  readonly table: Float32Array;
}

export function affineNormalization(norm: Normalization, channels: number): AffineNormalization {
  const a = new Float64Array(channels);
  const b = new Float64Array(channels);
  const table = new Float32Array(channels * 256);
  for (let c = 0; c < channels; c++) {
    const mean = norm.mean.length === 1 ? (norm.mean[0] as number) : (norm.mean[c] as number);
    const std = norm.std.length === 1 ? (norm.std[0] as number) : (norm.std[c] as number);
    a[c] = norm.scale / std;
    b[c] = -mean / std;
    for (let v = 0; v < 256; v++) table[c * 256 + v] = v * (a[c] as number) + (b[c] as number);
  }
  return { a, b, table };
}

/**
 * Write one sample, cropped, flipped and normalized, into `out`: the whole training transform in one pass.
 * Output pixel (y, x) of channel c reads padded pixel (top + y, left + x'), x' = flip ? W-1-x : x, which is
 * source pixel (top + y - padding, left + x' - padding), or 0 (before normalization) outside the source, as
 * when RandomCrop pads the raw image before ToTensor/Normalize.
 * @param src - raw images (N, C, H, W); the sample starts at element `srcOffset`.
 * @param out - float32 destination; the sample is written from element `outOffset`, (C, H, W).
 */
export function writeSample(
  src: Uint8Array | Float32Array,
  srcOffset: number,
  geometry: ImageGeometry,
  padding: number,
  cropFlip: CropFlip,
  norm: AffineNormalization,
  out: Float32Array,
  outOffset: number,
): void {
  const { channels, height, width } = geometry;
  const dy = cropFlip.top - padding;
  const dx = cropFlip.left - padding;
  const flip = cropFlip.flip;
  // Output columns [x0, x1) read inside the source row; the rest are padding. Unflipped: sx = x + dx; flipped:
  // sx = W - 1 - x + dx. Either way the valid columns form one interval, which keeps bounds checks out of the
  // inner loops.
  const x0 = flip ? Math.max(0, dx) : Math.max(0, -dx);
  const x1 = flip ? Math.min(width, width + dx) : Math.min(width, width - dx);
  const bytes = src instanceof Uint8Array;
  let o = outOffset;
  for (let c = 0; c < channels; c++) {
    const a = norm.a[c] as number;
    const b = norm.b[c] as number;
    const zero = bytes ? (norm.table[c * 256] as number) : Math.fround(b);
    const plane = srcOffset + c * height * width;
    const table = bytes ? norm.table.subarray(c * 256, (c + 1) * 256) : norm.table;
    for (let y = 0; y < height; y++, o += width) {
      const sy = y + dy;
      if (sy < 0 || sy >= height || x0 >= x1) {
        out.fill(zero, o, o + width);
        continue;
      }
      if (x0 > 0) out.fill(zero, o, o + x0);
      if (x1 < width) out.fill(zero, o + x1, o + width);
      // Source index of output column x: base + x (unflipped) or base - x (flipped).
      const base = plane + sy * width + (flip ? width - 1 + dx : dx);
      if (bytes) {
        if (flip) for (let x = x0; x < x1; x++) out[o + x] = table[src[base - x] as number] as number;
        else for (let x = x0; x < x1; x++) out[o + x] = table[src[base + x] as number] as number;
      } else if (flip) {
        for (let x = x0; x < x1; x++) out[o + x] = (src[base - x] as number) * a + b;
      } else {
        for (let x = x0; x < x1; x++) out[o + x] = (src[base + x] as number) * a + b;
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Plain single-purpose transforms on one (C, H, W) float32 image: the reference the fused kernel is tested
// against, and handy for callers who transform images outside the loader.

/**
 * RandomCrop(size = original, padding) with a given window: pad every side with `padding` zeros, then take the
 * H x W window whose top-left corner is (top, left) in padded coordinates.
 * @param image - (C, H, W) float32.
 * @returns a new (C, H, W) float32 image.
 */
export function padCrop(image: Float32Array, geometry: ImageGeometry, padding: number, top: number, left: number): Float32Array {
  const { channels, height, width } = geometry;
  const out = new Float32Array(channels * height * width);
  for (let c = 0; c < channels; c++) {
    for (let y = 0; y < height; y++) {
      for (let x = 0; x < width; x++) {
        const sy = top + y - padding;
        const sx = left + x - padding;
        if (sy >= 0 && sy < height && sx >= 0 && sx < width) {
          out[(c * height + y) * width + x] = image[(c * height + sy) * width + sx] as number;
        }
      }
    }
  }
  return out;
}

/**
 * Mirror every row (left becomes right).
 * @param image - (C, H, W) float32.
 * @returns a new (C, H, W) float32 image.
 */
export function horizontalFlip(image: Float32Array, geometry: ImageGeometry): Float32Array {
  const { channels, height, width } = geometry;
  const out = new Float32Array(image.length);
  for (let row = 0; row < channels * height; row++) {
    for (let x = 0; x < width; x++) out[row * width + x] = image[row * width + width - 1 - x] as number;
  }
  return out;
}

/**
 * Normalize raw values: x = raw * scale / std[c] - mean[c] / std[c], rounded to float32.
 * @param raw - (C, H, W) raw values (uint8 pixels or float32 data).
 * @returns a new (C, H, W) float32 image.
 */
export function normalizeImage(raw: Uint8Array | Float32Array, geometry: ImageGeometry, norm: Normalization): Float32Array {
  const { channels, height, width } = geometry;
  const affine = affineNormalization(checkNormalization(norm, channels), channels);
  const out = new Float32Array(raw.length);
  const plane = height * width;
  for (let i = 0; i < raw.length; i++) {
    const c = Math.floor(i / plane);
    out[i] = (raw[i] as number) * (affine.a[c] as number) + (affine.b[c] as number);
  }
  return out;
}

/**
 * Mean and population standard deviation of each channel of raw images after multiplying by `scale`, in
 * float64: how the Fashion-MNIST constants were computed, and how to derive a normalization for new data.
 * @param images - (N, C, H, W) raw values.
 */
export function channelStatistics(
  images: Uint8Array | Float32Array,
  geometry: ImageGeometry,
  scale = 1,
): { mean: number[]; std: number[] } {
  const { channels, height, width } = geometry;
  const plane = height * width;
  const count = images.length / (channels * plane);
  const mean: number[] = [];
  const std: number[] = [];
  for (let c = 0; c < channels; c++) {
    // Sums of uint8 values are exact integers in float64 up to 2^53; shifting by the first value keeps the
    // one-pass variance accurate for float data too.
    const shift = count > 0 ? (images[c * plane] as number) : 0;
    let sum = 0;
    let sumSquares = 0;
    for (let n = 0; n < count; n++) {
      const start = (n * channels + c) * plane;
      for (let i = start; i < start + plane; i++) {
        const v = (images[i] as number) - shift;
        sum += v;
        sumSquares += v * v;
      }
    }
    const total = count * plane;
    const m = sum / total;
    mean.push((m + shift) * scale);
    std.push(Math.sqrt(Math.max(0, sumSquares / total - m * m)) * scale);
  }
  return { mean, std };
}
