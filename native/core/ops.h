// Backend-neutral parameter structs and entry points of the single-op API. Every tensor is a dense float32 buffer
// owned by the caller. 4-D activations are NCHW (row-major over N, C, H, W) unless a `channels_last` flag says
// NHWC (row-major over N, H, W, C; same logical shape); the training path keeps activations NHWC so that oneDNN's
// convolutions run on them directly. The TypeScript layer has already checked shapes; the native side re-checks
// the invariants it relies on and throws NativeError on violation.
#pragma once

#include <cstdint>
#include <vector>

namespace repvgg {

// Output side of a convolution: floor((in + 2*pad - kernel) / stride) + 1.
inline int64_t conv_out_size(int64_t in, int64_t kernel, int64_t stride, int64_t pad) {
  return (in + 2 * pad - kernel) / stride + 1;
}

// True when every output of a convolution sees every input of its image along one dimension (in: the input side):
// each output's kernel window, at its stride, covers the whole padded input. When both dimensions do, the conv is a
// dense linear map from an image's H*W*C inputs to its OH*OW*O outputs, which the plane-GEMM algorithm runs as one
// matrix product (cpu/gemm_conv.h): RepVGG's 3x3 convs on 2x2 planes (its last stages on 32x32 images) and its
// stride-2 conv from 2x2 to 1x1.
inline bool conv_links_every_position(int64_t in, int64_t kernel, int64_t stride, int64_t pad) {
  const int64_t out = conv_out_size(in, kernel, stride, pad);
  return out >= 1 && (out - 1) * stride <= pad && in <= kernel - pad;
}

// The plane-GEMM algorithm's matrix has (H*W*C) x (OH*OW*O) elements: at most this many (64 MiB of float32).
constexpr int64_t kMaxPlaneGemmElements = int64_t{1} << 24;
// The im2col algorithm's column matrix has (OH*OW) x (K*K*C) elements per image: at most this many (cpu/gemm_conv.h).
constexpr int64_t kMaxIm2colImageElements = int64_t{1} << 24;

struct Conv2dParams {
  int64_t batch, in_channels, height, width;  // x: (batch, in_channels, height, width)
  int64_t out_channels, kernel, stride, pad, groups;  // w: (out_channels, in_channels/groups, kernel, kernel)
  bool has_bias;  // bias: (out_channels)
  bool relu;      // fused ReLU after the bias
  bool src_channels_last = false;  // x is NHWC
  bool dst_channels_last = false;  // y is NHWC
  // 0: oneDNN's direct kernel. 2 or 4: our Winograd F(2x2, 3x3) or F(4x4, 3x3) (cpu/winograd.h), which needs a 3x3
  // kernel, stride 1, groups 1, pad 0 or 1 and NHWC x and y.
  int winograd_tile = 0;
  // true: the plane-GEMM algorithm (cpu/gemm_conv.h), which needs groups 1, NHWC x and y, a conv that links every
  // input position to every output position (conv_links_every_position in both dimensions) and a matrix of at most
  // kMaxPlaneGemmElements. Not with winograd_tile.
  bool plane_gemm = false;
  // true: im2col + GEMM (cpu/gemm_conv.h), which needs groups 1, NHWC x and y and at most kMaxIm2colImageElements per
  // image. Not with winograd_tile or plane_gemm.
  bool im2col_gemm = false;
};

struct BatchNormParams {
  int64_t batch, channels, height, width;  // x, y: (batch, channels, height, width)
  float eps;
  bool relu;
  bool channels_last = false;  // x, y (and dy, dx) are NHWC
};

struct LinearParams {
  int64_t batch, in_features, out_features;  // x: (batch, in), w: (out, in), bias: (out), y: (batch, out)
  bool relu;
};

enum class EltwiseKind { relu, sigmoid };

// ---- Training (backward passes and training-mode forwards) ----

struct Conv2dBackwardParams {
  int64_t batch, in_channels, height, width;          // x, dx: (batch, in_channels, height, width)
  int64_t out_channels, kernel, stride, pad, groups;  // w, dw: (out_channels, in_channels/groups, kernel, kernel)
  bool need_input_grad;                               // false: dx is not computed (first layer)
  bool src_channels_last = false;                     // x and dx are NHWC
  bool dst_channels_last = false;                     // dy is NHWC
  bool plane_gemm = false;                            // as in Conv2dParams (then dy is NHWC as well)
  bool im2col_gemm = false;                           // likewise
  // 0: dx with oneDNN's kernel. 2 or 4: dx, itself a 3x3 stride-1 pad-1 conv of dy, with our Winograd F(2x2, 3x3)
  // or F(4x4, 3x3); needs a 3x3 kernel, stride 1, pad 1, groups 1 and NHWC x and dy. dw is oneDNN's unless
  // winograd_weight_grad (which needs winograd_tile): then Winograd F(3x3, 2x2)'s (winograd.h).
  int winograd_tile = 0;
  bool winograd_weight_grad = false;
};

struct LinearBackwardParams {
  int64_t batch, in_features, out_features;  // x, dx: (batch, in), w, dw: (out, in), db: (out), dy: (batch, out)
  bool need_input_grad;
};

struct SoftmaxCrossEntropyParams {
  int64_t batch, classes;  // logits, dlogits: (batch, classes); labels: (batch)
  double label_smoothing;  // in [0, 1]
};

// One parameter tensor of an SGD step (PyTorch's torch.optim.SGD with dampening 0). momentum_buffer is null when the
// optimizer has no momentum; first marks a buffer that has never been written (it becomes the first d).
// One branch of a sum of batch-normalized branches (batchnorm_sum_forward): x is (N, C, H, W) NHWC; gamma, beta
// (C); the op writes the branch's batch mean and biased variance to mean/var (C).
struct NormBranch {
  const float* x;
  const float* gamma;
  const float* beta;
  float* mean;
  float* var;
};

// The gradient side of one NormBranch: mean/var as the forward wrote them; dx like x, dgamma and dbeta (C).
struct NormBranchGrad {
  const float* x;
  const float* gamma;
  const float* mean;
  const float* var;
  float* dx;
  float* dgamma;
  float* dbeta;
};

struct SgdTensor {
  float* weight;
  const float* grad;
  float* momentum_buffer;
  int64_t count;
  double weight_decay;
  bool first;
};

struct SgdParams {
  double lr, momentum;
  bool nesterov;
};

// One exponential-moving-average update: shadow = decay * shadow + (1 - decay) * current.
struct EmaTensor {
  float* shadow;
  const float* current;
  int64_t count;
};

// One block's branch kernels for the official custom L2 (get_custom_L2 of the RepVGG code): k3 (O, C/g, 3, 3) and
// k1 (O, C/g, 1, 1) with their gradients, and t3, t1 (O) = gamma / sqrt(running_var + eps) of their BNs.
struct CustomL2Block {
  const float* k3;
  float* k3_grad;
  const float* k1;
  float* k1_grad;
  const float* t3;
  const float* t1;
  int64_t out_channels, per_out;  // per_out = C/g
};

namespace cpu {
// Adds the custom L2's gradient (weight_decay * d/dk of 0.5 * sum of the terms) to k3_grad and k1_grad and returns
// 0.5 * weight_decay * (sum over blocks of |outer ring of k3|^2 + sum of eq^2 / (t3^2 + t1^2)), eq = k3c*t3 + k1*t1.
// Sequential, in the TypeScript reference's order, so the returned value is bit-identical to it too.
double custom_l2(double weight_decay, const std::vector<CustomL2Block>& blocks);
// Every tensor's update, elementwise in double precision and rounded to float32 once per stored value, in the
// order of the TypeScript reference (lib/train/optimizer.ts), so results are bit-identical to it:
// d = g + wd * w; b = first ? d : momentum * b + d; d = nesterov ? d + momentum * b : b; w -= lr * d.
void sgd_step(const SgdParams& p, const std::vector<SgdTensor>& tensors);
void ema_update(double decay, const std::vector<EmaTensor>& tensors);

void conv2d_forward(const Conv2dParams& p, const float* x, const float* w, const float* bias, float* y);
// Inference-mode batch norm with running statistics: y = gamma * (x - mean) / sqrt(var + eps) + beta.
void batchnorm_forward_inference(const BatchNormParams& p, const float* x, const float* mean, const float* var,
                                 const float* gamma, const float* beta, float* y);
void eltwise_forward(EltwiseKind kind, int64_t count, const float* x, float* y);
// y = a + b, optionally followed by ReLU; a, b, y: (count).
void add_forward(int64_t count, const float* a, const float* b, float* y, bool relu);
// y[n, c, :, :] = x[n, c, :, :] * scale[n, c] — the excitation step of SE. x, y: NCHW, or NHWC when channels_last.
void channel_scale_forward(int64_t batch, int64_t channels, int64_t spatial, const float* x, const float* scale, float* y,
                           bool channels_last);
// y[n, c] = mean over (h, w) of x[n, c, h, w]; x NCHW, or NHWC when channels_last.
void global_avg_pool_forward(int64_t batch, int64_t channels, int64_t height, int64_t width, const float* x, float* y,
                             bool channels_last);
void linear_forward(const LinearParams& p, const float* x, const float* w, const float* bias, float* y);

// dx = conv^T(dy, w) (skipped unless need_input_grad), dw = correlation of x with dy. No bias gradient: RepVGG's
// convs have none (BN follows); a bias gradient would be the sum of dy over (N, OH, OW).
// x: (N, C, H, W), w: (O, C/g, K, K), dy: (N, O, OH, OW); dx like x (may be null), dw like w.
void conv2d_backward(const Conv2dBackwardParams& p, const float* x, const float* w, const float* dy, float* dx, float* dw);
// Training-mode batch norm: normalizes with the batch statistics and writes them, mean and BIASED variance
// (divided by N*H*W), to mean/var (C). y = gamma * (x - mean) / sqrt(var + eps) + beta.
void batchnorm_forward_training(const BatchNormParams& p, const float* x, const float* gamma, const float* beta, float* y,
                                float* mean, float* var);
// Gradient of batchnorm_forward_training through the batch statistics; mean/var are the ones it returned.
// x, dy, dx: (N, C, H, W); gamma, mean, var, dgamma, dbeta: (C).
void batchnorm_backward(const BatchNormParams& p, const float* x, const float* dy, const float* gamma, const float* mean,
                        const float* var, float* dx, float* dgamma, float* dbeta);
// y = sum over branches of BN_i(x_i) with batch statistics (then ReLU when p.relu): a RepVGG block's branch sum in
// one pass over the branches instead of a BN output per branch and a sum per pair. Bit for bit what
// batchnorm_forward_training per branch, add_forward of the first two, then add_forward (with p.relu) of the rest
// compute. NHWC only (p.channels_last); 1 to kMaxNormBranches branches, all (N, C, H, W); y: (N, C, H, W) NHWC.
constexpr int kMaxNormBranches = 3;
void batchnorm_sum_forward(const BatchNormParams& p, const std::vector<NormBranch>& branches, float* y);
// Gradient of batchnorm_sum_forward from its output y and dy: the ReLU mask (when p.relu), then every branch's
// batch-norm gradient, reading y, dy and each x twice. Bit for bit eltwise_backward(relu) then batchnorm_backward
// per branch.
void batchnorm_sum_backward(const BatchNormParams& p, const std::vector<NormBranchGrad>& branches, const float* y,
                            const float* dy);
// dx from the forward OUTPUT y (ReLU: dy where y > 0; sigmoid: dy * y * (1 - y)); y, dy, dx: (count).
void eltwise_backward(EltwiseKind kind, int64_t count, const float* y, const float* dy, float* dx);
// dx = dy * scale per (n, c) plane; dscale[n, c] = sum over the plane of dy * x. x, dy, dx: (N, C, spatial), or
// (N, spatial, C) when channels_last.
void channel_scale_backward(int64_t batch, int64_t channels, int64_t spatial, const float* x, const float* scale,
                            const float* dy, float* dx, float* dscale, bool channels_last);
// dx[n, c, h, w] = dy[n, c] / (height * width); dy: (N, C), dx: (N, C, H, W), or NHWC when channels_last.
void global_avg_pool_backward(int64_t batch, int64_t channels, int64_t height, int64_t width, const float* dy, float* dx,
                              bool channels_last);
// dx = dy w (skipped unless need_input_grad), dw = dy^T x, db = sum over the batch of dy.
void linear_backward(const LinearBackwardParams& p, const float* x, const float* w, const float* dy, float* dx, float* dw,
                     float* db);
// Mean over the batch of -sum_k target_k log softmax(logits)_k with target = (1 - ls) onehot(label) + ls / K
// (torch.nn.CrossEntropyLoss(label_smoothing=ls)); dlogits = (softmax - target) / N. Returns the loss.
double softmax_cross_entropy(const SoftmaxCrossEntropyParams& p, const float* logits, const int32_t* labels, float* dlogits);
}  // namespace cpu

}  // namespace repvgg
