// The data pipeline: IDX parsing, Fashion-MNIST and .npy datasets (and their errors), the transforms against
// plain reference functions, and the DataLoader's order, determinism, resume and off-thread behaviour.
// Not for: training itself. Throughput is measured outside the tests (it is a benchmark, not a property).

import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { gzipSync } from 'node:zlib';

import test from 'ava';
import type { ExecutionContext } from 'ava';

import { ArgumentTypeError, ArgumentValueError, DisposedError, FormatError, ShapeError } from '../lib/errors.js';
import { writeNpy } from '../lib/io/npy.js';
import { FASHION_MNIST_DIR, loadFashionMnist, loadNpyDataset } from '../lib/data/datasets.js';
import type { Dataset } from '../lib/data/datasets.js';
import { decodeIdx, readIdx } from '../lib/data/idx.js';
import { DataLoader, evalBatches } from '../lib/data/loader.js';
import type { Batch, DataLoaderOptions } from '../lib/data/loader.js';
import { Rng, epochOrder } from '../lib/data/random.js';
import {
  FASHION_MNIST_MEAN,
  FASHION_MNIST_NORMALIZATION,
  FASHION_MNIST_STD,
  channelStatistics,
  drawCropFlip,
  horizontalFlip,
  normalizeImage,
  padCrop,
} from '../lib/data/transforms.js';
import type { AugmentOptions, ImageGeometry, Normalization } from '../lib/data/transforms.js';

let scratch = '';
test.before(async () => {
  scratch = await mkdtemp(join(tmpdir(), 'repvgg-data-test-'));
});
test.after.always(async () => {
  if (scratch !== '') await rm(scratch, { recursive: true, force: true });
});

// ---------------------------------------------------------------------------------------------------------------
// Helpers

/** The bytes of an IDX file of unsigned bytes: magic 00 00 08 rank, big-endian dimensions, data. */
function idxBytes(shape: readonly number[], data: Uint8Array): Buffer {
  const head = Buffer.alloc(4 + 4 * shape.length);
  head[2] = 0x08;
  head[3] = shape.length;
  shape.forEach((d, i) => head.writeUInt32BE(d, 4 + 4 * i));
  return Buffer.concat([head, data]);
}

/**
 * A float32 dataset whose every value is distinct and exact (element index), labels i % numClasses, with the
 * identity normalization: batches must reproduce the stored values bit for bit.
 */
function countingDataset(count: number, geometry: ImageGeometry, numClasses = 3): Dataset {
  const { channels, height, width } = geometry;
  const images = new Float32Array(count * channels * height * width);
  for (let i = 0; i < images.length; i++) images[i] = i;
  const labels = new Int32Array(count);
  for (let i = 0; i < count; i++) labels[i] = i % numClasses;
  return { images, labels, count, channels, height, width, numClasses, name: 'counting', normalization: { scale: 1, mean: [0], std: [1] } };
}

/** Random uint8 pixels with a per-channel normalization, as real image data would come. */
function randomByteDataset(count: number, geometry: ImageGeometry, seed: number): Dataset {
  const { channels, height, width } = geometry;
  const rng = new Rng(seed);
  const images = new Uint8Array(count * channels * height * width);
  for (let i = 0; i < images.length; i++) images[i] = rng.below(256);
  const labels = new Int32Array(count);
  for (let i = 0; i < count; i++) labels[i] = rng.below(10);
  const normalization: Normalization = { scale: 1 / 255, mean: [0.3, 0.6].slice(0, channels), std: [0.25, 0.5].slice(0, channels) };
  return { images, labels, count, channels, height, width, numClasses: 10, name: 'random bytes', normalization };
}

async function collect(batches: AsyncIterable<Batch>): Promise<Batch[]> {
  const result: Batch[] = [];
  for await (const batch of batches) result.push(batch);
  return result;
}

/** Run `body` with a loader and always close it. */
async function withLoader<T>(dataset: Dataset, options: DataLoaderOptions, body: (loader: DataLoader) => Promise<T>): Promise<T> {
  const loader = new DataLoader(dataset, options);
  try {
    return await body(loader);
  } finally {
    await loader.close();
  }
}

function sameBatches(t: ExecutionContext, ours: readonly Batch[], expected: readonly Batch[], what: string): void {
  t.is(ours.length, expected.length, `${what}: number of batches`);
  ours.forEach((batch, i) => {
    const ref = expected[i] as Batch;
    t.is(batch.step, ref.step, `${what}: step of batch ${i}`);
    t.deepEqual(batch.images.shape, ref.images.shape, `${what}: shape of step ${ref.step}`);
    t.deepEqual(batch.indices, ref.indices, `${what}: indices of step ${ref.step}`);
    t.deepEqual(batch.labels, ref.labels, `${what}: labels of step ${ref.step}`);
    t.deepEqual(batch.images.data, ref.images.data, `${what}: images of step ${ref.step}`);
  });
}

const ORDERED = { shuffle: false, augment: false, seed: 0 } as const;

// ---------------------------------------------------------------------------------------------------------------
// IDX

test('readIdx reads gzipped and plain IDX files written here', async (t) => {
  const data = Uint8Array.from({ length: 2 * 3 * 4 }, (_, i) => (i * 37) % 256);
  const plain = idxBytes([2, 3, 4], data);
  await writeFile(join(scratch, 'small-idx3-ubyte.gz'), gzipSync(plain));
  await writeFile(join(scratch, 'small-idx3-ubyte'), plain);
  for (const name of ['small-idx3-ubyte.gz', 'small-idx3-ubyte']) {
    const array = await readIdx(join(scratch, name));
    t.deepEqual(array.shape, [2, 3, 4], name);
    t.deepEqual(array.data, data, name);
  }
  const labels = decodeIdx(idxBytes([5], Uint8Array.from([9, 0, 3, 3, 1])), 'labels');
  t.deepEqual(labels, { shape: [5], data: Uint8Array.from([9, 0, 3, 3, 1]) });
});

test('readIdx rejects bad magic, other element types, truncated data and truncated gzip with a FormatError naming the file', async (t) => {
  const good = idxBytes([4, 2], new Uint8Array(8));
  const cases: Array<[string, Uint8Array, RegExp]> = [
    ['bad-magic', Buffer.concat([Buffer.from([0x12, 0x34, 0x08, 0x02]), good.subarray(4)]), /not an IDX file/],
    ['float-type', Buffer.concat([Buffer.from([0, 0, 0x0d, 2]), good.subarray(4)]), /float32 is not supported/],
    ['truncated-dims', good.subarray(0, 9), /truncated inside its 2 dimensions/],
    ['truncated-data', good.subarray(0, good.length - 3), /expected 8 data bytes for shape \[4, 2\] but the file has 5/],
    ['trailing-data', Buffer.concat([good, Buffer.from([1])]), /trailing bytes/],
    ['truncated-gzip', gzipSync(good).subarray(0, 20), /corrupt or truncated gzip/],
  ];
  for (const [name, bytes, message] of cases) {
    const path = join(scratch, `${name}.idx`);
    await writeFile(path, bytes);
    const error = await t.throwsAsync(readIdx(path), { instanceOf: FormatError, message }, name);
    t.true(error?.message.startsWith(path), `${name}: message names the file: ${error?.message}`);
  }
  await t.throwsAsync(readIdx(join(scratch, 'absent.gz'), '--images'), { instanceOf: ArgumentValueError, message: /--images/ });
});

// ---------------------------------------------------------------------------------------------------------------
// Fashion-MNIST (Debian's dataset-fashion-mnist; `npm run setup` installs it)

const haveFashionMnist = existsSync(join(FASHION_MNIST_DIR, 'train-images-idx3-ubyte.gz'));
const fashionTest = haveFashionMnist ? test : test.skip;
let fashionCache: Promise<{ train: Dataset; test: Dataset }> | undefined;
function fashionMnist(): Promise<{ train: Dataset; test: Dataset }> {
  fashionCache ??= Promise.all([loadFashionMnist('train'), loadFashionMnist('test')]).then(([train, testSplit]) => ({
    train,
    test: testSplit,
  }));
  return fashionCache;
}

fashionTest('Fashion-MNIST loads 60000 + 10000 images of 1x28x28 with 10 balanced classes', async (t) => {
  const { train, test: testSplit } = await fashionMnist();
  for (const [dataset, count] of [[train, 60000], [testSplit, 10000]] as const) {
    t.like(dataset, { count, channels: 1, height: 28, width: 28, numClasses: 10 });
    t.true(dataset.images instanceof Uint8Array);
    t.is(dataset.images.length, count * 28 * 28);
    const perClass = new Array<number>(10).fill(0);
    for (const label of dataset.labels) perClass[label] = (perClass[label] ?? 0) + 1;
    t.deepEqual(perClass, new Array<number>(10).fill(count / 10), `${dataset.name}: images per class`);
  }
});

fashionTest('the Fashion-MNIST normalization constants are the training set mean and std', async (t) => {
  const { train } = await fashionMnist();
  const { mean, std } = channelStatistics(train.images, train, 1 / 255);
  t.log(`measured mean ${mean[0]?.toFixed(5)}, std ${std[0]?.toFixed(5)}`);
  t.true(Math.abs((mean[0] as number) - FASHION_MNIST_MEAN) < 1e-3, `mean ${mean[0]}`);
  t.true(Math.abs((std[0] as number) - FASHION_MNIST_STD) < 1e-3, `std ${std[0]}`);
  t.deepEqual(train.normalization, FASHION_MNIST_NORMALIZATION);
});

fashionTest('Fashion-MNIST in order: step k is samples [k*B, (k+1)*B), the last batch is partial', async (t) => {
  const { test: testSplit } = await fashionMnist();
  await withLoader(testSplit, { batchSize: 128, ...ORDERED }, async (loader) => {
    t.is(loader.stepsPerEpoch, 79);
    const [first] = await collect(loader.epoch(0, 0)).then((b) => b.slice(0, 1));
    const [last, ...rest] = await collect(loader.epoch(0, 78));
    t.is(rest.length, 0);
    for (const [batch, step, size] of [[first, 0, 128], [last, 78, 16]] as const) {
      if (batch === undefined) return t.fail(`no batch ${step}`);
      t.is(batch.step, step);
      t.deepEqual(batch.images.shape, [size, 1, 28, 28]);
      const start = step * 128;
      t.deepEqual(batch.indices, Int32Array.from({ length: size }, (_, i) => start + i));
      t.deepEqual(batch.labels, testSplit.labels.slice(start, start + size));
      const raw = testSplit.images.subarray(start * 784, (start + size) * 784);
      t.deepEqual(batch.images.data, normalizeImage(raw, { channels: 1, height: 28 * size, width: 28 }, FASHION_MNIST_NORMALIZATION));
    }
  });
});

test('a missing Fashion-MNIST folder says how to install it', async (t) => {
  const error = await t.throwsAsync(loadFashionMnist('train', join(scratch, 'no-such-folder')), { instanceOf: ArgumentValueError });
  t.regex(error?.message ?? '', /dataset-fashion-mnist/);
  t.regex(error?.message ?? '', /npm run setup/);
});

// ---------------------------------------------------------------------------------------------------------------
// .npy datasets

test('loadNpyDataset reads float32 NCHW images with int64 or int32 labels', async (t) => {
  const x = Float32Array.from({ length: 4 * 2 * 3 * 3 }, (_, i) => i / 10);
  await writeNpy(join(scratch, 'x.npy'), x, [4, 2, 3, 3]);
  await writeNpy(join(scratch, 'y64.npy'), BigInt64Array.from([0n, 2n, 1n, 2n]), [4]);
  await writeNpy(join(scratch, 'y32.npy'), Int32Array.from([0, 2, 1, 2]), [4]);
  for (const y of ['y64.npy', 'y32.npy']) {
    const dataset = await loadNpyDataset(join(scratch, 'x.npy'), join(scratch, y));
    t.like(dataset, { count: 4, channels: 2, height: 3, width: 3, numClasses: 3, name: 'x.npy' });
    t.deepEqual(dataset.labels, Int32Array.from([0, 2, 1, 2]), y);
    t.deepEqual(dataset.images, x);
  }
  const ten = await loadNpyDataset(join(scratch, 'x.npy'), join(scratch, 'y64.npy'), { numClasses: 10 });
  t.is(ten.numClasses, 10);
  // Ordered batches give back the stored values exactly: float32 data is used as given.
  const batches = await collect(evalBatches(ten, 3));
  t.deepEqual(batches.map((b) => b.images.shape), [[3, 2, 3, 3], [1, 2, 3, 3]]);
  t.deepEqual(batches[0]?.images.data, x.subarray(0, 54));
});

test('loadNpyDataset errors name the argument: length mismatch, label out of range, float labels, float64 images', async (t) => {
  const path = (name: string): string => join(scratch, name);
  await writeNpy(path('x5.npy'), new Float32Array(5 * 4), [5, 1, 2, 2]);
  await writeNpy(path('x5f64.npy'), new Float64Array(5 * 4), [5, 1, 2, 2]);
  await writeNpy(path('y4.npy'), new BigInt64Array(4), [4]);
  await writeNpy(path('y5.npy'), BigInt64Array.from([0n, 1n, 9n, 10n, 2n]), [5]);
  await writeNpy(path('y5neg.npy'), Int32Array.from([0, 1, -1, 3, 2]), [5]);
  await writeNpy(path('y5huge.npy'), BigInt64Array.from([0n, 1n, 2n ** 40n, 3n, 2n]), [5]);
  await writeNpy(path('y5f64.npy'), new Float64Array(5), [5]);
  const cases: Array<[string, string, number | undefined, new (...args: never[]) => Error, RegExp]> = [
    ['x5.npy', 'y4.npy', undefined, ShapeError, /as many labels as images for --train-npy but received 5 images .* and 4 labels/],
    ['x5.npy', 'y5.npy', 10, ArgumentValueError, /labels in \[0, 10\) for --train-npy but received 10 at index 3/],
    ['x5.npy', 'y5neg.npy', undefined, ArgumentValueError, /non-negative labels for --train-npy but received -1 at index 2/],
    ['x5.npy', 'y5huge.npy', undefined, ArgumentValueError, /--train-npy but received 1099511627776 at index 2/],
    ['x5.npy', 'y5f64.npy', undefined, ArgumentTypeError, /int64 or int32 labels for --train-npy but received .*float64/],
    ['x5f64.npy', 'y5.npy', undefined, ArgumentTypeError, /float32 or uint8 images for --train-npy but received .*float64/],
    ['x5.npy', 'absent.npy', undefined, ArgumentValueError, /existing file for --train-npy/],
  ];
  for (const [x, y, numClasses, instanceOf, message] of cases) {
    const options = numClasses === undefined ? {} : { numClasses };
    await t.throwsAsync(loadNpyDataset(path(x), path(y), options), { instanceOf, message }, `${x} ${y}`);
  }
});

// ---------------------------------------------------------------------------------------------------------------
// Transforms

const GEOMETRY: ImageGeometry = { channels: 2, height: 5, width: 4 };
const image = Float32Array.from({ length: 2 * 5 * 4 }, (_, i) => i + 1); // no zeros, so padding is visible

test('flipping twice is the identity; one flip mirrors every row', (t) => {
  const flipped = horizontalFlip(image, GEOMETRY);
  t.deepEqual(horizontalFlip(flipped, GEOMETRY), image);
  t.deepEqual(Array.from(flipped.subarray(0, 4)), [4, 3, 2, 1]);
  t.deepEqual(Array.from(flipped.subarray(36, 40)), [40, 39, 38, 37]);
});

test('a crop with padding 0, or the centre window of any padding, is the identity', (t) => {
  t.deepEqual(padCrop(image, GEOMETRY, 0, 0, 0), image);
  t.deepEqual(padCrop(image, GEOMETRY, 3, 3, 3), image);
});

test('a crop from the padded image moves the content and fills with zeros', (t) => {
  // top = left = 0 with padding 1: the window starts one pixel above and left of the image.
  const shifted = padCrop(image, GEOMETRY, 1, 0, 0);
  for (let c = 0; c < 2; c++) {
    for (let y = 0; y < 5; y++) {
      for (let x = 0; x < 4; x++) {
        const expected = y === 0 || x === 0 ? 0 : (image[(c * 5 + y - 1) * 4 + x - 1] as number);
        t.is(shifted[(c * 5 + y) * 4 + x], expected, `c${c} y${y} x${x}`);
      }
    }
  }
  // The opposite corner shifts the other way; the content moves but its values are kept.
  const other = padCrop(image, GEOMETRY, 2, 4, 4);
  t.is(other[0], image[2 * 4 + 2]);
  t.is(other[4 * 4 + 3], 0);
});

test('augmentation draws cover every crop offset and flip about half the time, deterministically', (t) => {
  const augment: AugmentOptions = { padding: 2, flipProbability: 0.5 };
  const tops = new Array<number>(5).fill(0);
  const lefts = new Array<number>(5).fill(0);
  let flips = 0;
  const n = 20000;
  for (let position = 0; position < n; position++) {
    const draw = drawCropFlip(7, 1, position, augment);
    tops[draw.top] = (tops[draw.top] ?? 0) + 1;
    lefts[draw.left] = (lefts[draw.left] ?? 0) + 1;
    if (draw.flip) flips++;
    t.deepEqual(drawCropFlip(7, 1, position, augment), draw);
  }
  t.is(tops.length, 5);
  t.is(lefts.length, 5);
  // Binomial(20000, 1/5) has std 57 and Binomial(20000, 1/2) std 71: 6 std bounds, and the draws are fixed.
  for (const count of [...tops, ...lefts]) t.true(Math.abs(count - n / 5) < 350, `offset count ${count}`);
  t.true(Math.abs(flips - n / 2) < 430, `flips ${flips}`);
  t.deepEqual(drawCropFlip(7, 1, 0, { padding: 0, flipProbability: 0 }), { top: 0, left: 0, flip: false });
});

/** The random byte dataset as float32 values in [0, 1), with its own per-channel normalization. */
function asFloatDataset(dataset: Dataset): Dataset {
  const images = Float32Array.from(dataset.images, (v) => v / 256 + 1 / 512);
  return { ...dataset, images, name: 'random floats', normalization: { scale: 1, mean: [0.4, 0.5], std: [0.2, 0.3] } };
}

test('augmented batches equal normalize(flip(crop(raw))) with the drawn choices, for uint8 and float32 data', async (t) => {
  const geometry: ImageGeometry = { channels: 2, height: 6, width: 5 };
  const bytes = randomByteDataset(40, geometry, 11);
  const seed = 5;
  const epoch = 3;
  // Padding 6 exceeds the image, so some windows lie wholly or partly outside it.
  for (const dataset of [bytes, asFloatDataset(bytes)]) {
    for (const augment of [{ padding: 2, flipProbability: 0.5 }, { padding: 6, flipProbability: 0.5 }]) {
      const what = `${dataset.name}, padding ${augment.padding}`;
      const batches = await withLoader(dataset, { batchSize: 16, shuffle: true, augment, seed }, (loader) => collect(loader.epoch(epoch)));
      const order = epochOrder(40, true, seed, epoch);
      let flipped = 0;
      let moved = 0;
      for (const batch of batches) {
        batch.indices.forEach((index, i) => {
          const position = batch.step * 16 + i;
          t.is(index, order[position] as number);
          const draw = drawCropFlip(seed, epoch, position, augment);
          const raw = Float32Array.from(dataset.images.subarray(index * 60, (index + 1) * 60));
          const cropped = padCrop(raw, geometry, augment.padding, draw.top, draw.left);
          const transformed = draw.flip ? horizontalFlip(cropped, geometry) : cropped;
          const expected = normalizeImage(transformed, geometry, dataset.normalization as Normalization);
          t.deepEqual(batch.images.data.subarray(i * 60, (i + 1) * 60), expected, `${what}: sample ${position}`);
          if (draw.flip) flipped++;
          if (draw.top !== augment.padding || draw.left !== augment.padding) moved++;
        });
      }
      t.true(flipped > 0 && flipped < 40 && moved > 0, `${what}: flipped ${flipped}, moved ${moved}`);
    }
  }
});

// ---------------------------------------------------------------------------------------------------------------
// DataLoader: order, shuffling, determinism, resume

test('without shuffle and augment, step k holds samples [k*B, (k+1)*B) exactly; dropLast drops the partial batch', async (t) => {
  const geometry: ImageGeometry = { channels: 2, height: 3, width: 4 };
  const dataset = countingDataset(10, geometry);
  const batches = await withLoader(dataset, { batchSize: 4, ...ORDERED }, async (loader) => {
    t.is(loader.stepsPerEpoch, 3);
    return collect(loader.epoch(0));
  });
  t.deepEqual(batches.map((b) => [b.step, b.images.shape]), [[0, [4, 2, 3, 4]], [1, [4, 2, 3, 4]], [2, [2, 2, 3, 4]]]);
  batches.forEach((batch) => {
    const start = batch.step * 4;
    const end = Math.min(start + 4, 10);
    t.deepEqual(batch.images.data, dataset.images.slice(start * 24, end * 24));
    t.deepEqual(batch.labels, dataset.labels.slice(start, end));
    t.deepEqual(batch.indices, Int32Array.from({ length: end - start }, (_, i) => start + i));
  });
  const dropped = await withLoader(dataset, { batchSize: 4, ...ORDERED, dropLast: true }, async (loader) => {
    t.is(loader.stepsPerEpoch, 2);
    return collect(loader.epoch(5));
  });
  sameBatches(t, dropped, batches.slice(0, 2), 'dropLast, and epochs do not matter without shuffle');
});

test('shuffling visits a permutation, the same for the same (seed, epoch), another for another epoch or seed', async (t) => {
  const dataset = countingDataset(1000, { channels: 1, height: 2, width: 2 });
  const options = { batchSize: 64, shuffle: true, augment: true, seed: 42 } as const;
  const order = (batches: readonly Batch[]): number[] => batches.flatMap((b) => Array.from(b.indices));
  const [e0, e1, e2] = await withLoader(dataset, options, async (loader) => [
    await collect(loader.epoch(0)),
    await collect(loader.epoch(1)),
    await collect(loader.epoch(2)),
  ]);
  const again = await withLoader(dataset, options, async (loader) => [await collect(loader.epoch(1)), await collect(loader.epoch(0))]);
  const otherSeed = await withLoader(dataset, { ...options, seed: 43 }, (loader) => collect(loader.epoch(0)));
  for (const batches of [e0, e1, e2, otherSeed]) {
    t.deepEqual([...order(batches as Batch[])].sort((a, b) => a - b), Array.from({ length: 1000 }, (_, i) => i));
  }
  // A fresh loader gives the same epochs (also in another order of epochs, and e1 after the prefetched hand-over).
  sameBatches(t, again[0] as Batch[], e1 as Batch[], 'epoch 1 again');
  sameBatches(t, again[1] as Batch[], e0 as Batch[], 'epoch 0 again');
  t.notDeepEqual(order(e0 as Batch[]), order(e1 as Batch[]));
  t.notDeepEqual(order(e1 as Batch[]), order(e2 as Batch[]));
  t.notDeepEqual(order(e0 as Batch[]), order(otherSeed));
  t.notDeepEqual(order(e0 as Batch[]).slice(0, 64), Array.from({ length: 64 }, (_, i) => i));
});

test('resuming at startStep yields exactly the remaining batches of the uninterrupted epoch', async (t) => {
  const dataset = randomByteDataset(1000, { channels: 1, height: 8, width: 8 }, 3);
  const options = { batchSize: 64, shuffle: true, augment: { padding: 2, flipProbability: 0.5 }, seed: 9 } as const;
  const full = await withLoader(dataset, options, async (loader) => {
    await collect(loader.epoch(0));
    return collect(loader.epoch(1));
  });
  t.is(full.length, 16);
  const resumed = await withLoader(dataset, options, (loader) => collect(loader.epoch(1, 5)));
  sameBatches(t, resumed, full.slice(5), 'resumed at step 5');
  // Breaking out mid-epoch and re-entering at the next step, on the same loader, also continues seamlessly.
  const parts = await withLoader(dataset, options, async (loader) => {
    const head: Batch[] = [];
    for await (const batch of loader.epoch(1)) {
      head.push(batch);
      if (batch.step === 9) break;
    }
    return [...head, ...(await collect(loader.epoch(1, 10)))];
  });
  sameBatches(t, parts, full, 'break at 9, resume at 10');
  // batchAt builds the same batch on the calling thread.
  await withLoader(dataset, options, async (loader) => {
    sameBatches(t, [loader.batchAt(1, 7), loader.batchAt(1, 15)], [full[7] as Batch, full[15] as Batch], 'batchAt');
  });
});

test('evalBatches covers the dataset once, in order, without augmentation', async (t) => {
  const dataset = countingDataset(23, { channels: 1, height: 2, width: 3 });
  const batches = await collect(evalBatches(dataset, 5));
  t.deepEqual(batches.map((b) => b.labels.length), [5, 5, 5, 5, 3]);
  t.deepEqual(new Float32Array(batches.flatMap((b) => Array.from(b.images.data))), dataset.images);
});

// ---------------------------------------------------------------------------------------------------------------
// DataLoader: threads, lifetime and argument errors

test('batches are built off the main thread: the event loop runs while a batch is awaited', async (t) => {
  // Each batch takes the worker milliseconds to build; the main thread's immediate callback, queued after the
  // request, runs before the batch arrives. A loader building batches on the main thread would resolve first.
  const dataset = randomByteDataset(4096 * 3, { channels: 1, height: 28, width: 28 }, 1);
  const events = await withLoader(dataset, { batchSize: 4096, shuffle: true, augment: true, seed: 1, prefetch: 1 }, async (loader) => {
    const log: string[] = [];
    const batches = loader.epoch(0);
    for (let request = 0; request < 3; request++) {
      const pending = batches.next();
      setImmediate(() => log.push(`immediate ${request}`));
      const result = await pending;
      log.push(`batch ${result.done === true ? 'done' : result.value.step}`);
    }
    await batches.return(undefined);
    return log;
  });
  t.deepEqual(events, ['immediate 0', 'batch 0', 'immediate 1', 'batch 1', 'immediate 2', 'batch 2']);
});

test('a forgotten loader does not keep the process alive', async (t) => {
  const loaderUrl = new URL('../lib/data/loader.js', import.meta.url).href;
  const script = `
    import { DataLoader } from ${JSON.stringify(loaderUrl)};
    const images = new Float32Array(100 * 4);
    const labels = new Int32Array(100);
    const loader = new DataLoader(
      { images, labels, count: 100, channels: 1, height: 2, width: 2, numClasses: 1, name: 'tiny' },
      { batchSize: 10, shuffle: true, augment: true, seed: 0 },
    );
    const batches = loader.epoch(0);
    const first = await batches.next();
    console.log('got step', first.value.step);
  `;
  const { stdout } = await promisify(execFile)(process.execPath, ['--input-type=module', '-e', script], {
    timeout: 60_000,
    cwd: fileURLToPath(new URL('.', import.meta.url)),
  });
  t.is(stdout.trim(), 'got step 0');
});

// V8 flags such as --max-old-space-size are common in production; a worker given them explicitly (execArgv) throws
// ERR_WORKER_INVALID_EXEC_ARGV. Both worker kinds (the loader's, the image decoders') must start under them, also
// alongside --input-type (the one flag that makes us pass the parent's flags explicitly).
test('the loader and image decoding workers start when node runs with V8 flags, with and without --input-type', async (t) => {
  const loaderUrl = new URL('../lib/data/loader.js', import.meta.url).href;
  const imagesUrl = new URL('../lib/data/images.js', import.meta.url).href;
  const image = fileURLToPath(new URL('../../test/fixtures/images/compare/up_50x160.jpg', import.meta.url));
  const script = `
    import { DataLoader } from ${JSON.stringify(loaderUrl)};
    import { preprocessBatch } from ${JSON.stringify(imagesUrl)};
    const loader = new DataLoader(
      { images: new Float32Array(10 * 4), labels: new Int32Array(10), count: 10, channels: 1, height: 2, width: 2, numClasses: 1, name: 'tiny' },
      { batchSize: 5, shuffle: false, augment: false, seed: 0 },
    );
    const batches = loader.epoch(0);
    const first = await batches.next();
    await batches.return(undefined);
    const decoded = await preprocessBatch([${JSON.stringify(image)}, ${JSON.stringify(image)}]);
    console.log('step', first.value.step, 'shape', decoded.shape.join('x'));
  `;
  const dir = await mkdtemp(join(tmpdir(), 'repvgg-flags-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const file = join(dir, 'script.mjs');
  await writeFile(file, script);
  const v8Flags = ['--max-old-space-size=4096', '--stack-trace-limit=50'];
  for (const args of [[...v8Flags, file], ['--input-type=module', ...v8Flags, '-e', script]]) {
    const { stdout } = await promisify(execFile)(process.execPath, args, { timeout: 60_000 });
    t.is(stdout.trim(), 'step 0 shape 2x3x224x224', args.slice(0, -1).join(' '));
  }
});

test('close() ends the loader; one epoch at a time; bad options fail before any work', async (t) => {
  const dataset = countingDataset(10, { channels: 1, height: 2, width: 2 });
  const loader = new DataLoader(dataset, { batchSize: 4, ...ORDERED });
  const first = loader.epoch(0);
  await first.next();
  await t.throwsAsync(loader.epoch(0).next(), { message: /another epoch is being iterated/ });
  await first.return(undefined);
  t.is((await loader.epoch(0, 2).next()).value?.step, 2);
  t.throws(() => loader.epoch(0, 4), { instanceOf: ArgumentValueError, message: /startStep/ });
  t.throws(() => loader.epoch(-1), { instanceOf: ArgumentValueError, message: /epochIndex/ });
  await loader.close();
  t.throws(() => loader.epoch(0), { instanceOf: DisposedError });

  const ok = { batchSize: 4, ...ORDERED };
  t.throws(() => new DataLoader(dataset, { ...ok, batchSize: 0 }), { instanceOf: ArgumentValueError, message: /batchSize/ });
  t.throws(() => new DataLoader(dataset, { ...ok, prefetch: 0 }), { instanceOf: ArgumentValueError, message: /prefetch/ });
  t.throws(() => new DataLoader(dataset, { ...ok, batchSize: 11, dropLast: true }), {
    instanceOf: ArgumentValueError,
    message: /at most 10/,
  });
  t.throws(() => new DataLoader(dataset, { ...ok, seed: 0.5 }), { instanceOf: ArgumentValueError, message: /seed/ });
  t.throws(() => new DataLoader(dataset, { ...ok, augment: { padding: -1, flipProbability: 0.5 } }), { instanceOf: ArgumentValueError });
  t.throws(() => new DataLoader(dataset, { ...ok, normalization: { scale: 1, mean: [0, 0], std: [1, 1] } }), {
    instanceOf: ArgumentValueError,
    message: /one per channel/,
  });
  const badLabels = { ...dataset, labels: Int32Array.from({ length: 10 }, (_, i) => i) };
  t.throws(() => new DataLoader(badLabels, ok), { instanceOf: ArgumentValueError, message: /labels in \[0, 3\).*received 3 at index 3/ });
  t.throws(() => new DataLoader({ ...dataset, count: 11 }, ok), { instanceOf: ShapeError });
});
