// Convolutions over tiny planes as one matrix product: the single-op conv2d and conv2dBackward with
// Conv2dParams::plane_gemm (see plane_gemm.cc for the method and why).
// Not for: planes where outputs see only part of the input (conv_links_every_position is false there), groups,
// NCHW activations, the deployed network (program.cc).
#pragma once

#include "../core/ops.h"

namespace repvgg::cpu {

// y = conv(x, w) (+ bias, ReLU) for p.plane_gemm. x: (N, H, W, C), w: (O, C, K, K), y: (N, OH, OW, O).
void plane_gemm_forward(const Conv2dParams& p, const float* x, const float* w, const float* bias, float* y);
// dx (when p.need_input_grad) and dw of plane_gemm_forward without bias. dy, dx: NHWC.
void plane_gemm_backward(const Conv2dBackwardParams& p, const float* x, const float* w, const float* dy, float* dx, float* dw);

}  // namespace repvgg::cpu
