// Softmax cross-entropy loss with label smoothing (torch.nn.CrossEntropyLoss semantics, mean over the batch) and
// its gradient, computed natively in float64 (native/cpu/loss.cc). Labels are checked here, before native code.

import { ArgumentTypeError, ArgumentValueError, ShapeError, describeValue } from '../errors.js';
import type { HostTensor } from '../tensor.js';
import { outputArray } from './alloc.js';
import { checkTensor } from './check.js';
import { runTrainingOp, runTrainingOpSync } from './native-op.js';

export interface SoftmaxCrossEntropyOptions {
  /** In [0, 1] (default 0): the target is (1 - labelSmoothing) onehot(label) + labelSmoothing / K. */
  labelSmoothing?: number;
}

export interface SoftmaxCrossEntropyResult {
  /** Mean over the batch of -sum_k target_k log softmax(logits)_k (accumulated in float64). */
  loss: number;
  /** (N, K) gradient of loss: (softmax(logits) - target) / N. */
  dlogits: HostTensor;
}

/**
 * Checks labels (one per row of (n, k) logits, each in [0, k)) and the label smoothing (in [0, 1]); every backend's
 * cross-entropy runs this first, so bad labels give the same typed error everywhere.
 * @returns the label smoothing (0 when not given).
 */
export function checkCrossEntropyArguments(n: number, k: number, labels: Int32Array, labelSmoothing: number | undefined): number {
  if (!(labels instanceof Int32Array)) {
    throw new ArgumentTypeError(`Expected an Int32Array for labels but received ${describeValue(labels)}`);
  }
  if (labels.length !== n) throw new ShapeError(`Expected labels of shape [${n}] (one per logits row) but received [${labels.length}]`);
  for (let i = 0; i < n; i++) {
    const label = labels[i] as number;
    if (label < 0 || label >= k) {
      throw new ArgumentValueError(`Expected labels in [0, ${k}) (logits have ${k} classes) but received labels[${i}] = ${label}`);
    }
  }
  const smoothing = labelSmoothing ?? 0;
  if (typeof smoothing !== 'number' || !(smoothing >= 0 && smoothing <= 1)) {
    throw new ArgumentValueError(`Expected a number in [0, 1] for labelSmoothing but received ${describeValue(smoothing)}`);
  }
  return smoothing;
}

function prepare(logits: HostTensor, labels: Int32Array, options: SoftmaxCrossEntropyOptions) {
  const [n, k] = checkTensor(logits, 'logits', 2) as [number, number];
  const labelSmoothing = checkCrossEntropyArguments(n, k, labels, options.labelSmoothing);
  const dlogits: HostTensor = { shape: [n, k], data: outputArray(n * k) };
  const loss = new Float64Array(1);
  return { native: { logits: logits.data, labels, labelSmoothing, dlogits: dlogits.data, loss, batch: n, classes: k }, dlogits, loss };
}

/**
 * Softmax cross-entropy of logits (N, K) against integer labels (N), as torch.nn.CrossEntropyLoss(label_smoothing)
 * with reduction 'mean', together with its gradient with respect to the logits. Numerically stable (the row max is
 * subtracted before exponentiating) and accumulated in float64.
 * @throws ArgumentTypeError when labels is not an Int32Array; ShapeError when it does not hold N labels;
 *   ArgumentValueError naming the index and value of the first label outside [0, K), or for a bad labelSmoothing.
 * @example const { loss, dlogits } = await softmaxCrossEntropy(logits, labels, { labelSmoothing: 0.1 });
 */
export async function softmaxCrossEntropy(logits: HostTensor, labels: Int32Array, options: SoftmaxCrossEntropyOptions = {}): Promise<SoftmaxCrossEntropyResult> {
  const { native, dlogits, loss } = prepare(logits, labels, options);
  await runTrainingOp('softmaxCrossEntropy', native);
  return { loss: loss[0] as number, dlogits };
}

/** Synchronous softmaxCrossEntropy (blocks the event loop). */
export function softmaxCrossEntropySync(logits: HostTensor, labels: Int32Array, options: SoftmaxCrossEntropyOptions = {}): SoftmaxCrossEntropyResult {
  const { native, dlogits, loss } = prepare(logits, labels, options);
  runTrainingOpSync('softmaxCrossEntropy', native);
  return { loss: loss[0] as number, dlogits };
}
