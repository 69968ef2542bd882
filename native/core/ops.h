// Backend-neutral parameter structs and entry points of the single-op API. Every tensor is a dense row-major
// float32 buffer owned by the caller (NCHW for activations). The TypeScript layer has already checked shapes;
// the native side re-checks the invariants it relies on and throws NativeError on violation.
#pragma once

#include <cstdint>

namespace repvgg {

// Output side of a convolution: floor((in + 2*pad - kernel) / stride) + 1.
inline int64_t conv_out_size(int64_t in, int64_t kernel, int64_t stride, int64_t pad) {
  return (in + 2 * pad - kernel) / stride + 1;
}

struct Conv2dParams {
  int64_t batch, in_channels, height, width;  // x: (batch, in_channels, height, width)
  int64_t out_channels, kernel, stride, pad, groups;  // w: (out_channels, in_channels/groups, kernel, kernel)
  bool has_bias;  // bias: (out_channels)
  bool relu;      // fused ReLU after the bias
};

struct BatchNormParams {
  int64_t batch, channels, height, width;  // x, y: (batch, channels, height, width)
  float eps;
  bool relu;
};

struct LinearParams {
  int64_t batch, in_features, out_features;  // x: (batch, in), w: (out, in), bias: (out), y: (batch, out)
  bool relu;
};

enum class EltwiseKind { relu, sigmoid };

namespace cpu {
void conv2d_forward(const Conv2dParams& p, const float* x, const float* w, const float* bias, float* y);
// Inference-mode batch norm with running statistics: y = gamma * (x - mean) / sqrt(var + eps) + beta.
void batchnorm_forward_inference(const BatchNormParams& p, const float* x, const float* mean, const float* var,
                                 const float* gamma, const float* beta, float* y);
void eltwise_forward(EltwiseKind kind, int64_t count, const float* x, float* y);
// y = a + b, optionally followed by ReLU; a, b, y: (count).
void add_forward(int64_t count, const float* a, const float* b, float* y, bool relu);
// y[n, c, :, :] = x[n, c, :, :] * scale[n, c] — the excitation step of SE.
void channel_scale_forward(int64_t batch, int64_t channels, int64_t spatial, const float* x, const float* scale, float* y);
// y[n, c] = mean over (h, w) of x[n, c, h, w].
void global_avg_pool_forward(int64_t batch, int64_t channels, int64_t height, int64_t width, const float* x, float* y);
void linear_forward(const LinearParams& p, const float* x, const float* w, const float* bias, float* y);
}  // namespace cpu

}  // namespace repvgg
