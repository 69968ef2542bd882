// The CUDA training backend: TrainBackend over DeviceTensors (GPU memory, NCHW, float32), every op one call of
// the CUDA addon's training surface (native/addon/cuda_training.cc: cuDNN convolutions and our kernels) enqueued on
// one stream in call order without waiting for it (the host runs ahead of the GPU), so a training step runs on the
// GPU with no host round trip except the loss value and whatever the caller downloads. Gradients are DeviceTensors
// too. Memory is freed by releaseValue/releaseGradient (the tape's recycle and the optimizer's zeroGrad), with the
// GPU buffer's finalizer as safety net.
// Not for: inference (lib/engine.ts with backend 'cuda').

import { requireCudaAddon, type CudaAddon, type CudaBuffer, type CudaTrainingOps, type TrainPrecision } from '../backend/cuda.js';
import { callNative, callNativeSync } from '../backend/native.js';
import { ArgumentValueError, ShapeError, describeValue, formatShape } from '../errors.js';
import { checkCrossEntropyArguments } from '../ops/loss.js';
import type { ConvOptions, CustomL2BlockOf, SgdTensorOf, TrainBackend } from './backend.js';

/** A float32 tensor in GPU memory (NCHW for 4-D activations). */
export class DeviceTensor {
  readonly shape: readonly number[];
  readonly buffer: CudaBuffer;
  constructor(shape: readonly number[], buffer: CudaBuffer) {
    this.shape = shape;
    this.buffer = buffer;
  }
  get length(): number {
    return this.buffer.length;
  }
}

const count = (shape: readonly number[]): number => shape.reduce((p, d) => p * d, 1);

/** The four sizes of an (N, C, H, W) tensor. */
function dims4(t: DeviceTensor, name: string): [number, number, number, number] {
  if (t.shape.length !== 4) throw new ShapeError(`Expected a rank-4 tensor for ${name} but received shape ${formatShape(t.shape)}`);
  return t.shape as [number, number, number, number];
}

export interface CudaBackendOptions {
  /** 'fp32' (default), or mixed precision 'fp16' / 'bf16' (compute capability 8.0+): TrainBackend.precision. */
  precision?: TrainPrecision;
}

/** A CUDA training backend (the addon is loaded, and CUDA checked, on each call). */
export function cudaBackend(options: CudaBackendOptions = {}): TrainBackend<DeviceTensor, DeviceTensor> {
  const precision = options.precision ?? 'fp32';
  if (precision !== 'fp32' && precision !== 'fp16' && precision !== 'bf16') {
    throw new ArgumentValueError(`Expected 'fp32', 'fp16' or 'bf16' for precision but received ${describeValue(precision)}`);
  }
  const addon: CudaAddon = requireCudaAddon();
  const ops = addon.train;
  const alloc = (shape: readonly number[]): DeviceTensor => new DeviceTensor([...shape], new addon.Buffer({ length: Math.max(1, count(shape)) }));
  // Copies enqueued by the synchronous methods (zeros, scalar) are not awaited; the first failure among them is
  // thrown by the next call instead of becoming an unhandled rejection.
  let backgroundError: unknown;
  const run = async <T>(work: () => Promise<T>): Promise<T> => {
    if (backgroundError !== undefined) throw backgroundError;
    return callNative(work);
  };
  // Most ops only hand their work to the addon's training thread: argument errors throw here, a failure while
  // enqueueing rejects the next awaited call (download, loss, allFinite, custom L2).
  const enqueue = (call: () => void): void => {
    if (backgroundError !== undefined) throw backgroundError;
    callNativeSync(call);
  };
  const background = (work: () => Promise<void>): void => {
    callNative(work).catch((err: unknown) => {
      backgroundError ??= err;
    });
  };
  const image = (t: DeviceTensor, name: string) => {
    const [batch, channels, height, width] = dims4(t, name);
    return { batch, channels, height, width };
  };
  const convFields = (x: DeviceTensor, w: DeviceTensor, o: ConvOptions) => {
    const [batch, inChannels, height, width] = dims4(x, 'x');
    const [outChannels, , kernel] = dims4(w, 'weight');
    return { batch, inChannels, height, width, outChannels, kernel, stride: o.stride, pad: o.pad, groups: o.groups, precision };
  };
  const convOutput = (x: DeviceTensor, w: DeviceTensor, o: ConvOptions): number[] => {
    const [n, , h, wd] = dims4(x, 'x');
    const [out, , k] = dims4(w, 'weight');
    return [n, out, Math.floor((h + 2 * o.pad - k) / o.stride) + 1, Math.floor((wd + 2 * o.pad - k) / o.stride) + 1];
  };

  /** y = f(x) element-wise into a new tensor (relu, sigmoid). */
  const activation = async (op: CudaTrainingOps['relu'], x: DeviceTensor): Promise<DeviceTensor> => {
    const y = alloc(x.shape);
    enqueue(() => op({ x: x.buffer, y: y.buffer, count: x.length }));
    return y;
  };
  /** dx from the activation's output y and dy (reluBackward, sigmoidBackward). */
  const activationBackward = async (op: CudaTrainingOps['reluBackward'], y: DeviceTensor, dy: DeviceTensor): Promise<DeviceTensor> => {
    const dx = alloc(y.shape);
    enqueue(() => op({ y: y.buffer, dy: dy.buffer, dx: dx.buffer, count: y.length }));
    return dx;
  };

  const backend: TrainBackend<DeviceTensor, DeviceTensor> = {
    name: 'cuda',
    precision,

    async upload(t) {
      if (t.data.length !== count(t.shape) || t.data.length === 0) {
        throw new ShapeError(`Expected ${count(t.shape)} values (at least 1) for a tensor of shape ${formatShape(t.shape)} but received ${t.data.length}`);
      }
      const d = alloc(t.shape);
      await run(() => d.buffer.upload(t.data));
      return d;
    },
    async input(t) {
      return { value: await backend.upload(t), owned: true };
    },
    async download(v) {
      const data = new Float32Array(v.length);
      await run(() => v.buffer.download(data));
      return { shape: [...v.shape], data };
    },
    async uploadGradient(dy) {
      return backend.upload(dy);
    },
    async downloadGradient(g) {
      return (await backend.download(g)).data;
    },
    zeros(shape) {
      const d = alloc(shape);
      // Zeroed by an upload of zeros: enqueued before any op that is called later uses d.
      background(() => d.buffer.upload(new Float32Array(d.length)));
      return d;
    },
    zeroGradient(like) {
      return backend.zeros(like.shape);
    },
    async seedGradient(like, seed) {
      return backend.upload({ shape: like.shape, data: seed ?? new Float32Array(like.length).fill(1) });
    },
    copyGradient(g) {
      const copy = alloc(g.shape);
      enqueue(() => ops.scale({ x: g.buffer, y: copy.buffer, count: g.length, factor: 1 }));
      return copy;
    },
    async accumulate(acc, g) {
      enqueue(() => ops.add({ a: acc.buffer, b: g.buffer, y: acc.buffer, count: acc.length }));
    },
    async allFinite(gs) {
      return run(() => ops.allFinite({ tensors: gs.map((g) => g.buffer) }));
    },
    async scaleGradient(g, factor) {
      enqueue(() => ops.scale({ x: g.buffer, y: g.buffer, count: g.length, factor }));
    },
    releaseValue(v) {
      v.buffer.dispose();
    },
    releaseGradient(g) {
      g.buffer.dispose();
    },

    async conv2d(x, weight, o) {
      const y = alloc(convOutput(x, weight, o));
      enqueue(() => ops.conv2d({ ...convFields(x, weight, o), x: x.buffer, weight: weight.buffer, y: y.buffer }));
      return y;
    },
    async conv2dBackward(x, weight, _y, dy, o) {
      const dx = o.needInputGrad ? alloc(x.shape) : undefined;
      const dweight = alloc(weight.shape);
      enqueue(() => ops.conv2dBackward({
        ...convFields(x, weight, o), x: x.buffer, weight: weight.buffer, dy: dy.buffer, ...(dx && { dx: dx.buffer }), dweight: dweight.buffer,
      }));
      return { ...(dx && { dx }), dweight };
    },
    async batchNormTrain(x, gamma, beta, eps) {
      const fields = image(x, 'x');
      const y = alloc(x.shape);
      const mean = alloc([fields.channels]);
      const variance = alloc([fields.channels]);
      enqueue(() => ops.batchNormTrain({
        ...fields, x: x.buffer, gamma: gamma.buffer, beta: beta.buffer, y: y.buffer, mean: mean.buffer, var: variance.buffer, eps,
      }));
      return { y, mean, variance };
    },
    async batchNormBackward(x, _y, dy, gamma, mean, variance, eps) {
      const fields = image(x, 'x');
      const dx = alloc(x.shape);
      const dgamma = alloc(gamma.shape);
      const dbeta = alloc(gamma.shape);
      enqueue(() => ops.batchNormBackward({
        ...fields, x: x.buffer, dy: dy.buffer, gamma: gamma.buffer, mean: mean.buffer, var: variance.buffer,
        dx: dx.buffer, dgamma: dgamma.buffer, dbeta: dbeta.buffer, eps,
      }));
      return { dx, dgamma, dbeta };
    },
    async updateRunningStats(runningMean, runningVar, mean, variance, n, momentum) {
      enqueue(() => ops.updateRunningStats({
        runningMean: runningMean.buffer, runningVar: runningVar.buffer, mean: mean.buffer, var: variance.buffer, channels: mean.length, count: n, momentum,
      }));
    },
    matchLayout() {
      return undefined; // every CUDA activation is NCHW
    },
    async add(a, b, relu) {
      const y = alloc(a.shape);
      enqueue(() => ops.add({ a: a.buffer, b: b.buffer, y: y.buffer, count: a.length, relu }));
      return y;
    },
    relu: (x) => activation(ops.relu, x),
    reluBackward: (y, dy) => activationBackward(ops.reluBackward, y, dy),
    sigmoid: (x) => activation(ops.sigmoid, x),
    sigmoidBackward: (y, dy) => activationBackward(ops.sigmoidBackward, y, dy),
    async globalAvgPool(x) {
      const fields = image(x, 'x');
      const y = alloc([fields.batch, fields.channels]);
      enqueue(() => ops.globalAvgPool({ ...fields, x: x.buffer, y: y.buffer }));
      return y;
    },
    async globalAvgPoolBackward(x, _y, dy) {
      const dx = alloc(x.shape);
      enqueue(() => ops.globalAvgPoolBackward({ ...image(x, 'x'), dy: dy.buffer, dx: dx.buffer }));
      return dx;
    },
    async linear(x, weight, bias) {
      const [batch, inFeatures] = x.shape as [number, number];
      const outFeatures = weight.shape[0] as number;
      const y = alloc([batch, outFeatures]);
      enqueue(() => ops.linear({ batch, inFeatures, outFeatures, x: x.buffer, weight: weight.buffer, bias: bias.buffer, y: y.buffer }));
      return y;
    },
    async linearBackward(x, weight, _y, dy, needInputGrad) {
      const [batch, inFeatures] = x.shape as [number, number];
      const outFeatures = weight.shape[0] as number;
      const dx = needInputGrad ? alloc(x.shape) : undefined;
      const dweight = alloc(weight.shape);
      const dbias = alloc([outFeatures]);
      enqueue(() => ops.linearBackward({
        batch, inFeatures, outFeatures, x: x.buffer, weight: weight.buffer, dy: dy.buffer, ...(dx && { dx: dx.buffer }),
        dweight: dweight.buffer, dbias: dbias.buffer,
      }));
      return { ...(dx && { dx }), dweight, dbias };
    },
    async channelScale(x, scale) {
      const { batch, channels, height, width } = image(x, 'x');
      const y = alloc(x.shape);
      enqueue(() => ops.channelScale({ batch, channels, spatial: height * width, x: x.buffer, scale: scale.buffer, y: y.buffer }));
      return y;
    },
    async channelScaleBackward(x, scale, _y, dy) {
      const { batch, channels, height, width } = image(x, 'x');
      const dx = alloc(x.shape);
      const dscale = alloc(scale.shape);
      enqueue(() => ops.channelScaleBackward({
        batch, channels, spatial: height * width, x: x.buffer, scale: scale.buffer, dy: dy.buffer, dx: dx.buffer, dscale: dscale.buffer,
      }));
      return { dx, dscale };
    },
    async softmaxCrossEntropy(logits, labels, labelSmoothing) {
      const [batch, classes] = logits.shape as [number, number];
      checkCrossEntropyArguments(batch, classes, labels, labelSmoothing); // the CPU op's errors, before any GPU work
      const dlogits = alloc(logits.shape);
      const loss = await run(() => ops.softmaxCrossEntropy({ logits: logits.buffer, labels, dlogits: dlogits.buffer, batch, classes, labelSmoothing }));
      return { loss, dlogits };
    },
    async scaleLossGradient(dlogits, dloss) {
      const factor = (await backend.download(dloss)).data[0] as number;
      if (factor === 1) return dlogits;
      const scaled = alloc(dlogits.shape);
      enqueue(() => ops.scale({ x: dlogits.buffer, y: scaled.buffer, count: dlogits.length, factor }));
      return scaled;
    },
    scalar(value) {
      const d = alloc([1]);
      background(() => d.buffer.upload(Float32Array.of(value)));
      return d;
    },

    async sgdStep(tensors: SgdTensorOf<DeviceTensor, DeviceTensor>[], lr, momentum, nesterov) {
      enqueue(() => ops.sgdStep({
        tensors: tensors.map((t) => ({
          weight: t.weight.buffer, grad: t.grad.buffer, ...(t.momentumBuffer && { momentumBuffer: t.momentumBuffer.buffer }), weightDecay: t.weightDecay, first: t.first,
        })),
        lr, momentum, nesterov,
      }));
    },
    async emaUpdate(shadows, currents, decay) {
      enqueue(() => ops.emaUpdate({ shadows: shadows.map((t) => t.buffer), currents: currents.map((t) => t.buffer), decay }));
    },
    async customL2(blocks: CustomL2BlockOf<DeviceTensor, DeviceTensor>[], weightDecay) {
      return run(() => ops.customL2({
        blocks: blocks.map((b) => ({
          k3: b.k3.buffer, k3Grad: b.k3Grad.buffer, k1: b.k1.buffer, k1Grad: b.k1Grad.buffer, t3: b.t3.buffer, t1: b.t1.buffer, outChannels: b.outChannels, perOut: b.perOut,
        })),
        weightDecay,
      }));
    },
  };
  return backend;
}
