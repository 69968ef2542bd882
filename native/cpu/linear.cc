// Fully connected layer of the single-op API on oneDNN (inner product), optional fused ReLU.
#include "../core/ops.h"
#include "dnnl_common.h"
#include "primitive_cache.h"

namespace repvgg::cpu {

void linear_forward(const LinearParams& p, const float* x, const float* w, const float* bias, float* y) {
  const dims x_dims{p.batch, p.in_features};
  const dims w_dims{p.out_features, p.in_features};
  const dims b_dims{p.out_features};
  const dims y_dims{p.batch, p.out_features};
  const std::string key = "linear:" + std::to_string(p.batch) + "," + std::to_string(p.in_features) + "," +
                          std::to_string(p.out_features) + "," + std::to_string(p.relu);
  wrap_dnnl("linear", [&] {
    auto prim = cached_primitive(key, [&] {
      dnnl::inner_product_forward::desc desc(dnnl::prop_kind::forward_inference, plain_f32(x_dims), plain_f32(w_dims),
                                             plain_f32(b_dims), plain_f32(y_dims));
      dnnl::primitive_attr attr;
      if (p.relu) {
        dnnl::post_ops ops;
        ops.append_eltwise(1.f, dnnl::algorithm::eltwise_relu, 0.f, 0.f);
        attr.set_post_ops(ops);
      }
      return dnnl::primitive(dnnl::inner_product_forward::primitive_desc(desc, attr, engine()));
    });
    prim.execute(stream(), {{DNNL_ARG_SRC, dnnl::memory(plain_f32(x_dims), engine(), const_cast<float*>(x))},
                            {DNNL_ARG_WEIGHTS, dnnl::memory(plain_f32(w_dims), engine(), const_cast<float*>(w))},
                            {DNNL_ARG_BIAS, dnnl::memory(plain_f32(b_dims), engine(), const_cast<float*>(bias))},
                            {DNNL_ARG_DST, dnnl::memory(plain_f32(y_dims), engine(), y)}});
    stream().wait();
  });
}

}  // namespace repvgg::cpu
