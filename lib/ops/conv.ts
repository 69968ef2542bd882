// conv2d of the single-op API and its backward pass: shape checks and the choice of algorithm in TypeScript, then
// oneDNN (native/cpu/conv.cc), our Winograd kernel, one GEMM over a tiny plane or im2col + GEMM (native/cpu/gemm_conv.h).
// NaN/Inf in inputs propagate as in PyTorch; only the model-level API rejects them.

import { callNative, callNativeSync, loadCpuAddon } from '../backend/native.js';
import { cpuCapabilities } from '../backends.js';
import { ArgumentValueError, ShapeError, describeValue, formatShape } from '../errors.js';
import type { HostTensor } from '../tensor.js';
import { outputArray } from './alloc.js';
import { checkPositiveInt, checkShape, checkTensor } from './check.js';
import { checkLayoutOption, layoutOf, withLayout, type Layout } from './layout.js';
import { runTrainingOp, runTrainingOpSync } from './native-op.js';

export interface Conv2dOptions {
  /** (outChannels) */
  bias?: HostTensor;
  stride?: number;
  pad?: number;
  groups?: number;
  /** Fuse a ReLU after the bias. */
  relu?: boolean;
  /** Data layout of the output (default: the layout of x); see layout.ts. */
  layout?: Layout;
  /**
   * 'auto' (default): 'gemm' where it can run, else 'winograd2x2' for 3x3 stride-1 pad-1 convs with groups 1 and at
   * least 64 input and output channels on NHWC x and output, else (below AVX-512) 'im2col' for groups 1 on NHWC x and
   * output with a kernel over 1x1 or onto at most 16 output positions, else 'direct'.
   * 'direct': oneDNN's kernel. 'gemm': the conv as one matrix product (native/cpu/gemm_conv.h), for groups 1 on NHWC x
   * and output when every output sees the whole input plane (RepVGG's 3x3 convs on 2x2 planes and its stride-2 conv
   * from 2x2 to 1x1, where oneDNN is slow). 'im2col': the kernel windows gathered into a matrix and one GEMM per chunk
   * of images (native/cpu/gemm_conv.h), for groups 1 on NHWC x and output. 'winograd' / 'winograd2x2': our Winograd
   * F(4x4, 3x3) / F(2x2, 3x3) (native/cpu/winograd.h), for 3x3 kernels with stride 1, groups 1 and pad 0 or 1 on NHWC
   * x and output.
   */
  algorithm?: 'auto' | 'direct' | 'gemm' | 'im2col' | 'winograd' | 'winograd2x2';
}

const WINOGRAD_TILES = { winograd: 4, winograd2x2: 2 } as const;

/** The plane-GEMM algorithm's matrix (input values x output values of one image) has at most this many elements. */
const MAX_PLANE_GEMM_ELEMENTS = 2 ** 24; // kMaxPlaneGemmElements in native/core/ops.h
/** The im2col algorithm's column matrix of one image (output positions x kernel-window values) has at most this many elements. */
const MAX_IM2COL_IMAGE_ELEMENTS = 2 ** 24; // kMaxIm2colImageElements in native/core/ops.h

type ConvGeometry = ReturnType<typeof checkConvGeometry>;

/** True when every output sees every input along a dimension of this size (conv_links_every_position in ops.h). */
function linksEveryPosition(size: number, k: number, stride: number, pad: number): boolean {
  const out = Math.floor((size + 2 * pad - k) / stride) + 1;
  return out >= 1 && (out - 1) * stride <= pad && size <= k - pad;
}

/** What keeps the 'gemm' algorithm from running this conv (as text for an error), or undefined when it can. */
function planeGemmObstacle(g: ConvGeometry, xLayout: Layout, yLayout: Layout): string | undefined {
  if (g.groups !== 1) return `groups ${g.groups}`;
  if (xLayout !== 'nhwc' || yLayout !== 'nhwc') return `x ${xLayout} and output ${yLayout}`;
  if (!linksEveryPosition(g.h, g.k, g.stride, g.pad) || !linksEveryPosition(g.w, g.k, g.stride, g.pad)) {
    return `a ${g.k}x${g.k} kernel at stride ${g.stride} and pad ${g.pad} whose outputs see only part of the ${g.h}x${g.w} input`;
  }
  const elements = g.h * g.w * g.c * g.oh * g.ow * g.o;
  if (elements > MAX_PLANE_GEMM_ELEMENTS) return `a matrix of ${elements} elements`;
  return undefined;
}

/** What keeps the 'im2col' algorithm from running this conv (as text for an error), or undefined when it can. */
function im2colObstacle(g: ConvGeometry, xLayout: Layout, yLayout: Layout): string | undefined {
  if (g.groups !== 1) return `groups ${g.groups}`;
  if (xLayout !== 'nhwc' || yLayout !== 'nhwc') return `x ${xLayout} and output ${yLayout}`;
  const elements = g.oh * g.ow * g.k * g.k * g.c;
  if (elements > MAX_IM2COL_IMAGE_ELEMENTS) return `a column matrix of ${elements} elements per image`;
  return undefined;
}

/**
 * Whether 'auto' replaces oneDNN's direct kernels on this CPU, with im2col + GEMM (autoIm2col) and with Winograd's
 * weight gradient (autoWinograd): below AVX-512, where they were measured. Each conv's forward, input and weight
 * gradients together, through these ops, against oneDNN's direct kernel, interleaved, on a 2-core Zen 3 (avx2), 3x3
 * pad 1: batch 128 192 -> 384 from 4x4 to 2x2 2.3x faster, 96 -> 192 from 7x7 to 4x4 1.44x, 48 -> 96 from 14x14
 * 1.07-1.10x, 32 -> 48 from 28x28 1.14-1.17x; batch 32 48 -> 96 from 56x56 1.42x, batch 16 48 -> 48 from 112x112
 * 1.76x; stride 1, 48 -> 48, batch 16 at 56x56 1.40x, batch 64 at 28x28 1.20x. Where 'auto' runs Winograd F(2x2)
 * (stride 1 from 64 channels on) im2col was as fast (192 at 4x4 1.03x, 96 at 7x7 1.02x), so Winograd stays, and the
 * backward pass takes dweight from Winograd F(3x3, 2x2) as well: the whole backward pass against Winograd's dx with
 * im2col's dweight (itself 1.13-1.20x oneDNN's dweight), batch 128 192 at 4x4 1.20-1.23x, 96 at 7x7 1.02-1.08x, 64
 * at 8x8 1.06x, at 16x16 1.04x; batch 32 96 at 28x28 1.24-1.27x, 192 at 14x14 1.31x. 1x1 kernels only onto small
 * planes (AUTO_IM2COL_1X1_MAX_OUTPUT_POSITIONS): batch 128 192 -> 192 at 4x4 1.46x, 96 -> 192 from 7x7 to 4x4 3.18x,
 * 192 -> 384 from 4x4 to 2x2 1.29x, but onto 7x7 0.86-0.97x and larger planes 0.77-0.98x. AVX-512 CPUs keep oneDNN's
 * direct kernels, which are much faster there and were not compared.
 */
let directKernelsReplaced: boolean | undefined;
function autoReplacesDirectKernelsOnThisCpu(): boolean {
  directKernelsReplaced ??= ['sse41', 'avx', 'avx2', 'avx2_vnni'].includes(cpuCapabilities().isa);
  return directKernelsReplaced;
}

/** 'auto' runs a 1x1 conv with im2col only onto at most this many output positions (autoReplacesDirectKernelsOnThisCpu has the numbers). */
const AUTO_IM2COL_1X1_MAX_OUTPUT_POSITIONS = 16;

/** True when 'auto' runs this conv with im2col + GEMM (where neither the plane GEMM nor Winograd applies). */
function autoIm2col(g: ConvGeometry, xLayout: Layout, yLayout: Layout): boolean {
  return (g.k > 1 || g.oh * g.ow <= AUTO_IM2COL_1X1_MAX_OUTPUT_POSITIONS) && im2colObstacle(g, xLayout, yLayout) === undefined &&
    autoReplacesDirectKernelsOnThisCpu();
}

/**
 * 'auto' runs Winograd F(2x2, 3x3) on 3x3 stride-1 pad-1 convs (and their input gradient) with at least this many
 * input and output channels. Single convs at training sizes on a 2-core Zen 3 (ms, direct / F(2x2)): batch 32
 * 192ch 14x14 50 / 24, 96ch 28x28 57 / 37, 64ch 56x56 80 / 52, 512ch 14x14 310 / 136; batch 128 192ch 4x4 17 / 10,
 * 64ch 16x16 31 / 27; with 32 or 48 channels it was as slow or slower.
 */
const AUTO_WINOGRAD_MIN_CHANNELS = 64;

/** True when 'auto' runs this conv with Winograd F(2x2, 3x3) (where the plane GEMM does not apply). */
function autoWinograd(g: ConvGeometry, xLayout: Layout, yLayout: Layout): boolean {
  return g.k === 3 && g.stride === 1 && g.pad === 1 && g.groups === 1 && xLayout === 'nhwc' && yLayout === 'nhwc' &&
    Math.min(g.c, g.o) >= AUTO_WINOGRAD_MIN_CHANNELS;
}

/**
 * The native algorithm fields of a requested algorithm for a conv's forward or backward pass, after checking that the
 * conv can run it. The backward pass's Winograd computes dx (pad 1 only: dx is the conv of dy at pad 2 - pad) and
 * dweight (winogradWeightGrad), which 'auto' leaves to oneDNN on AVX-512 CPUs (autoReplacesDirectKernelsOnThisCpu).
 */
function chooseAlgorithm(
  requested: unknown, allowed: readonly string[], g: ConvGeometry, xLayout: Layout, yLayout: Layout, pass: 'forward' | 'backward',
): { winogradTile: number; planeGemm: boolean; im2colGemm: boolean; winogradWeightGrad?: boolean } {
  const winogradPads = pass === 'forward' ? [0, 1] : [1];
  const algorithm = requested ?? 'auto';
  if (typeof algorithm !== 'string' || !allowed.includes(algorithm)) {
    throw new ArgumentValueError(`Expected one of ${allowed.map((a) => `'${a}'`).join(', ')} for algorithm but received ${describeValue(algorithm)}`);
  }
  const direct = { winogradTile: 0, planeGemm: false, im2colGemm: false };
  if (algorithm === 'auto') {
    if (planeGemmObstacle(g, xLayout, yLayout) === undefined) return { ...direct, planeGemm: true };
    if (autoWinograd(g, xLayout, yLayout)) {
      return { ...direct, winogradTile: 2, ...(pass === 'backward' && { winogradWeightGrad: autoReplacesDirectKernelsOnThisCpu() }) };
    }
    return { ...direct, im2colGemm: autoIm2col(g, xLayout, yLayout) };
  }
  if (algorithm === 'direct') return direct;
  if (algorithm === 'gemm') {
    const obstacle = planeGemmObstacle(g, xLayout, yLayout);
    if (obstacle !== undefined) {
      throw new ArgumentValueError(
        `Expected groups 1, NHWC tensors, outputs that each see the whole input plane and at most ${MAX_PLANE_GEMM_ELEMENTS} ` +
          `matrix elements for algorithm 'gemm' but received ${obstacle}`,
      );
    }
    return { ...direct, planeGemm: true };
  }
  if (algorithm === 'im2col') {
    const obstacle = im2colObstacle(g, xLayout, yLayout);
    if (obstacle !== undefined) {
      throw new ArgumentValueError(
        `Expected groups 1, NHWC tensors and at most ${MAX_IM2COL_IMAGE_ELEMENTS} column-matrix elements per image for algorithm ` +
          `'im2col' but received ${obstacle}`,
      );
    }
    return { ...direct, im2colGemm: true };
  }
  const { k, stride, pad, groups } = g;
  if (k !== 3 || stride !== 1 || groups !== 1 || !winogradPads.includes(pad) || xLayout !== 'nhwc' || yLayout !== 'nhwc') {
    throw new ArgumentValueError(
      `Expected a 3x3 kernel, stride 1, groups 1, pad ${winogradPads.join(' or ')} and NHWC x and output for algorithm '${algorithm}' but received ` +
        `a ${k}x${k} kernel, stride ${stride}, groups ${groups}, pad ${pad}, x ${xLayout}, output ${yLayout}`,
    );
  }
  return { ...direct, winogradTile: WINOGRAD_TILES[algorithm as keyof typeof WINOGRAD_TILES], ...(pass === 'backward' && { winogradWeightGrad: true }) };
}

/** Checks x, weight and the geometry options shared by conv2d and conv2dBackward; returns every size. */
function checkConvGeometry(x: HostTensor, weight: HostTensor, options: { stride?: number; pad?: number; groups?: number }) {
  const [n, c, h, w] = checkTensor(x, 'x', 4) as [number, number, number, number];
  const [o, cg, kh, kw] = checkTensor(weight, 'weight', 4) as [number, number, number, number];
  const stride = checkPositiveInt(options.stride ?? 1, 'stride');
  const pad = checkPositiveInt(options.pad ?? 0, 'pad', 0);
  const groups = checkPositiveInt(options.groups ?? 1, 'groups');
  if (kh !== kw) throw new ShapeError(`Expected a square kernel for weight but received shape ${formatShape(weight.shape)}`);
  if (c % groups !== 0 || o % groups !== 0) {
    throw new ArgumentValueError(`Expected groups to divide channels ${c} -> ${o} but received groups ${groups}`);
  }
  if (cg !== c / groups) {
    throw new ShapeError(
      `Expected weight of shape [${o}, ${c / groups}, ${kh}, ${kw}] for x ${formatShape(x.shape)} with groups ${groups} but received ${formatShape(weight.shape)}`,
    );
  }
  const oh = Math.floor((h + 2 * pad - kh) / stride) + 1;
  const ow = Math.floor((w + 2 * pad - kw) / stride) + 1;
  if (oh < 1 || ow < 1) {
    throw new ShapeError(`Expected x at least ${kh - 2 * pad}x${kw - 2 * pad} for a ${kh}x${kw} kernel with pad ${pad} but received ${h}x${w}`);
  }
  return { n, c, h, w, o, k: kh, stride, pad, groups, oh, ow };
}

function prepareConv2d(x: HostTensor, weight: HostTensor, options: Conv2dOptions) {
  const geometry = checkConvGeometry(x, weight, options);
  const { n, c, h, w, o, k, stride, pad, groups, oh, ow } = geometry;
  if (options.bias !== undefined) {
    const [bc] = checkTensor(options.bias, 'bias', 1) as [number];
    if (bc !== o) throw new ShapeError(`Expected bias of shape [${o}] but received [${bc}]`);
  }
  const xLayout = layoutOf(x, 'x');
  const yLayout = checkLayoutOption(options.layout) ?? xLayout;
  const y = withLayout([n, o, oh, ow], outputArray(n * o * oh * ow), yLayout);
  const native = {
    x: x.data, weight: weight.data, bias: options.bias?.data, y: y.data,
    batch: n, inChannels: c, height: h, width: w, outChannels: o, kernel: k, stride, pad, groups, relu: options.relu === true,
    xChannelsLast: xLayout === 'nhwc', yChannelsLast: yLayout === 'nhwc',
    ...chooseAlgorithm(options.algorithm, ['auto', 'direct', 'gemm', 'im2col', 'winograd', 'winograd2x2'], geometry, xLayout, yLayout, 'forward'),
  };
  return { native, y };
}

/**
 * 2-D convolution. x: (N, C, H, W), weight: (O, C/groups, K, K) -> (N, O, OH, OW). Runs off the event loop.
 * x may be NCHW or NHWC (layout.ts); the output has options.layout, by default x's.
 * @throws ShapeError / ArgumentValueError / ArgumentTypeError on bad arguments.
 * @example const y = await conv2d(x, w, { stride: 2, pad: 1, bias, relu: true });
 */
export async function conv2d(x: HostTensor, weight: HostTensor, options: Conv2dOptions = {}): Promise<HostTensor> {
  const { native, y } = prepareConv2d(x, weight, options);
  await callNative(() => loadCpuAddon().conv2d(native));
  return y;
}

/** Synchronous conv2d (blocks the event loop: for small tensors and scripts). */
export function conv2dSync(x: HostTensor, weight: HostTensor, options: Conv2dOptions = {}): HostTensor {
  const { native, y } = prepareConv2d(x, weight, options);
  callNativeSync(() => loadCpuAddon().conv2dSync(native));
  return y;
}

// ---------------------------------------------------------------------------------------------------------------
// Backward

export interface Conv2dBackwardOptions {
  /** The forward pass's stride (default 1). */
  stride?: number;
  /** The forward pass's zero padding on every side (default 0). */
  pad?: number;
  /** The forward pass's groups (default 1). */
  groups?: number;
  /** Compute dx (default true); false skips that half of the work, e.g. for the first layer. */
  needInputGrad?: boolean;
  /**
   * 'auto' (default), 'direct', 'gemm' or 'im2col', as Conv2dOptions.algorithm describes (those two need dy NHWC as
   * well; 'auto' picks each where conv2d's 'auto' does), or 'winograd2x2': dx (itself a 3x3 stride-1 conv of dy) with
   * Winograd F(2x2, 3x3) and dweight with its transpose F(3x3, 2x2), for 3x3 stride-1 pad-1 convs with groups 1 on
   * NHWC x and dy. 'auto' picks Winograd where conv2d's 'auto' picks Winograd, for dweight as well below AVX-512
   * (oneDNN's on AVX-512 CPUs).
   */
  algorithm?: 'auto' | 'direct' | 'gemm' | 'im2col' | 'winograd2x2';
}

/** Gradients of a bias-free conv2d. */
export interface Conv2dGrads {
  /** (N, C, H, W) in the layout of x; absent when needInputGrad was false. */
  dx?: HostTensor;
  /** (O, C/groups, K, K) */
  dweight: HostTensor;
}

function prepareConv2dBackward(x: HostTensor, weight: HostTensor, dy: HostTensor, options: Conv2dBackwardOptions) {
  const geometry = checkConvGeometry(x, weight, options);
  const { n, c, h, w, o, k, stride, pad, groups, oh, ow } = geometry;
  checkShape(dy, 'dy', [n, o, oh, ow], `the output of x ${formatShape(x.shape)} and weight ${formatShape(weight.shape)}`);
  const needInputGrad = options.needInputGrad ?? true;
  const xLayout = layoutOf(x, 'x');
  const dyLayout = layoutOf(dy, 'dy');
  const dx: HostTensor | undefined = needInputGrad ? withLayout([n, c, h, w], outputArray(x.data.length), xLayout) : undefined;
  const dweight: HostTensor = { shape: [...weight.shape], data: outputArray(weight.data.length) };
  const native = {
    x: x.data, weight: weight.data, dy: dy.data, dx: dx?.data, dweight: dweight.data,
    batch: n, inChannels: c, height: h, width: w, outChannels: o, kernel: k, stride, pad, groups,
    xChannelsLast: xLayout === 'nhwc', dyChannelsLast: dyLayout === 'nhwc',
    ...chooseAlgorithm(options.algorithm, ['auto', 'direct', 'gemm', 'im2col', 'winograd2x2'], geometry, xLayout, dyLayout, 'backward'),
  };
  const grads: Conv2dGrads = dx === undefined ? { dweight } : { dx, dweight };
  return { native, grads };
}

/**
 * Backward pass of `conv2d(x, weight, { stride, pad, groups })` without bias (PyTorch's conv2d gradients):
 * dx = transposed convolution of dy with weight, dweight = correlation of x with dy. A bias gradient, when a conv
 * has one, is dy summed over (N, OH, OW). Runs off the event loop (oneDNN convolution_backward_data/_weights).
 * x: (N, C, H, W), weight: (O, C/groups, K, K), dy: (N, O, OH, OW); x and dy each NCHW or NHWC, dx in x's layout.
 * @throws ShapeError / ArgumentValueError / ArgumentTypeError on bad arguments (dy must have the forward output's shape).
 * @example const { dx, dweight } = await conv2dBackward(x, w, dy, { stride: 2, pad: 1 });
 */
export async function conv2dBackward(x: HostTensor, weight: HostTensor, dy: HostTensor, options: Conv2dBackwardOptions = {}): Promise<Conv2dGrads> {
  const { native, grads } = prepareConv2dBackward(x, weight, dy, options);
  await runTrainingOp('conv2dBackward', native);
  return grads;
}

/** Synchronous conv2dBackward (blocks the event loop). */
export function conv2dBackwardSync(x: HostTensor, weight: HostTensor, dy: HostTensor, options: Conv2dBackwardOptions = {}): Conv2dGrads {
  const { native, grads } = prepareConv2dBackward(x, weight, dy, options);
  runTrainingOpSync('conv2dBackward', native);
  return grads;
}
