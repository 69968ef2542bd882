// A small reverse-mode autograd tape (in the spirit of micrograd): every differentiable op appends a record
// holding its gradient rule; backward() replays the records in reverse, accumulating gradients into Vars.
// Not for: the math itself (native ops in lib/ops/) or the op catalogue (functions.ts).

import type { HostTensor } from '../tensor.js';

/** A tensor that may take part in differentiation. grad has the value's shape once backward reached it. */
export class Var {
  readonly value: HostTensor;
  readonly requiresGrad: boolean;
  grad: Float32Array | undefined;
  constructor(value: HostTensor, requiresGrad = false) {
    this.value = value;
    this.requiresGrad = requiresGrad;
  }
  get shape(): readonly number[] {
    return this.value.shape;
  }
}

/** Gradients of an op's inputs, in the order of its inputs; undefined where an input needs none. */
export type GradientRule = (outputGrad: Float32Array) => Promise<(Float32Array | undefined)[]>;

interface TapeRecord {
  inputs: Var[];
  output: Var;
  rule: GradientRule;
}

/** Records one forward pass; call backward() once, then drop the tape. */
export class Tape {
  #records: TapeRecord[] = [];

  /** Creates the output Var of an op and, when any input needs a gradient, records the op's rule. */
  record(output: HostTensor, inputs: Var[], rule: GradientRule): Var {
    const requiresGrad = inputs.some((v) => v.requiresGrad);
    const out = new Var(output, requiresGrad);
    if (requiresGrad) this.#records.push({ inputs, output: out, rule });
    return out;
  }

  /** Back-propagates from a scalar-valued Var (seed gradient 1) or from an explicit seed gradient. */
  async backward(root: Var, seed?: Float32Array): Promise<void> {
    root.grad = seed?.slice() ?? new Float32Array(root.value.data.length).fill(1); // a copy: gradients accumulate in place
    // Arrays already adopted as some Var's gradient: a rule may hand the same array to two inputs (add does).
    const owned = new WeakSet<Float32Array>();
    for (let i = this.#records.length - 1; i >= 0; i--) {
      const { inputs, output, rule } = this.#records[i] as TapeRecord;
      if (output.grad === undefined) continue; // does not lead to the root
      const grads = await rule(output.grad);
      inputs.forEach((input, k) => {
        const g = grads[k];
        if (!input.requiresGrad || g === undefined) return;
        accumulate(input, g, owned);
      });
      output.grad = undefined; // intermediate gradients are not needed after use: free them early
    }
    this.#records = [];
  }
}

/** input.grad += g, adopting g as the gradient when input has none yet and nobody else adopted g. */
function accumulate(input: Var, g: Float32Array, owned: WeakSet<Float32Array>): void {
  if (input.grad === undefined) {
    input.grad = owned.has(g) ? g.slice() : g;
    owned.add(input.grad);
    return;
  }
  const acc = input.grad;
  for (let i = 0; i < acc.length; i++) acc[i] = (acc[i] as number) + (g[i] as number);
}
