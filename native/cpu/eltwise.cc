// Elementwise ops of the single-op API on oneDNN: ReLU, sigmoid, add (with optional ReLU) and the per-channel
// scaling of squeeze-excitation (a broadcasting binary multiply on NCHW, plain loops on NHWC), and the backward
// passes of ReLU, sigmoid and the channel scaling. (add needs no backward op: its gradient passes dy through to
// both inputs.) ReLU, sigmoid and add see flat arrays, so they serve every layout.
#include <vector>

#include "../core/ops.h"
#include "dnnl_common.h"
#include "primitive_cache.h"
#include "simd.h"

namespace repvgg::cpu {

void eltwise_forward(EltwiseKind kind, int64_t count, const float* x, float* y) {
  const dims shape{count};
  const auto alg = kind == EltwiseKind::relu ? dnnl::algorithm::eltwise_relu : dnnl::algorithm::eltwise_logistic;
  const std::string key = std::string(kind == EltwiseKind::relu ? "relu:" : "sigmoid:") + std::to_string(count);
  wrap_dnnl("eltwise", [&] {
    auto prim = cached_primitive(key, [&] {
      dnnl::eltwise_forward::desc desc(dnnl::prop_kind::forward_inference, alg, plain_f32(shape), 0.f, 0.f);
      return dnnl::primitive(dnnl::eltwise_forward::primitive_desc(desc, engine()));
    });
    prim.execute(stream(), {{DNNL_ARG_SRC, dnnl::memory(plain_f32(shape), engine(), const_cast<float*>(x))},
                            {DNNL_ARG_DST, dnnl::memory(plain_f32(shape), engine(), y)}});
    stream().wait();
  });
}

// Builds (or fetches) a binary primitive over plain descriptors with an optional ReLU post-op.
static dnnl::primitive binary_primitive(const std::string& key, dnnl::algorithm alg, const dims& a_dims,
                                        const dims& b_dims, bool relu) {
  return cached_primitive(key, [&] {
    dnnl::binary::desc desc(alg, plain_f32(a_dims), plain_f32(b_dims), plain_f32(a_dims));
    dnnl::primitive_attr attr;
    if (relu) {
      dnnl::post_ops ops;
      ops.append_eltwise(1.f, dnnl::algorithm::eltwise_relu, 0.f, 0.f);
      attr.set_post_ops(ops);
    }
    return dnnl::primitive(dnnl::binary::primitive_desc(desc, attr, engine()));
  });
}

void add_forward(int64_t count, const float* a, const float* b, float* y, bool relu) {
  const dims shape{count};
  wrap_dnnl("add", [&] {
    auto prim = binary_primitive("add:" + std::to_string(count) + "," + std::to_string(relu), dnnl::algorithm::binary_add,
                                 shape, shape, relu);
    prim.execute(stream(), {{DNNL_ARG_SRC_0, dnnl::memory(plain_f32(shape), engine(), const_cast<float*>(a))},
                            {DNNL_ARG_SRC_1, dnnl::memory(plain_f32(shape), engine(), const_cast<float*>(b))},
                            {DNNL_ARG_DST, dnnl::memory(plain_f32(shape), engine(), y)}});
    stream().wait();
  });
}

namespace {

// y = x * scale per column of a (rows x channels) block: one image of an NHWC tensor.
RV_SIMD_CLONES void scale_rows(const float* x, const float* scale, float* y, int64_t rows, int64_t channels) {
  for (int64_t r = 0; r < rows; r++) {
#pragma omp simd
    for (int64_t c = 0; c < channels; c++) y[r * channels + c] = x[r * channels + c] * scale[c];
  }
}

// dx = dy * scale per column, dscale[c] = sum over rows of dy * x (float64), for one image of an NHWC tensor.
RV_SIMD_CLONES void scale_rows_backward(const float* x, const float* scale, const float* dy, float* dx, float* dscale,
                                        double* acc, int64_t rows, int64_t channels) {
  for (int64_t c = 0; c < channels; c++) acc[c] = 0;
  for (int64_t r = 0; r < rows; r++) {
#pragma omp simd
    for (int64_t c = 0; c < channels; c++) {
      const int64_t i = r * channels + c;
      dx[i] = dy[i] * scale[c];
      acc[c] += static_cast<double>(dy[i]) * x[i];
    }
  }
  for (int64_t c = 0; c < channels; c++) dscale[c] = static_cast<float>(acc[c]);
}

}  // namespace

void channel_scale_forward(int64_t batch, int64_t channels, int64_t spatial, const float* x, const float* scale, float* y,
                           bool channels_last) {
  if (channels_last) {
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t n = 0; n < batch; n++) {
      const int64_t offset = n * spatial * channels;
      scale_rows(x + offset, scale + n * channels, y + offset, spatial, channels);
    }
    return;
  }
  const dims x_dims{batch, channels, spatial, 1};
  const dims s_dims{batch, channels, 1, 1};
  wrap_dnnl("channel_scale", [&] {
    auto prim = binary_primitive("cscale:" + std::to_string(batch) + "," + std::to_string(channels) + "," + std::to_string(spatial),
                                 dnnl::algorithm::binary_mul, x_dims, s_dims, false);
    prim.execute(stream(), {{DNNL_ARG_SRC_0, dnnl::memory(plain_f32(x_dims), engine(), const_cast<float*>(x))},
                            {DNNL_ARG_SRC_1, dnnl::memory(plain_f32(s_dims), engine(), const_cast<float*>(scale))},
                            {DNNL_ARG_DST, dnnl::memory(plain_f32(x_dims), engine(), y)}});
    stream().wait();
  });
}

// Both gradients are computed from the forward OUTPUT (oneDNN's *_use_dst_for_bwd algorithms), so the tape keeps
// y only: ReLU's dx = dy where y > 0 (PyTorch's threshold_backward on the result, 0 at y == 0), sigmoid's
// dx = dy * y * (1 - y).
void eltwise_backward(EltwiseKind kind, int64_t count, const float* y, const float* dy, float* dx) {
  const dims shape{count};
  const auto alg = kind == EltwiseKind::relu ? dnnl::algorithm::eltwise_relu_use_dst_for_bwd
                                             : dnnl::algorithm::eltwise_logistic_use_dst_for_bwd;
  const std::string key = std::string(kind == EltwiseKind::relu ? "relu_bwd:" : "sigmoid_bwd:") + std::to_string(count);
  wrap_dnnl("eltwise_backward", [&] {
    auto prim = cached_primitive(key, [&] {
      dnnl::eltwise_forward::desc hint_desc(dnnl::prop_kind::forward_training, alg, plain_f32(shape), 0.f, 0.f);
      dnnl::eltwise_forward::primitive_desc hint(hint_desc, engine());
      dnnl::eltwise_backward::desc desc(alg, plain_f32(shape), plain_f32(shape), 0.f, 0.f);
      return dnnl::primitive(dnnl::eltwise_backward::primitive_desc(desc, engine(), hint));
    });
    prim.execute(stream(), {{DNNL_ARG_DST, dnnl::memory(plain_f32(shape), engine(), const_cast<float*>(y))},
                            {DNNL_ARG_DIFF_DST, dnnl::memory(plain_f32(shape), engine(), const_cast<float*>(dy))},
                            {DNNL_ARG_DIFF_SRC, dnnl::memory(plain_f32(shape), engine(), dx)}});
    stream().wait();
  });
}

// Plain loops: dx is one multiply per element and dscale a dot product per (n, c) plane, both memory-bound. oneDNN
// has no fused "multiply and reduce"; a binary primitive plus a reduction primitive would read dy twice and need a
// temporary the size of x. The plane sums accumulate in double so that large planes lose no precision.
namespace {
RV_SIMD_CLONES void channel_scale_backward_plane(const float* x, const float* dy, float* dx, int64_t spatial, float s,
                                                 float* dscale) {
  double sum = 0;
#pragma omp simd reduction(+ : sum)
  for (int64_t i = 0; i < spatial; i++) {
    dx[i] = dy[i] * s;
    sum += static_cast<double>(dy[i]) * x[i];
  }
  *dscale = static_cast<float>(sum);
}
}  // namespace

void channel_scale_backward(int64_t batch, int64_t channels, int64_t spatial, const float* x, const float* scale,
                            const float* dy, float* dx, float* dscale, bool channels_last) {
  if (channels_last) {
#pragma omp parallel
    {
      std::vector<double> acc(channels);
#pragma omp for schedule(dynamic, 1)
      for (int64_t n = 0; n < batch; n++) {
        const int64_t offset = n * spatial * channels;
        scale_rows_backward(x + offset, scale + n * channels, dy + offset, dx + offset, dscale + n * channels, acc.data(), spatial,
                            channels);
      }
    }
    return;
  }
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t plane = 0; plane < batch * channels; plane++) {
    const int64_t offset = plane * spatial;
    channel_scale_backward_plane(x + offset, dy + offset, dx + offset, spatial, scale[plane], dscale + plane);
  }
}

}  // namespace repvgg::cpu
