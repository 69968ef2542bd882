// What the single-op convolutions' algorithm 'auto' (lib/ops/conv.ts) runs where neither the plane GEMM nor Winograd
// applies, written out once for the tests that check it (ops.test.ts, backward.test.ts).
// Not for: the rule itself (lib/ops/conv.ts autoIm2col), which these expectations restate on purpose.

import { cpuCapabilities } from '../../lib/backends.js';

/** 'im2col' below AVX-512, where 'auto' runs it; 'direct' (oneDNN) on AVX-512 CPUs. */
export const AUTO_ELSEWHERE = ['sse41', 'avx', 'avx2', 'avx2_vnni'].includes(cpuCapabilities().isa) ? 'im2col' : 'direct';

/** Whether 'auto' gives a groups-1 NHWC conv of this shape to AUTO_ELSEWHERE: a kernel over 1x1, or onto at most 16 positions. */
export function autoRunsIm2colShape(c: { x: readonly number[]; kernel: number; stride: number; pad: number }): boolean {
  const out = (side: number) => Math.floor((side + 2 * c.pad - c.kernel) / c.stride) + 1;
  return c.kernel > 1 || out(c.x[2]!) * out(c.x[3]!) <= 16;
}
