// CUDA kernels of the training ops (fp32, NCHW): batch-norm statistics, forward and backward; element-wise
// backward passes; global average pooling, linear and squeeze-excitation backward; softmax cross-entropy; and the
// optimizer's updates (SGD, EMA, the custom L2, BN running statistics). Semantics are those of the CPU ops
// (native/cpu/, which match PyTorch): channel sums in double, optimizer arithmetic in double with one float
// rounding per stored value and no fused multiply-add, so SGD/EMA/running-statistics results equal the CPU's bit
// for bit given equal inputs. Each launcher enqueues on `stream` and returns cudaGetLastError().
// Not for: convolutions (cuDNN, training.cc) or inference (kernels.h).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace repvgg::cuda::train {

// Device scratch the two batch-norm reductions below need for an (n, c, spatial) tensor (each channel's partial sums).
size_t batch_norm_scratch_bytes(int64_t n, int64_t c, int64_t spatial);
// x (n, c, spatial): mean (c) and biased variance (c) over n and spatial (two passes, double sums). scratch:
// batch_norm_scratch_bytes(n, c, spatial) of device memory, free once the work enqueued here is done.
cudaError_t batch_norm_stats(const float* x, int64_t n, int64_t c, int64_t spatial, float* mean, float* var, void* scratch,
                             cudaStream_t stream);
// y = (x - mean) * gamma / sqrt(var + eps) + beta, per channel (as the CPU op: scale and shift in float).
cudaError_t batch_norm_apply(const float* x, int64_t n, int64_t c, int64_t spatial, const float* mean, const float* var,
                             const float* gamma, const float* beta, float eps, float* y, cudaStream_t stream);
// PyTorch's training-mode gradient: dbeta = sum dy, dgamma = sum dy * xhat, dx = k * (dy - dbeta / M - xhat * dgamma / M)
// with k = gamma / sqrt(var + eps), M = n * spatial. scratch: as batch_norm_stats's.
cudaError_t batch_norm_backward(const float* x, const float* dy, int64_t n, int64_t c, int64_t spatial, const float* mean,
                                const float* var, const float* gamma, float eps, float* dx, float* dgamma, float* dbeta, void* scratch,
                                cudaStream_t stream);
// running = momentum * batch + (1 - momentum) * running, the variance unbiased (var * count / (count - 1)).
cudaError_t update_running_stats(float* running_mean, float* running_var, const float* mean, const float* var, int64_t c,
                                 int64_t count, double momentum, cudaStream_t stream);

// y = max(x, 0); dx = dy where y > 0, else 0; y = 1 / (1 + exp(-x)); dx = dy * y * (1 - y).
cudaError_t relu(const float* x, float* y, int64_t count, cudaStream_t stream);
cudaError_t relu_backward(const float* y, const float* dy, float* dx, int64_t count, cudaStream_t stream);
cudaError_t sigmoid(const float* x, float* y, int64_t count, cudaStream_t stream);
cudaError_t sigmoid_backward(const float* y, const float* dy, float* dx, int64_t count, cudaStream_t stream);
// dst (float) = src (half) widened, for mixed precision (the other direction is kernels.h convert_f32_to_f16).
cudaError_t convert_f16_to_f32(const void* src, float* dst, int64_t count, cudaStream_t stream);
// The same for bfloat16 (rounded to nearest even going down; exact going up).
cudaError_t convert_f32_to_bf16(const float* src, void* dst, int64_t count, cudaStream_t stream);
cudaError_t convert_bf16_to_f32(const void* src, float* dst, int64_t count, cudaStream_t stream);
// *flag (device int) is set to 1 when any of x's count values is NaN or infinite (left alone otherwise).
cudaError_t flag_non_finite(const float* x, int64_t count, int* flag, cudaStream_t stream);
// y = x * factor.
cudaError_t scale(const float* x, float* y, int64_t count, float factor, cudaStream_t stream);
// y = a + b (then ReLU when relu). Any of them may alias (acc += g is add(acc, g, acc)).
cudaError_t add(const float* a, const float* b, float* y, int64_t count, bool relu, cudaStream_t stream);

// dx (n, c, spatial) = dy (n, c) / spatial, broadcast.
cudaError_t global_avg_pool_backward(const float* dy, int64_t n, int64_t c, int64_t spatial, float* dx, cudaStream_t stream);
// dx (n, in) = dy (n, out) W (out, in) [when dx]; dw (out, in) = dy^T x; db (out) = sum_n dy.
cudaError_t linear_backward(const float* x, const float* w, const float* dy, int64_t n, int64_t in, int64_t out, float* dx,
                            float* dw, float* db, cudaStream_t stream);
// y (n, c, spatial) = x * scale (n, c); dx = dy * scale; dscale (n, c) = sum over spatial of dy * x.
cudaError_t channel_scale(const float* x, const float* scale, int64_t n, int64_t c, int64_t spatial, float* y, cudaStream_t stream);
cudaError_t channel_scale_backward(const float* x, const float* scale, const float* dy, int64_t n, int64_t c, int64_t spatial,
                                   float* dx, float* dscale, cudaStream_t stream);

// Mean softmax cross-entropy with label smoothing (torch.nn.CrossEntropyLoss): dlogits (n, k) and each row's loss
// (row_loss, double (n)); labels (n) must be in [0, k) (checked by the caller). Rows in double, as the CPU op.
cudaError_t softmax_cross_entropy(const float* logits, const int32_t* labels, int64_t n, int64_t k, double label_smoothing,
                                  float* dlogits, double* row_loss, cudaStream_t stream);

// One SGD update of one tensor (PyTorch, dampening 0): d = g + wd * w; b = first ? d : momentum * b + d;
// d = nesterov ? d + momentum * b : b; w -= lr * d. momentum_buffer null: no momentum (d = g + wd * w).
cudaError_t sgd_step(float* weight, const float* grad, float* momentum_buffer, int64_t count, double lr, double momentum,
                     bool nesterov, double weight_decay, bool first, cudaStream_t stream);
// shadow = decay * shadow + (1 - decay) * current.
cudaError_t ema_update(float* shadow, const float* current, int64_t count, double decay, cudaStream_t stream);
// The official custom L2 of one block (native/cpu/optim.cc custom_l2): adds its gradient to k3_grad and k1_grad
// and its unscaled sum (the caller multiplies by 0.5 * weight_decay) to *total (double, device).
cudaError_t custom_l2(const float* k3, float* k3_grad, const float* k1, float* k1_grad, const float* t3, const float* t1,
                      int64_t out_channels, int64_t per_out, double weight_decay, double* total, cudaStream_t stream);

}  // namespace repvgg::cuda::train
