// The one typed interface every training backend implements: the forward and backward of each op the training
// path uses, the gradient bookkeeping the tape needs, and the optimizer's updates. `V` is the backend's tensor
// (the CPU's HostTensor in host memory, CUDA's DeviceTensor in GPU memory), `G` its gradient (a Float32Array on the
// CPU, a DeviceTensor on CUDA). lib/autograd/functions.ts records ops through it, so a network's forward and
// backward run wholly on one backend with no host round trip per op. Implementations: cpu-backend.ts (oneDNN,
// NHWC activations) and cuda-backend.ts (cuDNN and our kernels, NCHW).
// Not for: inference (lib/engine.ts compiles whole networks instead).

import type { TrainPrecision } from '../backend/cuda.js';
import type { HostTensor } from '../tensor.js';

/** Geometry of a bias-free convolution (square kernel from the weight's shape). */
export interface ConvOptions {
  stride: number;
  pad: number;
  groups: number;
}

/** One parameter tensor of an SGD step. */
export interface SgdTensorOf<V, G> {
  weight: V;
  grad: G;
  /** Absent without momentum; `first`: never written yet (PyTorch makes the first d the buffer). */
  momentumBuffer?: V;
  weightDecay: number;
  first: boolean;
}

/** One block's branch kernels for the official custom L2 (see lib/train/optimizer.ts addCustomL2). */
export interface CustomL2BlockOf<V, G> {
  k3: V;
  k3Grad: G;
  k1: V;
  k1Grad: G;
  /** (O) gamma / sqrt(running_var + eps) of the dense and 1x1 branch BNs, as float32. */
  t3: V;
  t1: V;
  outChannels: number;
  perOut: number;
}

export interface TrainBackend<V extends { readonly shape: readonly number[] }, G> {
  readonly name: 'cpu' | 'cuda';
  /**
   * 'fp32', or on CUDA 'fp16' / 'bf16': convolutions, forward and backward, run on 16-bit copies on tensor cores
   * with float accumulation, everything else in float32; fp16 trains with a loss scale (lib/train/loss-scale.ts),
   * bf16 has float32's range and needs none.
   */
  readonly precision: TrainPrecision;

  // ---- memory
  /** A backend tensor holding a copy of t (the CPU backend copies too: parameters own their memory). */
  upload(t: HostTensor): Promise<V>;
  /**
   * Images (or features) as an input the tape only reads: the CPU uses them as they are, CUDA uploads them. owned:
   * the caller must release the tensor after the step (tape.own does it at recycle()).
   */
  input(t: HostTensor): Promise<{ value: V; owned: boolean }>;
  /** The values of v in host memory, plain NCHW order (shares memory on the CPU when already NCHW). */
  download(v: V): Promise<HostTensor>;
  /** A gradient of `like` from plain NCHW host values (in like's data layout on the backend). */
  uploadGradient(dy: HostTensor, like: V): Promise<G>;
  /** The values of a gradient of `like`'s shape, in host memory, plain NCHW order. */
  downloadGradient(g: G, like: V): Promise<Float32Array>;
  /** A zero tensor of the given shape (momentum buffers). */
  zeros(shape: readonly number[]): V;
  /** A zero gradient of `like`'s shape (a parameter's gradient that only a regularizer adds to). */
  zeroGradient(like: V): G;
  /** The gradient of a scalar root: ones of `like`'s shape, or a copy of seed. */
  seedGradient(like: V, seed?: Float32Array): Promise<G>;
  /** A gradient that nothing else holds, with g's values. */
  copyGradient(g: G): G;
  /** acc += g (same shape). */
  accumulate(acc: G, g: G): Promise<void>;
  /** Whether every value of every gradient is finite (dynamic loss scaling checks for overflow). */
  allFinite(gs: G[]): Promise<boolean>;
  /** g *= factor, in place. */
  scaleGradient(g: G, factor: number): Promise<void>;
  /** Hands memory that nothing reads any more back for reuse (CPU) or frees it (CUDA). */
  releaseValue(v: V): void;
  releaseGradient(g: G): void;

  // ---- ops: forward returns new tensors; backward takes the forward's inputs, output and output gradient
  conv2d(x: V, weight: V, o: ConvOptions): Promise<V>;
  conv2dBackward(x: V, weight: V, y: V, dy: G, o: ConvOptions & { needInputGrad: boolean }): Promise<{ dx?: G; dweight: G }>;
  /** Training-mode BN: the batch mean and biased variance, and the normalized output. */
  batchNormTrain(x: V, gamma: V, beta: V, eps: number): Promise<{ y: V; mean: V; variance: V }>;
  batchNormBackward(x: V, y: V, dy: G, gamma: V, mean: V, variance: V, eps: number): Promise<{ dx: G; dgamma: G; dbeta: G }>;
  /**
   * Optional: relu?(BN_1(x_1) + ... + BN_k(x_k)) with training-mode BNs in one op (the branch sum of a RepVGG block),
   * with each branch's batch mean and biased variance; undefined when this backend cannot for these tensors. It must
   * give what batchNormTrain per branch and add (addRelu last) give: functions.ts composes those where it is absent.
   */
  batchNormSum?(branches: { x: V; gamma: V; beta: V }[], eps: number, relu: boolean): Promise<{ y: V; stats: { mean: V; variance: V }[] } | undefined>;
  /** The gradient of batchNormSum from its output y: per branch dx, dgamma, dbeta. Present whenever batchNormSum is. */
  batchNormSumBackward?(
    branches: { x: V; gamma: V; mean: V; variance: V }[], y: V, dy: G, eps: number, relu: boolean,
  ): Promise<{ dx: G; dgamma: G; dbeta: G }[]>;
  /** running = momentum * batch + (1 - momentum) * running, the variance unbiased over `count` values. */
  updateRunningStats(runningMean: V, runningVar: V, mean: V, variance: V, count: number, momentum: number): Promise<void>;
  /**
   * b in a's data layout when they differ (the CPU keeps images NCHW and activations NHWC), with the rule that
   * brings its gradient back; undefined when b can be used as it is.
   */
  matchLayout(a: V, b: V): { y: V; back: (dy: G) => G } | undefined;
  add(a: V, b: V, relu: boolean): Promise<V>;
  relu(x: V): Promise<V>;
  reluBackward(y: V, dy: G): Promise<G>;
  sigmoid(x: V): Promise<V>;
  sigmoidBackward(y: V, dy: G): Promise<G>;
  /** (N, C, H, W) -> (N, C). */
  globalAvgPool(x: V): Promise<V>;
  globalAvgPoolBackward(x: V, y: V, dy: G): Promise<G>;
  /** x (N, C) @ weight (K, C)^T + bias (K). */
  linear(x: V, weight: V, bias: V): Promise<V>;
  linearBackward(x: V, weight: V, y: V, dy: G, needInputGrad: boolean): Promise<{ dx?: G; dweight: G; dbias: G }>;
  /** x (N, C, H, W) * scale (N, C). */
  channelScale(x: V, scale: V): Promise<V>;
  channelScaleBackward(x: V, scale: V, y: V, dy: G): Promise<{ dx: G; dscale: G }>;
  /** Mean softmax cross-entropy with label smoothing of logits (N, K); the loss and d loss / d logits. */
  softmaxCrossEntropy(logits: V, labels: Int32Array, labelSmoothing: number): Promise<{ loss: number; dlogits: G }>;
  /** dlogits scaled by the loss's own gradient (1 for a backward from the loss itself). */
  scaleLossGradient(dlogits: G, dloss: G): Promise<G>;
  /** A one-value tensor holding the loss (the tape's root). */
  scalar(value: number): V;

  // ---- optimizer
  sgdStep(tensors: SgdTensorOf<V, G>[], lr: number, momentum: number, nesterov: boolean): Promise<void>;
  emaUpdate(shadows: V[], currents: V[], decay: number): Promise<void>;
  /** Adds the custom L2 gradients into k3Grad/k1Grad and resolves with 0.5 * weightDecay * the sum. */
  customL2(blocks: CustomL2BlockOf<V, G>[], weightDecay: number): Promise<number>;
}
