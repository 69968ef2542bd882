// SGD with PyTorch's exact semantics (momentum with dampening 0, optional Nesterov, weight decay added to the
// gradient), the official RepVGG parameter groups, and the optional custom L2 of the official code, on the
// parameters' training backend (autograd/backend.ts: native loops on the CPU, kernels on CUDA).
// Not for: learning-rate schedules (schedule.ts).

import type { SgdTensorOf, TrainBackend } from '../autograd/backend.js';
import { cpuBackend } from '../autograd/cpu-backend.js';
import type { Var } from '../autograd/tape.js';
import { ArgumentValueError } from '../errors.js';
import { blocksOf, type RepVGGSpec } from '../models/repvgg.js';
import { BN_EPS } from '../reparam/reparam.js';
import type { HostTensor } from '../tensor.js';

type Shaped = { readonly shape: readonly number[] };

export interface SgdOptions {
  momentum: number;
  nesterov: boolean;
  weightDecay: number;
  /** Replace plain weight decay of rbr_dense/rbr_1x1 conv kernels by the official get_custom_L2 term. */
  customL2: boolean;
}

/**
 * Whether a parameter gets weight decay, as in the official sgd_optimizer: none for biases, for BN parameters
 * of the dense and 1x1 branches ('bn' in the key), and — with custom L2 — for the branch conv kernels.
 */
export function appliesWeightDecay(key: string, customL2: boolean): boolean {
  if (key.includes('bias') || key.includes('bn')) return false;
  if (customL2 && (key.includes('rbr_dense') || key.includes('rbr_1x1'))) return false;
  return true;
}

export class SGD<V extends Shaped = HostTensor, G = Float32Array> {
  readonly options: SgdOptions;
  /** Momentum buffers by parameter key (created on the first step, as PyTorch does). */
  readonly momentumBuffers = new Map<string, V>();
  readonly #params: Map<string, Var<V, G>>;
  readonly #backend: TrainBackend<V, G>;

  /** An optimizer of params, which live on `backend` (default: the CPU). */
  constructor(params: Map<string, Var<V, G>>, options: SgdOptions, backend?: TrainBackend<V, G>) {
    this.#params = params;
    this.options = options;
    this.#backend = backend ?? (cpuBackend as unknown as TrainBackend<V, G>);
  }

  /** Drops every gradient, handing its memory back to the backend. */
  zeroGrad(): void {
    for (const p of this.#params.values()) {
      if (p.grad !== undefined) this.#backend.releaseGradient(p.grad);
      p.grad = undefined;
    }
  }

  /**
   * One update with learning rate lr: p -= lr * d, d from the gradient per PyTorch's SGD, over every parameter at
   * once on the backend (CPU: native/cpu/optim.cc, double arithmetic with one float32 rounding per stored value,
   * the same as a TypeScript loop over the elements; CUDA: the same arithmetic in a kernel).
   */
  async step(lr: number): Promise<void> {
    const { momentum, nesterov, weightDecay, customL2 } = this.options;
    const tensors: SgdTensorOf<V, G>[] = [];
    for (const [key, p] of this.#params) {
      const grad = p.grad;
      if (grad === undefined) continue;
      let momentumBuffer = this.momentumBuffers.get(key);
      const first = momentumBuffer === undefined && momentum !== 0;
      if (first) {
        momentumBuffer = this.#backend.zeros(p.value.shape);
        this.momentumBuffers.set(key, momentumBuffer);
      }
      const decay = appliesWeightDecay(key, customL2) ? weightDecay : 0;
      tensors.push({ weight: p.value, grad, ...(momentumBuffer !== undefined && { momentumBuffer }), weightDecay: decay, first });
    }
    await this.#backend.sgdStep(tensors, lr, momentum, nesterov);
  }

  /** The momentum buffers in host memory (for checkpoints). */
  async hostMomentum(): Promise<Map<string, Float32Array>> {
    const out = new Map<string, Float32Array>();
    for (const [key, buffer] of this.momentumBuffers) out.set(key, (await this.#backend.download(buffer)).data);
    return out;
  }

  /** Sets momentum buffers from host memory (resuming from a checkpoint). */
  async loadMomentum(buffers: ReadonlyMap<string, Float32Array>): Promise<void> {
    for (const [key, data] of buffers) {
      const p = this.#params.get(key);
      if (p) this.momentumBuffers.set(key, await this.#backend.upload({ shape: p.value.shape, data }));
    }
  }
}

/**
 * Adds the official custom L2 term, weightDecay * 0.5 * sum over blocks of get_custom_L2(), to the gradients
 * of the rbr_dense and rbr_1x1 kernels and resolves with its value. With t = gamma / sqrt(running_var + eps)
 * (detached), the 3x3 kernel's outer ring gets plain L2, and the equivalent centre eq = K3c*t3 + K1*t1 gets
 * eq^2 / (t3^2 + t1^2). The loops run natively on the compute thread (native/cpu/optim.cc `custom_l2`, in double,
 * bit-identical to the TypeScript loops they replaced).
 */
export async function addCustomL2<V extends Shaped, G>(
  spec: RepVGGSpec, params: Map<string, Var<V, G>>, buffers: Map<string, V>, weightDecay: number, backend?: TrainBackend<V, G>,
): Promise<number> {
  const b = backend ?? (cpuBackend as unknown as TrainBackend<V, G>);
  // t = gamma / sqrt(running_var + eps), (O), float32 as the reference rounds it; computed on the host (a few
  // hundred values per BN) and handed to the backend.
  const scale = async (prefix: string): Promise<V> => {
    const gamma = (await b.download(params.get(`${prefix}.weight`)!.value)).data;
    const variance = (await b.download(buffers.get(`${prefix}.running_var`)!)).data;
    return b.upload({ shape: [gamma.length], data: gamma.map((g, o) => g / Math.sqrt((variance[o] as number) + BN_EPS)) });
  };
  if (spec.block === 'qa') throw new ArgumentValueError('Expected block qa without custom L2 (its 1x1 branch has no BN to weigh it by); use plain weight decay');
  const blocks = [];
  for (const block of blocksOf(spec)) {
    const k3 = params.get(`${block.name}.rbr_dense.conv.weight`)!; // (O, C/g, 3, 3)
    const k1 = params.get(`${block.name}.rbr_1x1.conv.weight`)!; // (O, C/g, 1, 1)
    if (!k3.requiresGrad) continue; // a frozen backbone takes no decay
    k3.grad ??= b.zeroGradient(k3.value);
    k1.grad ??= b.zeroGradient(k1.value);
    const perOut = (k1.value.shape[1] as number) * (k1.value.shape[2] as number) * (k1.value.shape[3] as number);
    blocks.push({
      k3: k3.value, k3Grad: k3.grad, k1: k1.value, k1Grad: k1.grad,
      t3: await scale(`${block.name}.rbr_dense.bn`), t1: await scale(`${block.name}.rbr_1x1.bn`),
      outChannels: block.outChannels, perOut,
    });
  }
  const loss = await b.customL2(blocks, weightDecay);
  for (const block of blocks) {
    b.releaseValue(block.t3);
    b.releaseValue(block.t1);
  }
  return loss;
}
