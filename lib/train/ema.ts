// Exponential moving average of the model's weights (parameters and BN running statistics), evaluated
// instead of the raw weights when enabled: ema = decay * ema + (1 - decay) * current after every step, on the
// weights' training backend (CPU: native/cpu/optim.cc; CUDA: a kernel; both in double arithmetic).

import type { TrainBackend } from '../autograd/backend.js';
import { cpuBackend } from '../autograd/cpu-backend.js';
import type { HostTensor, StateDict } from '../tensor.js';

type Shaped = { readonly shape: readonly number[] };

export class WeightEma<V extends Shaped = HostTensor, G = Float32Array> {
  readonly decay: number;
  /** The averaged tensors by key (a StateDict on the CPU). */
  readonly shadow: Map<string, V>;
  #backend: TrainBackend<V, G>;

  /** An average starting at a copy of `state`, on the CPU (onBackend() for another backend). */
  constructor(state: StateDict, decay: number) {
    this.decay = decay;
    this.#backend = cpuBackend as unknown as TrainBackend<V, G>;
    this.shadow = new Map([...state].map(([k, t]) => [k, { shape: t.shape, data: t.data.slice() } as unknown as V]));
  }

  /** An average on `backend` starting at a copy of `values` (e.g. TrainableRepVGG.values()). */
  static async onBackend<V extends Shaped, G>(backend: TrainBackend<V, G>, values: Map<string, V>, decay: number): Promise<WeightEma<V, G>> {
    const ema = new WeightEma<V, G>(new Map(), decay);
    ema.#backend = backend;
    for (const [key, v] of values) ema.shadow.set(key, await backend.upload(await backend.download(v)));
    return ema;
  }

  /** One update from the current values (same keys as the shadow). */
  async update(current: Map<string, V>): Promise<void> {
    const shadows: V[] = [];
    const currents: V[] = [];
    for (const [key, t] of current) {
      shadows.push(this.shadow.get(key)!);
      currents.push(t);
    }
    await this.#backend.emaUpdate(shadows, currents, this.decay);
  }

  /** The average as a state dict in host memory. */
  async hostState(): Promise<StateDict> {
    const out: StateDict = new Map();
    for (const [key, v] of this.shadow) out.set(key, await this.#backend.download(v));
    return out;
  }

  /** Replaces the average with values from host memory (resuming from a checkpoint). */
  async load(state: StateDict): Promise<void> {
    for (const [key, t] of state) this.shadow.set(key, await this.#backend.upload(t));
  }
}
