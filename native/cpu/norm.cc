// Batch normalization of the single-op API on oneDNN: inference mode (running statistics, scale and shift, an
// optional fused ReLU), training mode (batch statistics) and the training-mode backward pass.
#include <cstring>

#include "../core/ops.h"
#include "dnnl_common.h"
#include "primitive_cache.h"

namespace repvgg::cpu {

namespace {

// eps is baked into the primitive, so the cache key needs all of its bits: std::to_string(1e-7f) is "0.000000".
std::string exact_key(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof bits);
  return std::to_string(bits);
}

std::string shape_key(const BatchNormParams& p) {
  return std::to_string(p.batch) + "," + std::to_string(p.channels) + "," + std::to_string(p.height) + "," +
         std::to_string(p.width) + "," + exact_key(p.eps);
}

const auto scale_shift = dnnl::normalization_flags::use_scale | dnnl::normalization_flags::use_shift;

// Training-mode forward descriptor: computes the batch mean and biased variance and writes them out.
dnnl::batch_normalization_forward::primitive_desc training_pd(const BatchNormParams& p) {
  const dims shape{p.batch, p.channels, p.height, p.width};
  dnnl::batch_normalization_forward::desc desc(dnnl::prop_kind::forward_training, plain_f32(shape), p.eps, scale_shift);
  return dnnl::batch_normalization_forward::primitive_desc(desc, engine());
}

}  // namespace

void batchnorm_forward_inference(const BatchNormParams& p, const float* x, const float* mean, const float* var,
                                 const float* gamma, const float* beta, float* y) {
  const dims shape{p.batch, p.channels, p.height, p.width};
  const dims channel{p.channels};
  const std::string key = "bn:" + shape_key(p) + "," + std::to_string(p.relu);
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

// No fused ReLU here: with fuse_norm_relu oneDNN would need a workspace kept until backward, and the autograd
// tape runs ReLU as its own op anyway.
void batchnorm_forward_training(const BatchNormParams& p, const float* x, const float* gamma, const float* beta, float* y,
                                float* mean, float* var) {
  RV_CHECK(!p.relu, "ERR_ARG_VALUE", "batchnorm training: fused ReLU is not supported");
  const dims shape{p.batch, p.channels, p.height, p.width};
  const dims channel{p.channels};
  wrap_dnnl("batchnorm_training", [&] {
    auto prim = cached_primitive("bn_train:" + shape_key(p), [&] { return dnnl::primitive(training_pd(p)); });
    prim.execute(stream(), {{DNNL_ARG_SRC, dnnl::memory(plain_f32(shape), engine(), const_cast<float*>(x))},
                            {DNNL_ARG_SCALE, dnnl::memory(plain_f32(channel), engine(), const_cast<float*>(gamma))},
                            {DNNL_ARG_SHIFT, dnnl::memory(plain_f32(channel), engine(), const_cast<float*>(beta))},
                            {DNNL_ARG_DST, dnnl::memory(plain_f32(shape), engine(), y)},
                            {DNNL_ARG_MEAN, dnnl::memory(plain_f32(channel), engine(), mean)},
                            {DNNL_ARG_VARIANCE, dnnl::memory(plain_f32(channel), engine(), var)}});
    stream().wait();
  });
}

// prop_kind::backward (not backward_data) so that oneDNN also produces dgamma and dbeta; without use_global_stats
// the gradient flows through the batch mean and variance, as in PyTorch's training-mode BatchNorm2d.
void batchnorm_backward(const BatchNormParams& p, const float* x, const float* dy, const float* gamma, const float* mean,
                        const float* var, float* dx, float* dgamma, float* dbeta) {
  const dims shape{p.batch, p.channels, p.height, p.width};
  const dims channel{p.channels};
  wrap_dnnl("batchnorm_backward", [&] {
    auto prim = cached_primitive("bn_bwd:" + shape_key(p), [&] {
      dnnl::batch_normalization_backward::desc desc(dnnl::prop_kind::backward, plain_f32(shape), plain_f32(shape), p.eps,
                                                    scale_shift);
      return dnnl::primitive(dnnl::batch_normalization_backward::primitive_desc(desc, engine(), training_pd(p)));
    });
    prim.execute(stream(), {{DNNL_ARG_SRC, dnnl::memory(plain_f32(shape), engine(), const_cast<float*>(x))},
                            {DNNL_ARG_DIFF_DST, dnnl::memory(plain_f32(shape), engine(), const_cast<float*>(dy))},
                            {DNNL_ARG_SCALE, dnnl::memory(plain_f32(channel), engine(), const_cast<float*>(gamma))},
                            // oneDNN 2.6 quirk: with use_shift the backward primitive lists SHIFT as a required input
                            // and refuses to execute without it ("could not execute a primitive"), though no
                            // gradient depends on beta. Any (C) buffer satisfies it; gamma is at hand and only read.
                            {DNNL_ARG_SHIFT, dnnl::memory(plain_f32(channel), engine(), const_cast<float*>(gamma))},
                            {DNNL_ARG_MEAN, dnnl::memory(plain_f32(channel), engine(), const_cast<float*>(mean))},
                            {DNNL_ARG_VARIANCE, dnnl::memory(plain_f32(channel), engine(), const_cast<float*>(var))},
                            {DNNL_ARG_DIFF_SRC, dnnl::memory(plain_f32(shape), engine(), dx)},
                            {DNNL_ARG_DIFF_SCALE, dnnl::memory(plain_f32(channel), engine(), dgamma)},
                            {DNNL_ARG_DIFF_SHIFT, dnnl::memory(plain_f32(channel), engine(), dbeta)}});
    stream().wait();
  });
}

}  // namespace repvgg::cpu
