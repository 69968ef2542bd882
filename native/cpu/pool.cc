// Global average pooling of the single-op API on oneDNN (a mean reduction over H and W) and its backward pass.
#include <algorithm>

#include "../core/ops.h"
#include "dnnl_common.h"
#include "primitive_cache.h"

namespace repvgg::cpu {

void global_avg_pool_forward(int64_t batch, int64_t channels, int64_t height, int64_t width, const float* x, float* y) {
  if (height * width == 1) return void(std::copy_n(x, batch * channels, y));  // oneDNN refuses a reduction of nothing
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
void global_avg_pool_backward(int64_t batch, int64_t channels, int64_t height, int64_t width, const float* dy, float* dx) {
  const int64_t spatial = height * width;
#pragma omp parallel for schedule(static)
  for (int64_t plane = 0; plane < batch * channels; plane++) {
    std::fill_n(dx + plane * spatial, spatial, dy[plane] / static_cast<float>(spatial));
  }
}

}  // namespace repvgg::cpu
