// Convolution of the single-op API on oneDNN: any kernel size, stride, padding and groups, optional bias and
// fused ReLU (a oneDNN post-op). Plain NCHW buffers in and out; the network path (program.cc) uses blocked layouts.
#include "../core/ops.h"
#include "dnnl_common.h"
#include "primitive_cache.h"

namespace repvgg::cpu {

void conv2d_forward(const Conv2dParams& p, const float* x, const float* w, const float* bias, float* y) {
  RV_CHECK(p.groups >= 1 && p.in_channels % p.groups == 0 && p.out_channels % p.groups == 0, "ERR_SHAPE",
           "groups " + std::to_string(p.groups) + " must divide channels " + std::to_string(p.in_channels) + " -> " +
               std::to_string(p.out_channels));
  const int64_t oh = conv_out_size(p.height, p.kernel, p.stride, p.pad);
  const int64_t ow = conv_out_size(p.width, p.kernel, p.stride, p.pad);
  RV_CHECK(oh >= 1 && ow >= 1, "ERR_SHAPE", "input too small for the kernel");
  const dims src_dims{p.batch, p.in_channels, p.height, p.width};
  const dims dst_dims{p.batch, p.out_channels, oh, ow};
  const dims w_dims = p.groups == 1
                          ? dims{p.out_channels, p.in_channels, p.kernel, p.kernel}
                          : dims{p.groups, p.out_channels / p.groups, p.in_channels / p.groups, p.kernel, p.kernel};
  const std::string key = "conv:" + std::to_string(p.batch) + "," + std::to_string(p.in_channels) + "," +
                          std::to_string(p.height) + "," + std::to_string(p.width) + "," + std::to_string(p.out_channels) +
                          "," + std::to_string(p.kernel) + "," + std::to_string(p.stride) + "," + std::to_string(p.pad) + "," +
                          std::to_string(p.groups) + "," + std::to_string(p.has_bias) + "," + std::to_string(p.relu);
  wrap_dnnl("conv2d", [&] {
    auto prim = cached_primitive(key, [&] {
      dnnl::memory::desc bias_md = p.has_bias ? plain_f32({p.out_channels}) : dnnl::memory::desc();
      dnnl::convolution_forward::desc desc(dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct,
                                           plain_f32(src_dims), plain_f32(w_dims), bias_md, plain_f32(dst_dims),
                                           {p.stride, p.stride}, {p.pad, p.pad}, {p.pad, p.pad});
      dnnl::primitive_attr attr;
      if (p.relu) {
        dnnl::post_ops ops;
        ops.append_eltwise(1.f, dnnl::algorithm::eltwise_relu, 0.f, 0.f);
        attr.set_post_ops(ops);
      }
      return dnnl::primitive(dnnl::convolution_forward::primitive_desc(desc, attr, engine()));
    });
    std::unordered_map<int, dnnl::memory> args{
        {DNNL_ARG_SRC, dnnl::memory(plain_f32(src_dims), engine(), const_cast<float*>(x))},
        {DNNL_ARG_WEIGHTS, dnnl::memory(plain_f32(w_dims), engine(), const_cast<float*>(w))},
        {DNNL_ARG_DST, dnnl::memory(plain_f32(dst_dims), engine(), y)}};
    if (p.has_bias) args.emplace(DNNL_ARG_BIAS, dnnl::memory(plain_f32({p.out_channels}), engine(), const_cast<float*>(bias)));
    prim.execute(stream(), args);
    stream().wait();
  });
}

}  // namespace repvgg::cpu
