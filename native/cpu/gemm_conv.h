// Convolutions as matrix products, for the single-op conv2d and conv2dBackward (see gemm_conv.cc for the methods and
// why): the plane GEMM (Conv2dParams::plane_gemm), one product per pass where every output sees the whole input
// plane, and im2col + GEMM (Conv2dParams::im2col_gemm), for the training convs below AVX-512; and im2col + GEMM for
// the deployed network's wide stride-2 convs (Im2colConv, program.cc).
// Not for: groups, NCHW activations.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "../core/ops.h"

namespace repvgg::cpu {

// y = conv(x, w) (+ bias, ReLU) for p.plane_gemm. x: (N, H, W, C), w: (O, C, K, K), y: (N, OH, OW, O).
void plane_gemm_forward(const Conv2dParams& p, const float* x, const float* w, const float* bias, float* y);
// dx (when p.need_input_grad) and dw of plane_gemm_forward without bias. dy, dx: NHWC.
void plane_gemm_backward(const Conv2dBackwardParams& p, const float* x, const float* w, const float* dy, float* dx, float* dw);

// The same passes for p.im2col_gemm (any kernel, stride and pad; groups 1; NHWC x, y, dy and dx).
void im2col_gemm_forward(const Conv2dParams& p, const float* x, const float* w, const float* bias, float* y);
void im2col_gemm_backward(const Conv2dBackwardParams& p, const float* x, const float* w, const float* dy, float* dx, float* dw);

// im2col + GEMM for one conv of a network plan (program.cc): NHWC float32 in and out, groups 1, the weights already
// in HWIO order (the plan's shared copy: a (K*K*C x O) matrix), bias and ReLU after the product. The column matrix
// lives in the caller's scratch (col_bytes()), as plans run on several threads at once; the sgemm and the gathers run
// on the calling thread's OpenMP team.
class Im2colConv {
 public:
  struct Shape {
    int64_t batch, in_channels, height, width, out_channels, kernel, stride, pad;
  };
  // hwio must outlive the conv; bias: out_channels values or empty.
  Im2colConv(const Shape& shape, const float* hwio, const std::vector<float>& bias, bool relu);
  // src: (batch, height, width, in); dst: (batch, out_h, out_w, out); col: at least col_bytes().
  void run(const float* src, float* dst, float* col) const;
  size_t col_bytes() const;

 private:
  Shape shape_;
  const float* hwio_;
  std::vector<float> bias_;
  bool relu_;
  int64_t chunk_images_ = 1;  // images per column matrix (im2col_chunk_images)
};

}  // namespace repvgg::cpu
