// Global average pooling of the single-op API on oneDNN (a mean reduction over H and W) and its backward pass,
// for NCHW and NHWC (channels_last) inputs.
#include <algorithm>
#include <vector>

#include "../core/ops.h"
#include "dnnl_common.h"
#include "primitive_cache.h"
#include "simd.h"

namespace repvgg::cpu {

namespace {

// y[c] = mean over the rows of x (rows x channels), summed in float64: one image of an NHWC tensor.
RV_SIMD_CLONES void mean_of_rows(const float* x, int64_t rows, int64_t channels, double* acc, float* y) {
  for (int64_t c = 0; c < channels; c++) acc[c] = 0;
  for (int64_t r = 0; r < rows; r++) {
    const float* row = x + r * channels;
#pragma omp simd
    for (int64_t c = 0; c < channels; c++) acc[c] += static_cast<double>(row[c]);
  }
  for (int64_t c = 0; c < channels; c++) y[c] = static_cast<float>(acc[c] / static_cast<double>(rows));
}

}  // namespace

void global_avg_pool_forward(int64_t batch, int64_t channels, int64_t height, int64_t width, const float* x, float* y,
                             bool channels_last) {
  if (height * width == 1) return void(std::copy_n(x, batch * channels, y));  // oneDNN refuses a reduction of nothing
  if (channels_last) {
#pragma omp parallel
    {
      std::vector<double> acc(channels);
#pragma omp for schedule(dynamic, 1)
      for (int64_t n = 0; n < batch; n++) mean_of_rows(x + n * height * width * channels, height * width, channels, acc.data(), y + n * channels);
    }
    return;
  }
  const dims src_dims{batch, channels, height, width};
  const dims dst_dims{batch, channels, 1, 1};
  const std::string key = "gap:" + std::to_string(batch) + "," + std::to_string(channels) + "," + std::to_string(height) +
                          "," + std::to_string(width);
  wrap_dnnl("global_avg_pool", [&] {
    auto prim = cached_primitive(key, [&] {
      dnnl::reduction::desc desc(dnnl::algorithm::reduction_mean, plain_f32(src_dims), plain_f32(dst_dims), 0.f, 0.f);
      return dnnl::primitive(dnnl::reduction::primitive_desc(desc, engine()));
    });
    prim.execute(stream(), {{DNNL_ARG_SRC, dnnl::memory(plain_f32(src_dims), engine(), const_cast<float*>(x))},
                            {DNNL_ARG_DST, dnnl::memory(plain_f32(dst_dims), engine(), y)}});
    stream().wait();
  });
}

// A plain loop, not oneDNN: the gradient of a mean is dy / (H * W) copied to every position, a pure memory write.
// oneDNN's reduction has no backward, and pooling_backward (avg, kernel = H x W) would need a forward hint and a
// pooling primitive per shape to do the same fill.
void global_avg_pool_backward(int64_t batch, int64_t channels, int64_t height, int64_t width, const float* dy, float* dx,
                              bool channels_last) {
  const int64_t spatial = height * width;
  if (channels_last) {
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t n = 0; n < batch; n++) {
      std::vector<float> row(channels);
      for (int64_t c = 0; c < channels; c++) row[c] = dy[n * channels + c] / static_cast<float>(spatial);
      for (int64_t i = 0; i < spatial; i++) std::copy_n(row.data(), channels, dx + (n * spatial + i) * channels);
    }
    return;
  }
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t plane = 0; plane < batch * channels; plane++) {
    std::fill_n(dx + plane * spatial, spatial, dy[plane] / static_cast<float>(spatial));
  }
}

}  // namespace repvgg::cpu
