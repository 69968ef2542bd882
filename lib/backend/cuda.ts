// Loads the CUDA addon (build-cuda/Release/repvgg_cuda.node), tells it where cuDNN may be, and says whether the
// CUDA backend can run here — or exactly why not. Nothing in this file throws except requireCudaAddon().
// Not for: building step programs (lib/engine.ts) or error mapping (lib/backend/native.ts).

import { existsSync, readdirSync, realpathSync } from 'node:fs';
import { createRequire } from 'node:module';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { BackendError } from '../errors.js';
import type { NativePlanReport, NativeProgram } from './native.js';

/** What the CUDA addon's info() reports (native/addon/cuda_addon.cc). Versions are strings like '13.0'. */
export interface CudaInfo {
  backend: 'cuda';
  available: boolean;
  /** Set when unavailable: the first thing missing (driver, GPU, kernels for its architecture, cuDNN) and how to fix it. */
  reason?: string;
  /** CUDA architectures this addon has kernels for, e.g. '75,80,86,89,90'. */
  builtFor: string;
  buildCudaVersion: string;
  /** The CUDA runtime linked (statically) into the addon. */
  runtimeVersion: string;
  /** The CUDA version the driver supports, or 'none' without a driver. */
  driverVersion: string;
  deviceCount: number;
  deviceError?: string;
  device?: number;
  deviceName?: string;
  computeCapability?: string;
  totalMemoryBytes?: number;
  kernelError?: string;
  cudnnLoaded: boolean;
  cudnnVersion?: string;
  cudnnPath?: string;
  cudnnError?: string;
  /** Every cuDNN found, 'file (version, origin)', in the order they were tried (explicit first, then newest first). */
  cudnnCandidates: string[];
  /** Every place cuDNN was looked for without success, with why. */
  cudnnTried: string[];
  /** Sub-libraries or their dependencies that could not be pre-loaded (cuDNN may still work). */
  cudnnWarnings: string[];
  cudnnHandleError?: string;
}

/** Report of one CUDA plan: the CPU report's fields plus the cuDNN choices (implementation = 'cudnn ALGO MATH [fused bias+ReLU]'). */
export interface CudaPlanReport extends NativePlanReport {
  precision: 'fp32' | 'fp16';
  inputChannelsStored: number;
  cudaGraph: boolean;
  cudaGraphError?: string;
  convs: {
    step: number;
    algorithm: string;
    implementation: string;
    /** The network's one layout (report.layout). */
    layout: string;
    mathType: string;
    fused: boolean;
    /**
     * When a fused variant agreed: max |fused output - (conv, then bias, then ReLU)| of one check run at prepare time.
     * The layer may still run unfused when the fastest algorithm unfused beat it (the note gives both times).
     */
    fusedMaxDiff?: number;
    findMs?: number;
    workspaceBytes: number;
    note?: string;
  }[];
}

/** The CUDA addon's Program: the CPU Program's contract plus benchmark(). */
export interface CudaProgram extends NativeProgram {
  prepare(options: { batch: number; height: number; width: number }): Promise<CudaPlanReport>;
  /** Device time (CUDA events) of `iterations` forwards after `warmup`, the input uploaded once. */
  benchmark(options: {
    input: Float32Array;
    batch: number;
    height: number;
    width: number;
    warmup?: number;
    iterations?: number;
  }): Promise<{ ms: number[]; cudaGraph: boolean }>;
}

/** float32 device memory of the training ops (native/addon/cuda_training.cc). */
export interface CudaBuffer {
  readonly length: number;
  /** Host to device; resolves once the copy is done. */
  upload(data: Float32Array): Promise<void>;
  /** Device to host, after every op enqueued before it (an op's asynchronous failure rejects here). */
  download(into: Float32Array): Promise<void>;
  /** Frees the memory once the ops enqueued so far are done with it; later use is an ERR_DISPOSED error. */
  dispose(): void;
}

/** Training precision: 'fp32', or mixed precision with fp16 or bf16 convolutions. */
export type TrainPrecision = 'fp32' | 'fp16' | 'bf16';

/** Geometry fields of a bias-free convolution (as the CPU addon's). */
interface CudaConvFields {
  batch: number;
  inChannels: number;
  height: number;
  width: number;
  outChannels: number;
  kernel: number;
  stride: number;
  pad: number;
  groups: number;
}
interface CudaImageFields {
  batch: number;
  channels: number;
  height: number;
  width: number;
}
interface CudaLinearFields {
  batch: number;
  inFeatures: number;
  outFeatures: number;
}
interface CudaPlaneFields {
  batch: number;
  channels: number;
  spatial: number;
}

/**
 * The CUDA addon's training ops, over CudaBuffers, NCHW, with the CPU addon's names and fields. Argument errors
 * throw at the call; the work is then enqueued on the training stream in call order and the call returns at once,
 * except allFinite, softmaxCrossEntropy and customL2, which wait for the GPU and resolve with their value. An op
 * that fails while being enqueued makes the ops after it skip, and the next of those three or of a Buffer's
 * upload/download reject with its error.
 */
export interface CudaTrainingOps {
  /**
   * precision 'fp16' or 'bf16' (compute capability 8.0+): the convolution runs on 16-bit copies (tensor cores, float
   * accumulation); operands stay float.
   */
  conv2d(o: CudaConvFields & { x: CudaBuffer; weight: CudaBuffer; y: CudaBuffer; precision?: TrainPrecision }): void;
  conv2dBackward(o: CudaConvFields & {
    x: CudaBuffer; weight: CudaBuffer; dy: CudaBuffer; dx?: CudaBuffer; dweight: CudaBuffer; precision?: TrainPrecision;
  }): void;
  /** Resolves with false when any value of any of the tensors is NaN or infinite (waits for the GPU). */
  allFinite(o: { tensors: CudaBuffer[] }): Promise<boolean>;
  batchNormTrain(o: CudaImageFields & { x: CudaBuffer; gamma: CudaBuffer; beta: CudaBuffer; y: CudaBuffer; mean: CudaBuffer; var: CudaBuffer; eps: number }): void;
  batchNormBackward(o: CudaImageFields & {
    x: CudaBuffer; dy: CudaBuffer; gamma: CudaBuffer; mean: CudaBuffer; var: CudaBuffer; dx?: CudaBuffer; dgamma: CudaBuffer; dbeta: CudaBuffer; eps: number;
  }): void;
  updateRunningStats(o: { runningMean: CudaBuffer; runningVar: CudaBuffer; mean: CudaBuffer; var: CudaBuffer; channels: number; count: number; momentum: number }): void;
  relu(o: { x: CudaBuffer; y: CudaBuffer; count: number }): void;
  reluBackward(o: { y: CudaBuffer; dy: CudaBuffer; dx: CudaBuffer; count: number }): void;
  sigmoid(o: { x: CudaBuffer; y: CudaBuffer; count: number }): void;
  sigmoidBackward(o: { y: CudaBuffer; dy: CudaBuffer; dx: CudaBuffer; count: number }): void;
  add(o: { a: CudaBuffer; b: CudaBuffer; y: CudaBuffer; count: number; relu?: boolean }): void;
  scale(o: { x: CudaBuffer; y: CudaBuffer; count: number; factor: number }): void;
  globalAvgPool(o: CudaImageFields & { x: CudaBuffer; y: CudaBuffer }): void;
  globalAvgPoolBackward(o: CudaImageFields & { dy: CudaBuffer; dx: CudaBuffer }): void;
  linear(o: CudaLinearFields & { x: CudaBuffer; weight: CudaBuffer; bias: CudaBuffer; y: CudaBuffer }): void;
  linearBackward(o: CudaLinearFields & { x: CudaBuffer; weight: CudaBuffer; dy: CudaBuffer; dx?: CudaBuffer; dweight: CudaBuffer; dbias: CudaBuffer }): void;
  channelScale(o: CudaPlaneFields & { x: CudaBuffer; scale: CudaBuffer; y: CudaBuffer }): void;
  channelScaleBackward(o: CudaPlaneFields & { x: CudaBuffer; scale: CudaBuffer; dy: CudaBuffer; dx: CudaBuffer; dscale: CudaBuffer }): void;
  /** Resolves with the mean loss (waits for the GPU). */
  softmaxCrossEntropy(o: { logits: CudaBuffer; labels: Int32Array; dlogits: CudaBuffer; batch: number; classes: number; labelSmoothing: number }): Promise<number>;
  sgdStep(o: {
    tensors: { weight: CudaBuffer; grad: CudaBuffer; momentumBuffer?: CudaBuffer; weightDecay: number; first: boolean }[];
    lr: number; momentum: number; nesterov: boolean;
  }): void;
  emaUpdate(o: { shadows: CudaBuffer[]; currents: CudaBuffer[]; decay: number }): void;
  /** Resolves with 0.5 * weightDecay * the sum (waits for the GPU). */
  customL2(o: {
    blocks: { k3: CudaBuffer; k3Grad: CudaBuffer; k1: CudaBuffer; k1Grad: CudaBuffer; t3: CudaBuffer; t1: CudaBuffer; outChannels: number; perOut: number }[];
    weightDecay: number;
  }): Promise<number>;
}

/**
 * The CUDA addon's exports. Program takes the CPU Program's spec ({ precision, convAlgorithm, inChannels,
 * numBuffers, steps, head }) with precision 'fp32' | 'fp16', convAlgorithm 'auto' only, and two extra fields:
 * cudaGraph?: boolean (capture each input shape's forward once, replay it) and device?: number (default 0).
 */
export interface CudaAddon {
  /** Probes on the calling thread (driver initialization and loading cuDNN: up to seconds on a GPU machine). */
  info(options?: { device?: number }): CudaInfo;
  /** The same probe on a worker thread; never rejects. */
  infoAsync(options?: { device?: number }): Promise<CudaInfo>;
  init(options: { cudnnSearchDirs: string[] }): void;
  Program: new (spec: object) => CudaProgram;
  /** Device memory for training: `length` float32 values (uninitialized). */
  Buffer: new (options: { length: number }) => CudaBuffer;
  train: CudaTrainingOps;
}

export type CudaAddonLoad =
  | { addon: CudaAddon; path: string }
  | { addon: undefined; path: string; reason: string };

const packageRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const require = createRequire(import.meta.url);

/** Where `npm run build:cuda` (cmake-js compile --out build-cuda) puts the addon. */
export function cudaAddonPath(): string {
  return join(packageRoot, 'build-cuda', 'Release', 'repvgg_cuda.node');
}

let loaded: CudaAddonLoad | undefined;
let initialized = false;

/**
 * Loads the CUDA addon once. Never throws: without the addon (not built, or it fails to load) the result has
 * addon undefined and a reason naming the path and what to do.
 */
export function loadCudaAddon(): CudaAddonLoad {
  if (loaded) return loaded;
  const path = cudaAddonPath();
  if (!existsSync(path)) {
    loaded = {
      addon: undefined,
      path,
      reason: `the CUDA addon is not built (${path} does not exist): build it with \`npm run build:cuda\` where nvcc (CUDA >= 11.8) is installed`,
    };
    return loaded;
  }
  try {
    loaded = { addon: require(path) as CudaAddon, path };
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    loaded = { addon: undefined, path, reason: `the CUDA addon at ${path} could not be loaded: ${message}` };
  }
  return loaded;
}

export interface CudnnSearchOptions {
  /** Environment to read REPVGG_CUDNN_PATH, HOME, PATH, VIRTUAL_ENV and CONDA_PREFIX from. Default process.env. */
  env?: NodeJS.ProcessEnv;
}

/** Folders matching /^python3/ directly under base, e.g. /usr/lib/python3.12. */
function pythonDirs(base: string): string[] {
  try {
    return readdirSync(base)
      .filter((name) => /^python3(\.\d+)?$/.test(name))
      .sort()
      .reverse()
      .map((name) => join(base, name));
  } catch {
    return [];
  }
}

/** Subfolders of dir, or none. */
function subfolders(dir: string): string[] {
  try {
    return readdirSync(dir, { withFileTypes: true }).filter((e) => e.isDirectory()).map((e) => join(dir, e.name));
  } catch {
    return [];
  }
}

/**
 * The lib folders of the Python installations a user may have put cuDNN in without asking Python (no
 * subprocess: this runs on the event loop): each `python3` on PATH (<prefix>/lib beside its bin folder, which is
 * a virtual environment's own site-packages, and its real file's <prefix>/lib), and every pyenv version
 * (~/.pyenv/versions/X/lib).
 */
function pythonPrefixes(env: NodeJS.ProcessEnv, home: string | undefined): string[] {
  const prefixes: string[] = [];
  for (const dir of (env['PATH'] ?? '').split(':')) {
    if (!dir) continue;
    const python = join(dir, 'python3');
    if (!existsSync(python)) continue;
    // A venv's bin/python3 links to the interpreter it was made from; its packages are beside bin/, not there.
    prefixes.push(join(dirname(dir), 'lib'));
    try {
      prefixes.push(join(dirname(dirname(realpathSync(python))), 'lib'));
    } catch {
      // a dangling link: nothing to find there
    }
  }
  if (home) for (const version of subfolders(join(home, '.pyenv', 'versions'))) prefixes.push(join(version, 'lib'));
  return prefixes;
}

/**
 * Where the CUDA addon looks for cuDNN: $REPVGG_CUDNN_PATH (a folder or a libcudnn.so.N file) first and as
 * given, then '@system' (the loader's places), then the nvidia/cudnn/lib folders of Python wheels (where
 * PyTorch users have cuDNN): site-/dist-packages under /usr/lib/python3*, /usr/local/lib/python3*,
 * ~/.local/lib/python3*, $VIRTUAL_ENV, $CONDA_PREFIX, each python3 on PATH and each pyenv version. Wheel
 * folders are listed only when they exist; the list has no duplicates. The addon tries the explicit entry first
 * and ranks everything after '@system' newest first (native/cuda/cudnn_loader.h).
 */
export function cudnnSearchDirs(options: CudnnSearchOptions = {}): string[] {
  const env = options.env ?? process.env;
  const entries: string[] = [];
  const explicit = env['REPVGG_CUDNN_PATH'];
  if (explicit) entries.push(explicit);
  entries.push('@system');
  const prefixes = ['/usr/lib', '/usr/local/lib'];
  const home = env['HOME'] ?? homedir();
  if (home) prefixes.push(join(home, '.local', 'lib'));
  for (const root of [env['VIRTUAL_ENV'], env['CONDA_PREFIX']]) if (root) prefixes.push(join(root, 'lib'));
  prefixes.push(...pythonPrefixes(env, home));
  for (const prefix of prefixes) {
    for (const python of pythonDirs(prefix)) {
      for (const packages of ['site-packages', 'dist-packages']) {
        const dir = join(python, packages, 'nvidia', 'cudnn', 'lib');
        if (existsSync(dir)) entries.push(dir);
      }
    }
  }
  return [...new Set(entries)];
}

/** The addon with its cuDNN search list set (once per process), or the reason it is unavailable. */
function initializedAddon(): CudaAddonLoad {
  const load = loadCudaAddon();
  if (load.addon && !initialized) {
    load.addon.init({ cudnnSearchDirs: cudnnSearchDirs() });
    initialized = true;
  }
  return load;
}

export interface CudaStatus {
  available: boolean;
  /** Why the CUDA backend cannot run here (set exactly when available is false). */
  reason?: string;
  /** What was found, as strings for display: addon path, device, versions, cuDNN path, what was tried. */
  details: Record<string, string>;
}

function statusFrom(load: CudaAddonLoad, info: CudaInfo | undefined): CudaStatus {
  const details: Record<string, string> = { addon: load.path };
  if (!load.addon || !info) return { available: false, reason: load.addon ? 'the CUDA addon returned no report' : load.reason, details };
  for (const [key, value] of Object.entries(info)) {
    if (key === 'available' || key === 'reason' || key === 'backend' || value === undefined) continue;
    if (Array.isArray(value)) {
      if (value.length > 0) details[key] = value.join('; ');
    } else {
      details[key] = String(value);
    }
  }
  if (info.available) return { available: true, details };
  return { available: false, reason: info.reason ?? 'the CUDA addon reports it is unavailable without a reason', details };
}

function probeFailure(err: unknown): CudaStatus {
  return { available: false, reason: `probing CUDA failed: ${err instanceof Error ? err.message : String(err)}`, details: {} };
}

// The one probe of this process (a machine does not gain or lose a GPU while we run): set by whichever of
// cudaStatus() and probeCuda() finishes first.
let probed: CudaStatus | undefined;
let probing: Promise<CudaStatus> | undefined;

/**
 * Whether the CUDA backend can run here, and what it found: probed once per process, then remembered. The
 * first call probes on the calling thread (on a GPU machine, driver initialization and loading cuDNN block for
 * up to seconds); `await probeCuda()` first to keep that off the event loop. Never throws: a failure to probe is
 * reported as the reason.
 * @example const { available, reason } = cudaStatus(); if (!available) console.log(`no CUDA: ${reason}`);
 */
export function cudaStatus(): CudaStatus {
  if (probed) return probed;
  try {
    const load = initializedAddon();
    probed = statusFrom(load, load.addon?.info());
  } catch (err) {
    probed = probeFailure(err);
  }
  return probed;
}

/**
 * cudaStatus() without blocking the event loop: the probe runs on a worker thread, once per process (later
 * calls share the first one's result). `RepVGGNetwork` with backend 'auto' or 'cuda' then decides at once.
 */
export function probeCuda(): Promise<CudaStatus> {
  if (probed) return Promise.resolve(probed);
  probing ??= (async () => {
    try {
      const load = initializedAddon();
      const info = load.addon ? await load.addon.infoAsync() : undefined;
      probed ??= statusFrom(load, info);
    } catch (err) {
      probed ??= probeFailure(err);
    }
    return probed;
  })();
  return probing;
}

/**
 * The CUDA addon, ready to construct Programs.
 * @throws BackendError (code ERR_BACKEND_UNAVAILABLE) with cudaStatus()'s reason when CUDA cannot run here.
 */
export function requireCudaAddon(): CudaAddon {
  const status = cudaStatus();
  const addon = loadCudaAddon().addon;
  if (!status.available || !addon) {
    throw new BackendError(`The CUDA backend is unavailable: ${status.reason ?? 'unknown reason'}`, 'ERR_BACKEND_UNAVAILABLE');
  }
  return addon;
}
