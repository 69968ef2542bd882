// Dynamic loss scaling for mixed-precision training (as PyTorch's GradScaler): the backward pass starts from the
// loss's gradient times `scale` so that small half-precision gradients do not flush to zero; before the update the
// gradients are checked for overflow and divided by the scale. A step with an infinite or NaN gradient is skipped and
// the scale halved; after `growthInterval` good steps in a row it doubles. Scales are powers of two, so scaling and
// unscaling are exact in float32 (the update equals the unscaled one) unless a value over- or underflows.
// Not for: the half-precision math itself (the backend's precision).

import type { TrainBackend } from '../autograd/backend.js';
import type { Var } from '../autograd/tape.js';

type Shaped = { readonly shape: readonly number[] };

export interface LossScaleOptions {
  /** The first scale (default 2^16, PyTorch's). */
  initialScale?: number;
  /** Good steps before the scale doubles (default 2000, PyTorch's). */
  growthInterval?: number;
}

export class DynamicLossScale {
  scale: number;
  readonly growthInterval: number;
  /** Good steps since the last change of scale. */
  goodSteps = 0;
  /** Steps skipped for an overflow since creation. */
  skippedSteps = 0;

  constructor(options: LossScaleOptions = {}) {
    this.scale = options.initialScale ?? 2 ** 16;
    this.growthInterval = options.growthInterval ?? 2000;
  }

  /** The seed of tape.backward(loss, seed): the loss's gradient, scaled. */
  seed(): Float32Array {
    return Float32Array.of(this.scale);
  }

  /**
   * After backward: true and the gradients divided by the scale when all are finite; false (skip this step: no
   * update, no EMA) and the scale halved otherwise.
   */
  async unscale<V extends Shaped, G>(backend: TrainBackend<V, G>, params: Map<string, Var<V, G>>): Promise<boolean> {
    const grads: G[] = [];
    for (const p of params.values()) if (p.grad !== undefined) grads.push(p.grad);
    if (!(await backend.allFinite(grads))) {
      this.scale /= 2;
      this.goodSteps = 0;
      this.skippedSteps++;
      return false;
    }
    for (const g of grads) await backend.scaleGradient(g, 1 / this.scale);
    if (++this.goodSteps >= this.growthInterval) {
      this.scale *= 2;
      this.goodSteps = 0;
    }
    return true;
  }
}
