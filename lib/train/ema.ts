// Exponential moving average of the model's weights (parameters and BN running statistics), evaluated
// instead of the raw weights when enabled: ema = decay * ema + (1 - decay) * current after every step.

import type { StateDict } from '../tensor.js';

export class WeightEma {
  readonly decay: number;
  readonly shadow: StateDict;

  constructor(state: StateDict, decay: number) {
    this.decay = decay;
    this.shadow = new Map([...state].map(([k, t]) => [k, { shape: t.shape, data: t.data.slice() }]));
  }

  update(state: StateDict): void {
    for (const [key, t] of state) {
      const s = this.shadow.get(key)!.data;
      for (let i = 0; i < s.length; i++) s[i] = this.decay * (s[i] as number) + (1 - this.decay) * (t.data[i] as number);
    }
  }
}
