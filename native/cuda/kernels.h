// Our own CUDA kernels for everything around cuDNN's convolutions: layout/precision conversion at load and at
// the input, bias+ReLU, inference batch norm, add(+ReLU), squeeze-excitation pieces and the classifier head.
// Activations are float NCHW (fp32 programs) or half NHWC (fp16 programs); "half" below means the buffer holds
// __half values. Everything is enqueued on the given stream; each launcher returns cudaGetLastError().
// Not for: convolutions (cuDNN does those, see program.cc).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace repvgg::cuda {

enum class Layout { nchw, nhwc };
enum class Activation { none, relu, sigmoid };

// Activation tensor geometry: (n, c, h, w) in `layout`, elements float or half.
struct ActShape {
  int64_t n = 0, c = 0, h = 0, w = 0;
  Layout layout = Layout::nchw;
  bool half = false;
  int64_t count() const { return n * c * h * w; }
  int64_t spatial() const { return h * w; }
};

// Sets count elements (float or half) to value.
cudaError_t fill_values(void* data, int64_t count, bool half, float value, cudaStream_t stream);
// Sets count elements to a fixed pseudo-random pattern in [-0.5, 1): inputs for the prepare-time checks that make
// some outputs positive and some negative (a constant input would hide a wrong activation or bias).
cudaError_t fill_pattern(void* data, int64_t count, bool half, cudaStream_t stream);
// result[0] = max |a - b|, result[1] = max |b| over count elements (float or half); result is a device float[2].
cudaError_t max_abs_difference(const void* a, const void* b, int64_t count, bool half, float* result, cudaStream_t stream);
// dst[i] = (half) src[i].
cudaError_t convert_f32_to_f16(const float* src, void* dst, int64_t count, cudaStream_t stream);
// Conv weights (k, c, r, s) float -> (k, r, s, c_pad) half for NHWC filters; channels c..c_pad-1 become 0.
cudaError_t weights_kcrs_to_krsc_f16(const float* src, void* dst, int64_t k, int64_t c, int64_t r, int64_t s, int64_t c_pad,
                                     cudaStream_t stream);
// Input images (n, c, h, w) float -> (n, h, w, c_pad) half; channels c..c_pad-1 become 0.
cudaError_t images_nchw_to_nhwc_f16(const float* src, void* dst, int64_t n, int64_t c, int64_t h, int64_t w, int64_t c_pad,
                                    cudaStream_t stream);
// y = act(y + bias[channel]) in place; bias (c) float, or nullptr for act(y) alone.
cudaError_t bias_activation(void* y, const ActShape& shape, const float* bias, Activation act, cudaStream_t stream);
// y = x * scale[channel] + shift[channel] (inference batch norm folded on the host); x may equal y.
cudaError_t scale_shift(const void* x, void* y, const ActShape& shape, const float* scale, const float* shift, cudaStream_t stream);
// y = a + b, then ReLU when relu; any of them may alias.
cudaError_t add_tensors(const void* a, const void* b, void* y, int64_t count, bool half, bool relu, cudaStream_t stream);
// out (n, c) float = mean over h, w of x.
cudaError_t global_mean(const void* x, const ActShape& shape, float* out, cudaStream_t stream);
// y (n, out) = act(x (n, in) W^T + bias), W (out, in); all float.
cudaError_t linear_forward(const float* x, const float* weight, const float* bias, float* y, int64_t n, int64_t in, int64_t out,
                           Activation act, cudaStream_t stream);
// x[n, c, :, :] *= gate[n, c] in place, then ReLU when relu; gate (n, c) float.
cudaError_t channel_scale(void* x, const ActShape& shape, const float* gate, bool relu, cudaStream_t stream);

// cudaSuccess when this binary has kernels the current device can run; cudaErrorNoKernelImageForDevice (or
// cudaErrorInvalidDeviceFunction) when it was built for other architectures only.
cudaError_t probe_kernels();

}  // namespace repvgg::cuda
