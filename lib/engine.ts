// RepVGGNetwork: runs a RepVGG (training-time form in eval mode, or deployed form) on a backend. It turns the
// weights into a native step program — for the deployed form a flat list of fused conv+bias+ReLU layers over
// two ping-pong activation buffers — validates inputs, splits large batches and frees native memory on dispose().
// Not for: weight files (lib/io/weights.ts) or the fusion math (lib/reparam/).

import { cudaStatus, requireCudaAddon } from './backend/cuda.js';
import { cpuCapabilities, requireBf16Convolutions } from './backends.js';
import { callNative, callNativeSync, loadCpuAddon, type NativePlanReport, type NativeProgram } from './backend/native.js';
import { ArgumentTypeError, ArgumentValueError, DisposedError, ShapeError, describeValue, formatShape } from './errors.js';
import { blocksOf, featureChannels, totalStride, type RepVGGSpec, type WeightForm } from './models/repvgg.js';
import { checkFinite, checkPositiveInt, checkTensor } from './ops/check.js';
import { BN_EPS, batchNormOf, deployedModelFromState } from './reparam/reparam.js';
import type { DeployedModel, SEWeights } from './reparam/types.js';
import type { HostTensor, StateDict } from './tensor.js';
import { checkQuantizationFits, integerWeights, quantizationForCpu, type ModelQuantization } from './quant/params.js';
import { checkWeights, detectForm } from './io/weights.js';

/**
 * fp32 everywhere; bf16 on the CPU (AVX-512 or newer: oneDNN has no bf16 convolutions for AVX2 CPUs; native bf16
 * dot products with AVX512-BF16/AMX); int8 on the CPU (calibrated layers, see lib/quant); fp16 on
 * CUDA (NHWC, tensor cores).
 */
export type Precision = 'fp32' | 'bf16' | 'int8' | 'fp16';

/** process.emitWarning code of an int8 network whose 8-bit weights run as 7-bit ones on a CPU without VNNI. */
export const INT8_WEIGHT_BITS_WARNING = 'REPVGG_INT8_WEIGHT_BITS';
/**
 * How the CPU runs 3x3 stride-1 float32 and bf16 convs: 'auto' measures (one algorithm per conv shape), 'direct' is
 * oneDNN's kernel, 'winograd' our Winograd F(4x4, 3x3) and 'winograd2x2' F(2x2, 3x3) (native/cpu/winograd.h).
 */
export type ConvAlgorithm = 'auto' | 'direct' | 'winograd' | 'winograd2x2';
const CONV_ALGORITHMS: readonly ConvAlgorithm[] = ['auto', 'direct', 'winograd', 'winograd2x2'];
export type AutoTiming = 'forward' | 'convs';
const AUTO_TIMINGS: readonly AutoTiming[] = ['forward', 'convs'];
export type BatchThreading = 'images' | 'layers';
const BATCH_THREADINGS: readonly BatchThreading[] = ['images', 'layers'];

export type BackendName = 'cpu' | 'cuda' | 'auto';

export interface NetworkOptions {
  /**
   * 'cpu' (oneDNN), 'cuda' (cuDNN) or 'auto' (default): CUDA when it can run here and supports the other options
   * (precision 'fp32' or 'fp16', convAlgorithm 'auto', no autoTiming), else the CPU, so 'auto' with precision 'bf16'
   * or 'int8', a forced convAlgorithm or an autoTiming runs on the CPU everywhere. `network.backend` says which one
   * runs. An explicit backend refuses an option it does not support (ArgumentValueError) instead of switching.
   * `await probeCuda()` first keeps the one-time CUDA probe off the event loop.
   */
  backend?: BackendName;
  /**
   * 'fp32' (default); 'bf16' on a CPU with AVX-512 or newer (bfloat16 activations and weights, float32
   * accumulation; elsewhere an ArgumentValueError naming the CPU's instruction set); 'int8' on the
   * CPU (needs `quantization`); 'fp16' on CUDA (half NHWC activations and weights on tensor cores, float32
   * accumulation).
   */
  precision?: Precision;
  /**
   * The int8 calibration of the deployed weights (LoadedWeights.quantization, or calibrate()'s result); needed by
   * precision 'int8', whose calibrated layers then run u8 x s8 (the others, the first layer and the head in float32).
   */
  quantization?: ModelQuantization;
  /**
   * CUDA only: capture each input shape's whole forward as a CUDA graph and replay it (default true on CUDA; a
   * forward that cannot be captured runs eagerly and the plan report says why). Without a graph a small batch is
   * bound by the host enqueueing its layers: on an H200, A0 fp16 at batch 1 ran 480 img/s eager, 4445 as a graph.
   */
  cudaGraph?: boolean;
  /**
   * 3x3 stride-1 conv algorithm (CPU, float32 and bf16): 'auto' (default) gives the layers of one shape (a stage's
   * blocks) one of direct, Winograd F(2x2) and F(4x4) (bf16: no F(4x4)), whichever makes the forward fastest
   * when a plan is built (see autoTiming and docs/ARCHITECTURE.md, Winograd); or force one.
   * Winograd layers keep transformed weights, 16/9x (F(2x2)) or 4x (F(4x4)) the size of their 3x3 kernels.
   */
  convAlgorithm?: ConvAlgorithm;
  /**
   * How convAlgorithm 'auto' times the algorithms of a group of convs: 'forward', whole forwards, one group after
   * the other (best at small batches, where the weights a choice streams from memory slow the other layers too), or
   * 'convs', the group's own convs inside forwards that run every group on one algorithm (less noise when a forward
   * is long). Default: 'convs' when a warm forward takes 100 ms or more, else 'forward'. `prepare()` reports which ran
   * and the forward's ms (autoTimingForwardMs).
   */
  autoTiming?: AutoTiming;
  /**
   * How a batch of several images uses the CPU's threads: 'images' (default), each thread computes whole images
   * through single-threaded plans of 4 (and of 1) images and takes the next chunk when done, with no waiting
   * between threads inside the batch; or 'layers', every layer of one batch-sized plan split over all threads, as
   * for a single image (which always runs so). 'images' falls back to 'layers' for batches that would leave a thread
   * idle (3 images on 2 threads). Results differ from 'layers' by rounding only (other kernels), and are the same
   * from run to run. `prepare()` reports which ran (docs/ARCHITECTURE.md has the measurements).
   */
  batchThreading?: BatchThreading;
  /** Inputs larger than this are run in chunks of this many images. Default 32. */
  maxBatch?: number;
}

export interface PredictOptions {
  /** Called after each chunk of maxBatch images with (chunks done, chunks in all). */
  onProgress?: (done: number, total: number) => void;
}

/** What a compiled plan uses, per input shape (see NativePlanReport). */
export type PlanReport = NativePlanReport;

/** RepVGGNetwork.profile(): per primitive, its layer ('stage1.0', 'input', 'head'), role and mean ms per run. */
export interface NetworkProfile {
  entries: { step: number; layer: string; what: string; ms: number }[];
  /** Median ms of a whole forward. */
  networkMs: number;
  /** The entries summed. */
  sumMs: number;
  runs: number;
  /**
   * The plan timed: 'layers', the batch's own plan on `threads` threads; 'images' (batchThreading 'images'), one
   * thread's plan for a chunk of `images` images, run alone (the batch runs such chunks on every thread at once).
   */
  threading: 'layers' | 'images';
  images: number;
  threads: number;
}

function seStep(buf: number, channels: number, se: SEWeights, relu: boolean): object {
  return {
    kind: 'se', buf, channels, internal: se.channels, relu,
    downWeight: se.downWeight, downBias: se.downBias, upWeight: se.upWeight, upBias: se.upBias,
  };
}

/** A backend-neutral step program: what both addons' Program constructors take (with the head and options). */
export interface StepProgram {
  steps: object[];
  /** The block each step belongs to (e.g. 'stage1.0'), for profiles. */
  stepNames: string[];
  numBuffers: number;
  headSrc: number;
}

/**
 * The int8 fields of a deployed layer's conv step: integer weights, its scales, and a u8 output (on the next
 * layer's input scale) when the next layer is int8 too and reads this one's ReLU output directly; float32 otherwise.
 */
function int8Conv(model: DeployedModel, index: number, quantization: ModelQuantization): object | undefined {
  const layer = model.layers[index]!;
  const q = quantization.get(layer.name);
  if (!q) return undefined;
  const next = model.layers[index + 1];
  const nextQ = next && quantization.get(next.name);
  const outputScale = nextQ && layer.se === undefined ? nextQ.inputScale : 0;
  return {
    weight: integerWeights(layer.weight, q.weightScales),
    int8: { inputScale: q.inputScale, weightScales: q.weightScales, outputScale },
  };
}

/**
 * Native program for the deployed form: layer i reads buffer i % 2 and writes the other one. With quantization,
 * the layers it names become int8 convs (see int8Conv).
 */
export function deployedProgram(model: DeployedModel, quantization?: ModelQuantization): StepProgram {
  const steps: object[] = [];
  const stepNames: string[] = [];
  if (quantization) checkQuantizationFits(model, quantization);
  model.layers.forEach((layer, i) => {
    const src = i % 2;
    const dst = 1 - src;
    steps.push({
      kind: 'conv', src, dst, inChannels: layer.inChannels, outChannels: layer.outChannels, kernel: 3, stride: layer.stride,
      pad: 1, groups: layer.groups, weight: layer.weight, bias: layer.bias, relu: layer.se === undefined,
      ...(quantization && int8Conv(model, i, quantization)),
    });
    if (layer.se) steps.push(seStep(dst, layer.outChannels, layer.se, true));
    while (stepNames.length < steps.length) stepNames.push(layer.name);
  });
  return { steps, stepNames, numBuffers: 2, headSrc: model.layers.length % 2 };
}

/**
 * The BN parameters that make RepVGG's three BN'd branches compute a QARepVGG block in eval mode: its BN after the
 * sum, t * (dense + pointwise + x) + (beta - mean * t) with t = gamma / sqrt(var + eps), distributed over the
 * branches — the dense branch's BN composed with it, and the plain 1x1 and identity branches scaled by t (BN with
 * mean 0, var 1 and gamma t * sqrt(1 + eps)). Computed in float64.
 */
function qaBranchNorms(prefix: string, state: StateDict, get: (key: string) => Float32Array) {
  const { t, ...post } = batchNormOf(state, `${prefix}.bn`);
  const d = `${prefix}.rbr_dense.bn`;
  const dense = {
    mean: get(`${d}.running_mean`), var: get(`${d}.running_var`),
    gamma: Float32Array.from(get(`${d}.weight`), (g, o) => g * (t[o] as number)),
    beta: Float32Array.from(get(`${d}.bias`), (b, o) => (t[o] as number) * b + (post.beta[o] as number) - (post.mean[o] as number) * (t[o] as number)),
  };
  const channels = t.length;
  const scaled = {
    mean: new Float32Array(channels), var: new Float32Array(channels).fill(1), beta: new Float32Array(channels),
    gamma: Float32Array.from(t, (v) => v * Math.sqrt(1 + BN_EPS)),
  };
  return { dense, scaled };
}

/** Native program for the training-time form in eval mode: three branches into three spare buffers, summed. */
export function trainProgram(spec: RepVGGSpec, state: StateDict): StepProgram {
  const get = (key: string): Float32Array => {
    const t = state.get(key);
    if (!t) throw new Error(`internal: ${key} missing after validation`);
    return t.data;
  };
  type Norm = { mean: Float32Array; var: Float32Array; gamma: Float32Array; beta: Float32Array };
  const norm = (prefix: string): Norm => ({
    mean: get(`${prefix}.running_mean`), var: get(`${prefix}.running_var`), gamma: get(`${prefix}.weight`), beta: get(`${prefix}.bias`),
  });
  const bn = (params: Norm, src: number, dst: number, channels: number): object => ({ kind: 'batchnorm', src, dst, channels, eps: BN_EPS, ...params });
  const qa = spec.block === 'qa';
  const steps: object[] = [];
  const stepNames: string[] = [];
  let x = 0;
  for (const b of blocksOf(spec)) {
    const [dense, pointwise, identity] = [0, 1, 2, 3].filter((i) => i !== x) as [number, number, number];
    const conv = { kind: 'conv', inChannels: b.inChannels, outChannels: b.outChannels, stride: b.stride, groups: b.groups, src: x, relu: false };
    const se = b.seChannels > 0;
    const qaNorms = qa ? qaBranchNorms(b.name, state, get) : undefined;
    steps.push({ ...conv, dst: dense, kernel: 3, pad: 1, weight: get(`${b.name}.rbr_dense.conv.weight`) });
    steps.push(bn(qaNorms?.dense ?? norm(`${b.name}.rbr_dense.bn`), dense, dense, b.outChannels));
    steps.push({ ...conv, dst: pointwise, kernel: 1, pad: 0, weight: get(qa ? `${b.name}.rbr_1x1.weight` : `${b.name}.rbr_1x1.conv.weight`) });
    steps.push(bn(qaNorms?.scaled ?? norm(`${b.name}.rbr_1x1.bn`), pointwise, pointwise, b.outChannels));
    steps.push({ kind: 'add', a: dense, b: pointwise, dst: dense, relu: !b.hasIdentity && !se });
    if (b.hasIdentity) {
      steps.push(bn(qaNorms?.scaled ?? norm(`${b.name}.rbr_identity`), x, identity, b.inChannels));
      steps.push({ kind: 'add', a: dense, b: identity, dst: dense, relu: !se });
    }
    if (se) {
      const p = `${b.name}.se`;
      steps.push(
        seStep(dense, b.outChannels, {
          channels: b.seChannels, downWeight: get(`${p}.down.weight`), downBias: get(`${p}.down.bias`),
          upWeight: get(`${p}.up.weight`), upBias: get(`${p}.up.bias`),
        }, true),
      );
    }
    while (stepNames.length < steps.length) stepNames.push(b.name);
    x = dense;
  }
  return { steps, stepNames, numBuffers: 4, headSrc: x };
}

/** What only the CPU backend has: with these, 'auto' means the CPU. */
function needsCpu(options: NetworkOptions): boolean {
  const precision = options.precision ?? 'fp32';
  return (
    (precision !== 'fp32' && precision !== 'fp16') ||
    (options.convAlgorithm !== undefined && options.convAlgorithm !== 'auto') ||
    options.autoTiming !== undefined ||
    options.batchThreading !== undefined
  );
}

/** Picks the backend: 'auto' prefers CUDA when it can run here and fits the options; an explicit 'cuda' fails with the reason. */
function resolveBackend(options: NetworkOptions): 'cpu' | 'cuda' {
  const name: unknown = options.backend;
  if (name === 'cpu') return 'cpu';
  if (name === 'cuda') {
    requireCudaAddon();
    return 'cuda';
  }
  if (name === undefined || name === 'auto') return !needsCpu(options) && cudaStatus().available ? 'cuda' : 'cpu';
  throw new ArgumentValueError(`Expected 'cpu', 'cuda' or 'auto' for backend but received ${describeValue(name)}`);
}

/** A RepVGG ready to classify images on a native backend. Call dispose() when done. */
export class RepVGGNetwork {
  readonly spec: RepVGGSpec;
  readonly form: WeightForm;
  readonly backend: 'cpu' | 'cuda';
  readonly precision: Precision;
  readonly maxBatch: number;
  #program: NativeProgram | undefined;
  readonly #stepNames: readonly string[];

  private constructor(spec: RepVGGSpec, form: WeightForm, program: StepProgram,
    linear: { weight: Float32Array; bias: Float32Array }, options: NetworkOptions) {
    this.spec = spec;
    this.form = form;
    this.#stepNames = program.stepNames;
    this.backend = resolveBackend(options);
    if (options.cudaGraph === true && this.backend !== 'cuda') {
      throw new ArgumentValueError(`Expected cudaGraph only with the cuda backend but the network runs on ${this.backend}`);
    }
    const precision = options.precision ?? 'fp32';
    const precisions: Record<'cpu' | 'cuda', Precision[]> = { cpu: ['fp32', 'bf16', 'int8'], cuda: ['fp32', 'fp16'] };
    if (!precisions[this.backend].includes(precision)) {
      throw new ArgumentValueError(
        `Expected ${precisions[this.backend].map((p) => `'${p}'`).join(' or ')} for precision on the ${this.backend} backend but received ${describeValue(precision)}`,
      );
    }
    if (this.backend === 'cpu' && precision === 'bf16') requireBf16Convolutions('precision');
    const convAlgorithm = options.convAlgorithm ?? 'auto';
    if (!CONV_ALGORITHMS.includes(convAlgorithm)) {
      throw new ArgumentValueError(
        `Expected ${CONV_ALGORITHMS.map((a) => `'${a}'`).join(', ')} for convAlgorithm but received ${describeValue(convAlgorithm)}`,
      );
    }
    this.precision = precision;
    this.maxBatch = checkPositiveInt(options.maxBatch ?? 32, 'maxBatch');
    if (this.backend === 'cuda' && convAlgorithm !== 'auto') {
      throw new ArgumentValueError(`Expected 'auto' for convAlgorithm on the cuda backend (cuDNN measures its own) but received '${convAlgorithm}'`);
    }
    const autoTiming = options.autoTiming;
    if (autoTiming !== undefined && !AUTO_TIMINGS.includes(autoTiming)) {
      throw new ArgumentValueError(`Expected 'forward' or 'convs' for autoTiming but received ${describeValue(autoTiming)}`);
    }
    if (this.backend === 'cuda' && autoTiming !== undefined) {
      throw new ArgumentValueError(`Expected no autoTiming on the cuda backend (cuDNN measures its own) but received '${autoTiming}'`);
    }
    const batchThreading = options.batchThreading;
    if (batchThreading !== undefined && !BATCH_THREADINGS.includes(batchThreading)) {
      throw new ArgumentValueError(`Expected 'images' or 'layers' for batchThreading but received ${describeValue(batchThreading)}`);
    }
    if (this.backend === 'cuda' && batchThreading !== undefined) {
      throw new ArgumentValueError(`Expected no batchThreading on the cuda backend (one GPU stream runs the batch) but received '${batchThreading}'`);
    }
    const nativeSpec = {
      precision, convAlgorithm, ...(autoTiming !== undefined && { autoTiming }), ...(batchThreading !== undefined && { batchThreading }),
      inChannels: spec.inChannels, numBuffers: program.numBuffers, steps: program.steps,
      head: { src: program.headSrc, features: featureChannels(spec), classes: spec.numClasses, weight: linear.weight, bias: linear.bias },
      ...(this.backend === 'cuda' && { cudaGraph: options.cudaGraph !== false }),
    };
    const Program = this.backend === 'cuda' ? requireCudaAddon().Program : loadCpuAddon().Program;
    this.#program = callNativeSync(() => new Program(nativeSpec));
  }

  /**
   * A network from a state dict in either form (detected from its keys), checked against spec.
   * @throws WeightsMismatchError when the weights do not fit spec; BackendError when the backend is unavailable.
   */
  static fromStateDict(spec: RepVGGSpec, state: StateDict, options: NetworkOptions = {}): RepVGGNetwork {
    const form = detectForm(state);
    checkWeights(spec, state, form);
    if (form === 'deploy') return RepVGGNetwork.fromDeployed(deployedModelFromState(spec, state), options);
    if (options.precision === 'int8') {
      throw new ArgumentValueError("Expected deployed weights calibrated by repvgg quantize for precision 'int8' but received training-time weights");
    }
    const linear = { weight: state.get('linear.weight')!.data, bias: state.get('linear.bias')!.data };
    return new RepVGGNetwork(spec, 'train', trainProgram(spec, state), linear, options);
  }

  /**
   * A network running the deployed (re-parameterized) form.
   * @throws ArgumentTypeError when model is not a DeployedModel (a state dict goes to fromStateDict).
   */
  static fromDeployed(model: DeployedModel, options: NetworkOptions = {}): RepVGGNetwork {
    const candidate = model as Partial<DeployedModel> | null;
    if (candidate === null || typeof candidate !== 'object' || typeof candidate.spec !== 'object' || !Array.isArray(candidate.layers) ||
      !(candidate.linearWeight instanceof Float32Array) || !(candidate.linearBias instanceof Float32Array)) {
      throw new ArgumentTypeError(
        `Expected a deployed model ({ spec, layers, linearWeight, linearBias } from reparameterize or deployedModelFromState) for model but received ${describeValue(model)}`,
      );
    }
    const int8 = options.precision === 'int8';
    if (int8 && (options.quantization === undefined || options.quantization.size === 0)) {
      throw new ArgumentValueError(
        "Expected calibrated weights for precision 'int8' (run repvgg quantize, or pass quantization) but the weights carry no int8 scales",
      );
    }
    if (int8 && resolveBackend(options) === 'cpu') {
      // Without VNNI only 7-bit weights compute exactly (lib/quant/params.ts WeightBits): such layers move to 7 bits.
      const cpu = cpuCapabilities();
      checkQuantizationFits(model, options.quantization!);
      const fitted = quantizationForCpu(model, options.quantization!, cpu.int8Vnni);
      if (fitted.requantized.length > 0) {
        process.emitWarning(
          `this CPU (${cpu.isa}) has no VNNI: int8 weights above 63 would saturate, so ${fitted.requantized.length} layer${fitted.requantized.length === 1 ? '' : 's'} (${fitted.requantized.slice(0, 3).join(', ')}${fitted.requantized.length > 3 ? ', ...' : ''}) ` +
            'run with 7-bit weights; calibrate with 7 bits (repvgg quantize --weight-bits 7) to choose those weights yourself',
          { code: INT8_WEIGHT_BITS_WARNING },
        );
        model = fitted.model;
        options = { ...options, quantization: fitted.quantization };
      }
    }
    const program = deployedProgram(model, int8 ? options.quantization : undefined);
    return new RepVGGNetwork(model.spec, 'deploy', program, { weight: model.linearWeight, bias: model.linearBias }, options);
  }

  #live(): NativeProgram {
    if (!this.#program) throw new DisposedError('RepVGGNetwork');
    return this.#program;
  }

  /** Checks an input batch: (N, inChannels, H, W) float32, H and W at least the total stride, finite values. */
  checkInput(x: HostTensor, name = 'input'): [number, number, number, number] {
    const shape = this.#checkInputShape(x, name);
    // NaN/Inf would silently poison every logit of the image; we reject them instead of propagating.
    checkFinite(x.data, name);
    return shape;
  }

  #checkInputShape(x: HostTensor, name: string): [number, number, number, number] {
    const [n, c, h, w] = checkTensor(x, name, 4) as [number, number, number, number];
    if (c !== this.spec.inChannels) {
      throw new ShapeError(`Expected ${this.spec.inChannels} channels for ${name} (${this.spec.arch}) but received shape ${formatShape(x.shape)}`);
    }
    const minSide = totalStride(this.spec);
    if (h < minSide || w < minSide) {
      throw new ShapeError(`Expected ${name} of at least ${minSide}x${minSide} (the network's total stride) but received ${h}x${w}`);
    }
    return [n, c, h, w];
  }

  /**
   * Class logits (N, numClasses) for images x (N, C, H, W), computed off the event loop in chunks of maxBatch.
   * @throws ShapeError / ArgumentTypeError / ArgumentValueError for bad input; DisposedError after dispose().
   * @example const logits = await net.predict({ shape: [1, 3, 224, 224], data });
   */
  async predict(x: HostTensor, options: PredictOptions = {}): Promise<HostTensor> {
    const program = this.#live();
    const { chunks, logits } = this.#chunks(x);
    for (const [index, chunk] of chunks.entries()) {
      await callNative(() => program.run(chunk));
      options.onProgress?.(index + 1, chunks.length);
    }
    return logits;
  }

  /**
   * predict() for one batch given in parts: consecutive groups of whole images, each (k, C, H, W) float32, and
   * after them zeros up to `batch` images (padding to a prepared batch size); at most maxBatch images in all. On the
   * CPU each part goes straight into the network's input on the compute thread, so no batch-sized buffer is
   * assembled on the event loop (the server's batcher runs its requests this way); on CUDA the parts are joined first.
   * @returns logits (batch, numClasses), the padding images' rows included.
   * @throws ShapeError / ArgumentTypeError / ArgumentValueError for bad parts; DisposedError after dispose().
   */
  async predictParts(parts: readonly HostTensor[], batch: number): Promise<HostTensor> {
    const program = this.#live();
    checkPositiveInt(batch, 'batch');
    if (batch > this.maxBatch) throw new ArgumentValueError(`Expected batch of at most maxBatch ${this.maxBatch} but received ${batch}`);
    if (!Array.isArray(parts) || parts.length === 0) {
      throw new ArgumentTypeError(`Expected a non-empty array of tensors for parts but received ${describeValue(parts)}`);
    }
    const shapes = parts.map((part, i) => this.#checkInputShape(part, `parts[${i}]`));
    const [, c, h, w] = shapes[0]!;
    let images = 0;
    for (const [i, [k, ci, hi, wi]] of shapes.entries()) {
      if (ci !== c || hi !== h || wi !== w) {
        throw new ShapeError(`Expected parts[${i}] of images ${c}x${h}x${w} like parts[0] but received shape ${formatShape(parts[i]!.shape)}`);
      }
      images += k;
    }
    if (images > batch) throw new ShapeError(`Expected at most batch ${batch} images in parts but received ${images}`);
    if (this.backend === 'cuda') {
      const joined = new Float32Array(batch * c * h * w);
      let offset = 0;
      for (const part of parts) {
        joined.set(part.data, offset);
        offset += part.data.length;
      }
      return this.predict({ shape: [batch, c, h, w], data: joined });
    }
    const logits: HostTensor = { shape: [batch, this.spec.numClasses], data: new Float32Array(batch * this.spec.numClasses) };
    await callNative(() => program.run({ inputParts: parts.map((part) => part.data), output: logits.data, batch, height: h, width: w }));
    return logits;
  }

  /** predict() on the calling thread (blocks the event loop; for scripts and small inputs). */
  predictSync(x: HostTensor): HostTensor {
    const program = this.#live();
    const { chunks, logits } = this.#chunks(x);
    for (const chunk of chunks) callNativeSync(() => program.runSync(chunk));
    return logits;
  }

  /**
   * Validates x and splits it into runs of at most maxBatch images, each writing its slice of the logits. The CPU
   * addon checks the values are finite on its compute thread (a JavaScript scan of a large batch blocks the event
   * loop for milliseconds); for the CUDA addon, which does not, they are checked here.
   */
  #chunks(x: HostTensor) {
    const [n, c, h, w] = this.#checkInputShape(x, 'input');
    if (this.backend === 'cuda') checkFinite(x.data, 'input');
    const classes = this.spec.numClasses;
    const logits: HostTensor = { shape: [n, classes], data: new Float32Array(n * classes) };
    const imageSize = c * h * w;
    const chunks = [];
    for (let start = 0; start < n; start += this.maxBatch) {
      const batch = Math.min(this.maxBatch, n - start);
      chunks.push({
        input: x.data.subarray(start * imageSize, (start + batch) * imageSize),
        indexOffset: start * imageSize,
        output: logits.data.subarray(start * classes, (start + batch) * classes),
        batch, height: h, width: w,
      });
    }
    return { chunks, logits };
  }

  /**
   * How a batch of this size uses the threads: 'images' when the CPU backend splits it by images
   * (batchThreading 'images'; such batches share their plans, so one prepare() readies them all), else 'layers'
   * (its own plan; always on CUDA).
   */
  batchThreadingFor(batch: number): 'images' | 'layers' {
    checkPositiveInt(batch, 'batch');
    const program = this.#live();
    return program.threading === undefined ? 'layers' : callNativeSync(() => program.threading!({ batch }));
  }

  /** Builds (and, with convAlgorithm 'auto', measures) the plan for this input shape ahead of the first predict. */
  async prepare(batch: number, height: number, width: number): Promise<PlanReport> {
    checkPositiveInt(batch, 'batch');
    const minSide = totalStride(this.spec);
    if (height < minSide || width < minSide) {
      throw new ShapeError(`Expected height and width of at least ${minSide} but received ${height}x${width}`);
    }
    const program = this.#live();
    return callNative(() => program.prepare({ batch, height, width }));
  }

  /**
   * Where the time of one input shape goes (CPU backend): every primitive of the compiled plan timed on its own over
   * `runs` runs, labelled with its step and the deployed layer it belongs to, next to the whole run's median.
   * The sum of the entries minus the whole run is what running primitives back to back saves (or, when
   * negative, the per-call overhead outside the primitives).
   * @example const { layers, networkMs } = await net.profile(1, 224, 224);
   */
  async profile(batch: number, height: number, width: number, options: { runs?: number } = {}): Promise<NetworkProfile> {
    checkPositiveInt(batch, 'batch');
    const runs = checkPositiveInt(options.runs ?? 20, 'runs');
    const program = this.#live();
    if (program.profile === undefined) throw new ArgumentValueError(`Expected the cpu backend for profile() but the network runs on ${this.backend}`);
    await this.prepare(batch, height, width);
    const raw = await callNative(() => program.profile!({ batch, height, width, runs }));
    const names = this.#stepNames;
    const entries = raw.entries.map((e) => ({
      ...e, layer: e.step < 0 ? 'input' : e.step >= names.length ? 'head' : (names[e.step] ?? `step ${e.step}`),
    }));
    return {
      entries, networkMs: raw.networkMs, sumMs: entries.reduce((s, e) => s + e.ms, 0), runs: raw.runs,
      threading: raw.threading, images: raw.images, threads: raw.threads,
    };
  }

  /** Frees native memory now; later calls throw DisposedError. Safe to call twice. */
  dispose(): void {
    this.#program?.dispose();
    this.#program = undefined;
  }
}
