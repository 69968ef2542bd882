// Inference-mode batch normalization of the single-op API on oneDNN (running statistics, scale and shift),
// with an optional fused ReLU.
#include "../core/ops.h"
#include "dnnl_common.h"
#include "primitive_cache.h"

namespace repvgg::cpu {

void batchnorm_forward_inference(const BatchNormParams& p, const float* x, const float* mean, const float* var,
                                 const float* gamma, const float* beta, float* y) {
  const dims shape{p.batch, p.channels, p.height, p.width};
  const dims channel{p.channels};
  const std::string key = "bn:" + std::to_string(p.batch) + "," + std::to_string(p.channels) + "," + std::to_string(p.height) +
                          "," + std::to_string(p.width) + "," + std::to_string(p.eps) + "," + std::to_string(p.relu);
  wrap_dnnl("batchnorm", [&] {
    auto prim = cached_primitive(key, [&] {
      auto flags = dnnl::normalization_flags::use_global_stats | dnnl::normalization_flags::use_scale |
                   dnnl::normalization_flags::use_shift;
      if (p.relu) flags = flags | dnnl::normalization_flags::fuse_norm_relu;
      dnnl::batch_normalization_forward::desc desc(dnnl::prop_kind::forward_inference, plain_f32(shape), p.eps, flags);
      return dnnl::primitive(dnnl::batch_normalization_forward::primitive_desc(desc, engine()));
    });
    prim.execute(stream(), {{DNNL_ARG_SRC, dnnl::memory(plain_f32(shape), engine(), const_cast<float*>(x))},
                            {DNNL_ARG_MEAN, dnnl::memory(plain_f32(channel), engine(), const_cast<float*>(mean))},
                            {DNNL_ARG_VARIANCE, dnnl::memory(plain_f32(channel), engine(), const_cast<float*>(var))},
                            {DNNL_ARG_SCALE, dnnl::memory(plain_f32(channel), engine(), const_cast<float*>(gamma))},
                            {DNNL_ARG_SHIFT, dnnl::memory(plain_f32(channel), engine(), const_cast<float*>(beta))},
                            {DNNL_ARG_DST, dnnl::memory(plain_f32(shape), engine(), y)}});
    stream().wait();
  });
}

}  // namespace repvgg::cpu
