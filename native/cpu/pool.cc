// Global average pooling of the single-op API on oneDNN (a mean reduction over H and W).
#include "../core/ops.h"
#include "dnnl_common.h"
#include "primitive_cache.h"

namespace repvgg::cpu {

void global_avg_pool_forward(int64_t batch, int64_t channels, int64_t height, int64_t width, const float* x, float* y) {
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

}  // namespace repvgg::cpu
