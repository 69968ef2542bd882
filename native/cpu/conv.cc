// Convolution of the single-op API on oneDNN: any kernel size, stride, padding and groups, optional bias and
// fused ReLU (a oneDNN post-op), and its backward pass (input and weight gradients) for training; forward also with
// our Winograd kernel on request (winograd.h), as are the input and weight gradients; both passes as matrix
// products on request (gemm_conv.h: one GEMM over a tiny plane, or im2col + GEMM).
// Activations are NCHW or NHWC buffers (ops.h): NHWC ones are convolved as they are, NCHW ones reordered to and
// from the blocked layouts the primitives choose, through scratch buffers. Weights are always plain OIHW and
// reordered per call (they change every training step). The network path (program.cc) keeps blocked layouts.
#include "../core/ops.h"
#include "dnnl_common.h"
#include "gemm_conv.h"
#include "primitive_cache.h"
#include "winograd.h"

namespace repvgg::cpu {

namespace {

std::string conv_key(int64_t batch, int64_t in_channels, int64_t height, int64_t width, int64_t out_channels, int64_t kernel,
                     int64_t stride, int64_t pad, int64_t groups) {
  return std::to_string(batch) + "," + std::to_string(in_channels) + "," + std::to_string(height) + "," + std::to_string(width) +
         "," + std::to_string(out_channels) + "," + std::to_string(kernel) + "," + std::to_string(stride) + "," +
         std::to_string(pad) + "," + std::to_string(groups);
}

dims weight_dims(int64_t out_channels, int64_t in_channels, int64_t kernel, int64_t groups) {
  return groups == 1 ? dims{out_channels, in_channels, kernel, kernel}
                     : dims{groups, out_channels / groups, in_channels / groups, kernel, kernel};
}

// A caller's activation buffer: NCHW, or NHWC when channels_last. With one channel both orders are the same
// memory, described as NHWC so that it matches NHWC primitives without a copy.
dnnl::memory::desc activation_md(const dims& shape, bool channels_last) {
  return channels_last || shape[1] == 1 ? dnnl::memory::desc(shape, dt::f32, tag::acdb) : plain_f32(shape);
}

// True for oneDNN's reference (naive loop) implementations: e.g. the weight gradient of a 1-channel NCHW input
// against an NHWC output gradient has no JIT kernel and took 80 ms instead of 0.3 ms.
bool is_reference(const dnnl::primitive_desc_base& pd) { return std::string(pd.impl_info_str()).rfind("ref", 0) == 0; }

// make(src_md, dst_md) for the activation layouts a convolution runs in. When either side is NHWC, both are asked
// NHWC (oneDNN's NHWC kernels are within a few percent of the blocked ones, and the NCHW side, typically the
// network input with 1 or 3 channels, is cheap to reorder); otherwise, or when NHWC only finds a reference kernel,
// both are format_tag::any (NCHW itself only has the slow im2col+GEMM kernels) and the caller's buffers are
// reordered to and from the blocked layouts the primitive picks.
template <typename Make>
auto for_layouts(const Make& make, const dims& src, bool src_channels_last, const dims& dst, bool dst_channels_last) {
  const dnnl::memory::desc src_any(src, dt::f32, tag::any), dst_any(dst, dt::f32, tag::any);
  if (src_channels_last || dst_channels_last) {
    try {
      auto pd = make(activation_md(src, true), activation_md(dst, true));
      if (!is_reference(pd)) return pd;
    } catch (const dnnl::error&) {
      // no NHWC implementation at all: use the blocked layouts
    }
  }
  return make(src_any, dst_any);
}

// The memory layout that primitive `prim` chose for one argument (asked with format_tag::any).
dnnl::memory::desc chosen_md(const dnnl::primitive& prim, dnnl::query what) {
  const dnnl_memory_desc_t* md = dnnl_primitive_desc_query_md(prim.get_primitive_desc(), dnnl::convert_to_c(what), 0);
  return dnnl::memory::desc(*md);
}

// `plain` (a caller's buffer) in layout `want`: the buffer itself when the layouts agree, else scratch `slot` filled
// by a reorder (cached under key, which must determine both layouts).
dnnl::memory in_layout(const dnnl::memory& plain, const dnnl::memory::desc& want, Scratch slot, const std::string& key) {
  if (plain.get_desc() == want) return plain;
  dnnl::memory tmp = scratch_memory(slot, want, engine());
  auto reorder = cached_primitive(key, [&] {
    return dnnl::primitive(dnnl::reorder(dnnl::reorder::primitive_desc(engine(), plain.get_desc(), engine(), want)));
  });
  reorder.execute(stream(), {{DNNL_ARG_FROM, plain}, {DNNL_ARG_TO, tmp}});
  return tmp;
}

// Where a primitive writes a result destined for the caller's plain buffer: that buffer when the layouts agree,
// else scratch `slot` (copied back by to_plain).
dnnl::memory out_layout(const dnnl::memory& plain, const dnnl::memory::desc& chosen, Scratch slot) {
  return chosen == plain.get_desc() ? plain : scratch_memory(slot, chosen, engine());
}

// Copies `result` (in a primitive's layout) into the caller's plain buffer, unless it already is that buffer.
void to_plain(const dnnl::memory& result, const dnnl::memory& plain, const std::string& key) {
  if (result.get_data_handle() == plain.get_data_handle()) return;
  auto reorder = cached_primitive(key, [&] {
    return dnnl::primitive(dnnl::reorder(dnnl::reorder::primitive_desc(engine(), result.get_desc(), engine(), plain.get_desc())));
  });
  reorder.execute(stream(), {{DNNL_ARG_FROM, result}, {DNNL_ARG_TO, plain}});
}

// conv2d_forward with our Winograd kernel (p.winograd_tile 2 or 4, shapes checked by the caller): weights
// transformed per call, as the single-op API gets new weights every training step; the transforms in the ops'
// scratch slots.
void winograd_forward(const Conv2dParams& p, const float* x, const float* w, const float* bias, float* y) {
  const WinogradTile tile = p.winograd_tile == 2 ? WinogradTile::f2x2 : WinogradTile::f4x4;
  const std::vector<float> bias_values = p.has_bias ? std::vector<float>(bias, bias + p.out_channels) : std::vector<float>();
  wrap_dnnl("conv2d", [&] {
    WinogradConv conv({p.batch, p.in_channels, p.out_channels, p.height, p.width, p.pad}, tile,
                      transform_winograd_weights(tile, w, p.in_channels, p.out_channels, dt::f32), bias_values, p.relu);
    conv.run(x, y, scratch(Scratch::src, conv.transformed_input_bytes()), static_cast<float*>(scratch(Scratch::dst, conv.products_bytes())));
  });
}

// dx of a 3x3 stride-1 pad-1 conv with Winograd (p.winograd_tile): the conv of dy (O channels) with the weights
// flipped in space and transposed, wt[c, o, kh, kw] = w[o, c, 2 - kh, 2 - kw], at pad 1, into dx (C channels).
void winograd_input_grad(const Conv2dBackwardParams& p, const float* w, const float* dy, float* dx) {
  std::vector<float> flipped(static_cast<size_t>(p.out_channels * p.in_channels * 9));
  for (int64_t o = 0; o < p.out_channels; o++) {
    for (int64_t c = 0; c < p.in_channels; c++) {
      for (int64_t tap = 0; tap < 9; tap++) flipped[(c * p.out_channels + o) * 9 + tap] = w[(o * p.in_channels + c) * 9 + 8 - tap];
    }
  }
  Conv2dParams transposed{p.batch, p.out_channels, p.height, p.width, p.in_channels, 3, 1, 1, 1, false, false};
  transposed.src_channels_last = transposed.dst_channels_last = true;
  transposed.winograd_tile = p.winograd_tile;
  winograd_forward(transposed, dy, flipped.data(), nullptr, dx);
}

}  // namespace

// The primitive picks its own layouts (format_tag::any) and the plain buffers are reordered in and out through
// scratch buffers: on plain NCHW oneDNN 2.6 runs convolutions with its im2col+GEMM kernel, which measured 2x
// slower than the blocked JIT kernel for a 3x3 32->32 conv at 28x28, batch 128 (16 ms vs 8 ms, plus 0.4 ms per
// reorder), and up to 4x for the backward passes below.
void conv2d_forward(const Conv2dParams& p, const float* x, const float* w, const float* bias, float* y) {
  RV_CHECK(p.groups >= 1 && p.in_channels % p.groups == 0 && p.out_channels % p.groups == 0, "ERR_SHAPE",
           "groups " + std::to_string(p.groups) + " must divide channels " + std::to_string(p.in_channels) + " -> " +
               std::to_string(p.out_channels));
  if (p.winograd_tile != 0) return winograd_forward(p, x, w, bias, y);
  if (p.plane_gemm) return plane_gemm_forward(p, x, w, bias, y);
  if (p.im2col_gemm) return im2col_gemm_forward(p, x, w, bias, y);
  const int64_t oh = conv_out_size(p.height, p.kernel, p.stride, p.pad);
  const int64_t ow = conv_out_size(p.width, p.kernel, p.stride, p.pad);
  RV_CHECK(oh >= 1 && ow >= 1, "ERR_SHAPE", "input too small for the kernel");
  const dims src_dims{p.batch, p.in_channels, p.height, p.width};
  const dims dst_dims{p.batch, p.out_channels, oh, ow};
  const dims w_dims = weight_dims(p.out_channels, p.in_channels, p.kernel, p.groups);
  const std::string key = conv_key(p.batch, p.in_channels, p.height, p.width, p.out_channels, p.kernel, p.stride, p.pad, p.groups) +
                          "," + std::to_string(p.has_bias) + "," + std::to_string(p.relu) + "," +
                          std::to_string(p.src_channels_last) + "," + std::to_string(p.dst_channels_last);
  wrap_dnnl("conv2d", [&] {
    auto prim = cached_primitive("conv:" + key, [&] {
      dnnl::memory::desc bias_md = p.has_bias ? plain_f32({p.out_channels}) : dnnl::memory::desc();
      dnnl::primitive_attr attr;
      if (p.relu) {
        dnnl::post_ops ops;
        ops.append_eltwise(1.f, dnnl::algorithm::eltwise_relu, 0.f, 0.f);
        attr.set_post_ops(ops);
      }
      auto make = [&](const dnnl::memory::desc& src_md, const dnnl::memory::desc& dst_md) {
        dnnl::convolution_forward::desc desc(dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct, src_md,
                                             {w_dims, dt::f32, tag::any}, bias_md, dst_md, {p.stride, p.stride}, {p.pad, p.pad},
                                             {p.pad, p.pad});
        return dnnl::convolution_forward::primitive_desc(desc, attr, engine());
      };
      return dnnl::primitive(for_layouts(make, src_dims, p.src_channels_last, dst_dims, p.dst_channels_last));
    });
    const dnnl::memory y_plain(activation_md(dst_dims, p.dst_channels_last), engine(), y);
    const dnnl::memory y_mem = out_layout(y_plain, chosen_md(prim, dnnl::query::dst_md), Scratch::dst);
    std::unordered_map<int, dnnl::memory> args{
        {DNNL_ARG_SRC, in_layout(dnnl::memory(activation_md(src_dims, p.src_channels_last), engine(), const_cast<float*>(x)),
                                 chosen_md(prim, dnnl::query::src_md), Scratch::src, "conv:x:" + key)},
        {DNNL_ARG_WEIGHTS, in_layout(dnnl::memory(plain_f32(w_dims), engine(), const_cast<float*>(w)),
                                     chosen_md(prim, dnnl::query::weights_md), Scratch::weights, "conv:w:" + key)},
        {DNNL_ARG_DST, y_mem}};
    if (p.has_bias) args.emplace(DNNL_ARG_BIAS, dnnl::memory(plain_f32({p.out_channels}), engine(), const_cast<float*>(bias)));
    prim.execute(stream(), args);
    to_plain(y_mem, y_plain, "conv:y:" + key);
    stream().wait();
  });
}


// Backward of a bias-free convolution: convolution_backward_data for dx and convolution_backward_weights for dw,
// each built with a forward_training primitive descriptor as the hint that oneDNN requires. The primitives choose
// their layouts (format_tag::any) and the plain buffers are reordered in and out through scratch buffers: on plain
// NCHW, oneDNN 2.6 falls back to its im2col+GEMM kernels, whose weight gradient of a 3x3 stride-1 conv
// (64x48x28x28 -> 48) took 280 to 770 ms against 25 ms for the blocked JIT kernel.
void conv2d_backward(const Conv2dBackwardParams& p, const float* x, const float* w, const float* dy, float* dx, float* dw) {
  RV_CHECK(p.groups >= 1 && p.in_channels % p.groups == 0 && p.out_channels % p.groups == 0, "ERR_SHAPE",
           "groups " + std::to_string(p.groups) + " must divide channels " + std::to_string(p.in_channels) + " -> " +
               std::to_string(p.out_channels));
  if (p.plane_gemm) return plane_gemm_backward(p, x, w, dy, dx, dw);
  if (p.winograd_weight_grad) {  // dx with Winograd as well (the caller checked), or not computed
    wrap_dnnl("conv2d_backward", [&] {
      if (p.need_input_grad) winograd_input_grad(p, w, dy, dx);
      winograd_weight_grad(WinogradShape{p.batch, p.in_channels, p.out_channels, p.height, p.width, p.pad}, x, dy, dw);
    });
    return;
  }
  if (p.im2col_gemm) return im2col_gemm_backward(p, x, w, dy, dx, dw);
  const int64_t oh = conv_out_size(p.height, p.kernel, p.stride, p.pad);
  const int64_t ow = conv_out_size(p.width, p.kernel, p.stride, p.pad);
  RV_CHECK(oh >= 1 && ow >= 1, "ERR_SHAPE", "input too small for the kernel");
  const dims src_dims{p.batch, p.in_channels, p.height, p.width};  // x, dx
  const dims dst_dims{p.batch, p.out_channels, oh, ow};            // dy
  const dims w_dims = weight_dims(p.out_channels, p.in_channels, p.kernel, p.groups);  // w, dw
  const dims strides{p.stride, p.stride}, padding{p.pad, p.pad};
  const std::string key = conv_key(p.batch, p.in_channels, p.height, p.width, p.out_channels, p.kernel, p.stride, p.pad, p.groups) +
                          "," + std::to_string(p.src_channels_last) + "," + std::to_string(p.dst_channels_last);
  const dnnl::memory::desc w_any(w_dims, dt::f32, tag::any);
  auto forward_hint = [&](const dnnl::memory::desc& src_md, const dnnl::memory::desc& dst_md) {
    dnnl::convolution_forward::desc desc(dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct, src_md,
                                         w_any, dst_md, strides, padding, padding);
    return dnnl::convolution_forward::primitive_desc(desc, engine());
  };
  wrap_dnnl("conv2d_backward", [&] {
    const dnnl::memory dy_plain(activation_md(dst_dims, p.dst_channels_last), engine(), const_cast<float*>(dy));
    dnnl::memory dy_reordered;  // dy in the data primitive's layout, reused by the weights primitive when it agrees
    if (p.need_input_grad && p.winograd_tile != 0) {
      winograd_input_grad(p, w, dy, dx);
    } else if (p.need_input_grad) {
      auto prim = cached_primitive("conv_bwd_data:" + key, [&] {
        auto make = [&](const dnnl::memory::desc& src_md, const dnnl::memory::desc& dst_md) {
          dnnl::convolution_backward_data::desc desc(dnnl::algorithm::convolution_direct, src_md, w_any, dst_md, strides,
                                                     padding, padding);
          return dnnl::convolution_backward_data::primitive_desc(desc, engine(), forward_hint(src_md, dst_md));
        };
        return dnnl::primitive(for_layouts(make, src_dims, p.src_channels_last, dst_dims, p.dst_channels_last));
      });
      const dnnl::memory dx_plain(activation_md(src_dims, p.src_channels_last), engine(), dx);
      const dnnl::memory dx_mem = out_layout(dx_plain, chosen_md(prim, dnnl::query::diff_src_md), Scratch::diff_src);
      dy_reordered = in_layout(dy_plain, chosen_md(prim, dnnl::query::diff_dst_md), Scratch::diff_dst, "conv_bwd_data:dy:" + key);
      prim.execute(stream(),
                   {{DNNL_ARG_DIFF_DST, dy_reordered},
                    {DNNL_ARG_WEIGHTS, in_layout(dnnl::memory(plain_f32(w_dims), engine(), const_cast<float*>(w)),
                                                 chosen_md(prim, dnnl::query::weights_md), Scratch::weights, "conv_bwd_data:w:" + key)},
                    {DNNL_ARG_DIFF_SRC, dx_mem}});
      to_plain(dx_mem, dx_plain, "conv_bwd_data:dx:" + key);
    }
    // oneDNN 2.6's AVX2 1x1 weight-gradient kernel (jit_1x1:avx2) writes past its strided-input copy when the input
    // is NHWC, the stride above 1 and the input channels not a multiple of its channel block (oneDNN issue 6035):
    // a segfault, a hang or wrong gradients. RepVGG's stem 1x1 branch (3 channels, stride 2) is that case. Such
    // convs take the blocked layouts (for_layouts without channels-last), which that kernel handles; 16 covers the
    // AVX-512 block as well.
    const bool strided_1x1_few_channels = p.kernel == 1 && p.stride > 1 && (p.in_channels / p.groups) % 16 != 0;
    auto prim = cached_primitive("conv_bwd_weights:" + key, [&] {
      auto make = [&](const dnnl::memory::desc& src_md, const dnnl::memory::desc& dst_md) {
        dnnl::convolution_backward_weights::desc desc(dnnl::algorithm::convolution_direct, src_md, w_any, dst_md, strides,
                                                      padding, padding);
        return dnnl::convolution_backward_weights::primitive_desc(desc, engine(), forward_hint(src_md, dst_md));
      };
      return dnnl::primitive(for_layouts(make, src_dims, p.src_channels_last && !strided_1x1_few_channels, dst_dims,
                                         p.dst_channels_last && !strided_1x1_few_channels));
    });
    const auto dy_md = chosen_md(prim, dnnl::query::diff_dst_md);
    if (!dy_reordered || dy_reordered.get_desc() != dy_md) {
      dy_reordered = in_layout(dy_plain, dy_md, Scratch::diff_dst, "conv_bwd_weights:dy:" + key);
    }
    const dnnl::memory dw_plain(plain_f32(w_dims), engine(), dw);
    const dnnl::memory dw_mem = out_layout(dw_plain, chosen_md(prim, dnnl::query::diff_weights_md), Scratch::diff_weights);
    prim.execute(stream(),
                 {{DNNL_ARG_SRC, in_layout(dnnl::memory(activation_md(src_dims, p.src_channels_last), engine(), const_cast<float*>(x)),
                                           chosen_md(prim, dnnl::query::src_md), Scratch::src, "conv_bwd_weights:x:" + key)},
                  {DNNL_ARG_DIFF_DST, dy_reordered},
                  {DNNL_ARG_DIFF_WEIGHTS, dw_mem}});
    to_plain(dw_mem, dw_plain, "conv_bwd_weights:dw:" + key);
    stream().wait();
  });
}

}  // namespace repvgg::cpu
