// SGD with PyTorch's exact semantics (momentum with dampening 0, optional Nesterov, weight decay added to the
// gradient), the official RepVGG parameter groups, and the optional custom L2 of the official code.
// Not for: learning-rate schedules (schedule.ts).

import type { Var } from '../autograd/tape.js';
import { ArgumentValueError } from '../errors.js';
import { blocksOf, type RepVGGSpec } from '../models/repvgg.js';
import { BN_EPS } from '../reparam/reparam.js';
import { runTrainingOp } from '../ops/native-op.js';

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

export class SGD {
  readonly options: SgdOptions;
  /** Momentum buffers by parameter key (created on the first step, as PyTorch does). */
  readonly momentumBuffers = new Map<string, Float32Array>();
  readonly #params: Map<string, Var>;

  constructor(params: Map<string, Var>, options: SgdOptions) {
    this.#params = params;
    this.options = options;
  }

  zeroGrad(): void {
    for (const p of this.#params.values()) p.grad = undefined;
  }

  /**
   * One update with learning rate lr: p -= lr * d, d from the gradient per PyTorch's SGD. Runs natively on the
   * compute thread over every parameter at once (native/cpu/optim.cc: double arithmetic, one float32 rounding per
   * stored value, the same as a TypeScript loop over the elements).
   */
  async step(lr: number): Promise<void> {
    const { momentum, nesterov, weightDecay, customL2 } = this.options;
    const tensors = [];
    for (const [key, p] of this.#params) {
      const grad = p.grad;
      if (grad === undefined) continue;
      const weight = p.value.data;
      let momentumBuffer = this.momentumBuffers.get(key);
      const first = momentumBuffer === undefined && momentum !== 0;
      if (first) {
        momentumBuffer = new Float32Array(weight.length);
        this.momentumBuffers.set(key, momentumBuffer);
      }
      const decay = appliesWeightDecay(key, customL2) ? weightDecay : 0;
      tensors.push({ weight, grad, ...(momentumBuffer !== undefined && { momentumBuffer }), weightDecay: decay, first });
    }
    await runTrainingOp('sgdStep', { tensors, lr, momentum, nesterov });
  }
}

/**
 * Adds the official custom L2 term, weightDecay * 0.5 * sum over blocks of get_custom_L2(), to the gradients
 * of the rbr_dense and rbr_1x1 kernels and resolves with its value. With t = gamma / sqrt(running_var + eps)
 * (detached), the 3x3 kernel's outer ring gets plain L2, and the equivalent centre eq = K3c*t3 + K1*t1 gets
 * eq^2 / (t3^2 + t1^2). The loops run natively on the compute thread (native/cpu/optim.cc `custom_l2`, in double,
 * bit-identical to the TypeScript loops they replaced).
 */
export async function addCustomL2(spec: RepVGGSpec, params: Map<string, Var>, buffers: Map<string, Float32Array>, weightDecay: number): Promise<number> {
  const scale = (prefix: string): Float32Array => {
    const gamma = params.get(`${prefix}.weight`)!.value.data;
    const variance = buffers.get(`${prefix}.running_var`)!;
    return gamma.map((g, o) => g / Math.sqrt((variance[o] as number) + BN_EPS)); // (O), float32 as the reference rounds it
  };
  if (spec.block === 'qa') throw new ArgumentValueError('Expected block qa without custom L2 (its 1x1 branch has no BN to weigh it by); use plain weight decay');
  const blocks = [];
  for (const b of blocksOf(spec)) {
    const k3 = params.get(`${b.name}.rbr_dense.conv.weight`)!; // (O, C/g, 3, 3)
    const k1 = params.get(`${b.name}.rbr_1x1.conv.weight`)!; // (O, C/g, 1, 1)
    if (!k3.requiresGrad) continue; // a frozen backbone takes no decay
    k3.grad ??= new Float32Array(k3.value.data.length);
    k1.grad ??= new Float32Array(k1.value.data.length);
    blocks.push({
      k3: k3.value.data, k3Grad: k3.grad, k1: k1.value.data, k1Grad: k1.grad,
      t3: scale(`${b.name}.rbr_dense.bn`), t1: scale(`${b.name}.rbr_1x1.bn`),
      outChannels: b.outChannels, perOut: k1.value.data.length / b.outChannels,
    });
  }
  const loss = new Float64Array(1);
  await runTrainingOp('customL2', { blocks, weightDecay, loss });
  return loss[0] as number;
}
