// Writes a synthetic image-folder data set (one subfolder per class, JPEG and PNG files of varied sizes and aspect
// ratios) whose classes a small RepVGG can learn: each class is a pattern family (stripes at an angle, rings,
// checkerboards, blobs...) in a jittered class colour over a random background, with random phase, scale, noise
// and lighting, so that crops and flips keep the class. Used by the image-folder training tests and bench/finetune.ts. Not for: the decoding tests (those
// use torchvision-made fixtures).

import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import sharp from 'sharp';

import { seededUniform } from '../lib/models/init.js';

/** Pattern families, one per class (a data set uses the first `classes` of them). */
const PATTERNS = ['stripes', 'rings', 'checker', 'dots', 'diagonal', 'blob', 'cross', 'waves'] as const;
export const MAX_SYNTHETIC_CLASSES = PATTERNS.length;
/** A typical RGB colour per pattern family. */
const CLASS_HUES: readonly (readonly number[])[] = [
  [220, 60, 50], [60, 180, 70], [50, 90, 220], [230, 200, 40], [180, 60, 200], [40, 200, 210], [240, 140, 40], [120, 120, 120],
];

export interface SyntheticFolderOptions {
  /** Classes (<= MAX_SYNTHETIC_CLASSES); the class folders are named '0-stripes', '1-rings', ... */
  classes: number;
  imagesPerClass: number;
  /** Shorter and longer side range of the images, in pixels. */
  minSide: number;
  maxSide: number;
  seed: number;
  /** Start at this pattern (so that two data sets can have different classes). Default 0. */
  firstPattern?: number;
}

/** (H, W, 3) bytes of one image of a pattern family. */
function drawPattern(pattern: (typeof PATTERNS)[number], width: number, height: number, rand: () => number): Buffer {
  const pixels = Buffer.alloc(width * height * 3);
  // The foreground colour leans towards the class's own hue (as object classes in photos have typical colours),
  // the background is random.
  const hue = CLASS_HUES[PATTERNS.indexOf(pattern)] as readonly number[];
  const colourA = hue.map((c) => Math.max(0, Math.min(255, c + 60 * (rand() - 0.5))));
  const colourB = [rand(), rand(), rand()].map((c) => 40 + 180 * c);
  const period = 6 + 10 * rand();
  const angle = rand() * Math.PI;
  const [cx, cy] = [width * (0.3 + 0.4 * rand()), height * (0.3 + 0.4 * rand())];
  const light = 0.7 + 0.6 * rand();
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const u = x * Math.cos(angle) + y * Math.sin(angle);
      const r = Math.hypot(x - cx, y - cy);
      let t: number;
      switch (pattern) {
        case 'stripes': t = Math.sin((2 * Math.PI * x) / period) > 0 ? 1 : 0; break;
        case 'rings': t = Math.sin((2 * Math.PI * r) / period) > 0 ? 1 : 0; break;
        case 'checker': t = (Math.floor(x / period) + Math.floor(y / period)) % 2; break;
        case 'dots': t = Math.hypot((x % (2 * period)) - period, (y % (2 * period)) - period) < period / 2 ? 1 : 0; break;
        case 'diagonal': t = Math.sin((2 * Math.PI * u) / period) > 0 ? 1 : 0; break;
        case 'blob': t = r < Math.min(width, height) * 0.3 ? 1 : 0; break;
        case 'cross': t = Math.abs(x - cx) < period / 2 || Math.abs(y - cy) < period / 2 ? 1 : 0; break;
        case 'waves': t = Math.sin((2 * Math.PI * y) / period + 3 * Math.sin((2 * Math.PI * x) / (4 * period))) > 0 ? 1 : 0; break;
      }
      for (let c = 0; c < 3; c++) {
        const base = t * (colourA[c] as number) + (1 - t) * (colourB[c] as number);
        const value = base * light + 30 * (rand() - 0.5);
        pixels[(y * width + x) * 3 + c] = Math.max(0, Math.min(255, Math.round(value)));
      }
    }
  }
  return pixels;
}

/**
 * Writes the data set under `root` and returns the class folder names (sorted order = class index).
 * Files alternate between JPEG and PNG; sides are drawn in [minSide, maxSide].
 */
export async function writeSyntheticImageFolder(root: string, o: SyntheticFolderOptions): Promise<string[]> {
  if (o.classes < 1 || (o.firstPattern ?? 0) + o.classes > MAX_SYNTHETIC_CLASSES) {
    throw new RangeError(`Expected 1..${MAX_SYNTHETIC_CLASSES - (o.firstPattern ?? 0)} classes but received ${o.classes}`);
  }
  const rand = seededUniform(o.seed);
  const names: string[] = [];
  for (let c = 0; c < o.classes; c++) {
    const pattern = PATTERNS[(o.firstPattern ?? 0) + c] as (typeof PATTERNS)[number];
    const name = `${c}-${pattern}`;
    names.push(name);
    const dir = join(root, name);
    await mkdir(dir, { recursive: true });
    for (let i = 0; i < o.imagesPerClass; i++) {
      const side = () => Math.round(o.minSide + (o.maxSide - o.minSide) * rand());
      const [width, height] = [side(), side()];
      const image = sharp(drawPattern(pattern, width, height, rand), { raw: { width, height, channels: 3 } });
      const file = join(dir, `img${String(i).padStart(4, '0')}.${i % 2 === 0 ? 'jpg' : 'png'}`);
      await (i % 2 === 0 ? image.jpeg({ quality: 90 }) : image.png()).toFile(file);
    }
  }
  return names;
}
