// Image pipeline throughput: decode + Resize(256) + CenterCrop(224) + normalize to one float32 NCHW tensor, ours
// (lib/data/images.ts preprocessBatch on its worker threads, 8 images in flight) against torchvision + PIL
// (bench/images_torch.py) on the same ~500x375 JPEGs, written here with sharp, in the same run. Checks one
// image's tensor first.
// Usage: USAGE below (`node dist/bench/images.js --help`).
// Not for: training-time augmentation (the loader) or accuracy tests (test/images.test.ts).

import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { cpus, loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';

import sharp from 'sharp';

import { integerOption, parseBenchArgs, runBench } from '../lib/bench/args.js';
import { IMAGENET_MEAN, IMAGENET_STD, preprocessBatch, preprocessImage } from '../lib/data/images.js';
import { runProcess } from './process.js';

const TORCH_SCRIPT = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'bench', 'images_torch.py');

/** A photo-like (H, W, 3) image: gradients, soft and sharp edges, noise; different for each `seed`. */
function photo(width: number, height: number, seed: number): Buffer {
  const data = Buffer.alloc(width * height * 3);
  let state = seed * 2654435761;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
      const noise = ((state >>> 24) - 128) / 16;
      const disc = (x - width / 2) ** 2 + (y - height / 3) ** 2 < (height / 5 + seed) ** 2;
      const o = (y * width + x) * 3;
      data[o] = disc ? 240 : 128 + 100 * Math.sin(x / width * 3.1 + y / height * 1.7 + seed) + noise;
      data[o + 1] = disc ? 30 : (255 * x) / width * 0.7 + 40 * Math.cos(y / 17) + noise;
      data[o + 2] = disc ? 60 : 255 * (1 - y / height) * 0.8 + 30 * ((Math.floor(x / 23) + Math.floor(y / 31)) % 2) + noise;
    }
  }
  return data;
}

async function writeJpegs(dir: string, count: number): Promise<string[]> {
  const sizes = [[500, 375], [375, 500], [500, 333], [480, 360], [500, 400]] as const;
  const files: string[] = [];
  for (let i = 0; i < count; i++) {
    const [width, height] = sizes[i % sizes.length] as readonly [number, number];
    const path = join(dir, `img-${String(i).padStart(5, '0')}.jpg`);
    await sharp(photo(width, height, i), { raw: { width, height, channels: 3 } }).jpeg({ quality: 90 }).toFile(path);
    files.push(path);
  }
  return files;
}


const USAGE = `Usage: node dist/bench/images.js [--count 256] [--rounds 3] [--repeat 2] [--concurrency 8] [--workers 2] [--python /usr/bin/python3]
  --count        JPEGs written and decoded (default 256)
  --rounds       rounds, ours and torchvision's in turns (default 3)
  --repeat       passes over the images per round (default 2)
  --concurrency  images in flight in ours (default 8)
  --workers      torch DataLoader workers (default 2)
  --python       the Python with torchvision (default /usr/bin/python3)`;

async function main(): Promise<void> {
  const values = parseBenchArgs(USAGE, {
    count: { type: 'string', default: '256' },
    repeat: { type: 'string', default: '2' },
    rounds: { type: 'string', default: '3' },
    concurrency: { type: 'string', default: '8' },
    workers: { type: 'string', default: '2' },
    python: { type: 'string', default: '/usr/bin/python3' },
  });
  const count = integerOption(values.count, '--count', { min: 1, max: 100_000 });
  const repeat = integerOption(values.repeat, '--repeat', { min: 1, max: 100 });
  const rounds = integerOption(values.rounds, '--rounds', { min: 1, max: 100 });
  const concurrency = integerOption(values.concurrency, '--concurrency', { min: 1, max: 256 });
  const workers = integerOption(values.workers, '--workers', { min: 0, max: 64 });
  const dir = await mkdtemp(join(tmpdir(), 'repvgg-bench-images-'));
  try {
    const files = await writeJpegs(dir, count);

    // Correctness first: one image's tensor against torchvision's, in 0..255 units (normalization undone).
    const reference = join(dir, 'reference.f32');
    await runProcess(values.python, [TORCH_SCRIPT, '--check', files[0] as string, '--out', reference]);
    const bytes = await readFile(reference);
    const theirs = new Float32Array(bytes.buffer, bytes.byteOffset, bytes.length / 4);
    const ours = await preprocessImage(files[0] as string);
    if (ours.length !== theirs.length) throw new Error(`tensor sizes differ: ours ${ours.length}, torchvision ${theirs.length}`);
    let max = 0;
    let sum = 0;
    const plane = 224 * 224;
    for (let i = 0; i < ours.length; i++) {
      const std = IMAGENET_STD[Math.floor(i / plane)] as number;
      const d = Math.abs((ours[i] as number) - (theirs[i] as number)) * std * 255;
      max = Math.max(max, d);
      sum += d;
    }
    console.log(`correctness (${files[0]}): max ${max.toFixed(4)}, mean ${(sum / ours.length).toFixed(4)} (0..255 units); mean used ${IMAGENET_MEAN.join(', ')}`);
    if (max > 2) throw new Error(`our tensor differs from torchvision's by ${max} > 2 (0..255 units): not timing a wrong pipeline`);

    // Rounds alternate ours and torchvision so that both see the same machine load; each side's best pass counts.
    // Ours: the whole set into one (N, 3, 224, 224) tensor; an unmeasured first pass warms up the JIT.
    await preprocessBatch(files.slice(0, 16), { concurrency });
    let oursRate = 0;
    const torch = { single: 0, workers: 0, workers_count: workers };
    for (let round = 0; round < rounds; round++) {
      for (let r = 0; r < repeat; r++) {
        const start = performance.now();
        const batch = await preprocessBatch(files, { concurrency });
        const seconds = (performance.now() - start) / 1000;
        if (batch.shape[0] !== count) throw new Error('wrong batch size');
        oursRate = Math.max(oursRate, count / seconds);
      }
      const peer = JSON.parse(
        await runProcess(values.python, [TORCH_SCRIPT, '--dir', dir, '--repeat', String(repeat), '--workers', String(workers), '--threads', '1']),
      ) as { single: number; workers: number };
      torch.single = Math.max(torch.single, peer.single);
      torch.workers = Math.max(torch.workers, peer.workers);
      console.log(`round ${round + 1}: ours ${oursRate.toFixed(1)}, torchvision ${peer.single.toFixed(1)} / ${peer.workers.toFixed(1)} img/s (best so far / this round)`);
    }

    console.log(`\n${count} JPEGs (~500x375) -> float32 (N, 3, 224, 224); ${cpus().length} cores, load average ${loadavg()[0]?.toFixed(2)}\n`);
    console.log('| pipeline | img/s | ours / peer |');
    console.log('|---|---|---|');
    console.log(`| ours: libjpeg-turbo decode (native) + PIL-exact resize (native passes)/crop/normalize, worker threads, ${concurrency} in flight | ${oursRate.toFixed(1)} | |`);
    console.log(`| torchvision + PIL, one process | ${torch.single.toFixed(1)} | ${(oursRate / torch.single).toFixed(2)}x |`);
    console.log(`| torchvision + PIL, DataLoader num_workers=${torch.workers_count} | ${torch.workers.toFixed(1)} | ${(oursRate / torch.workers).toFixed(2)}x |`);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

await runBench(USAGE, main);
