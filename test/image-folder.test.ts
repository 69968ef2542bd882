// lib/data/image-folder.ts: ImageFolder scanning (class order, walk order, hidden files, bounds, errors), the
// loader's determinism per (seed, epoch, step), resume, augmentation shapes and ranges, and evaluation batches.
// Not for: decoding and the evaluation transform against torchvision (images.test.ts).

import { copyFile, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import test from 'ava';
import type { ExecutionContext } from 'ava';

import { ArgumentValueError, FormatError } from '../lib/errors.js';
import {
  ImageFolderLoader,
  centerCropTransform,
  evalImageBatches,
  imagenetTrainTransform,
  randomResizedCropBox,
  scanImageFolder,
  smallImageTrainTransform,
} from '../lib/data/image-folder.js';
import type { ImageFolderDataset, ImageFolderLoaderOptions } from '../lib/data/image-folder.js';
import { IMAGENET_MEAN, IMAGENET_STD, decodeImage, imagenetPreprocess, preprocessImage, resampleBilinear } from '../lib/data/images.js';
import type { Batch } from '../lib/data/loader.js';
import { Rng } from '../lib/data/random.js';

const IMAGES = fileURLToPath(new URL('../../test/fixtures/images/', import.meta.url));

/** class -> [relative path, fixture] */
const LAYOUT: Record<string, [string, string][]> = {
  dog: [
    ['z.png', 'variants/gray.png'],
    ['a.webp', 'variants/lossy.webp'],
  ],
  cat: [
    ['b.png', 'variants/rgba.png'],
    ['a.jpg', 'compare/down_500x375.jpg'],
    ['sub/c.webp', 'variants/alpha.webp'],
    ['sub-2/d.jpg', 'variants/orient_6.jpg'],
    ['sub/deeper/e.png', 'variants/palette.png'],
  ],
  ant: [
    ['x.JPG', 'compare/up_50x160.jpg'],
    ['y.png', 'variants/rgb16.png'],
    ['w.jpeg', 'variants/gray.jpg'],
  ],
};

async function makeFolder(t: ExecutionContext): Promise<string> {
  const root = await mkdtemp(join(tmpdir(), 'repvgg-folder-'));
  t.teardown(() => rm(root, { recursive: true, force: true }));
  for (const [label, files] of Object.entries(LAYOUT)) {
    for (const [relative, fixture] of files) {
      const path = join(root, label, relative);
      await mkdir(join(path, '..'), { recursive: true });
      await copyFile(join(IMAGES, fixture), path);
    }
  }
  // Ignored: hidden folders and files, files without an image extension.
  await mkdir(join(root, '.cache', 'x'), { recursive: true });
  await copyFile(join(IMAGES, 'variants/gray.png'), join(root, '.cache', 'x', 'a.png'));
  await copyFile(join(IMAGES, 'variants/gray.png'), join(root, 'cat', '.hidden.png'));
  await writeFile(join(root, 'cat', 'notes.txt'), 'not an image');
  await writeFile(join(root, 'README.md'), 'a file at the top is not a class');
  return root;
}

test('scanImageFolder: sorted classes, torchvision walk order, hidden and non-image files ignored', async (t) => {
  const root = await makeFolder(t);
  const dataset = await scanImageFolder(root);
  t.deepEqual(dataset.classes, ['ant', 'cat', 'dog']);
  // Folders are ordered by path string, so 'sub-2' ('-' = 0x2d) comes before 'sub/deeper' ('/' = 0x2f): the
  // order torchvision 0.14's make_dataset gave for this layout.
  t.deepEqual(
    dataset.files.map((f) => f.slice(root.length + 1)),
    ['ant/w.jpeg', 'ant/x.JPG', 'ant/y.png', 'cat/a.jpg', 'cat/b.png', 'cat/sub/c.webp', 'cat/sub-2/d.jpg', 'cat/sub/deeper/e.png', 'dog/a.webp', 'dog/z.png'],
  );
  t.deepEqual([...dataset.labels], [0, 0, 0, 1, 1, 1, 1, 1, 2, 2]);
  t.is(dataset.count, 10);
  const shallow = await scanImageFolder(root, { maxDepth: 1 });
  t.false(shallow.files.some((f) => f.includes('deeper')));
  t.is(shallow.count, 9);
});

test('scanImageFolder: typed errors name the folder (no classes, empty class, missing, over the bounds)', async (t) => {
  const root = await makeFolder(t);
  const noClasses = join(root, 'dog'); // holds files only
  const error = await t.throwsAsync(scanImageFolder(noClasses), { instanceOf: FormatError });
  t.true(error?.message.includes(noClasses));
  await mkdir(join(root, 'empty-class'));
  const empty = await t.throwsAsync(scanImageFolder(root), { instanceOf: FormatError });
  t.regex(empty?.message ?? '', /none in empty-class/);
  await rm(join(root, 'empty-class'), { recursive: true });
  await t.throwsAsync(scanImageFolder(join(root, 'missing')), { instanceOf: FormatError, message: /missing/ });
  await t.throwsAsync(scanImageFolder(root, { maxFiles: 9 }), { instanceOf: FormatError, message: /at most 9 image files/ });
  await t.throwsAsync(scanImageFolder(root, { maxClasses: 2 }), { instanceOf: FormatError, message: /at most 2 class folders/ });
  await t.throwsAsync(scanImageFolder(root, { maxDepth: -1 }), { instanceOf: ArgumentValueError, message: /maxDepth/ });
});

async function collect(iterator: AsyncGenerator<Batch, void, undefined>): Promise<Batch[]> {
  const batches: Batch[] = [];
  for await (const batch of iterator) batches.push(batch);
  return batches;
}

function sameBatch(t: ExecutionContext, a: Batch, b: Batch, what: string): void {
  t.is(a.step, b.step, what);
  t.deepEqual(a.indices, b.indices, what);
  t.deepEqual(a.labels, b.labels, what);
  t.deepEqual(a.images.shape, b.images.shape, what);
  t.deepEqual(a.images.data, b.images.data, what);
}

async function loaderFor(t: ExecutionContext, dataset: ImageFolderDataset, options: Partial<ImageFolderLoaderOptions> = {}): Promise<ImageFolderLoader> {
  const loader = new ImageFolderLoader(dataset, { batchSize: 4, shuffle: true, seed: 1234, transform: imagenetTrainTransform(32), ...options });
  t.teardown(() => loader.close());
  return loader;
}

test('ImageFolderLoader: batches are a function of (seed, epoch, step); resume reproduces them', async (t) => {
  const dataset = await scanImageFolder(await makeFolder(t));
  const loader = await loaderFor(t, dataset);
  t.is(loader.stepsPerEpoch, 3);
  const epoch0 = await collect(loader.epoch(0));
  t.deepEqual(epoch0.map((b) => b.step), [0, 1, 2]);
  t.deepEqual(epoch0.map((b) => b.images.shape[0]), [4, 4, 2]);
  // Every file once per epoch, labels those of the files.
  const seen = epoch0.flatMap((b) => [...b.indices]).sort((a, b) => a - b);
  t.deepEqual(seen, Array.from({ length: 10 }, (_, i) => i));
  for (const batch of epoch0) for (let i = 0; i < batch.labels.length; i++) t.is(batch.labels[i], dataset.labels[batch.indices[i] as number]);

  // A second loader with the same seed, entering mid-epoch, and batchAt: identical batches.
  const other = await loaderFor(t, dataset);
  const resumed = await collect(other.epoch(0, 1));
  sameBatch(t, resumed[0] as Batch, epoch0[1] as Batch, 'resumed step 1');
  sameBatch(t, resumed[1] as Batch, epoch0[2] as Batch, 'resumed step 2');
  sameBatch(t, await other.batchAt(0, 2), epoch0[2] as Batch, 'batchAt(0, 2)');
  // Resuming at the tail of a full epoch: nothing left of it, and the next epoch starts as usual.
  t.deepEqual(await collect(other.epoch(0, other.stepsPerEpoch)), []);
  const epoch1 = await collect(loader.epoch(1)); // prefetched when epoch 0 ended
  sameBatch(t, epoch1[0] as Batch, await other.batchAt(1, 0), 'epoch 1 step 0');
  t.notDeepEqual(epoch1[0]?.images.data, epoch0[0]?.images.data);
  // Another seed: another order or other crops.
  const reseeded = await loaderFor(t, dataset, { seed: 99 });
  t.notDeepEqual((await reseeded.batchAt(0, 0)).images.data, epoch0[0]?.images.data);
  t.throws(() => loader.epoch(0, 4), { instanceOf: ArgumentValueError, message: /startStep/ });
});

function channelRange(c: number): [number, number] {
  const mean = IMAGENET_MEAN[c] as number;
  const std = IMAGENET_STD[c] as number;
  return [(0 - mean) / std - 1e-6, (1 - mean) / std + 1e-6];
}

test('augmentations: output shapes, values within the normalized byte range, and not constant', async (t) => {
  const dataset = await scanImageFolder(await makeFolder(t));
  for (const transform of [imagenetTrainTransform(48), smallImageTrainTransform(24), centerCropTransform(40, 32)]) {
    const loader = await loaderFor(t, dataset, { transform, batchSize: 10 });
    const { images } = await loader.batchAt(0, 0);
    const size = transform.kind === 'center-crop' ? transform.crop : transform.size;
    t.deepEqual(images.shape, [10, 3, size, size]);
    const plane = size * size;
    for (let i = 0; i < images.data.length; i++) {
      const [low, high] = channelRange(Math.floor(i / plane) % 3);
      if (!((images.data[i] as number) >= low && (images.data[i] as number) <= high)) {
        t.fail(`${transform.kind}: element ${i} = ${images.data[i]} outside [${low}, ${high}]`);
        return;
      }
    }
    t.true(new Set(images.data).size > 100, `${transform.kind}: values vary`);
  }
});

test('pad-crop without padding or flip equals the evaluation transform; with flip p = 1 it is mirrored', async (t) => {
  const dataset = await scanImageFolder(await makeFolder(t));
  const still = await loaderFor(t, dataset, { transform: { kind: 'pad-crop', size: 20, padding: 0, flipProbability: 0 }, shuffle: false });
  const flipped = await loaderFor(t, dataset, { transform: { kind: 'pad-crop', size: 20, padding: 0, flipProbability: 1 }, shuffle: false });
  const evaluation = await loaderFor(t, dataset, { transform: centerCropTransform(20, 20), shuffle: false });
  const a = await still.batchAt(0, 0);
  const b = await flipped.batchAt(0, 0);
  sameBatch(t, a, await evaluation.batchAt(0, 0), 'pad-crop(0) vs center-crop');
  for (let row = 0; row < a.images.data.length / 20; row++) {
    const original = a.images.data.subarray(row * 20, (row + 1) * 20);
    t.deepEqual([...b.images.data.subarray(row * 20, (row + 1) * 20)], [...original].reverse());
  }
  // With padding 4 some rows or columns are the normalized value of a zero byte (the padding).
  const padded = await loaderFor(t, dataset, { transform: smallImageTrainTransform(20, 4), batchSize: 10 });
  const zeroRed = (0 - (IMAGENET_MEAN[0] as number)) / (IMAGENET_STD[0] as number);
  t.true((await padded.batchAt(0, 0)).images.data.some((v) => Math.abs(v - zeroRed) < 1e-6));
});

test('randomResizedCropBox: boxes inside the image within scale and ratio, or the central fallback', (t) => {
  const rng = new Rng(42);
  for (let trial = 0; trial < 500; trial++) {
    const width = 1 + rng.below(400);
    const height = 1 + rng.below(400);
    const box = randomResizedCropBox(width, height, [0.08, 1], [3 / 4, 4 / 3], rng);
    t.true(box.left >= 0 && box.top >= 0 && box.left + box.width <= width && box.top + box.height <= height, JSON.stringify({ width, height, box }));
    t.true(box.width >= 1 && box.height >= 1);
  }
  // No 1:1 crop of at least 90% of a 100x10 image exists: the fallback is the central 10x10 square.
  t.deepEqual(randomResizedCropBox(100, 10, [0.9, 1], [1, 1], new Rng(1)), { left: 45, top: 0, width: 10, height: 10 });
});

test('the resized crop equals torchvision resized_crop (PIL) for a fixed box', async (t) => {
  const image = await decodeImage(join(IMAGES, 'compare/down_500x375.jpg'));
  const ours = resampleBilinear(image, { left: 37, top: 21, width: 300, height: 200 }, 64, 64, { left: 0, top: 0, width: 64, height: 64 });
  const ref = await decodeImage(join(IMAGES, 'compare/down_500x375.rrc.png'));
  t.deepEqual(ours, ref.data);
});

test('a file that cannot be decoded fails its batch with a FormatError naming it', async (t) => {
  const root = await makeFolder(t);
  const bad = join(root, 'cat', 'broken.jpg');
  await writeFile(bad, new Uint8Array([0xff, 0xd8, 0xff, 0xe0, 1, 2, 3]));
  const dataset = await scanImageFolder(root);
  const loader = await loaderFor(t, dataset, { shuffle: false, batchSize: 3 });
  const error = await t.throwsAsync(collect(loader.epoch(0)), { instanceOf: FormatError });
  t.true(error?.message.includes(bad), error?.message);
});

test('evalImageBatches: every file once in order, each equal to preprocessImage', async (t) => {
  const dataset = await scanImageFolder(await makeFolder(t));
  const preprocess = imagenetPreprocess(36, 32);
  const batches = await collect(evalImageBatches(dataset, 4, preprocess));
  t.deepEqual(batches.map((b) => b.images.shape[0]), [4, 4, 2]);
  t.deepEqual(batches.flatMap((b) => [...b.indices]), Array.from({ length: 10 }, (_, i) => i));
  const sample = 3 * 32 * 32;
  for (const batch of batches) {
    for (let i = 0; i < batch.indices.length; i++) {
      const expected = await preprocessImage(dataset.files[batch.indices[i] as number] as string, { preprocess });
      t.deepEqual(batch.images.data.subarray(i * sample, (i + 1) * sample), expected);
    }
  }
});
