// What the single-op convolutions' algorithm 'auto' (lib/ops/conv.ts) runs where neither the plane GEMM nor Winograd
// applies, written out once for the tests that check it (ops.test.ts, backward.test.ts), and a spy on the algorithm
// fields conv2dSync hands the addon.
// Not for: the rule itself (lib/ops/conv.ts autoIm2col), which these expectations restate on purpose.

import { loadCpuAddon } from '../../lib/backend/native.js';
import { cpuCapabilities } from '../../lib/backends.js';

/** 'im2col' below AVX-512, where 'auto' runs it; 'direct' (oneDNN) on AVX-512 CPUs. */
export const AUTO_ELSEWHERE = ['sse41', 'avx', 'avx2', 'avx2_vnni'].includes(cpuCapabilities().isa) ? 'im2col' : 'direct';

/** Whether 'auto' gives a groups-1 NHWC conv of this shape to AUTO_ELSEWHERE: a kernel over 1x1, or onto at most 16 positions. */
export function autoRunsIm2colShape(c: { x: readonly number[]; kernel: number; stride: number; pad: number }): boolean {
  const out = (side: number) => Math.floor((side + 2 * c.pad - c.kernel) / c.stride) + 1;
  return c.kernel > 1 || out(c.x[2]!) * out(c.x[3]!) <= 16;
}

/** The algorithm fields of the native conv2d call (lib/ops/conv.ts chooseAlgorithm). */
export interface NativeConvAlgorithm {
  planeGemm: boolean;
  im2colGemm: boolean;
  winogradTile: number;
}

/**
 * The algorithm fields of the last addon conv2dSync call that `run` made: which kernel a conv asked for, where two
 * kernels may round alike (on AVX-512, oneDNN's direct kernel and our GEMMs summed small convs in the same order).
 * Synchronous, so no other test's call can land while the spy is in place.
 */
export function nativeConvAlgorithm(run: () => void): NativeConvAlgorithm {
  const addon = loadCpuAddon() as unknown as Record<string, (params: NativeConvAlgorithm) => unknown>;
  const original = addon.conv2dSync!;
  let seen: NativeConvAlgorithm | undefined;
  addon.conv2dSync = (params) => {
    seen = params;
    return original.call(addon, params);
  };
  try {
    run();
  } finally {
    addon.conv2dSync = original;
  }
  if (seen === undefined) throw new Error('Expected run() to call the addon conv2dSync');
  return { planeGemm: seen.planeGemm, im2colGemm: seen.im2colGemm, winogradTile: seen.winogradTile };
}
