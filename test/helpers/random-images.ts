// Random test inputs for the serving tests: float32 image batches and encoded images of random pixels.
// Not for: references or tolerances (reference.ts, tolerances.ts).

import sharp from 'sharp';

import type { HostTensor } from '../../lib/tensor.js';
import { randomArray } from './reference.js';

/** (N, C, H, W) values uniform in [-1, 1] from rng. */
export function randomImages(shape: [number, number, number, number], rng: () => number): HostTensor {
  return { shape, data: randomArray(shape.reduce((p, d) => p * d, 1), rng, 1) };
}

/** A PNG of random RGB pixels. */
export async function randomPng(width: number, height: number, rng: () => number): Promise<Buffer> {
  const pixels = Buffer.alloc(width * height * 3);
  for (let i = 0; i < pixels.length; i++) pixels[i] = Math.floor(rng() * 256);
  return sharp(pixels, { raw: { width, height, channels: 3 } }).png().toBuffer();
}
