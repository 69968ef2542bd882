// Named small-input RepVGG presets for 28x28 / 32x32 images (Fashion-MNIST, CIFAR-sized data).

import { customSpec, type RepVGGSpec } from '../models/repvgg.js';

/**
 * 'mini': the default network of `repvgg train`, sized so the default recipe trains Fashion-MNIST in minutes on
 * two cores. Stem at full resolution (stride 1), then four stride-2 stages: 28x28 -> 28 -> 14 -> 7 -> 4 -> 2.
 * About 21M multiply-adds per 28x28 image in the training-time form.
 */
export function miniSpec(inChannels: number, numClasses: number, block?: 'qa'): RepVGGSpec {
  return customSpec({
    ...(block !== undefined && { block }),
    arch: 'RepVGG-mini',
    inChannels,
    numClasses,
    stemChannels: 32,
    stemStride: 1,
    stageChannels: [48, 96, 192, 384],
    stageDepths: [1, 2, 2, 1],
    stageStrides: [2, 2, 2, 2],
  });
}
