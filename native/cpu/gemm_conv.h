// Convolutions as matrix products, for the single-op conv2d and conv2dBackward (see gemm_conv.cc for the methods and
// why): the plane GEMM (Conv2dParams::plane_gemm), one product per pass where every output sees the whole input
// plane, and im2col + GEMM (Conv2dParams::im2col_gemm), for stride-2 convs onto small planes.
// Not for: groups, NCHW activations, the deployed network (program.cc).
#pragma once

#include "../core/ops.h"

namespace repvgg::cpu {

// y = conv(x, w) (+ bias, ReLU) for p.plane_gemm. x: (N, H, W, C), w: (O, C, K, K), y: (N, OH, OW, O).
void plane_gemm_forward(const Conv2dParams& p, const float* x, const float* w, const float* bias, float* y);
// dx (when p.need_input_grad) and dw of plane_gemm_forward without bias. dy, dx: NHWC.
void plane_gemm_backward(const Conv2dBackwardParams& p, const float* x, const float* w, const float* dy, float* dx, float* dw);

// The same passes for p.im2col_gemm (any kernel, stride and pad; groups 1; NHWC x, y, dy and dx).
void im2col_gemm_forward(const Conv2dParams& p, const float* x, const float* w, const float* bias, float* y);
void im2col_gemm_backward(const Conv2dBackwardParams& p, const float* x, const float* w, const float* dy, float* dx, float* dw);

}  // namespace repvgg::cpu
