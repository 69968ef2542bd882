// A small reverse-mode autograd tape (in the spirit of micrograd): every differentiable op appends a record
// holding its gradient rule; backward() replays the records in reverse, accumulating gradients into Vars.
// Not for: the math itself (native ops in lib/ops/) or the op catalogue (functions.ts).

import { outputArray, recycleArray } from '../ops/alloc.js';
import { addInPlace } from '../ops/eltwise.js';
import type { HostTensor } from '../tensor.js';

/** From this many values on, gradients are summed natively (ops.addInPlace, off the event loop); below, a JS loop is quicker. */
const NATIVE_ACCUMULATE_MIN_LENGTH = 4096;

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

/**
 * Gradients of an op's inputs, in the order of its inputs; undefined where an input needs none. A rule returns
 * arrays that nothing else holds (fresh op outputs, or outputGrad itself): the tape adopts, sums into and recycles
 * them.
 */
export type GradientRule = (outputGrad: Float32Array) => Promise<(Float32Array | undefined)[]>;

interface TapeRecord {
  inputs: Var[];
  output: Var;
  rule: GradientRule;
}

/** Records one forward pass; call backward() once (and optionally recycle()), then drop the tape. */
export class Tape {
  #records: TapeRecord[] = [];
  /** Every op output created by record(), for recycle(). */
  #outputs: Var[] = [];

  /** Creates the output Var of an op and, when any input needs a gradient, records the op's rule. */
  record(output: HostTensor, inputs: Var[], rule: GradientRule): Var {
    const requiresGrad = inputs.some((v) => v.requiresGrad);
    const out = new Var(output, requiresGrad);
    this.#outputs.push(out);
    if (requiresGrad) this.#records.push({ inputs, output: out, rule });
    return out;
  }

  /**
   * Hands the buffers of the op outputs recorded on this tape (the activations) to ops.recycleArray, for later ops
   * to reuse instead of allocating: with it a training step allocates nothing new in steady state. Call it after
   * backward, once nothing reads an intermediate Var of this tape any more; the values of the Vars in `keep` (e.g.
   * the logits, when still needed) are left alone. Their buffers are overwritten by later ops.
   * @example await tape.backward(loss); tape.recycle([logits]);
   */
  recycle(keep: readonly Var[] = []): void {
    const kept = new Set(keep.map((v) => v.value.data));
    for (const out of this.#outputs) if (!kept.has(out.value.data)) recycleArray(out.value.data);
    this.#outputs = [];
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
      for (const [k, input] of inputs.entries()) {
        const g = grads[k];
        if (input.requiresGrad && g !== undefined) await accumulate(input, g, owned);
      }
      // Intermediate gradients are not needed after use: the output's, and those summed into an input's, go back
      // to the ops for reuse (an adopted one now belongs to its input).
      const dead = new Set<Float32Array | undefined>([output.grad, ...grads]);
      for (const input of inputs) dead.delete(input.grad);
      output.grad = undefined;
      for (const array of dead) {
        if (array === undefined) continue;
        owned.delete(array); // a later op may get it back as a fresh output
        recycleArray(array);
      }
    }
    this.#records = [];
  }
}

/** input.grad += g, adopting g as the gradient when input has none yet and nobody else adopted g. */
async function accumulate(input: Var, g: Float32Array, owned: WeakSet<Float32Array>): Promise<void> {
  if (input.grad === undefined) {
    input.grad = owned.has(g) ? copyOf(g) : g;
    owned.add(input.grad);
    return;
  }
  const acc = input.grad;
  if (acc.length >= NATIVE_ACCUMULATE_MIN_LENGTH) {
    await addInPlace({ shape: [acc.length], data: acc }, { shape: [g.length], data: g });
    return;
  }
  for (let i = 0; i < acc.length; i++) acc[i] = (acc[i] as number) + (g[i] as number);
}

/** A copy of g in an ops output buffer (a recycled one when available). */
function copyOf(g: Float32Array): Float32Array {
  const copy = outputArray(g.length);
  copy.set(g);
  return copy;
}
