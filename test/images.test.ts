// lib/data/images.ts: decoding every format and variant, typed errors for bad files, the evaluation transform
// against torchvision 0.14 + PIL (fixtures from test/fixtures/make_image_fixtures.py), labels and the limiter.
// Not for: image folders and augmentation (image-folder.test.ts), or speed (bench/images.ts).

import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import test from 'ava';
import type { ExecutionContext } from 'ava';
import sharp from 'sharp';

import { callNativeSync, loadCpuAddon } from '../lib/backend/native.js';
import { ArgumentTypeError, ArgumentValueError, FormatError, ShapeError } from '../lib/errors.js';
import { readNpy } from '../lib/io/npy.js';
import {
  DEFAULT_MAX_PIXELS,
  IMAGENET_PREPROCESS,
  MAX_LABELS_FILE_BYTES,
  centerCropBox,
  createLimiter,
  decodeImage,
  decodeWorkerPool,
  imagenetClassNames,
  imagenetPreprocess,
  preprocessBatch,
  preprocessImage,
  readLabelsFile,
  resampleBilinear,
  resizeCenterCrop,
  resizedSize,
  roundHalfEven,
  type SampleTask,
} from '../lib/data/images.js';
import type { RgbImage } from '../lib/data/images.js';
import { IMAGE_CMYK_MEAN, IMAGE_DECODE_MAX, IMAGE_DOWNSCALE_MAX, IMAGE_UPSCALE_MAX } from './helpers/tolerances.js';

const IMAGES = fileURLToPath(new URL('../../test/fixtures/images/', import.meta.url));
const VARIANTS = join(IMAGES, 'variants');
const COMPARE = join(IMAGES, 'compare');

async function expectedBytes(path: string): Promise<{ data: Uint8Array; shape: number[] }> {
  const array = await readNpy(path);
  if (array.dtype !== 'uint8') throw new Error(`${path}: expected uint8, got ${array.dtype}`);
  return array;
}

function differences(ours: Uint8Array, ref: Uint8Array): { max: number; mean: number } {
  let max = 0;
  let sum = 0;
  for (let i = 0; i < ours.length; i++) {
    const d = Math.abs((ours[i] as number) - (ref[i] as number));
    max = Math.max(max, d);
    sum += d;
  }
  return { max, mean: sum / ours.length };
}

function randomImage(width: number, height: number, seed: number): RgbImage {
  const data = new Uint8Array(width * height * 3);
  let state = seed >>> 0;
  for (let i = 0; i < data.length; i++) {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    data[i] = state >>> 24;
  }
  return { data, width, height };
}

// ---------------------------------------------------------------------------------------------------------------
// Decoding

const LOSSLESS = ['gray.png', 'rgba.png', 'la.png', 'palette.png', 'palette_trns.png', 'gray16.png', 'rgb16.png', 'lossless.webp', 'alpha.webp'];
const LOSSY = ['gray.jpg', 'rgb.jpg', 'lossy.webp', ...[1, 2, 3, 4, 5, 6, 7, 8].map((o) => `orient_${o}.jpg`)];

for (const name of [...LOSSLESS, ...LOSSY]) {
  test(`decodeImage: ${name} gives the RGB bytes PIL gives (EXIF orientation applied, alpha dropped)`, async (t) => {
    const image = await decodeImage(join(VARIANTS, name));
    const ref = await expectedBytes(join(VARIANTS, `${name}.rgb.npy`));
    t.deepEqual([image.height, image.width, 3], ref.shape);
    const { max } = differences(image.data, ref.data);
    if (LOSSLESS.includes(name)) t.is(max, 0, `${name}: max difference ${max}`);
    else t.true(max <= IMAGE_DECODE_MAX, `${name}: max difference ${max}`);
  });
}

test('decodeImage: orientations 5-8 swap width and height; a buffer decodes like its file', async (t) => {
  const upright = await decodeImage(join(VARIANTS, 'orient_1.jpg'));
  const rotated = await decodeImage(join(VARIANTS, 'orient_6.jpg'));
  t.deepEqual([rotated.width, rotated.height], [upright.height, upright.width]);
  const bytes = await readFile(join(VARIANTS, 'orient_6.jpg'));
  const fromBuffer = await decodeImage(bytes, { name: 'upload' });
  t.deepEqual(fromBuffer.data, rotated.data);
});

test('decodeImage: CMYK JPEG becomes RGB close to PIL (colour-managed, see IMAGE_CMYK_MEAN)', async (t) => {
  const image = await decodeImage(join(VARIANTS, 'cmyk.jpg'));
  const ref = await expectedBytes(join(VARIANTS, 'cmyk.jpg.rgb.npy'));
  t.deepEqual([image.height, image.width, 3], ref.shape);
  const { max, mean } = differences(image.data, ref.data);
  t.log(`CMYK vs PIL: max ${max}, mean ${mean.toFixed(2)}`);
  t.true(mean <= IMAGE_CMYK_MEAN, `mean difference ${mean}`);
  // The same bytes with red and blue swapped are much further from PIL: the bound catches a channel-order slip.
  const swapped = new Uint8Array(image.data.length);
  for (let i = 0; i < swapped.length; i += 3) {
    swapped[i] = image.data[i + 2] as number;
    swapped[i + 1] = image.data[i + 1] as number;
    swapped[i + 2] = image.data[i] as number;
  }
  t.true(differences(swapped, ref.data).mean > IMAGE_CMYK_MEAN);
});

async function withTempDir(run: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'repvgg-images-'));
  try {
    await run(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

async function rejectsNaming(t: ExecutionContext, promise: Promise<unknown>, name: string, pattern?: RegExp): Promise<void> {
  const error = await t.throwsAsync(promise, { instanceOf: FormatError });
  t.true(error?.message.includes(name), `message should name ${name}: ${error?.message}`);
  if (pattern !== undefined) t.regex(error?.message ?? '', pattern);
}

test('decodeImage: empty, text, truncated, corrupt and missing files are FormatErrors naming the file', async (t) => {
  await withTempDir(async (dir) => {
    const jpeg = await readFile(join(COMPARE, 'down_500x375.jpg'));
    const files: Record<string, Uint8Array> = {
      'empty.jpg': new Uint8Array(0),
      'text.png': new TextEncoder().encode('not an image at all, just text\n'),
      'truncated.jpg': jpeg.subarray(0, Math.floor(jpeg.length / 2)),
      'truncated-header.png': (await readFile(join(VARIANTS, 'gray.png'))).subarray(0, 20),
    };
    const corrupt = Buffer.from(jpeg);
    for (let i = 600; i < 2000; i++) corrupt[i] = (i * 7) & 255;
    files['corrupt.jpg'] = corrupt;
    for (const [name, bytes] of Object.entries(files)) await writeFile(join(dir, name), bytes);
    for (const name of Object.keys(files)) await rejectsNaming(t, decodeImage(join(dir, name)), join(dir, name));
    await rejectsNaming(t, decodeImage(join(dir, 'missing.jpg')), join(dir, 'missing.jpg'));
    await rejectsNaming(t, decodeImage(new Uint8Array(0), { name: 'upload 3' }), 'upload 3', /0 bytes/);
    await rejectsNaming(t, decodeImage(files['text.png'] as Uint8Array, { name: 'upload 4' }), 'upload 4');
  });
});

test('decodeImage: a decompression bomb, images over maxPixels and files over maxFileBytes are FormatErrors', async (t) => {
  const bomb = join(VARIANTS, 'bomb.png'); // declares 50000 x 50000 pixels
  t.true(50000 * 50000 > DEFAULT_MAX_PIXELS);
  await rejectsNaming(t, decodeImage(bomb), bomb, /at most 67108864 pixels/);
  const small = join(VARIANTS, 'rgb.jpg'); // 40 x 28
  await rejectsNaming(t, decodeImage(small, { maxPixels: 40 * 28 - 1 }), small, /maxPixels/);
  t.is((await decodeImage(small, { maxPixels: 40 * 28 })).width, 40);
  await t.throwsAsync(decodeImage(small, { maxPixels: 0 }), { instanceOf: ArgumentValueError, message: /maxPixels/ });
  const { size } = await stat(small);
  await rejectsNaming(t, decodeImage(small, { maxFileBytes: size - 1 }), small, new RegExp(`at most ${size - 1} bytes`));
  t.is((await decodeImage(small, { maxFileBytes: size })).height, 28);
  await t.throwsAsync(decodeImage(42 as unknown as string), { instanceOf: ArgumentTypeError, message: /number 42/ });
});

/** A copy of a JPEG with the width and height of its frame header (SOF0/SOF2) replaced. */
function withFrameSize(jpeg: Uint8Array, width: number, height: number): Uint8Array {
  const out = Uint8Array.from(jpeg);
  for (let i = 2; i + 9 < out.length; ) {
    if (out[i] !== 0xff) throw new Error(`no marker at ${i}`);
    const marker = out[i + 1] as number;
    if (marker === 0xc0 || marker === 0xc2) {
      new DataView(out.buffer).setUint16(i + 5, height);
      new DataView(out.buffer).setUint16(i + 7, width);
      return out;
    }
    i += 2 + new DataView(out.buffer).getUint16(i + 2);
  }
  throw new Error('no frame header');
}

/** A copy of a JPEG with one more APP1 segment (payload as given) right after SOI. */
function withApp1(jpeg: Uint8Array, payload: Uint8Array): Uint8Array {
  const segment = new Uint8Array(4 + payload.length);
  segment.set([0xff, 0xe1, (payload.length + 2) >> 8, (payload.length + 2) & 255]);
  segment.set(payload, 4);
  return Buffer.concat([jpeg.subarray(0, 2), segment, jpeg.subarray(2)]);
}

/** EXIF (little-endian TIFF) whose IFD0 holds one orientation entry, or whose IFD0 offset points past the payload. */
function exifPayload(orientation: number, brokenOffset = false): Uint8Array {
  const tiff = new Uint8Array(8 + 2 + 12 + 4);
  const view = new DataView(tiff.buffer);
  tiff.set([0x49, 0x49]); // "II"
  view.setUint16(2, 42, true);
  view.setUint32(4, brokenOffset ? 4096 : 8, true);
  view.setUint16(8, 1, true); // one entry
  view.setUint16(10, 0x0112, true); // orientation
  view.setUint16(12, 3, true); // SHORT
  view.setUint32(14, 1, true);
  view.setUint16(18, orientation, true);
  return Buffer.concat([Buffer.from('Exif\0\0', 'latin1'), tiff]);
}

test('decodeJpeg (libjpeg-turbo) gives sharp\'s exact pixels for plain JPEGs and declines the rest with the reason', async (t) => {
  const addon = loadCpuAddon();
  const sharpRgb = (bytes: Uint8Array): Promise<Uint8Array> =>
    sharp(bytes, { failOn: 'warning', autoOrient: true, ignoreIcc: true }).removeAlpha().toColourspace('srgb').raw().toBuffer();
  const plain = [
    ...['down_1000x300.jpg', 'down_333x500.jpg', 'down_500x375.jpg', 'down_900x1200.jpg', 'up_50x160.jpg'].map((f) => join(COMPARE, f)),
    ...['gray.jpg', 'rgb.jpg', 'orient_1.jpg'].map((f) => join(VARIANTS, f)),
  ];
  const photo = await readFile(join(COMPARE, 'down_500x375.jpg'));
  const cases: [string, Uint8Array][] = [
    ...(await Promise.all(plain.map(async (path) => [path, await readFile(path)] as [string, Uint8Array]))),
    ['progressive', await sharp(photo).jpeg({ progressive: true, quality: 90 }).toBuffer()],
    ['4:4:4 chroma', await sharp(photo).jpeg({ chromaSubsampling: '4:4:4', quality: 95 }).toBuffer()],
    ['EXIF orientation 1 (hand-made)', withApp1(photo, exifPayload(1))],
  ];
  for (const [name, bytes] of cases) {
    const decoded = await addon.decodeJpeg({ bytes, maxPixels: DEFAULT_MAX_PIXELS });
    if (!('data' in decoded)) {
      t.fail(`${name} declined: ${decoded.declined}`);
      continue;
    }
    t.deepEqual(Buffer.from(decoded.data), Buffer.from(await sharpRgb(bytes)), `${name}: sharp's pixels`);
    t.is(decoded.data.length, decoded.width * decoded.height * 3);
  }
  const declined: [string, Uint8Array, RegExp][] = [
    ['orient_6.jpg', await readFile(join(VARIANTS, 'orient_6.jpg')), /^EXIF orientation 6$/],
    ['cmyk.jpg', await readFile(join(VARIANTS, 'cmyk.jpg')), /^colour space 4$/],
    ['truncated', photo.subarray(0, photo.length >> 1), /^libjpeg warning: Premature end of JPEG file/],
    ['no frame', photo.subarray(0, 200), /^libjpeg (error|warning)/],
    ['60000 x 60000 frame', withFrameSize(photo, 60000, 60000), /^60000x60000 pixels \(at most 67108864\)$/],
    ['EXIF IFD offset past the segment', withApp1(photo, exifPayload(1, true)), /^malformed EXIF$/],
    ['two EXIF segments', withApp1(withApp1(photo, exifPayload(1)), exifPayload(1)), /^more than one EXIF segment$/],
    ['EXIF orientation 3 (hand-made)', withApp1(photo, exifPayload(3)), /^EXIF orientation 3$/],
  ];
  for (const [name, bytes, reason] of declined) {
    const result = await addon.decodeJpeg({ bytes, maxPixels: DEFAULT_MAX_PIXELS });
    t.true('declined' in result && reason.test(result.declined), `${name}: ${JSON.stringify('declined' in result ? result.declined : 'decoded')}`);
  }
  // Scans: sharp's progressive encoding writes several; a lower bound than the default 500 declines such a file.
  const progressive = cases.find(([name]) => name === 'progressive')![1];
  const fewScans = await addon.decodeJpeg({ bytes: progressive, maxPixels: DEFAULT_MAX_PIXELS, maxScans: 2 });
  t.true('declined' in fewScans && fewScans.declined === 'more than 2 scans', JSON.stringify(fewScans));
  t.true('data' in (await addon.decodeJpeg({ bytes: photo, maxPixels: DEFAULT_MAX_PIXELS, maxScans: 1 })), 'a baseline JPEG has one scan');
  t.throws(() => addon.decodeJpeg({ bytes: photo, maxPixels: 10, maxScans: 501 }), { message: /maxScans must be from 1 to 500, got 501/ });
  const over = await addon.decodeJpeg({ bytes: photo, maxPixels: 500 * 375 - 1 });
  t.true('declined' in over && /500x375 pixels/.test(over.declined));
  t.throws(() => addon.decodeJpeg({ bytes: new TextEncoder().encode('GIF89a'), maxPixels: 10 }), { message: /JPEG SOI/ });
  t.throws(() => addon.decodeJpeg({ bytes: [0xff, 0xd8, 0xff] as unknown as Uint8Array, maxPixels: 10 }), { message: /Uint8Array for bytes/ });
  // Declined files keep sharp's behaviour through decodeImage: rotated, or the canonical errors.
  t.is((await decodeImage(join(VARIANTS, 'orient_6.jpg'))).width, 28);
  await rejectsNaming(t, decodeImage(withFrameSize(photo, 60000, 60000), { name: 'tall upload' }), 'tall upload', /at most 67108864 pixels/);
});

// ---------------------------------------------------------------------------------------------------------------
// The evaluation transform against torchvision + PIL

const COMPARED = [
  'down_500x375.jpg',
  'down_333x500.jpg',
  'down_640x427.webp',
  'down_300x260.png',
  'down_1000x300.jpg',
  'down_900x1200.jpg',
  'up_120x90.png',
  'up_50x160.jpg',
  'up_200x180.webp',
];

test('Resize(256) + CenterCrop(224) matches torchvision 0.14 + PIL in 0..255 units', async (t) => {
  const report: string[] = [];
  for (const name of COMPARED) {
    const image = await decodeImage(join(COMPARE, name));
    const ours = resizeCenterCrop(image, 256, 224);
    const ref = await decodeImage(join(COMPARE, `${name}.expected.png`)); // lossless PNG: the reference bytes
    t.deepEqual([ref.width, ref.height], [224, 224]);
    const { max, mean } = differences(ours, ref.data);
    const bound = name.startsWith('up_') ? IMAGE_UPSCALE_MAX : IMAGE_DOWNSCALE_MAX;
    t.true(max <= bound, `${name}: max ${max} > ${bound}`);
    report.push(`${name} max ${max} mean ${mean.toFixed(3)}`);
  }
  t.log(report.join('; '));
});

test('preprocessImage equals torchvision float32 tensors: 64x64 preset (resize 73) and a crop larger than the resize', async (t) => {
  for (const [name, resize, crop, expected] of [
    ['down_500x375.jpg', 73, 64, 'down_500x375.r73c64.npy'],
    ['up_120x90.png', 48, 64, 'up_120x90.r48c64.npy'],
  ] as const) {
    const ref = await readNpy(join(COMPARE, expected));
    if (ref.dtype !== 'float32') throw new Error('expected float32');
    const ours = await preprocessImage(join(COMPARE, name), { preprocess: imagenetPreprocess(resize, crop) });
    t.deepEqual(ref.shape, [3, crop, crop]);
    let max = 0;
    for (let i = 0; i < ours.length; i++) max = Math.max(max, Math.abs((ours[i] as number) - (ref.data[i] as number)));
    t.is(max, 0, `${name}: max |ours - torchvision| = ${max}`);
  }
});

test('preprocessBatch stacks preprocessImage results in input order as (N, 3, crop, crop)', async (t) => {
  const names = ['up_50x160.jpg', 'down_640x427.webp', 'down_333x500.jpg'];
  const paths = names.map((n) => join(COMPARE, n));
  const batch = await preprocessBatch(paths, { concurrency: 2 });
  t.deepEqual(batch.shape, [3, 3, 224, 224]);
  for (let i = 0; i < paths.length; i++) {
    const single = await preprocessImage(paths[i] as string, { preprocess: IMAGENET_PREPROCESS });
    t.deepEqual(batch.data.subarray(i * single.length, (i + 1) * single.length), single);
  }
  const bad = join(VARIANTS, 'bomb.png');
  await rejectsNaming(t, preprocessBatch([paths[0] as string, bad]), bad);
  t.throws(() => imagenetPreprocess(256, 0), { instanceOf: ArgumentValueError, message: /preprocess.crop.*number 0/ });
});

test('preprocessBatch into a given array: written in place on a SharedArrayBuffer, copied into a plain one; bad ones are typed errors', async (t) => {
  const paths = ['up_50x160.jpg', 'down_640x427.webp'].map((n) => join(COMPARE, n));
  const expected = await preprocessBatch(paths);
  const sample = 3 * 224 * 224;
  const shared = new Float32Array(new SharedArrayBuffer(2 * sample * 4)).fill(Number.NaN);
  const intoShared = await preprocessBatch(paths, { into: shared });
  t.is(intoShared.data, shared, 'the given array is the batch');
  t.deepEqual(intoShared.data, expected.data);
  const single = new Float32Array(new SharedArrayBuffer(sample * 4)).fill(Number.NaN);
  t.deepEqual((await preprocessBatch([paths[1]!], { into: single })).data, expected.data.subarray(sample), 'one image');
  const plain = new Float32Array(2 * sample).fill(Number.NaN);
  t.is((await preprocessBatch(paths, { into: plain })).data, plain);
  t.deepEqual(plain, expected.data);

  await t.throwsAsync(preprocessBatch(paths, { into: new Float32Array(sample) }), { instanceOf: ArgumentValueError, message: /options\.into.*\(2, 3, 224, 224\) = 301056 values but it holds 150528/ });
  await t.throwsAsync(preprocessBatch(paths, { into: [] as unknown as Float32Array }), { instanceOf: ArgumentTypeError, message: /Float32Array for options\.into but received/ });
  const task: SampleTask = { input: paths[0]!, transform: { kind: 'center-crop', resize: 256, crop: 224 }, key: 0, mean: [0, 0, 0], std: [1, 1, 1] };
  await t.throwsAsync(decodeWorkerPool().run({ ...task, output: new Float32Array(sample) }), { instanceOf: ArgumentValueError, message: /SharedArrayBuffer for the task's output/ });
  const short = new Float32Array(new SharedArrayBuffer(8 * 4));
  await t.throwsAsync(decodeWorkerPool().run({ ...task, output: short }), { instanceOf: ArgumentValueError, message: /\(3, 224, 224\) = 150528 values in the task's output but it holds 8/ });
});

test('resampleBilinear: any window equals that part of the whole resized image, on random images and sizes', (t) => {
  let seed = 7;
  for (const [width, height, outWidth, outHeight] of [
    [97, 61, 40, 33],
    [13, 29, 50, 71],
    [64, 64, 64, 64],
    [300, 17, 31, 40],
  ] as const) {
    const image = randomImage(width, height, seed++);
    const region = { left: 3, top: 2, width: width - 5, height: height - 4 };
    const whole = resampleBilinear(image, region, outWidth, outHeight, { left: 0, top: 0, width: outWidth, height: outHeight });
    const window = { left: 5, top: 4, width: outWidth - 9, height: outHeight - 7 };
    const part = resampleBilinear(image, region, outWidth, outHeight, window);
    for (let y = 0; y < window.height; y++) {
      const row = whole.subarray(((y + window.top) * outWidth + window.left) * 3, ((y + window.top) * outWidth + window.left + window.width) * 3);
      t.deepEqual(part.subarray(y * window.width * 3, (y + 1) * window.width * 3), row);
    }
  }
  // Same size in and out: PIL's weights are then exactly one tap of 1, so the bytes pass through unchanged.
  const image = randomImage(23, 19, 99);
  const full = { left: 0, top: 0, width: 23, height: 19 };
  t.deepEqual(resampleBilinear(image, full, 23, 19, full), image.data);
});

test('native resampling refuses taps, rows and outputs outside its buffers with typed errors (no out-of-bounds read)', (t) => {
  // A valid 2x2 -> 2x2 call (one tap of weight 1.0 each), then one field at a time made wrong.
  const one = 1 << 22;
  const valid = {
    src: new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]), srcOffset: 0, srcStride: 6, regionWidth: 2, rowFirst: 0, rowEnd: 2,
    hFirst: new Int32Array([0, 1]), hCount: new Int32Array([1, 1]), hWeights: new Int32Array([one, one]), hMaxTaps: 1,
    vFirst: new Int32Array([0, 1]), vCount: new Int32Array([1, 1]), vWeights: new Int32Array([one, one]), vMaxTaps: 1,
    out: new Uint8Array(12), outOffset: 0, outStride: 6,
  };
  const resample = (options: typeof valid) => callNativeSync(() => loadCpuAddon().resampleBilinearRgb(options));
  resample(valid);
  t.deepEqual([...valid.out], [...valid.src], 'one tap of 1.0 passes the bytes through');
  const wrong: [string, Partial<Record<keyof typeof valid, unknown>>, RegExp][] = [
    ['a tap past the region', { hFirst: new Int32Array([0, 2]) }, /taps read outside/],
    ['a negative first tap', { vFirst: new Int32Array([-1, 1]) }, /taps read outside/],
    ['more taps than maxTaps', { hCount: new Int32Array([1, 2]) }, /taps read outside/],
    ['rows past the source', { rowEnd: 3, vFirst: new Int32Array([0, 2]) }, /source rows \[0, 3\) of 2 pixels do not lie in 12 bytes/],
    ['a source offset past the end', { srcOffset: 4 }, /do not lie in 12 bytes/],
    ['an output too small', { out: new Uint8Array(11) }, /2 x 2 pixels does not fit 11 bytes/],
    ['too few weights', { hWeights: new Int32Array([one]) }, /h taps: 2 positions, 2 counts, 1 weights/],
  ];
  for (const [what, change, message] of wrong) {
    t.throws(() => resample({ ...valid, ...change } as typeof valid), { instanceOf: ShapeError, message }, what);
  }
  t.throws(() => resample({ ...valid, src: new Float32Array(12) } as unknown as typeof valid), { instanceOf: ArgumentTypeError, message: /Uint8Array for src/ });
  t.throws(() => resample({ ...valid, hFirst: [0, 1] } as unknown as typeof valid), { instanceOf: ArgumentTypeError, message: /Int32Array for hFirst/ });
});

test('torchvision size rules: int() for the long side, round-half-even crop offsets, zero padding', (t) => {
  t.deepEqual(resizedSize(500, 375, 256), { width: 341, height: 256 });
  t.deepEqual(resizedSize(333, 500, 256), { width: 256, height: 384 });
  t.deepEqual(resizedSize(1000, 300, 256), { width: 853, height: 256 });
  t.is(roundHalfEven(58.5), 58);
  t.is(roundHalfEven(59.5), 60);
  t.is(roundHalfEven(3.2), 3);
  t.deepEqual(centerCropBox(341, 256, 224), { left: 58, top: 16, width: 224, height: 224 }); // (341 - 224) / 2 = 58.5
  t.deepEqual(centerCropBox(48, 64, 64), { left: -8, top: 0, width: 64, height: 64 });
});

// ---------------------------------------------------------------------------------------------------------------
// Labels and the limiter

test('imagenetClassNames: the 1000 ImageNet classes in index order', (t) => {
  const names = imagenetClassNames();
  t.is(names.length, 1000);
  t.is(names[0], 'tench');
  t.is(names[207], 'golden retriever');
  t.is(names[999], 'toilet tissue');
  names[0] = 'changed';
  t.is(imagenetClassNames()[0], 'tench');
});

test('readLabelsFile: one label per line, CRLF and a final newline accepted; typed errors name the file', async (t) => {
  await withTempDir(async (dir) => {
    const good = join(dir, 'labels.txt');
    await writeFile(good, 'cat\r\ndog\r\nsea otter\r\n');
    t.deepEqual(await readLabelsFile(good), ['cat', 'dog', 'sea otter']);
    const cases: Record<string, string | Uint8Array> = {
      'empty.txt': '',
      'blank-line.txt': 'cat\n\ndog\n',
      'binary.txt': new Uint8Array([0x63, 0x00, 0xff, 0xfe]),
      'huge.txt': 'x\n'.repeat(MAX_LABELS_FILE_BYTES / 2 + 1),
    };
    for (const [name, content] of Object.entries(cases)) {
      await writeFile(join(dir, name), content);
      await rejectsNaming(t, readLabelsFile(join(dir, name)), join(dir, name));
    }
    await rejectsNaming(t, readLabelsFile(join(dir, 'missing.txt')), join(dir, 'missing.txt'));
  });
});

test('createLimiter: never more than N tasks at once, every result in order, failures passed on', async (t) => {
  const limit = createLimiter(3);
  let running = 0;
  let peak = 0;
  const results = await Promise.all(
    Array.from({ length: 20 }, (_, i) =>
      limit(async () => {
        running++;
        peak = Math.max(peak, running);
        await new Promise((resolve) => setImmediate(resolve));
        running--;
        return i * i;
      }),
    ),
  );
  t.is(peak, 3);
  t.deepEqual(results, Array.from({ length: 20 }, (_, i) => i * i));
  await t.throwsAsync(limit(() => Promise.reject(new Error('boom'))), { message: 'boom' });
  t.is(await limit(() => Promise.resolve('after a failure')), 'after a failure');
  t.throws(() => createLimiter(0), { instanceOf: ArgumentValueError, message: /concurrency/ });
});
