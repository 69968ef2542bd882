// SGD with PyTorch's exact semantics (momentum with dampening 0, optional Nesterov, weight decay added to the
// gradient), the official RepVGG parameter groups, and the optional custom L2 of the official code.
// Not for: learning-rate schedules (schedule.ts).

import type { Var } from '../autograd/tape.js';
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
 * of the rbr_dense and rbr_1x1 kernels and returns its value. With t = gamma / sqrt(running_var + eps)
 * (detached), the 3x3 kernel's outer ring gets plain L2, and the equivalent centre eq = K3c*t3 + K1*t1 gets
 * eq^2 / (t3^2 + t1^2).
 */
export function addCustomL2(spec: RepVGGSpec, params: Map<string, Var>, buffers: Map<string, Float32Array>, weightDecay: number): number {
  let total = 0;
  const scale = (prefix: string): Float32Array => {
    const gamma = params.get(`${prefix}.weight`)!.value.data;
    const variance = buffers.get(`${prefix}.running_var`)!;
    return gamma.map((g, o) => g / Math.sqrt((variance[o] as number) + BN_EPS));
  };
  for (const b of blocksOf(spec)) {
    const k3 = params.get(`${b.name}.rbr_dense.conv.weight`)!;
    const k1 = params.get(`${b.name}.rbr_1x1.conv.weight`)!;
    if (!k3.requiresGrad) continue; // a frozen backbone takes no decay
    const t3 = scale(`${b.name}.rbr_dense.bn`);
    const t1 = scale(`${b.name}.rbr_1x1.bn`);
    k3.grad ??= new Float32Array(k3.value.data.length);
    k1.grad ??= new Float32Array(k1.value.data.length);
    const perOut = k1.value.data.length / b.outChannels; // C/g
    for (let o = 0; o < b.outChannels; o++) {
      const a3 = t3[o] as number;
      const a1 = t1[o] as number;
      const norm = a3 * a3 + a1 * a1;
      for (let i = 0; i < perOut; i++) {
        const base = (o * perOut + i) * 9;
        for (let tap = 0; tap < 9; tap++) {
          if (tap === 4) continue;
          const v = k3.value.data[base + tap] as number;
          total += v * v;
          k3.grad[base + tap] = (k3.grad[base + tap] as number) + weightDecay * v;
        }
        const c3 = k3.value.data[base + 4] as number;
        const c1 = k1.value.data[o * perOut + i] as number;
        const eq = c3 * a3 + c1 * a1;
        total += (eq * eq) / norm;
        k3.grad[base + 4] = (k3.grad[base + 4] as number) + (weightDecay * eq * a3) / norm;
        k1.grad[o * perOut + i] = (k1.grad[o * perOut + i] as number) + (weightDecay * eq * a1) / norm;
      }
    }
  }
  return 0.5 * weightDecay * total;
}
