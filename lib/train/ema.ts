// Exponential moving average of the model's weights (parameters and BN running statistics), evaluated
// instead of the raw weights when enabled: ema = decay * ema + (1 - decay) * current after every step.

import { runTrainingOp } from '../ops/native-op.js';
import type { StateDict } from '../tensor.js';

export class WeightEma {
  readonly decay: number;
  readonly shadow: StateDict;

  constructor(state: StateDict, decay: number) {
    this.decay = decay;
    this.shadow = new Map([...state].map(([k, t]) => [k, { shape: t.shape, data: t.data.slice() }]));
  }

  /** One update from the current weights, natively on the compute thread (native/cpu/optim.cc, double arithmetic). */
  async update(state: StateDict): Promise<void> {
    const shadows: Float32Array[] = [];
    const currents: Float32Array[] = [];
    for (const [key, t] of state) {
      shadows.push(this.shadow.get(key)!.data);
      currents.push(t.data);
    }
    await runTrainingOp('emaUpdate', { shadows, currents, decay: this.decay });
  }
}
