// Named small-input RepVGG presets for 28x28 / 32x32 images (Fashion-MNIST, CIFAR-sized data).

import { customSpec, type RepVGGSpec } from '../models/repvgg.js';

/**
 * 'mini': the default network of `repvgg train`. Stem at full resolution (stride 1), then three stride-2 stages;
 * 28x28 -> 28 -> 28 -> 14 -> 7 -> 4.
 */
export function miniSpec(inChannels: number, numClasses: number): RepVGGSpec {
  return customSpec({
    arch: 'RepVGG-mini',
    inChannels,
    numClasses,
    stemChannels: 32,
    stemStride: 1,
    stageChannels: [32, 64, 128, 256],
    stageDepths: [1, 2, 2, 1],
    stageStrides: [1, 2, 2, 2],
  });
}
