// Fully connected layer of the single-op API on oneDNN (inner product), optional fused ReLU, and its backward
// pass (inner_product_backward_data and inner_product_backward_weights, the latter also giving the bias gradient).
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

void linear_backward(const LinearBackwardParams& p, const float* x, const float* w, const float* dy, float* dx, float* dw,
                     float* db) {
  const dims x_dims{p.batch, p.in_features};    // x, dx
  const dims w_dims{p.out_features, p.in_features};  // w, dw
  const dims b_dims{p.out_features};            // db
  const dims y_dims{p.batch, p.out_features};   // dy
  const std::string shape_key =
      std::to_string(p.batch) + "," + std::to_string(p.in_features) + "," + std::to_string(p.out_features);
  auto forward_hint = [&] {
    dnnl::inner_product_forward::desc desc(dnnl::prop_kind::forward_training, plain_f32(x_dims), plain_f32(w_dims),
                                           plain_f32(b_dims), plain_f32(y_dims));
    return dnnl::inner_product_forward::primitive_desc(desc, engine());
  };
  wrap_dnnl("linear_backward", [&] {
    dnnl::memory dy_mem(plain_f32(y_dims), engine(), const_cast<float*>(dy));
    if (p.need_input_grad) {
      auto data_prim = cached_primitive("linear_bwd_data:" + shape_key, [&] {
        dnnl::inner_product_backward_data::desc desc(plain_f32(x_dims), plain_f32(w_dims), plain_f32(y_dims));
        return dnnl::primitive(dnnl::inner_product_backward_data::primitive_desc(desc, engine(), forward_hint()));
      });
      data_prim.execute(stream(), {{DNNL_ARG_DIFF_DST, dy_mem},
                                   {DNNL_ARG_WEIGHTS, dnnl::memory(plain_f32(w_dims), engine(), const_cast<float*>(w))},
                                   {DNNL_ARG_DIFF_SRC, dnnl::memory(plain_f32(x_dims), engine(), dx)}});
    }
    auto weights_prim = cached_primitive("linear_bwd_weights:" + shape_key, [&] {
      dnnl::inner_product_backward_weights::desc desc(plain_f32(x_dims), plain_f32(w_dims), plain_f32(b_dims), plain_f32(y_dims));
      return dnnl::primitive(dnnl::inner_product_backward_weights::primitive_desc(desc, engine(), forward_hint()));
    });
    weights_prim.execute(stream(), {{DNNL_ARG_SRC, dnnl::memory(plain_f32(x_dims), engine(), const_cast<float*>(x))},
                                    {DNNL_ARG_DIFF_DST, dy_mem},
                                    {DNNL_ARG_DIFF_WEIGHTS, dnnl::memory(plain_f32(w_dims), engine(), dw)},
                                    {DNNL_ARG_DIFF_BIAS, dnnl::memory(plain_f32(b_dims), engine(), db)}});
    stream().wait();
  });
}

}  // namespace repvgg::cpu
