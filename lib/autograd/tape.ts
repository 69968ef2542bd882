// A small reverse-mode autograd tape (in the spirit of micrograd): every differentiable op appends a record
// holding its gradient rule; backward() replays the records in reverse, accumulating gradients into Vars. The
// tape belongs to one training backend (backend.ts): values and gradients live where that backend keeps them
// (host memory on the CPU, GPU memory on CUDA), and the tape sums, copies and frees them through it.
// Not for: the math itself (the backends) or the op catalogue (functions.ts).

import type { HostTensor } from '../tensor.js';
import type { TrainBackend } from './backend.js';
import { cpuBackend } from './cpu-backend.js';

/** A tensor that may take part in differentiation. grad has the value's shape once backward reached it. */
export class Var<V extends { readonly shape: readonly number[] } = HostTensor, G = Float32Array> {
  readonly value: V;
  readonly requiresGrad: boolean;
  grad: G | undefined;
  constructor(value: V, requiresGrad = false) {
    this.value = value;
    this.requiresGrad = requiresGrad;
  }
  get shape(): readonly number[] {
    return this.value.shape;
  }
}

/**
 * Gradients of an op's inputs, in the order of its inputs; undefined where an input needs none. A rule returns
 * gradients that nothing else holds (fresh op outputs, or outputGrad itself): the tape adopts, sums into and
 * releases them.
 */
export type GradientRule<G = Float32Array> = (outputGrad: G) => Promise<(G | undefined)[]>;

interface TapeRecord<V extends { readonly shape: readonly number[] }, G> {
  inputs: Var<V, G>[];
  output: Var<V, G>;
  rule: GradientRule<G>;
}

/** Records one forward pass; call backward() once (and optionally recycle()), then drop the tape. */
export class Tape<V extends { readonly shape: readonly number[] } = HostTensor, G = Float32Array> {
  readonly backend: TrainBackend<V, G>;
  #records: TapeRecord<V, G>[] = [];
  /** Every op output created by record(), for recycle(). */
  #outputs: Var<V, G>[] = [];

  /** A tape on `backend` (default: the CPU). */
  constructor(backend?: TrainBackend<V, G>) {
    this.backend = backend ?? (cpuBackend as unknown as TrainBackend<V, G>);
  }

  /** Creates the output Var of an op and, when any input needs a gradient, records the op's rule. */
  record(output: V, inputs: Var<V, G>[], rule: GradientRule<G>): Var<V, G> {
    const requiresGrad = inputs.some((v) => v.requiresGrad);
    const out = new Var<V, G>(output, requiresGrad);
    this.#outputs.push(out);
    if (requiresGrad) this.#records.push({ inputs, output: out, rule });
    return out;
  }

  /** Makes `value` (an uploaded input) one of the tensors recycle() releases. */
  own(value: V): void {
    this.#outputs.push(new Var<V, G>(value, false));
  }

  /**
   * Hands the memory of the op outputs recorded on this tape (the activations) back to the backend: on the CPU
   * later ops reuse it instead of allocating (a training step then allocates nothing new in steady state), on
   * CUDA it is freed. Call it after backward, once nothing reads an intermediate Var of this tape any more; the
   * values of the Vars in `keep` (e.g. the logits, when still needed) are left alone.
   * @example await tape.backward(loss); tape.recycle([logits]);
   */
  recycle(keep: readonly Var<V, G>[] = []): void {
    const kept = new Set(keep.map((v) => v.value));
    for (const out of this.#outputs) if (!kept.has(out.value)) this.backend.releaseValue(out.value);
    this.#outputs = [];
  }

  /** Back-propagates from a scalar-valued Var (seed gradient 1) or from an explicit seed gradient. */
  async backward(root: Var<V, G>, seed?: Float32Array): Promise<void> {
    const backend = this.backend;
    root.grad = await backend.seedGradient(root.value, seed);
    // Gradients already adopted as some Var's gradient: a rule may hand the same one to two inputs (add does).
    const owned = new Set<G>();
    for (let i = this.#records.length - 1; i >= 0; i--) {
      const { inputs, output, rule } = this.#records[i] as TapeRecord<V, G>;
      if (output.grad === undefined) continue; // does not lead to the root
      const grads = await rule(output.grad);
      for (const [k, input] of inputs.entries()) {
        const g = grads[k];
        if (!input.requiresGrad || g === undefined) continue;
        if (input.grad === undefined) {
          // Adopt g as the gradient unless another input adopted it already.
          input.grad = owned.has(g) ? backend.copyGradient(g) : g;
          owned.add(input.grad);
        } else {
          await backend.accumulate(input.grad, g);
        }
      }
      // Intermediate gradients are not needed after use: the output's, and those summed into an input's, go back
      // to the backend (an adopted one now belongs to its input).
      const dead = new Set<G | undefined>([output.grad, ...grads]);
      for (const input of inputs) dead.delete(input.grad);
      output.grad = undefined;
      for (const g of dead) {
        if (g === undefined) continue;
        owned.delete(g); // a later op may get its memory back as a fresh output
        backend.releaseGradient(g);
      }
    }
    this.#records = [];
  }
}
