// Loads the native addons and turns their "CODE: message" errors into typed RepvggErrors.
// Not for: argument validation (lib/ops/ and lib/engine.ts check everything before calling native code).

import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  ArgumentTypeError,
  ArgumentValueError,
  BackendError,
  DisposedError,
  RepvggError,
  ShapeError,
} from '../errors.js';

/** Report of one compiled network plan (native/cpu/program.h PlanReport). */
export interface NativePlanReport {
  batch: number;
  height: number;
  width: number;
  activationBytes: number;
  weightBytes: number;
  /** Scratch the kernels use besides activations and weights: the Winograd transforms and im2col's column matrix (CPU), cuDNN's workspace (CUDA). */
  workspaceBytes: number;
  /** Activation layout the primitives chose for the first conv's output: 'NHWC', 'NCHW' or 'blocked'. */
  layout: string;
  /**
   * Per conv step: 'direct', 'winograd' (F(4x4,3x3)), 'winograd2x2', 'im2col' (im2col + GEMM: the wide stride-2
   * convs of 'auto' float32 plans on AVX2 CPUs) or 'int8', the implementation, the layout of the activations it
   * reads and writes (on AVX2 CPUs float32 plans run the convs that may use Winograd or im2col on 'NHWC' and the
   * others on oneDNN's 'blocked' one, reordering between them), and with convAlgorithm 'auto' the ms
   * measured when the plan was built with the conv's shape group (the convs of its shape) on each algorithm: of a
   * whole forward, or of the group's convs (see autoTiming).
   */
  convs: { step: number; algorithm: string; implementation: string; layout: string; directMs?: number; winogradMs?: number; winograd2x2Ms?: number }[];
  /** How 'auto' timed the algorithms ('forward': whole forwards, 'convs': each group's convs); absent when it timed none. */
  autoTiming?: 'forward' | 'convs';
  /**
   * With autoTiming: the ms of a whole forward with every conv direct, timed after one warm-up forward. Without an
   * autoTiming option it decides: 'convs' from 100 ms on, else 'forward'.
   */
  autoTimingForwardMs?: number;
  /**
   * CPU: the classifier's precision. 'bf16' in bf16 networks, and in int8 networks where the CPU multiplies bf16
   * natively (CpuCapabilities.nativeBf16: at batch 1 the classifier streams its weights, and bf16 halves them, while
   * its rounding adds less than the int8 layers before it); else 'fp32'.
   */
  headPrecision?: 'fp32' | 'bf16';
  /**
   * CPU: 'layers', one plan for the batch whose primitives use all `threads`; or 'images', the batch's images
   * split over `threads` threads, each running single-threaded copies of plans for chunks of `imagesPerPlan` (and
   * of 1) images (see NetworkOptions.batchThreading). convs, layout and autoTiming are then those of the
   * imagesPerPlan plan, activationBytes and workspaceBytes those of all the copies (of both chunk sizes: preparing
   * one batch that splits by images prepares every such batch), weightBytes those of one copy (they share weights).
   */
  threading?: 'layers' | 'images';
  imagesPerPlan?: number;
  threads?: number;
}

/** Where a plan's time goes (CPU): each primitive timed on its own, mean ms per run. */
export interface NativeProfile {
  /** step: index into the program's steps (-1: the input reorder; steps.length: the head); what: the primitive's role. */
  entries: { step: number; what: string; ms: number }[];
  /** Median ms of a whole run (primitives back to back, one wait at the end). */
  networkMs: number;
  runs: number;
  /** The plan profiled: the batch's own on `threads` threads ('layers'), or one thread's plan for `images` images ('images'). */
  threading: 'layers' | 'images';
  images: number;
  threads: number;
}

export interface NativeProgram {
  /** CPU: inputParts (whole images, in order, at most batch of them; the rest zeros) instead of input. */
  run(options: { input: Float32Array; output: Float32Array; batch: number; height: number; width: number } |
    { inputParts: Float32Array[]; output: Float32Array; batch: number; height: number; width: number }): Promise<void>;
  runSync(options: { input: Float32Array; output: Float32Array; batch: number; height: number; width: number }): void;
  prepare(options: { batch: number; height: number; width: number }): Promise<NativePlanReport>;
  /** CPU only. */
  profile?(options: { batch: number; height: number; width: number; runs: number }): Promise<NativeProfile>;
  /** CPU only: how run() uses the threads for a batch of this size (see NativePlanReport.threading). */
  threading?(options: { batch: number }): 'layers' | 'images';
  dispose(): void;
}

type OpFn = (options: object) => Promise<void>;
type OpSyncFn = (options: object) => void;

type F32 = Float32Array;

/**
 * The options of each training op of the CPU addon (native/addon/addon.cc), by export name: the fields its parser
 * reads. Every op is exported twice, `name` (Promise, on the compute thread) and `${name}Sync`.
 */
export interface CpuTrainingOptions {
  conv2dBackward: {
    x: F32; weight: F32; dy: F32; dx?: F32 | undefined; dweight: F32;
    batch: number; inChannels: number; height: number; width: number; outChannels: number; kernel: number; stride: number; pad: number; groups: number;
    xChannelsLast: boolean; dyChannelsLast: boolean;
  };
  batchNormTrain: {
    x: F32; gamma: F32; beta: F32; y: F32; mean: F32; var: F32; eps: number;
    batch: number; channels: number; height: number; width: number; channelsLast: boolean;
  };
  batchNormBackward: {
    x: F32; dy: F32; gamma: F32; mean: F32; var: F32; dx: F32; dgamma: F32; dbeta: F32; eps: number;
    batch: number; channels: number; height: number; width: number; channelsLast: boolean;
  };
  /** NHWC; 1 to 3 branches. */
  batchNormSum: {
    branches: { x: F32; gamma: F32; beta: F32; mean: F32; var: F32 }[]; y: F32; eps: number; relu: boolean;
    batch: number; channels: number; height: number; width: number;
  };
  batchNormSumBackward: {
    branches: { x: F32; gamma: F32; mean: F32; var: F32; dx: F32; dgamma: F32; dbeta: F32 }[]; y: F32; dy: F32; eps: number; relu: boolean;
    batch: number; channels: number; height: number; width: number;
  };
  reluBackward: { y: F32; dy: F32; dx: F32 };
  sigmoidBackward: { y: F32; dy: F32; dx: F32 };
  channelScaleBackward: { x: F32; scale: F32; dy: F32; dx: F32; dscale: F32; batch: number; channels: number; spatial: number; channelsLast: boolean };
  globalAvgPoolBackward: { dy: F32; dx: F32; batch: number; channels: number; height: number; width: number; channelsLast: boolean };
  linearBackward: {
    x: F32; weight: F32; dy: F32; dx?: F32 | undefined; dweight: F32; dbias: F32; batch: number; inFeatures: number; outFeatures: number;
  };
  /** loss: a Float64Array the op writes the mean loss into. */
  softmaxCrossEntropy: { logits: F32; labels: Int32Array; labelSmoothing: number; dlogits: F32; loss: Float64Array; batch: number; classes: number };
  sgdStep: {
    tensors: { weight: F32; grad: F32; momentumBuffer?: F32; weightDecay: number; first: boolean }[];
    lr: number; momentum: number; nesterov: boolean;
  };
  emaUpdate: { shadows: F32[]; currents: F32[]; decay: number };
  /** loss: a Float64Array the op writes 0.5 * weightDecay * the sum into. */
  customL2: {
    blocks: { k3: F32; k3Grad: F32; k1: F32; k1Grad: F32; t3: F32; t1: F32; outChannels: number; perOut: number }[];
    weightDecay: number; loss: Float64Array;
  };
  /** Keep up to maxFreeBytes of freed heap memory mapped (glibc malloc trim threshold). */
  retainFreedMemory: { maxFreeBytes: number };
}

/** The CPU addon's exports (native/addon/addon.cc). */
export interface CpuAddon {
  info(): { backend: string; library: string; libraryVersion: string; isa: string; nativeBf16: boolean; bf16: boolean; int8Vnni: boolean };
  setComputeNice(nice: number): void;
  /**
   * PIL's bilinear resampling passes (native/cpu/resample.h) on RGB bytes, on the calling thread: the source region
   * starts at src[srcOffset] (rows srcStride bytes apart, regionWidth pixels), the taps (from lib/data/images.ts)
   * read its rows [rowFirst, rowEnd), and the result goes to out[outOffset] with rows outStride bytes apart.
   */
  resampleBilinearRgb(options: {
    src: Uint8Array; srcOffset: number; srcStride: number; regionWidth: number; rowFirst: number; rowEnd: number;
    hFirst: Int32Array; hCount: Int32Array; hWeights: Int32Array; hMaxTaps: number;
    vFirst: Int32Array; vCount: Int32Array; vWeights: Int32Array; vMaxTaps: number;
    out: Uint8Array; outOffset: number; outStride: number;
  }): void;
  /**
   * libjpeg-turbo's RGB decode of a plain JPEG (native/cpu/jpeg.h) on the libuv pool: the (height, width, 3) pixels,
   * or why it declined the file (lib/data/images.ts then decodes it with sharp). bytes start with a JPEG SOI marker;
   * maxScans (1-500, default 500) bounds the scans read.
   */
  decodeJpeg(options: { bytes: Uint8Array; maxPixels: number; maxScans?: number }):
    Promise<{ data: Uint8Array; width: number; height: number } | { declined: string }>;
  Program: new (spec: object) => NativeProgram;
  conv2d: OpFn;
  conv2dSync: OpSyncFn;
  batchNorm: OpFn;
  batchNormSync: OpSyncFn;
  relu: OpFn;
  reluSync: OpSyncFn;
  sigmoid: OpFn;
  sigmoidSync: OpSyncFn;
  add: OpFn;
  addSync: OpSyncFn;
  channelScale: OpFn;
  channelScaleSync: OpSyncFn;
  globalAvgPool: OpFn;
  globalAvgPoolSync: OpSyncFn;
  linear: OpFn;
  linearSync: OpSyncFn;
}

const packageRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const require = createRequire(import.meta.url);

let cpuAddon: CpuAddon | undefined;
let cpuLoadError: BackendError | undefined;

/**
 * How long (busy-wait iterations) an idle OpenMP thread of the oneDNN team spins before it sleeps, unless the user
 * set OMP_WAIT_POLICY or GOMP_SPINCOUNT. libgomp's default, 300,000, keeps a team's cores busy for a long time after
 * each parallel region: with a second busy process (or thread) on the same cores the spinning teams take the cores
 * from each other, and two A0 inference processes on 2 cores got 36 img/s each instead of ~75. At 10,000 they got
 * 60-72 each, and one process alone measured within the machine's run-to-run noise of the default (batch 1:
 * 107 vs 105-110 img/s); OMP_WAIT_POLICY=passive shared best (75-82 each) but lost ~10% at batch 1 alone.
 */
export const DEFAULT_GOMP_SPINCOUNT = '10000';

/**
 * The CPU addon, loaded on first use. libgomp reads its settings when it is loaded with the addon, so the spin
 * count default is put into the environment just before (a no-op when the process already loaded libgomp).
 * @throws BackendError saying what was tried and how to fix it when the addon cannot be loaded.
 */
export function loadCpuAddon(): CpuAddon {
  if (cpuAddon) return cpuAddon;
  if (cpuLoadError) throw cpuLoadError;
  const path = join(packageRoot, 'build', 'Release', 'repvgg_cpu.node');
  try {
    if (!existsSync(path)) throw new Error(`${path} does not exist`);
    if (process.env.OMP_WAIT_POLICY === undefined && process.env.GOMP_SPINCOUNT === undefined) {
      process.env.GOMP_SPINCOUNT = DEFAULT_GOMP_SPINCOUNT;
    }
    cpuAddon = require(path) as CpuAddon;
    return cpuAddon;
  } catch (err) {
    const reason = err instanceof Error ? err.message : String(err);
    const hint = /libdnnl/.test(reason)
      ? 'oneDNN is missing at run time: install it with `apt-get install libdnnl2` (or run `npm run setup`).'
      : 'Build it with `npm run setup` (or `npm run build:native` once libdnnl-dev is installed).';
    cpuLoadError = new BackendError(`The CPU backend (oneDNN addon) could not be loaded: ${reason}. ${hint}`, 'ERR_BACKEND_UNAVAILABLE');
    throw cpuLoadError;
  }
}

/** Converts an error thrown or rejected by native code into the matching RepvggError subclass. */
export function nativeError(err: unknown): RepvggError {
  if (err instanceof RepvggError) return err;
  const message = err instanceof Error ? err.message : String(err);
  const match = /^(ERR_[A-Z_]+): (.*)$/s.exec(message);
  const code = match?.[1];
  const text = match?.[2] ?? message;
  switch (code) {
    case 'ERR_SHAPE':
      return new ShapeError(text);
    case 'ERR_ARG_TYPE':
      return new ArgumentTypeError(text);
    case 'ERR_ARG_VALUE':
      return new ArgumentValueError(text);
    case 'ERR_DISPOSED':
      return new DisposedError('the network');
    case 'ERR_BACKEND_UNAVAILABLE':
      return new BackendError(text, 'ERR_BACKEND_UNAVAILABLE');
    default:
      return new BackendError(text);
  }
}

/** Awaits a native promise, converting its rejection. */
export async function callNative<T>(promise: () => Promise<T>): Promise<T> {
  try {
    return await promise();
  } catch (err) {
    throw nativeError(err);
  }
}

/** Runs a native synchronous call, converting its exception. */
export function callNativeSync<T>(fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    throw nativeError(err);
  }
}
