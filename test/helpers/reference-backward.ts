// Float64 reference gradients of every training op (the backward passes of lib/ops and the softmax cross-entropy
// loss), a training-mode batch norm, and the central finite differences that the references are checked with.
// Not for: production use or forward ops of inference (test/helpers/reference.ts has those). Plain loops, written
// for clarity: each gradient is the textbook formula, never derived from the code under test.

import type { ConvOptions, DenseArray, RefTensor } from './reference.js';
import { BN_EPS } from './reference.js';

function size(shape: readonly number[]): number {
  return shape.reduce((p, d) => p * d, 1);
}

function dimsOf(t: DenseArray, rank: number, name: string): number[] {
  if (t.shape.length !== rank || size(t.shape) !== t.data.length) {
    throw new Error(`Expected ${name} of rank ${rank} matching its ${t.data.length} elements but received [${t.shape.join(', ')}]`);
  }
  return [...t.shape];
}

function sameShape(a: DenseArray, b: DenseArray, what: string): void {
  if (a.shape.join() !== b.shape.join() || a.data.length !== b.data.length) {
    throw new Error(`${what}: shapes [${a.shape.join(', ')}] and [${b.shape.join(', ')}] differ`);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Convolution

/**
 * Gradients of the bias-free conv2d y = conv2dRef(x, w, undefined, options) for the upstream gradient dy: every
 * product x[.., iy, ix] * w[.., ky, kx] that reached y[.., oy, ox] sends dy back to both factors.
 */
export function conv2dBackwardRef(
  x: DenseArray, // [N, C, H, W]
  w: DenseArray, // [O, C/groups, K, K]
  dy: DenseArray, // [N, O, OH, OW]
  { stride, pad, groups }: ConvOptions,
): { dx: RefTensor /* [N, C, H, W] */; dweight: RefTensor /* [O, C/groups, K, K] */ } {
  const [n, c, h, wd] = dimsOf(x, 4, 'conv input') as [number, number, number, number];
  const [o, cg, kh, kw] = dimsOf(w, 4, 'conv weight') as [number, number, number, number];
  const [dn, dO, oh, ow] = dimsOf(dy, 4, 'conv output gradient') as [number, number, number, number];
  if (cg * groups !== c || o % groups !== 0) throw new Error(`conv2dBackwardRef: groups ${groups} do not fit ${c} -> ${o}`);
  if (dn !== n || dO !== o || oh !== Math.floor((h + 2 * pad - kh) / stride) + 1 || ow !== Math.floor((wd + 2 * pad - kw) / stride) + 1) {
    throw new Error(`conv2dBackwardRef: dy [${dy.shape.join(', ')}] is not the output shape`);
  }
  const dx = new Float64Array(n * c * h * wd);
  const dw = new Float64Array(o * cg * kh * kw);
  const oPerGroup = o / groups;
  for (let b = 0; b < n; b++) {
    for (let oc = 0; oc < o; oc++) {
      const firstChannel = Math.floor(oc / oPerGroup) * cg;
      for (let oy = 0; oy < oh; oy++) {
        for (let ox = 0; ox < ow; ox++) {
          const g = dy.data[((b * o + oc) * oh + oy) * ow + ox] as number;
          for (let ic = 0; ic < cg; ic++) {
            for (let ky = 0; ky < kh; ky++) {
              const iy = oy * stride + ky - pad;
              if (iy < 0 || iy >= h) continue;
              for (let kx = 0; kx < kw; kx++) {
                const ix = ox * stride + kx - pad;
                if (ix < 0 || ix >= wd) continue;
                const xi = ((b * c + firstChannel + ic) * h + iy) * wd + ix;
                const wi = ((oc * cg + ic) * kh + ky) * kw + kx;
                dx[xi] = (dx[xi] as number) + g * (w.data[wi] as number);
                dw[wi] = (dw[wi] as number) + g * (x.data[xi] as number);
              }
            }
          }
        }
      }
    }
  }
  return { dx: { data: dx, shape: [n, c, h, wd] }, dweight: { data: dw, shape: [o, cg, kh, kw] } };
}

// ---------------------------------------------------------------------------------------------------------------
// Batch normalization (training mode)

/**
 * Training-mode BatchNorm2d: normalizes with the batch mean and the BIASED batch variance over (N, H, W), which it
 * also returns (two passes: the variance is the mean of squared deviations, free of cancellation).
 */
export function batchNormTrainRef(
  x: DenseArray, // [N, C, H, W]
  gamma: ArrayLike<number>, // [C]
  beta: ArrayLike<number>, // [C]
  eps = BN_EPS,
): { y: RefTensor /* [N, C, H, W] */; mean: Float64Array /* [C] */; var: Float64Array /* [C] */ } {
  const [n, c, h, w] = dimsOf(x, 4, 'batch norm input') as [number, number, number, number];
  const hw = h * w;
  const count = n * hw;
  const mean = new Float64Array(c);
  const variance = new Float64Array(c);
  const y = new Float64Array(x.data.length);
  for (let ch = 0; ch < c; ch++) {
    let sum = 0;
    for (let b = 0; b < n; b++) for (let i = 0; i < hw; i++) sum += x.data[(b * c + ch) * hw + i] as number;
    const m = sum / count;
    let squares = 0;
    for (let b = 0; b < n; b++) for (let i = 0; i < hw; i++) squares += ((x.data[(b * c + ch) * hw + i] as number) - m) ** 2;
    const v = squares / count;
    mean[ch] = m;
    variance[ch] = v;
    const scale = (gamma[ch] as number) / Math.sqrt(v + eps);
    for (let b = 0; b < n; b++) {
      for (let i = 0; i < hw; i++) {
        const at = (b * c + ch) * hw + i;
        y[at] = ((x.data[at] as number) - m) * scale + (beta[ch] as number);
      }
    }
  }
  return { y: { data: y, shape: [n, c, h, w] }, mean, var: variance };
}

/**
 * Gradients of batchNormTrainRef through the batch statistics, per channel with M = N*H*W values,
 * xhat = (x - mean) / sqrt(var + eps):
 * dbeta = sum dy, dgamma = sum dy * xhat, dx = gamma / sqrt(var + eps) * (dy - dbeta / M - xhat * dgamma / M).
 */
export function batchNormBackwardRef(
  x: DenseArray, // [N, C, H, W]
  dy: DenseArray, // [N, C, H, W]
  gamma: ArrayLike<number>, // [C]
  mean: ArrayLike<number>, // [C]
  variance: ArrayLike<number>, // [C]
  eps = BN_EPS,
): { dx: RefTensor; dgamma: Float64Array; dbeta: Float64Array } {
  const [n, c, h, w] = dimsOf(x, 4, 'batch norm input') as [number, number, number, number];
  sameShape(x, dy, 'batchNormBackwardRef');
  const hw = h * w;
  const count = n * hw;
  const dx = new Float64Array(x.data.length);
  const dgamma = new Float64Array(c);
  const dbeta = new Float64Array(c);
  for (let ch = 0; ch < c; ch++) {
    const invStd = 1 / Math.sqrt((variance[ch] as number) + eps);
    const xhat = (at: number): number => ((x.data[at] as number) - (mean[ch] as number)) * invStd;
    let sumDy = 0;
    let sumDyXhat = 0;
    for (let b = 0; b < n; b++) {
      for (let i = 0; i < hw; i++) {
        const at = (b * c + ch) * hw + i;
        sumDy += dy.data[at] as number;
        sumDyXhat += (dy.data[at] as number) * xhat(at);
      }
    }
    dbeta[ch] = sumDy;
    dgamma[ch] = sumDyXhat;
    const scale = (gamma[ch] as number) * invStd;
    for (let b = 0; b < n; b++) {
      for (let i = 0; i < hw; i++) {
        const at = (b * c + ch) * hw + i;
        dx[at] = scale * ((dy.data[at] as number) - sumDy / count - (xhat(at) * sumDyXhat) / count);
      }
    }
  }
  return { dx: { data: dx, shape: [n, c, h, w] }, dgamma, dbeta };
}

/**
 * PyTorch's running-statistics update (BatchNorm2d, training): momentum * batch + (1 - momentum) * running, with
 * the unbiased variance var * count / (count - 1) for the running variance. Returns new arrays (float64).
 */
export function updateRunningStatsRef(
  runningMean: ArrayLike<number>, // [C]
  runningVar: ArrayLike<number>, // [C]
  mean: ArrayLike<number>, // [C]
  variance: ArrayLike<number>, // [C], biased
  count: number,
  momentum = 0.1,
): { mean: Float64Array; var: Float64Array } {
  const c = runningMean.length;
  const newMean = new Float64Array(c);
  const newVar = new Float64Array(c);
  for (let i = 0; i < c; i++) {
    newMean[i] = momentum * (mean[i] as number) + (1 - momentum) * (runningMean[i] as number);
    newVar[i] = momentum * (((variance[i] as number) * count) / (count - 1)) + (1 - momentum) * (runningVar[i] as number);
  }
  return { mean: newMean, var: newVar };
}

// ---------------------------------------------------------------------------------------------------------------
// Elementwise, pooling, linear, channel scaling

/** ReLU's gradient from its output y: dy where y > 0, else 0. */
export function reluBackwardRef(y: DenseArray, dy: DenseArray): RefTensor {
  sameShape(y, dy, 'reluBackwardRef');
  return { data: Float64Array.from(y.data, (v, i) => (v > 0 ? (dy.data[i] as number) : 0)), shape: [...y.shape] };
}

/** Sigmoid's gradient from its output y: dy * y * (1 - y). */
export function sigmoidBackwardRef(y: DenseArray, dy: DenseArray): RefTensor {
  sameShape(y, dy, 'sigmoidBackwardRef');
  return { data: Float64Array.from(y.data, (v, i) => (dy.data[i] as number) * v * (1 - v)), shape: [...y.shape] };
}

/** Gradient of the mean over (H, W): dy / (H W) at every position. */
export function globalAvgPoolBackwardRef(dy: DenseArray /* [N, C] */, height: number, width: number): RefTensor /* [N, C, H, W] */ {
  const [n, c] = dimsOf(dy, 2, 'pool output gradient') as [number, number];
  const hw = height * width;
  const dx = new Float64Array(n * c * hw);
  for (let plane = 0; plane < n * c; plane++) dx.fill((dy.data[plane] as number) / hw, plane * hw, (plane + 1) * hw);
  return { data: dx, shape: [n, c, height, width] };
}

/** Gradients of y = x W^T + b: dx = dy W, dW = dy^T x, db = column sums of dy. */
export function linearBackwardRef(
  x: DenseArray, // [N, C]
  w: DenseArray, // [K, C]
  dy: DenseArray, // [N, K]
): { dx: RefTensor; dweight: RefTensor; dbias: Float64Array } {
  const [n, c] = dimsOf(x, 2, 'linear input') as [number, number];
  const [k, wc] = dimsOf(w, 2, 'linear weight') as [number, number];
  const [dn, dk] = dimsOf(dy, 2, 'linear output gradient') as [number, number];
  if (wc !== c || dn !== n || dk !== k) throw new Error('linearBackwardRef: shapes do not fit');
  const dx = new Float64Array(n * c);
  const dw = new Float64Array(k * c);
  const db = new Float64Array(k);
  for (let row = 0; row < n; row++) {
    for (let j = 0; j < k; j++) {
      const g = dy.data[row * k + j] as number;
      db[j] = (db[j] as number) + g;
      for (let i = 0; i < c; i++) {
        dx[row * c + i] = (dx[row * c + i] as number) + g * (w.data[j * c + i] as number);
        dw[j * c + i] = (dw[j * c + i] as number) + g * (x.data[row * c + i] as number);
      }
    }
  }
  return { dx: { data: dx, shape: [n, c] }, dweight: { data: dw, shape: [k, c] }, dbias: db };
}

/** y[n, c, h, w] = x[n, c, h, w] * scale[n, c] (SE's excitation step), in float64. */
export function channelScaleRef(x: DenseArray /* [N, C, H, W] */, scale: DenseArray /* [N, C] */): RefTensor {
  const [n, c, h, w] = dimsOf(x, 4, 'channel scale input') as [number, number, number, number];
  const hw = h * w;
  const y = new Float64Array(x.data.length);
  for (let plane = 0; plane < n * c; plane++) {
    for (let i = plane * hw; i < (plane + 1) * hw; i++) y[i] = (x.data[i] as number) * (scale.data[plane] as number);
  }
  return { data: y, shape: [n, c, h, w] };
}

/** Gradients of channelScaleRef: dx = dy * scale, dscale[n, c] = sum over (H, W) of dy * x. */
export function channelScaleBackwardRef(
  x: DenseArray, // [N, C, H, W]
  scale: DenseArray, // [N, C]
  dy: DenseArray, // [N, C, H, W]
): { dx: RefTensor; dscale: RefTensor } {
  const [n, c, h, w] = dimsOf(x, 4, 'channel scale input') as [number, number, number, number];
  sameShape(x, dy, 'channelScaleBackwardRef');
  const hw = h * w;
  const dx = new Float64Array(x.data.length);
  const dscale = new Float64Array(n * c);
  for (let plane = 0; plane < n * c; plane++) {
    let sum = 0;
    for (let i = plane * hw; i < (plane + 1) * hw; i++) {
      dx[i] = (dy.data[i] as number) * (scale.data[plane] as number);
      sum += (dy.data[i] as number) * (x.data[i] as number);
    }
    dscale[plane] = sum;
  }
  return { dx: { data: dx, shape: [n, c, h, w] }, dscale: { data: dscale, shape: [n, c] } };
}

// ---------------------------------------------------------------------------------------------------------------
// Loss

/**
 * torch.nn.CrossEntropyLoss(label_smoothing = ls), reduction 'mean', straight from its definition:
 * loss = mean over rows of -sum_k target_k log softmax(z)_k, target = (1 - ls) onehot(label) + ls / K,
 * and its gradient (softmax(z) - target) / N.
 */
export function softmaxCrossEntropyRef(
  logits: DenseArray, // [N, K]
  labels: ArrayLike<number>, // [N]
  labelSmoothing = 0,
): { loss: number; dlogits: RefTensor /* [N, K] */ } {
  const [n, k] = dimsOf(logits, 2, 'logits') as [number, number];
  if (labels.length !== n) throw new Error(`softmaxCrossEntropyRef: ${labels.length} labels for ${n} rows`);
  let total = 0;
  const dlogits = new Float64Array(n * k);
  for (let row = 0; row < n; row++) {
    const z = Array.from({ length: k }, (_, j) => logits.data[row * k + j] as number);
    const max = Math.max(...z);
    const logSumExp = max + Math.log(z.reduce((s, v) => s + Math.exp(v - max), 0));
    for (let j = 0; j < k; j++) {
      const target = (j === labels[row] ? 1 - labelSmoothing : 0) + labelSmoothing / k;
      const logSoftmax = (z[j] as number) - logSumExp;
      total -= target * logSoftmax;
      dlogits[row * k + j] = (Math.exp(logSoftmax) - target) / n;
    }
  }
  return { loss: total / n, dlogits: { data: dlogits, shape: [n, k] } };
}

// ---------------------------------------------------------------------------------------------------------------
// Finite differences

/**
 * Central finite differences of a scalar function of float64 values: (f(v + h e_i) - f(v - h e_i)) / (2h) for
 * every i. The truncation error is O(h^2 f''') and the rounding error O(1e-16 |f| / h); h = 1e-5 balances the two
 * for values and derivatives of order one (both near 1e-10).
 */
export function numericGradient(f: (values: Float64Array) => number, at: ArrayLike<number>, h = 1e-5): Float64Array {
  const values = Float64Array.from(at);
  const grad = new Float64Array(values.length);
  for (let i = 0; i < values.length; i++) {
    const saved = values[i] as number;
    values[i] = saved + h;
    const plus = f(values);
    values[i] = saved - h;
    const minus = f(values);
    values[i] = saved;
    grad[i] = (plus - minus) / (2 * h);
  }
  return grad;
}

/** sum_i a_i b_i: turns a tensor-valued f into the scalar <f(x), dy>, whose gradient is the backward of dy. */
export function dot(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`dot: lengths ${a.length} and ${b.length} differ`);
  let sum = 0;
  for (let i = 0; i < a.length; i++) sum += (a[i] as number) * (b[i] as number);
  return sum;
}
