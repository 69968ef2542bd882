// The one place for numeric tolerances: every comparison in test/ and bench/ uses a constant from here, each
// with the reason for its size. All are bounds on maxRelativeError (test/helpers/reference.ts).
// Not for: the comparisons themselves beyond the two ava helpers below.

import type { ExecutionContext } from 'ava';
import { argmaxRows, maxRelativeError } from './reference.js';

/**
 * Two float64 computations of the same quantity that differ only in summation order or in how the work is split
 * (e.g. a grouped conv vs its groups run one by one). float64 rounds at 1e-16; sums of a few hundred terms stay
 * far below 1e-12.
 */
export const FLOAT64 = 1e-12;

/**
 * One native float32 op (conv, BN, linear, ...) against the float64 reference. float32 rounds at 6e-8; a conv
 * sums up to C*9 = 4608 products, and blocked or split-K algorithms reorder those sums, which leaves
 * about 1e-6 of max|ref|. 1e-5 keeps 10x headroom while any indexing or padding bug shows as O(1) error.
 * Assumes true fp32 math: cuDNN's TF32 tensor-core mode (10-bit mantissa, ~1e-3) must be off for fp32.
 */
export const OP_FP32 = 1e-5;

/**
 * One float32 conv run by our Winograd kernel (native/cpu/winograd.h) against the float64 reference. Besides
 * reordering sums, Winograd rounds the transformed inputs, weights and products, which F(4x4, 3x3)'s transforms
 * scale by up to 24 (its G has 1/24, its A^T 8 and its B^T 5): measured 1.9e-6 (8 -> 16 channels) to 1.1e-5
 * (256 -> 256) of max|ref|, where the direct kernel shows 2e-7 to 2e-6 and F(2x2, 3x3) at most 5.7e-7. 5e-5
 * leaves 4x headroom; one transform coefficient off by 0.1% already shows as 3e-3.
 */
export const WINOGRAD_OP_FP32 = 5e-5;

/**
 * A whole float32 network (22 to 50 layers) against the float64 reference. Each layer adds about OP_FP32/10
 * and passes earlier error on, amplified by the layer's gain, so 10x the per-op bound.
 */
export const MODEL_FP32 = 1e-4;

/**
 * Training-time vs deployed network when both are computed in float64 and the fused weights are kept in
 * float64. Fusion is exact algebra, so only float64 rounding (1e-16, grown by depth and channel sums) remains;
 * 1e-10 is loose for that and still 1e5 below the smallest slip worth catching (see REPARAM_FP32_WEIGHTS).
 */
export const REPARAM = 1e-10;

/**
 * Training-time vs deployed network, both run in float64, when the fused weights are stored as float32 (as
 * DeployedModel and deploy-form files hold them): rounding each fused weight once measured at most 9e-8 on
 * custom, A0, B1g4 and D2se networks with randomTrainState weights. 1e-6 leaves 10x headroom and still fails a
 * fusion with BN eps 0 instead of 1e-5 (measured 1e-5 to 2e-4), an error MODEL_FP32 is too loose to see.
 */
export const REPARAM_FP32_WEIGHTS = 1e-6;

/**
 * Our float32 network against onnxruntime's float32 CPU run of our exported ONNX file: two independent fp32
 * implementations, each within MODEL_FP32 of the truth.
 */
export const ONNX = 1e-4;

/**
 * A whole network in bfloat16 against the float64 reference. bf16 keeps 8 significant bits (rounding 2e-3);
 * weights and activations are rounded at every layer while accumulation stays float32, which grows to ~1e-2
 * over the depth. Because 3e-2 is large, bf16 runs must also pass checkTop1Agreement.
 */
export const BF16 = 3e-2;

/**
 * A whole network in float16 on the GPU (cuDNN tensor cores, NHWC) against the float64 reference. fp16 keeps 11
 * significant bits (rounding 4.9e-4, 16x finer than bf16); weights and activations are rounded at every layer
 * while cuDNN accumulates in float32, so the error grows to a few 1e-3 over 20-30 layers. 1e-2 is BF16 scaled by
 * the 8x finer rounding with some headroom. Measured on an H200 (cuDNN 9.19, 2026-12-04): 6.6e-4 to 8.9e-4 for A0
 * and B1g4 (test/cuda.test.ts), 7.1e-4 for A0 at 224 in bench/cuda.ts. Like BF16, fp16 runs must also pass
 * checkTop1Agreement.
 */
export const FP16 = 1e-2;

/**
 * Our int8 network program against the float64 int8 reference (modelInt8Ref: the same quantized arithmetic in
 * float64). The integer sums are exact in both; what remains is float32 rounding in the float first layer, the
 * scale multiplications and the head (~1e-7, measured 1e-7 to 2e-7), plus one rare event: an activation landing
 * within float32 rounding of a half step rounds to the neighbouring u8 value in one of the two, and that one-step
 * change moves the logits by ~1e-2 of their range. It needs ~10^6 activations to happen once (it did on a 10-layer
 * network with calibrated scales); the small networks and seeds tested here have none. Where the CPU multiplies
 * bf16 natively the head runs in bf16 and the reference rounds its features and weights alike (headPrecision):
 * the weights round identically, a feature only when it lies within float32 rounding of a bf16 half step (the same
 * kind of rare event, ~2^-8 of one feature's term; none here). A wrong bias unit, scale axis, rounding or clipping
 * is off by more than 1e-2.
 */
export const INT8_REFERENCE = 1e-5;

/**
 * onnxruntime on our QDQ export against our int8 program: the same quantized weights and scales, but QDQ stores the
 * bias as s32 on the accumulator's scale (rounded by up to half an accumulator step per channel, which shifts
 * where that channel's outputs round) and onnxruntime requantizes with its own float arithmetic, so a share of
 * activations land one u8 step apart and the difference grows with depth. Measured 3.1e-3 (random A0, 1000
 * classes), 6.0e-3 (the Fashion-MNIST model) and 2.9e-2 (random A0 with 5 classes, calibrated on 8 images: few
 * logits, so max|ref| is small). 6e-2 leaves 2x headroom over the worst, and the runs must also pass
 * checkTop1Agreement; an export with a wrong scale axis or an unscaled bias is off by O(1).
 */
export const INT8_ONNX = 6e-2;

/**
 * An analytic float64 reference gradient against float64 central finite differences with h = 1e-5
 * (reference-backward.ts numericGradient): the truncation error h^2 |f'''| / 6 and the rounding error
 * 1e-16 |f| / h are both near 1e-10 for the order-one data of the tests; 1e-7 leaves 1000x headroom, while a
 * missing term or a wrong index (e.g. BN's gradient without the path through the batch mean) is off by 1e-2 or more.
 */
export const FINITE_DIFF = 1e-7;

/**
 * Asserts maxRelativeError(ours, ref) <= tol; the assertion message carries the measured error.
 * @returns the measured error, for logging.
 * @example checkClose(t, 'conv 3x3 s2', ours, ref, OP_FP32)
 */
export function checkClose(
  t: ExecutionContext,
  name: string,
  ours: ArrayLike<number>,
  ref: ArrayLike<number>,
  tol: number,
): number {
  if (ours.length !== ref.length) {
    t.fail(`${name}: ours has ${ours.length} elements but the reference has ${ref.length}`);
    return Number.POSITIVE_INFINITY;
  }
  const error = maxRelativeError(ours, ref);
  t.true(error <= tol, `${name}: max relative error ${error.toExponential(2)}, tolerance ${tol.toExponential(0)}`);
  return error;
}

/**
 * Asserts that ours predicts the reference's class for every sample whose reference top-2 margin exceeds
 * 2 * tol * max|ref|: closer calls may legitimately swap within the tolerance and are not counted.
 * @returns how many samples were decisive enough to be checked.
 */
export function checkTop1Agreement(
  t: ExecutionContext,
  name: string,
  ours: ArrayLike<number>, // [N, K]
  ref: ArrayLike<number>, // [N, K]
  [n, k]: readonly [number, number],
  tol: number,
): number {
  const ourClasses = argmaxRows(ours, [n, k]);
  const refClasses = argmaxRows(ref, [n, k]);
  let maxRef = 0;
  for (let i = 0; i < n * k; i++) maxRef = Math.max(maxRef, Math.abs(ref[i] as number));
  const disagreements: string[] = [];
  let checked = 0;
  for (let row = 0; row < n; row++) {
    const best = refClasses[row] as number;
    let runnerUp = Number.NEGATIVE_INFINITY;
    for (let j = 0; j < k; j++) if (j !== best) runnerUp = Math.max(runnerUp, ref[row * k + j] as number);
    if ((ref[row * k + best] as number) - runnerUp <= 2 * tol * maxRef) continue;
    checked++;
    if (ourClasses[row] !== best) disagreements.push(`sample ${row}: ours ${ourClasses[row]}, reference ${best}`);
  }
  const examples = disagreements.slice(0, 5).join('; ');
  t.is(disagreements.length, 0, `${name}: top-1 differs on ${disagreements.length}/${checked} decisive samples (${examples})`);
  return checked;
}

/**
 * A few float32 SGD steps of a small network (our tape and SGD) against the same steps in float64 PyTorch
 * (make_train_fixtures.py), compared on what training changed: max |(ours - init) - (ref - init)| relative to
 * max |ref - init| per tensor. The change is only ~1e-3 of the weights for the SE kernels, so merely storing
 * the weights in float32 (2^-24 of |w| per rounding) costs up to 5e-5 of it; measured worst 6.7e-5 (losses
 * 2e-8). 3e-4 leaves 4x headroom over that floor, and still fails plain weight decay in place of the custom L2
 * (1.2e-2) or Nesterov where the recipe has none (far larger).
 */
export const TRAIN_STEPS = 3e-4;

/**
 * lib/data/images.ts's evaluation transform (decode, Resize(256), CenterCrop(224)) against torchvision 0.14 + PIL
 * 9.4 on the same files (test/fixtures/make_image_fixtures.py), as the max per-pixel difference in 0..255 units,
 * i.e. before normalization. We reproduce PIL's bilinear resampling (triangle filter widened by the scale factor
 * when downscaling, 22-bit fixed-point weights, two passes rounded to bytes) in TypeScript, and sharp's libjpeg
 * and libwebp decode the fixtures to the same bytes as PIL's: measured max 0, mean 0, on every fixture.
 * The goal for downscaling is 2 (one JPEG IDCT rounding step on either side plus one resampling rounding step).
 */
export const IMAGE_DOWNSCALE_MAX = 2;

/**
 * The same for upscaling (short side under 256). PIL's bilinear filter does not widen when upscaling (support 1,
 * plain linear interpolation between pixel centres); we reproduce that too: measured max 0. sharp's own
 * `kernel: 'linear'` resize would differ by up to 36 here (libvips upsamples with its affine interpolator, with
 * other pixel-centre conventions), while it stays within 2 when downscaling; that is why the resize is ours.
 */
export const IMAGE_UPSCALE_MAX = 2;

/**
 * A CMYK JPEG decoded by sharp against PIL's conversion, mean |difference| over all bytes in 0..255 units.
 * libvips converts CMYK through an ICC profile (its built-in CMYK profile when the file has none), PIL with the
 * naive formula 255 - C - K: colours differ by design (measured mean 19.2, max 113) but the image is the same.
 * 30 bounds that measured gap; red and blue swapped measured 65, inverted (a missed Adobe inversion) 108.
 */
export const IMAGE_CMYK_MEAN = 30;

/**
 * Decoded bytes of a lossy file (JPEG, lossy WebP) against PIL's decoding of the same file, max per-byte
 * difference. sharp's libjpeg-turbo (mozjpeg) and libwebp and PIL's agreed exactly on every fixture (measured 0);
 * libjpeg builds may still round the IDCT or chroma upsampling differently by one. Lossless formats must match
 * exactly.
 */
export const IMAGE_DECODE_MAX = 1;

/**
 * One SGD step of the full-width A0 at 64x64, batch 8 (train-a0.test.ts) against float64 PyTorch from the same
 * weights, as the relative L2 error ||ours - ref|| / ||ref|| of each tensor's update. Not the max-element metric:
 * of the 1.2 x 10^6 ReLU pre-activations of a step, some lie within float32 rounding of zero, and a flipped mask
 * in stage 3 or 4 (32 to 128 values per channel) moves whole channels of the update, e.g. PyTorch's own float32
 * run moved stage3.11's BN bias update by 4.6% (max element) and 0.95% (L2) in the fixture's third step. Ours
 * measured at most 5.3e-4 (stage4.0 BN weights, no flip that matters in these steps). 5e-2 stays above such
 * flips, while a stale or aliased buffer errs by O(1) because the weights change completely between the steps:
 * conv backward with the first step's weights measured 1.44, an activation recycled while another branch still
 * read it 1.18.
 */
export const A0_STEP_UPDATE = 5e-2;

/**
 * One CUDA training op (test/cuda-training.test.ts) against the same CPU op on the same float32 data: two float32
 * implementations that sum in different orders (cuDNN's algorithms, our block reductions in double), each within
 * OP_FP32 of the truth. Gradients of batch norm subtract nearly equal sums, so they get the same bound as the ops
 * rather than a tighter one. The optimizer updates (SGD, EMA, running statistics, the custom L2 gradients) are
 * not compared with this: they are bit-identical by construction (double arithmetic, one rounding per store, no
 * fused multiply-add on either side) and tested with deepEqual.
 */
export const CUDA_TRAIN_OP = 2 * OP_FP32;

/**
 * A few SGD steps of a small network on CUDA against the same steps on the CPU, from the same weights and data,
 * compared as TRAIN_STEPS compares against PyTorch (the change of each tensor). Both are float32 with different
 * summation orders, each within TRAIN_STEPS of float64 PyTorch: their difference is bounded by twice that. Measured
 * on an H200 (2026-12-04): 1.6e-5 over five steps of the SE network; the PyTorch fixtures on CUDA 1.3e-5 to 6.7e-5,
 * as on the CPU.
 */
export const CUDA_TRAIN_STEPS = 2 * TRAIN_STEPS;

/**
 * A CUDA convolution in mixed precision (operands rounded to half, 11 significant bits: 4.9e-4 relative each; cuDNN
 * accumulates in float) against the CPU's float32 convolution, forward and both gradients. The rounding of inputs
 * and weights gives ~1e-3 of max|ref| over sums of a few hundred terms; 5e-3 (FP16 allows 1e-2 for a whole
 * network) held on an H200 (2026-12-04) for every case of the test.
 */
export const CUDA_TRAIN_FP16_OP = 5e-3;

/**
 * A few mixed-precision SGD steps on CUDA against the same steps in float32 on the CPU, compared on each tensor's
 * change as CUDA_TRAIN_STEPS does. Every convolution of every step carries CUDA_TRAIN_FP16_OP and the rounding
 * compounds through the layers, forward and back; worse, a unit whose pre-activation sits near a ReLU's zero takes
 * the other side on one of the two, and a tensor whose gradient passes few such gates (an SE squeeze's bias) then
 * changes by a different amount altogether. Measured on an H200 (2026-12-04, five steps at loss scale 2^10): the
 * stem's 3x3 kernel 8.4e-2 off in one run, stage1.1.se.down.bias 1.37 and 1.05 off in two others (the median of
 * the 116 tensors 3.6e-2), with the same code paths in fp32 within 2e-5. So the bound is on the typical tensor: the median of the per-tensor errors must stay within
 * CUDA_MIXED_STEPS, and no tensor may be off by more than CUDA_MIXED_STEPS_ANY. The errors this test is for are
 * larger: a missed unscaling errs by the loss scale (2^10) on every tensor, a wrong half conversion or gradient by
 * O(1) on most.
 */
export const CUDA_MIXED_STEPS = 0.1;
export const CUDA_MIXED_STEPS_ANY = 8;
