// The node-addon-api surface of the CPU backend: single ops (async Promise form and *Sync form) and the
// compiled network (`Program`). Options arrive as one object per call; heavy work runs on the compute thread
// (queue_posted, which leaves the libuv thread pool free), never on the event loop. Errors surface as JS Errors
// whose message is "CODE: text".
#include <napi.h>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include <algorithm>
#include <functional>
#include <memory>

#include "../core/ops.h"
#include "../cpu/dnnl_common.h"
#include "../cpu/jpeg.h"
#include "../cpu/program.h"
#include "../cpu/resample.h"
#include "args.h"
#include "network_spec_args.h"
#include "task_worker.h"

namespace repvgg::addon {

namespace {

// Parses the call's options into work (on the JS thread), then runs it on the compute thread: waiting (sync) or
// settling a Promise later (async).
Napi::Value dispatch(const Napi::CallbackInfo& info, bool async, const std::function<Work(const Napi::Object&)>& parse) {
  Napi::Env env = info.Env();
  try {
    Napi::Object options = options_arg(info);
    Work work = parse(options);
    if (!async) {
      cpu::on_compute_thread(work);
      return env.Undefined();
    }
    return queue_posted(env, cpu::post_to_compute_thread, work, options);
  } catch (const std::exception& e) {
    throw Napi::Error::New(env, e.what());
  }
}

Work parse_conv2d(const Napi::Object& o) {
  Conv2dParams p{get_int(o, "batch"),   get_int(o, "inChannels"), get_int(o, "height"), get_int(o, "width"),
                 get_int(o, "outChannels"), get_int(o, "kernel"), get_int(o, "stride"), get_int(o, "pad"),
                 get_int(o, "groups"),  false,                    get_bool(o, "relu")};
  F32View x = get_f32(o, "x"), w = get_f32(o, "weight"), bias = get_optional_f32(o, "bias"), y = get_f32(o, "y");
  p.has_bias = bias.data != nullptr;
  p.src_channels_last = get_bool(o, "xChannelsLast");
  p.dst_channels_last = get_bool(o, "yChannelsLast");
  p.winograd_tile = static_cast<int>(get_number(o, "winogradTile", 0));
  RV_CHECK(p.groups >= 1 && p.stride >= 1 && p.kernel >= 1 && p.pad >= 0, "ERR_ARG_VALUE", "conv2d: bad stride/kernel/pad/groups");
  RV_CHECK(p.winograd_tile == 0 || ((p.winograd_tile == 2 || p.winograd_tile == 4) && p.kernel == 3 && p.stride == 1 && p.groups == 1 &&
                                    p.pad <= 1 && p.src_channels_last && p.dst_channels_last),
           "ERR_ARG_VALUE", "conv2d: Winograd needs tile 2 or 4, a 3x3 kernel, stride 1, groups 1, pad 0 or 1 and NHWC x and y");
  p.plane_gemm = get_bool(o, "planeGemm");
  p.im2col_gemm = get_bool(o, "im2colGemm");
  RV_CHECK((p.winograd_tile != 0) + p.plane_gemm + p.im2col_gemm <= 1, "ERR_ARG_VALUE",
           "conv2d: winogradTile, planeGemm and im2colGemm exclude each other");
  const int64_t oh = conv_out_size(p.height, p.kernel, p.stride, p.pad), ow = conv_out_size(p.width, p.kernel, p.stride, p.pad);
  require_length(x, p.batch * p.in_channels * p.height * p.width, "x");
  require_length(w, p.out_channels * (p.in_channels / p.groups) * p.kernel * p.kernel, "weight");
  if (p.has_bias) require_length(bias, p.out_channels, "bias");
  require_length(y, p.batch * p.out_channels * oh * ow, "y");
  return [=] { cpu::conv2d_forward(p, x.data, w.data, bias.data, y.data); };
}

Work parse_batchnorm(const Napi::Object& o) {
  BatchNormParams p{get_int(o, "batch"), get_int(o, "channels"), get_int(o, "height"), get_int(o, "width"),
                    static_cast<float>(get_number(o, "eps", 1e-5)), get_bool(o, "relu"), get_bool(o, "channelsLast")};
  F32View x = get_f32(o, "x"), mean = get_f32(o, "mean"), var = get_f32(o, "var"), gamma = get_f32(o, "gamma"),
          beta = get_f32(o, "beta"), y = get_f32(o, "y");
  const int64_t count = p.batch * p.channels * p.height * p.width;
  require_length(x, count, "x");
  require_length(y, count, "y");
  for (auto [view, name] : {std::pair{mean, "mean"}, {var, "var"}, {gamma, "gamma"}, {beta, "beta"}}) require_length(view, p.channels, name);
  return [=] { cpu::batchnorm_forward_inference(p, x.data, mean.data, var.data, gamma.data, beta.data, y.data); };
}

std::function<Work(const Napi::Object&)> parse_eltwise(EltwiseKind kind) {
  return [kind](const Napi::Object& o) -> Work {
    F32View x = get_f32(o, "x"), y = get_f32(o, "y");
    const int64_t count = static_cast<int64_t>(x.length);
    require_length(y, count, "y");
    return [=] { cpu::eltwise_forward(kind, count, x.data, y.data); };
  };
}

Work parse_add(const Napi::Object& o) {
  F32View a = get_f32(o, "a"), b = get_f32(o, "b"), y = get_f32(o, "y");
  const int64_t count = static_cast<int64_t>(a.length);
  require_length(b, count, "b");
  require_length(y, count, "y");
  const bool relu = get_bool(o, "relu");
  return [=] { cpu::add_forward(count, a.data, b.data, y.data, relu); };
}

Work parse_channel_scale(const Napi::Object& o) {
  const int64_t batch = get_int(o, "batch"), channels = get_int(o, "channels"), spatial = get_int(o, "spatial");
  F32View x = get_f32(o, "x"), scale = get_f32(o, "scale"), y = get_f32(o, "y");
  require_length(x, batch * channels * spatial, "x");
  require_length(scale, batch * channels, "scale");
  require_length(y, batch * channels * spatial, "y");
  const bool channels_last = get_bool(o, "channelsLast");
  return [=] { cpu::channel_scale_forward(batch, channels, spatial, x.data, scale.data, y.data, channels_last); };
}

Work parse_global_avg_pool(const Napi::Object& o) {
  const int64_t batch = get_int(o, "batch"), channels = get_int(o, "channels"), height = get_int(o, "height"), width = get_int(o, "width");
  F32View x = get_f32(o, "x"), y = get_f32(o, "y");
  require_length(x, batch * channels * height * width, "x");
  require_length(y, batch * channels, "y");
  const bool channels_last = get_bool(o, "channelsLast");
  return [=] { cpu::global_avg_pool_forward(batch, channels, height, width, x.data, y.data, channels_last); };
}

Work parse_linear(const Napi::Object& o) {
  LinearParams p{get_int(o, "batch"), get_int(o, "inFeatures"), get_int(o, "outFeatures"), get_bool(o, "relu")};
  F32View x = get_f32(o, "x"), w = get_f32(o, "weight"), bias = get_f32(o, "bias"), y = get_f32(o, "y");
  require_length(x, p.batch * p.in_features, "x");
  require_length(w, p.out_features * p.in_features, "weight");
  require_length(bias, p.out_features, "bias");
  require_length(y, p.batch * p.out_features, "y");
  return [=] { cpu::linear_forward(p, x.data, w.data, bias.data, y.data); };
}

// ---- Training: backward passes, training-mode batch norm, loss ----

// dx is optional: without it only the weight gradient is computed (the input needs none, e.g. the first layer).
Work parse_conv2d_backward(const Napi::Object& o) {
  Conv2dBackwardParams p{get_int(o, "batch"),       get_int(o, "inChannels"), get_int(o, "height"),
                         get_int(o, "width"),       get_int(o, "outChannels"), get_int(o, "kernel"),
                         get_int(o, "stride"),      get_int(o, "pad"),        get_int(o, "groups"), false};
  F32View x = get_f32(o, "x"), w = get_f32(o, "weight"), dy = get_f32(o, "dy"), dx = get_optional_f32(o, "dx"),
          dw = get_f32(o, "dweight");
  p.need_input_grad = dx.data != nullptr;
  p.src_channels_last = get_bool(o, "xChannelsLast");
  p.dst_channels_last = get_bool(o, "dyChannelsLast");
  p.plane_gemm = get_bool(o, "planeGemm");
  p.im2col_gemm = get_bool(o, "im2colGemm");
  RV_CHECK(!(p.plane_gemm && p.im2col_gemm), "ERR_ARG_VALUE", "conv2d_backward: planeGemm and im2colGemm exclude each other");
  p.winograd_tile = static_cast<int>(get_number(o, "winogradTile", 0));
  p.winograd_weight_grad = get_bool(o, "winogradWeightGrad");
  RV_CHECK(p.winograd_tile == 0 || ((p.winograd_tile == 2 || p.winograd_tile == 4) && p.kernel == 3 && p.stride == 1 && p.pad == 1 &&
                                    p.groups == 1 && p.src_channels_last && p.dst_channels_last && !p.plane_gemm && !p.im2col_gemm),
           "ERR_ARG_VALUE",
           "conv2d_backward: Winograd needs tile 2 or 4, a 3x3 kernel, stride 1, pad 1, groups 1, NHWC x and dy, and no other algorithm");
  RV_CHECK(!p.winograd_weight_grad || p.winograd_tile != 0, "ERR_ARG_VALUE", "conv2d_backward: winogradWeightGrad needs winogradTile");
  RV_CHECK(p.groups >= 1 && p.stride >= 1 && p.kernel >= 1 && p.pad >= 0, "ERR_ARG_VALUE",
           "conv2d_backward: bad stride/kernel/pad/groups");
  const int64_t oh = conv_out_size(p.height, p.kernel, p.stride, p.pad), ow = conv_out_size(p.width, p.kernel, p.stride, p.pad);
  const int64_t x_count = p.batch * p.in_channels * p.height * p.width;
  const int64_t w_count = p.out_channels * (p.in_channels / p.groups) * p.kernel * p.kernel;
  require_length(x, x_count, "x");
  require_length(w, w_count, "weight");
  require_length(dy, p.batch * p.out_channels * oh * ow, "dy");
  if (p.need_input_grad) require_length(dx, x_count, "dx");
  require_length(dw, w_count, "dweight");
  return [=] { cpu::conv2d_backward(p, x.data, w.data, dy.data, dx.data, dw.data); };
}

Work parse_batchnorm_train(const Napi::Object& o) {
  BatchNormParams p{get_int(o, "batch"), get_int(o, "channels"), get_int(o, "height"), get_int(o, "width"),
                    static_cast<float>(get_number(o, "eps", 1e-5)), false, get_bool(o, "channelsLast")};
  F32View x = get_f32(o, "x"), gamma = get_f32(o, "gamma"), beta = get_f32(o, "beta"), y = get_f32(o, "y"),
          mean = get_f32(o, "mean"), var = get_f32(o, "var");
  const int64_t count = p.batch * p.channels * p.height * p.width;
  require_length(x, count, "x");
  require_length(y, count, "y");
  for (auto [view, name] : {std::pair{gamma, "gamma"}, {beta, "beta"}, {mean, "mean"}, {var, "var"}}) require_length(view, p.channels, name);
  return [=] { cpu::batchnorm_forward_training(p, x.data, gamma.data, beta.data, y.data, mean.data, var.data); };
}

Work parse_batchnorm_backward(const Napi::Object& o) {
  BatchNormParams p{get_int(o, "batch"), get_int(o, "channels"), get_int(o, "height"), get_int(o, "width"),
                    static_cast<float>(get_number(o, "eps", 1e-5)), false, get_bool(o, "channelsLast")};
  F32View x = get_f32(o, "x"), dy = get_f32(o, "dy"), gamma = get_f32(o, "gamma"), mean = get_f32(o, "mean"),
          var = get_f32(o, "var"), dx = get_f32(o, "dx"), dgamma = get_f32(o, "dgamma"), dbeta = get_f32(o, "dbeta");
  const int64_t count = p.batch * p.channels * p.height * p.width;
  for (auto [view, name] : {std::pair{x, "x"}, {dy, "dy"}, {dx, "dx"}}) require_length(view, count, name);
  for (auto [view, name] : {std::pair{gamma, "gamma"}, {mean, "mean"}, {var, "var"}, {dgamma, "dgamma"}, {dbeta, "dbeta"}}) {
    require_length(view, p.channels, name);
  }
  return [=] { cpu::batchnorm_backward(p, x.data, dy.data, gamma.data, mean.data, var.data, dx.data, dgamma.data, dbeta.data); };
}

// The `branches` array of a batch-norm sum: each element an object whose fields `read` turns into one branch.
template <typename Branch, typename Read>
std::vector<Branch> parse_branches(const Napi::Object& o, const Read& read) {
  Napi::Value list = get_field(o, "branches");
  RV_CHECK(list.IsArray(), "ERR_ARG_TYPE", "Expected an array for branches");
  auto array = list.As<Napi::Array>();
  RV_CHECK(array.Length() >= 1 && array.Length() <= static_cast<uint32_t>(cpu::kMaxNormBranches), "ERR_ARG_VALUE",
           "Expected 1 to " + std::to_string(cpu::kMaxNormBranches) + " branches but received " + std::to_string(array.Length()));
  std::vector<Branch> branches;
  for (uint32_t i = 0; i < array.Length(); ++i) {
    Napi::Value item = array.Get(i);
    RV_CHECK(item.IsObject(), "ERR_ARG_TYPE", "Expected an object for branches[" + std::to_string(i) + "]");
    branches.push_back(read(item.As<Napi::Object>()));
  }
  return branches;
}

BatchNormParams batchnorm_sum_params(const Napi::Object& o) {
  return {get_int(o, "batch"), get_int(o, "channels"), get_int(o, "height"), get_int(o, "width"),
          static_cast<float>(get_number(o, "eps", 1e-5)), get_bool(o, "relu"), true};
}

// batchNormSum({ branches: [{ x, gamma, beta, mean, var }], y, batch, channels, height, width, eps, relu }), NHWC.
Work parse_batchnorm_sum(const Napi::Object& o) {
  const BatchNormParams p = batchnorm_sum_params(o);
  const int64_t count = p.batch * p.channels * p.height * p.width;
  F32View y = get_f32(o, "y");
  require_length(y, count, "y");
  auto branches = parse_branches<NormBranch>(o, [&](const Napi::Object& b) {
    F32View x = get_f32(b, "x"), gamma = get_f32(b, "gamma"), beta = get_f32(b, "beta"), mean = get_f32(b, "mean"), var = get_f32(b, "var");
    require_length(x, count, "x");
    for (auto [view, name] : {std::pair{gamma, "gamma"}, {beta, "beta"}, {mean, "mean"}, {var, "var"}}) require_length(view, p.channels, name);
    return NormBranch{x.data, gamma.data, beta.data, mean.data, var.data};
  });
  return [=] { cpu::batchnorm_sum_forward(p, branches, y.data); };
}

// batchNormSumBackward({ branches: [{ x, gamma, mean, var, dx, dgamma, dbeta }], y, dy, batch, ..., eps, relu }).
Work parse_batchnorm_sum_backward(const Napi::Object& o) {
  const BatchNormParams p = batchnorm_sum_params(o);
  const int64_t count = p.batch * p.channels * p.height * p.width;
  F32View y = get_f32(o, "y"), dy = get_f32(o, "dy");
  require_length(y, count, "y");
  require_length(dy, count, "dy");
  auto branches = parse_branches<NormBranchGrad>(o, [&](const Napi::Object& b) {
    F32View x = get_f32(b, "x"), gamma = get_f32(b, "gamma"), mean = get_f32(b, "mean"), var = get_f32(b, "var"), dx = get_f32(b, "dx"),
            dgamma = get_f32(b, "dgamma"), dbeta = get_f32(b, "dbeta");
    require_length(x, count, "x");
    require_length(dx, count, "dx");
    for (auto [view, name] : {std::pair{gamma, "gamma"}, {mean, "mean"}, {var, "var"}, {dgamma, "dgamma"}, {dbeta, "dbeta"}}) {
      require_length(view, p.channels, name);
    }
    return NormBranchGrad{x.data, gamma.data, mean.data, var.data, dx.data, dgamma.data, dbeta.data};
  });
  return [=] { cpu::batchnorm_sum_backward(p, branches, y.data, dy.data); };
}

std::function<Work(const Napi::Object&)> parse_eltwise_backward(EltwiseKind kind) {
  return [kind](const Napi::Object& o) -> Work {
    F32View y = get_f32(o, "y"), dy = get_f32(o, "dy"), dx = get_f32(o, "dx");
    const int64_t count = static_cast<int64_t>(y.length);
    require_length(dy, count, "dy");
    require_length(dx, count, "dx");
    return [=] { cpu::eltwise_backward(kind, count, y.data, dy.data, dx.data); };
  };
}

Work parse_channel_scale_backward(const Napi::Object& o) {
  const int64_t batch = get_int(o, "batch"), channels = get_int(o, "channels"), spatial = get_int(o, "spatial");
  F32View x = get_f32(o, "x"), scale = get_f32(o, "scale"), dy = get_f32(o, "dy"), dx = get_f32(o, "dx"),
          dscale = get_f32(o, "dscale");
  for (auto [view, name] : {std::pair{x, "x"}, {dy, "dy"}, {dx, "dx"}}) require_length(view, batch * channels * spatial, name);
  require_length(scale, batch * channels, "scale");
  require_length(dscale, batch * channels, "dscale");
  const bool channels_last = get_bool(o, "channelsLast");
  return [=] {
    cpu::channel_scale_backward(batch, channels, spatial, x.data, scale.data, dy.data, dx.data, dscale.data, channels_last);
  };
}

Work parse_global_avg_pool_backward(const Napi::Object& o) {
  const int64_t batch = get_int(o, "batch"), channels = get_int(o, "channels"), height = get_int(o, "height"), width = get_int(o, "width");
  F32View dy = get_f32(o, "dy"), dx = get_f32(o, "dx");
  require_length(dy, batch * channels, "dy");
  require_length(dx, batch * channels * height * width, "dx");
  const bool channels_last = get_bool(o, "channelsLast");
  return [=] { cpu::global_avg_pool_backward(batch, channels, height, width, dy.data, dx.data, channels_last); };
}

// dx is optional, as in parse_conv2d_backward.
Work parse_linear_backward(const Napi::Object& o) {
  LinearBackwardParams p{get_int(o, "batch"), get_int(o, "inFeatures"), get_int(o, "outFeatures"), false};
  F32View x = get_f32(o, "x"), w = get_f32(o, "weight"), dy = get_f32(o, "dy"), dx = get_optional_f32(o, "dx"),
          dw = get_f32(o, "dweight"), db = get_f32(o, "dbias");
  p.need_input_grad = dx.data != nullptr;
  require_length(x, p.batch * p.in_features, "x");
  require_length(w, p.out_features * p.in_features, "weight");
  require_length(dy, p.batch * p.out_features, "dy");
  if (p.need_input_grad) require_length(dx, p.batch * p.in_features, "dx");
  require_length(dw, p.out_features * p.in_features, "dweight");
  require_length(db, p.out_features, "dbias");
  return [=] { cpu::linear_backward(p, x.data, w.data, dy.data, dx.data, dw.data, db.data); };
}

// labels: Int32Array (batch); the loss (a double) comes back through loss: Float64Array (1), since dispatch()
// resolves with undefined.
Work parse_softmax_cross_entropy(const Napi::Object& o) {
  SoftmaxCrossEntropyParams p{get_int(o, "batch"), get_int(o, "classes"), get_number(o, "labelSmoothing", 0)};
  F32View logits = get_f32(o, "logits"), dlogits = get_f32(o, "dlogits");
  auto labels = get_typed_array<int32_t>(o, "labels", napi_int32_array, "an Int32Array");
  RV_CHECK(static_cast<int64_t>(labels.ElementLength()) >= p.batch, "ERR_SHAPE",
           "labels holds " + std::to_string(labels.ElementLength()) + " values but the op needs " + std::to_string(p.batch));
  require_length(logits, p.batch * p.classes, "logits");
  require_length(dlogits, p.batch * p.classes, "dlogits");
  const int32_t* label_data = labels.Data();
  double* loss_data = get_f64_result(o, "loss");
  return [=] { *loss_data = cpu::softmax_cross_entropy(p, logits.data, label_data, dlogits.data); };
}

// tensors: [{ weight, grad, momentumBuffer?, weightDecay, first }], lr, momentum, nesterov.
Work parse_sgd_step(const Napi::Object& o) {
  SgdParams p{get_number(o, "lr", 0), get_number(o, "momentum", 0), get_bool(o, "nesterov")};
  Napi::Value list = get_field(o, "tensors");
  RV_CHECK(list.IsArray(), "ERR_ARG_TYPE", "Expected an array for tensors");
  auto array = list.As<Napi::Array>();
  std::vector<SgdTensor> tensors;
  tensors.reserve(array.Length());
  for (uint32_t i = 0; i < array.Length(); ++i) {
    Napi::Value item = array.Get(i);
    RV_CHECK(item.IsObject(), "ERR_ARG_TYPE", "Expected an object for tensors[" + std::to_string(i) + "]");
    auto t = item.As<Napi::Object>();
    F32View weight = get_f32(t, "weight"), grad = get_f32(t, "grad"), buffer = get_optional_f32(t, "momentumBuffer");
    RV_CHECK(grad.length == weight.length && (buffer.data == nullptr || buffer.length == weight.length), "ERR_SHAPE",
             "Expected grad and momentumBuffer of tensors[" + std::to_string(i) + "] as long as its weight (" +
                 std::to_string(weight.length) + ")");
    tensors.push_back({weight.data, grad.data, buffer.data, static_cast<int64_t>(weight.length),
                       get_number(t, "weightDecay", 0), get_bool(t, "first")});
  }
  return [p, tensors] { cpu::sgd_step(p, tensors); };
}

// shadows[i] = decay * shadows[i] + (1 - decay) * currents[i] for every i.
Work parse_ema_update(const Napi::Object& o) {
  const double decay = get_number(o, "decay", 0);
  Napi::Value shadows = get_field(o, "shadows"), currents = get_field(o, "currents");
  RV_CHECK(shadows.IsArray() && currents.IsArray() && shadows.As<Napi::Array>().Length() == currents.As<Napi::Array>().Length(),
           "ERR_ARG_TYPE", "Expected arrays of equal length for shadows and currents");
  std::vector<EmaTensor> tensors;
  for (uint32_t i = 0; i < shadows.As<Napi::Array>().Length(); ++i) {
    const std::string index = "[" + std::to_string(i) + "]";
    F32View shadow = as_f32(shadows.As<Napi::Array>().Get(i), "shadows" + index);
    F32View current = as_f32(currents.As<Napi::Array>().Get(i), "currents" + index);
    RV_CHECK(shadow.length == current.length, "ERR_SHAPE",
             "Expected currents" + index + " as long as shadows" + index + " (" + std::to_string(shadow.length) + ")");
    tensors.push_back({shadow.data, current.data, static_cast<int64_t>(shadow.length)});
  }
  return [decay, tensors] { cpu::ema_update(decay, tensors); };
}

// blocks: [{ k3, k3Grad, k1, k1Grad, t3, t1, outChannels, perOut }], weightDecay, loss: Float64Array(1) (written).
Work parse_custom_l2(const Napi::Object& o) {
  const double weight_decay = get_number(o, "weightDecay", 0);
  double* loss = get_f64_result(o, "loss");
  Napi::Value list = get_field(o, "blocks");
  RV_CHECK(list.IsArray(), "ERR_ARG_TYPE", "Expected an array for blocks");
  auto array = list.As<Napi::Array>();
  std::vector<CustomL2Block> blocks;
  for (uint32_t i = 0; i < array.Length(); ++i) {
    Napi::Value item = array.Get(i);
    const std::string where = "blocks[" + std::to_string(i) + "]";
    RV_CHECK(item.IsObject(), "ERR_ARG_TYPE", "Expected an object for " + where);
    auto b = item.As<Napi::Object>();
    const int64_t out = get_int(b, "outChannels"), per_out = get_int(b, "perOut");
    RV_CHECK(out >= 1 && per_out >= 1, "ERR_ARG_VALUE", "Expected positive outChannels and perOut for " + where);
    F32View k3 = get_f32(b, "k3"), k3_grad = get_f32(b, "k3Grad"), k1 = get_f32(b, "k1"), k1_grad = get_f32(b, "k1Grad");
    F32View t3 = get_f32(b, "t3"), t1 = get_f32(b, "t1");
    const auto exact = [&](const F32View& v, int64_t n, const char* name) {
      RV_CHECK(static_cast<int64_t>(v.length) == n, "ERR_SHAPE",
               "Expected " + std::to_string(n) + " values for " + where + "." + name + " but received " + std::to_string(v.length));
    };
    exact(k3, out * per_out * 9, "k3");
    exact(k3_grad, out * per_out * 9, "k3Grad");
    exact(k1, out * per_out, "k1");
    exact(k1_grad, out * per_out, "k1Grad");
    exact(t3, out, "t3");
    exact(t1, out, "t1");
    blocks.push_back({k3.data, k3_grad.data, k1.data, k1_grad.data, t3.data, t1.data, out, per_out});
  }
  return [weight_decay, blocks, loss] { *loss = cpu::custom_l2(weight_decay, blocks); };
}

// options: { maxFreeBytes }. Makes glibc's allocator serve allocations up to 64 MB from its heap and keep up to
// maxFreeBytes of freed heap memory instead of returning it to the kernel (mallopt). A training step allocates and
// frees the same few hundred MB of ArrayBuffers every step; by default the large ones are mmapped and unmapped each
// time, so every output is page-faulted in (zero-filled by the kernel) again: 10% of a step of the default network.
// Process-wide and permanent; a no-op without glibc.
Work parse_retain_freed_memory(const Napi::Object& o) {
  const double max_free = get_number(o, "maxFreeBytes", 1 << 30);
  RV_CHECK(max_free >= 0 && max_free <= 1e15, "ERR_ARG_VALUE", "maxFreeBytes must be a byte count");
  return [max_free] {
#if defined(__GLIBC__)
    mallopt(M_MMAP_THRESHOLD, 64 << 20);
    mallopt(M_TRIM_THRESHOLD, static_cast<int>(std::min(max_free, 2147483647.0)));
#endif
  };
}

// ---- Program ----


cpu::ProgramSpec parse_program(const Napi::Object& o) {
  cpu::ProgramSpec spec;
  const std::string precision = get_string(o, "precision", "fp32");
  RV_CHECK(precision == "fp32" || precision == "bf16" || precision == "int8", "ERR_ARG_VALUE", "precision must be fp32, bf16 or int8, got " + precision);
  spec.precision = precision == "bf16" ? cpu::Precision::bf16 : precision == "int8" ? cpu::Precision::int8 : cpu::Precision::fp32;
  const std::string algorithm = get_string(o, "convAlgorithm", "auto");
  RV_CHECK(algorithm == "auto" || algorithm == "direct" || algorithm == "winograd" || algorithm == "winograd2x2", "ERR_ARG_VALUE",
           "convAlgorithm must be auto, direct, winograd or winograd2x2");
  spec.conv_algorithm = algorithm == "direct" ? cpu::ConvAlgorithm::direct
                        : algorithm == "winograd" ? cpu::ConvAlgorithm::winograd
                        : algorithm == "winograd2x2" ? cpu::ConvAlgorithm::winograd2x2
                                                  : cpu::ConvAlgorithm::auto_measure;
  const std::string timing = get_string(o, "autoTiming", "");
  RV_CHECK(timing.empty() || timing == "forward" || timing == "convs", "ERR_ARG_VALUE", "autoTiming must be forward or convs, got " + timing);
  spec.auto_timing = timing == "forward" ? cpu::AutoTiming::forward : timing == "convs" ? cpu::AutoTiming::convs : cpu::AutoTiming::by_length;
  const std::string threading = get_string(o, "batchThreading", "images");
  RV_CHECK(threading == "images" || threading == "layers", "ERR_ARG_VALUE", "batchThreading must be images or layers, got " + threading);
  spec.batch_threading = threading == "layers" ? cpu::BatchThreading::layers : cpu::BatchThreading::images;
  parse_network(o, spec);
  for (size_t i = 0; i < spec.steps.size(); i++)
    RV_CHECK(!spec.steps[i].conv.int8 || spec.precision == cpu::Precision::int8, "ERR_ARG_VALUE",
             "steps[" + std::to_string(i) + "] is an int8 conv but the program's precision is " + precision);
  return spec;
}

int64_t spec_weight_bytes(const cpu::ProgramSpec& spec) {
  size_t floats = spec.head_weight.size() + spec.head_bias.size();
  for (const auto& s : spec.steps) {
    floats += s.conv.weight.size() + s.conv.bias.size() + s.bn.mean.size() * 4 + s.se.down_weight.size() + s.se.up_weight.size() +
              s.se.down_bias.size() + s.se.up_bias.size();
  }
  return static_cast<int64_t>(floats * sizeof(float));
}

Napi::Object report_to_js(Napi::Env env, const cpu::PlanReport& r) {
  Napi::Object out = Napi::Object::New(env);
  out.Set("batch", Napi::Number::New(env, static_cast<double>(r.batch)));
  out.Set("height", Napi::Number::New(env, static_cast<double>(r.height)));
  out.Set("width", Napi::Number::New(env, static_cast<double>(r.width)));
  out.Set("activationBytes", Napi::Number::New(env, static_cast<double>(r.activation_bytes)));
  out.Set("workspaceBytes", Napi::Number::New(env, static_cast<double>(r.workspace_bytes)));
  out.Set("weightBytes", Napi::Number::New(env, static_cast<double>(r.weight_bytes)));
  out.Set("layout", Napi::String::New(env, r.layout));
  if (!r.auto_timing.empty()) out.Set("autoTiming", Napi::String::New(env, r.auto_timing));
  if (r.auto_timing_forward_ms >= 0) out.Set("autoTimingForwardMs", Napi::Number::New(env, r.auto_timing_forward_ms));
  out.Set("headPrecision", Napi::String::New(env, r.head_precision));
  out.Set("threading", Napi::String::New(env, r.threading));
  out.Set("imagesPerPlan", Napi::Number::New(env, static_cast<double>(r.images_per_plan)));
  out.Set("threads", Napi::Number::New(env, static_cast<double>(r.threads)));
  Napi::Array convs = Napi::Array::New(env, r.convs.size());
  for (size_t i = 0; i < r.convs.size(); i++) {
    const auto& c = r.convs[i];
    Napi::Object o = Napi::Object::New(env);
    o.Set("step", Napi::Number::New(env, c.step));
    o.Set("algorithm", Napi::String::New(env, c.algorithm));
    o.Set("implementation", Napi::String::New(env, c.implementation));
    o.Set("layout", Napi::String::New(env, c.layout));
    if (c.direct_ms >= 0) o.Set("directMs", Napi::Number::New(env, c.direct_ms));
    if (c.winograd_ms >= 0) o.Set("winogradMs", Napi::Number::New(env, c.winograd_ms));
    if (c.winograd2x2_ms >= 0) o.Set("winograd2x2Ms", Napi::Number::New(env, c.winograd2x2_ms));
    convs.Set(static_cast<uint32_t>(i), o);
  }
  out.Set("convs", convs);
  return out;
}

class ProgramWrap : public Napi::ObjectWrap<ProgramWrap> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "Program",
                       {InstanceMethod("run", &ProgramWrap::Run), InstanceMethod("runSync", &ProgramWrap::RunSync),
                        InstanceMethod("prepare", &ProgramWrap::Prepare), InstanceMethod("profile", &ProgramWrap::ProfilePlan),
                        InstanceMethod("threading", &ProgramWrap::Threading), InstanceMethod("dispose", &ProgramWrap::Dispose)});
  }

  explicit ProgramWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<ProgramWrap>(info) {
    try {
      program_ = std::make_shared<cpu::Program>(parse_program(options_arg(info)));
      external_bytes_ = spec_weight_bytes(program_->spec());
      Napi::MemoryManagement::AdjustExternalMemory(info.Env(), external_bytes_);
    } catch (const std::exception& e) {
      throw Napi::Error::New(info.Env(), e.what());
    }
  }

  // Safety net when dispose() was never called: the GC frees the weights with the wrapper.
  ~ProgramWrap() override = default;

 private:
  std::shared_ptr<cpu::Program> live(Napi::Env env) {
    if (!program_) throw Napi::Error::New(env, "ERR_DISPOSED: the network was used after dispose()");
    return program_;
  }

  // options: { batch, height, width, output: Float32Array (batch, classes), and input: Float32Array (batch, C, H, W)
  // or inputParts: Float32Array[] of whole images, in order, at most batch of them (the rest of the batch zeros) }.
  Work parse_run(const Napi::Object& o, std::shared_ptr<cpu::Program> program) {
    const int64_t batch = get_int(o, "batch"), height = get_int(o, "height"), width = get_int(o, "width");
    F32View output = get_f32(o, "output");
    const int64_t image_count = program->spec().in_channels * height * width, input_count = batch * image_count;
    require_length(output, batch * program->spec().classes, "output");
    // Checked here, on the compute thread, rather than in JavaScript: a batch's scan would otherwise block the loop.
    // indexOffset: where this chunk starts in the caller's input, so the error names the index the caller sees.
    const auto index_offset = static_cast<int64_t>(get_number(o, "indexOffset", 0));
    if (get_field(o, "inputParts").IsUndefined()) {
      F32View input = get_f32(o, "input");
      require_length(input, input_count, "input");
      return [=] {
        require_finite(input.data, input_count, "input", index_offset);
        program->run(batch, height, width, input.data, output.data);
      };
    }
    Napi::Value parts_value = get_field(o, "inputParts");
    RV_CHECK(parts_value.IsArray(), "ERR_ARG_TYPE", "Expected an array of Float32Array for inputParts");
    auto parts_array = parts_value.As<Napi::Array>();
    RV_CHECK(parts_array.Length() >= 1 && parts_array.Length() <= static_cast<uint32_t>(batch), "ERR_SHAPE",
             "Expected 1 to " + std::to_string(batch) + " input parts but received " + std::to_string(parts_array.Length()));
    std::vector<cpu::InputPart> parts;
    int64_t images = 0;
    for (uint32_t i = 0; i < parts_array.Length(); i++) {
      const std::string name = "inputParts[" + std::to_string(i) + "]";
      F32View part = as_f32(parts_array.Get(i), name);
      const auto length = static_cast<int64_t>(part.length);
      RV_CHECK(length >= image_count && length % image_count == 0, "ERR_SHAPE",
               "Expected whole images of " + std::to_string(image_count) + " values in " + name + " but received " + std::to_string(length));
      parts.push_back({part.data, length / image_count});
      images += length / image_count;
    }
    RV_CHECK(images <= batch, "ERR_SHAPE", "inputParts hold " + std::to_string(images) + " images for a batch of " + std::to_string(batch));
    return [=] {
      int64_t offset = index_offset;
      for (const cpu::InputPart& part : parts) {
        require_finite(part.data, part.images * image_count, "input", offset);
        offset += part.images * image_count;
      }
      program->run_parts(batch, height, width, parts, output.data);
    };
  }

  Napi::Value Run(const Napi::CallbackInfo& info) {
    auto program = live(info.Env());
    try {
      Napi::Object o = options_arg(info);
      return queue_posted(info.Env(), cpu::post_to_compute_thread, parse_run(o, program), o);
    } catch (const std::exception& e) {
      throw Napi::Error::New(info.Env(), e.what());
    }
  }

  Napi::Value RunSync(const Napi::CallbackInfo& info) {
    auto program = live(info.Env());
    try {
      parse_run(options_arg(info), program)();
      return info.Env().Undefined();
    } catch (const std::exception& e) {
      throw Napi::Error::New(info.Env(), e.what());
    }
  }

  // options: { batch } -> "images" or "layers": how run() would use the threads for a batch of this size.
  Napi::Value Threading(const Napi::CallbackInfo& info) {
    auto program = live(info.Env());
    try {
      const int64_t batch = get_int(options_arg(info), "batch");
      return Napi::String::New(info.Env(), program->splits_images(batch) ? "images" : "layers");
    } catch (const std::exception& e) {
      throw Napi::Error::New(info.Env(), e.what());
    }
  }

  // options: { batch, height, width } -> Promise<report>
  Napi::Value Prepare(const Napi::CallbackInfo& info) {
    auto program = live(info.Env());
    try {
      Napi::Object o = options_arg(info);
      const int64_t batch = get_int(o, "batch"), height = get_int(o, "height"), width = get_int(o, "width");
      auto report = std::make_shared<cpu::PlanReport>();
      return queue_posted(info.Env(), cpu::post_to_compute_thread, [=] { *report = program->prepare(batch, height, width); }, o,
                          [report](Napi::Env env) -> Napi::Value { return report_to_js(env, *report); });
    } catch (const std::exception& e) {
      throw Napi::Error::New(info.Env(), e.what());
    }
  }

  // options: { batch, height, width, runs } -> Promise<{ entries: [{ step, what, ms }], networkMs, runs }>
  Napi::Value ProfilePlan(const Napi::CallbackInfo& info) {
    auto program = live(info.Env());
    try {
      Napi::Object o = options_arg(info);
      const int64_t batch = get_int(o, "batch"), height = get_int(o, "height"), width = get_int(o, "width");
      const int runs = static_cast<int>(get_int(o, "runs"));
      auto profile = std::make_shared<cpu::Profile>();
      return queue_posted(info.Env(), cpu::post_to_compute_thread, [=] { *profile = program->profile(batch, height, width, runs); }, o,
                          [profile](Napi::Env env) -> Napi::Value {
                            Napi::Object out = Napi::Object::New(env);
                            Napi::Array entries = Napi::Array::New(env, profile->entries.size());
                            for (size_t i = 0; i < profile->entries.size(); i++) {
                              Napi::Object e = Napi::Object::New(env);
                              e.Set("step", Napi::Number::New(env, profile->entries[i].step));
                              e.Set("what", Napi::String::New(env, profile->entries[i].what));
                              e.Set("ms", Napi::Number::New(env, profile->entries[i].ms));
                              entries.Set(static_cast<uint32_t>(i), e);
                            }
                            out.Set("entries", entries);
                            out.Set("networkMs", Napi::Number::New(env, profile->network_ms));
                            out.Set("runs", Napi::Number::New(env, profile->runs));
                            out.Set("threading", Napi::String::New(env, profile->threading));
                            out.Set("images", Napi::Number::New(env, static_cast<double>(profile->images)));
                            out.Set("threads", Napi::Number::New(env, static_cast<double>(profile->threads)));
                            return out;
                          });
    } catch (const std::exception& e) {
      throw Napi::Error::New(info.Env(), e.what());
    }
  }

  // Frees native memory now (work already queued keeps its own reference and finishes first).
  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    if (program_) {
      program_.reset();
      Napi::MemoryManagement::AdjustExternalMemory(info.Env(), -external_bytes_);
      external_bytes_ = 0;
    }
    return info.Env().Undefined();
  }

  std::shared_ptr<cpu::Program> program_;
  int64_t external_bytes_ = 0;
};

Napi::Value Info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object out = Napi::Object::New(env);
  out.Set("backend", "cpu");
  out.Set("library", "oneDNN");
  out.Set("libraryVersion", cpu::dnnl_version());
  out.Set("isa", cpu::effective_isa());
  out.Set("nativeBf16", cpu::has_native_bf16());
  out.Set("bf16", cpu::supports_bf16_convolutions());
  out.Set("int8Vnni", cpu::has_int8_vnni());
  return out;
}

// The filter taps of one axis from {prefix}First, {prefix}Count (Int32Array, one per output position),
// {prefix}Weights (Int32Array, maxTaps per position) and {prefix}MaxTaps.
cpu::ResampleTaps get_taps(const Napi::Object& o, const std::string& prefix) {
  auto first = get_typed_array<int32_t>(o, (prefix + "First").c_str(), napi_int32_array, "an Int32Array");
  auto count = get_typed_array<int32_t>(o, (prefix + "Count").c_str(), napi_int32_array, "an Int32Array");
  auto weights = get_typed_array<int32_t>(o, (prefix + "Weights").c_str(), napi_int32_array, "an Int32Array");
  const int64_t n = static_cast<int64_t>(first.ElementLength()), max_taps = get_int(o, (prefix + "MaxTaps").c_str());
  RV_CHECK(n >= 1 && static_cast<int64_t>(count.ElementLength()) == n && max_taps >= 1 &&
               static_cast<int64_t>(weights.ElementLength()) >= n * max_taps,
           "ERR_SHAPE", prefix + " taps: " + std::to_string(n) + " positions, " + std::to_string(count.ElementLength()) + " counts, " +
                            std::to_string(weights.ElementLength()) + " weights for " + std::to_string(max_taps) + " taps each");
  return {first.Data(), count.Data(), weights.Data(), n, max_taps};
}

// resampleBilinearRgb({ src, srcOffset, srcStride, regionWidth, rowFirst, rowEnd, h*, v*, out, outOffset, outStride }):
// PIL's bilinear passes (native/cpu/resample.h) from the RGB region at src[srcOffset] into out[outOffset], on the
// calling thread (images.ts calls it on its decoding workers: 0.73 ms per 500x375 photo, taps included). Every index
// is checked here, so wrong taps are an error rather than a read outside the buffers.
Napi::Value ResampleBilinearRgb(const Napi::CallbackInfo& info) {
  try {
    RV_CHECK(info.Length() >= 1 && info[0].IsObject(), "ERR_ARG_TYPE", "Expected an options object");
    const Napi::Object o = info[0].As<Napi::Object>();
    auto src = get_typed_array<uint8_t>(o, "src", napi_uint8_array, "a Uint8Array");
    auto out = get_typed_array<uint8_t>(o, "out", napi_uint8_array, "a Uint8Array");
    const cpu::ResampleTaps horizontal = get_taps(o, "h"), vertical = get_taps(o, "v");
    const int64_t src_offset = get_int(o, "srcOffset"), src_stride = get_int(o, "srcStride"), region_width = get_int(o, "regionWidth");
    const int64_t row_first = get_int(o, "rowFirst"), row_end = get_int(o, "rowEnd");
    const int64_t out_offset = get_int(o, "outOffset"), out_stride = get_int(o, "outStride");
    RV_CHECK(row_first >= 0 && row_end > row_first && region_width >= 1 && src_offset >= 0 && src_stride >= region_width * 3 &&
                 src_offset + (row_end - 1) * src_stride + region_width * 3 <= static_cast<int64_t>(src.ElementLength()),
             "ERR_SHAPE", "resample source rows [" + std::to_string(row_first) + ", " + std::to_string(row_end) + ") of " +
                              std::to_string(region_width) + " pixels do not lie in " + std::to_string(src.ElementLength()) + " bytes");
    RV_CHECK(cpu::resample_taps_fit(horizontal, 0, region_width) && cpu::resample_taps_fit(vertical, row_first, row_end), "ERR_SHAPE",
             "resample taps read outside the source region");
    RV_CHECK(out_offset >= 0 && out_stride >= horizontal.n * 3 &&
                 out_offset + (vertical.n - 1) * out_stride + horizontal.n * 3 <= static_cast<int64_t>(out.ElementLength()),
             "ERR_SHAPE", "resample output of " + std::to_string(vertical.n) + " x " + std::to_string(horizontal.n) +
                              " pixels does not fit " + std::to_string(out.ElementLength()) + " bytes");
    cpu::resample_bilinear_rgb(src.Data() + src_offset, src_stride, horizontal, vertical, row_first, row_end, out.Data() + out_offset,
                               out_stride);
    return info.Env().Undefined();
  } catch (const std::exception& e) {
    throw Napi::Error::New(info.Env(), e.what());
  }
}

// decodeJpeg({ bytes, maxPixels, maxScans? }): libjpeg-turbo's RGB decode of a plain JPEG (native/cpu/jpeg.h) on the
// libuv pool; resolves with { data: Buffer (height, width, 3), width, height }, or { declined: why } for a file that
// images.ts should hand to sharp instead. bytes must start with a JPEG SOI marker; maxScans defaults to 500.
Napi::Value DecodeJpeg(const Napi::CallbackInfo& info) {
  try {
    RV_CHECK(info.Length() >= 1 && info[0].IsObject(), "ERR_ARG_TYPE", "Expected an options object");
    const Napi::Object o = info[0].As<Napi::Object>();
    auto bytes = get_typed_array<uint8_t>(o, "bytes", napi_uint8_array, "a Uint8Array");
    const int64_t max_pixels = get_int(o, "maxPixels");
    RV_CHECK(max_pixels >= 1, "ERR_ARG_VALUE", "maxPixels must be positive, got " + std::to_string(max_pixels));
    const int64_t max_scans = get_field(o, "maxScans").IsUndefined() ? cpu::kMaxJpegScans : get_int(o, "maxScans");
    RV_CHECK(max_scans >= 1 && max_scans <= cpu::kMaxJpegScans, "ERR_ARG_VALUE",
             "maxScans must be from 1 to " + std::to_string(cpu::kMaxJpegScans) + ", got " + std::to_string(max_scans));
    const uint8_t* data = bytes.Data();
    const size_t size = bytes.ElementLength();
    RV_CHECK(size >= 3 && data[0] == 0xFF && data[1] == 0xD8 && data[2] == 0xFF, "ERR_ARG_VALUE", "bytes do not start with a JPEG SOI marker");
    auto decoded = std::make_shared<cpu::JpegDecode>();
    return queue(
        info.Env(), [=] { *decoded = cpu::decode_jpeg_rgb(data, size, max_pixels, static_cast<int>(max_scans)); }, o,
        [decoded](Napi::Env env) -> Napi::Value {
          Napi::Object result = Napi::Object::New(env);
          if (!decoded->decoded) {
            result.Set("declined", Napi::String::New(env, decoded->declined));
            return result;
          }
          auto* pixels = new std::vector<uint8_t>(std::move(decoded->rgb));
          result.Set("data", Napi::Buffer<uint8_t>::New(env, pixels->data(), pixels->size(),
                                                        [](Napi::Env, uint8_t*, std::vector<uint8_t>* owned) { delete owned; }, pixels));
          result.Set("width", Napi::Number::New(env, static_cast<double>(decoded->width)));
          result.Set("height", Napi::Number::New(env, static_cast<double>(decoded->height)));
          return result;
        });
  } catch (const std::exception& e) {
    throw Napi::Error::New(info.Env(), e.what());
  }
}

// setComputeNice(nice): the nice value of the compute thread and its OpenMP team (the TypeScript side checks nice).
Napi::Value SetComputeNice(const Napi::CallbackInfo& info) {
  cpu::set_compute_nice(info[0].As<Napi::Number>().Int32Value());
  return info.Env().Undefined();
}

}  // namespace

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  struct OpEntry {
    const char* name;
    std::function<Work(const Napi::Object&)> parse;
  };
  const OpEntry ops[] = {{"conv2d", parse_conv2d},
                         {"batchNorm", parse_batchnorm},
                         {"relu", parse_eltwise(EltwiseKind::relu)},
                         {"sigmoid", parse_eltwise(EltwiseKind::sigmoid)},
                         {"add", parse_add},
                         {"channelScale", parse_channel_scale},
                         {"globalAvgPool", parse_global_avg_pool},
                         {"linear", parse_linear},
                         {"conv2dBackward", parse_conv2d_backward},
                         {"batchNormTrain", parse_batchnorm_train},
                         {"batchNormBackward", parse_batchnorm_backward},
                         {"batchNormSum", parse_batchnorm_sum},
                         {"batchNormSumBackward", parse_batchnorm_sum_backward},
                         {"reluBackward", parse_eltwise_backward(EltwiseKind::relu)},
                         {"sigmoidBackward", parse_eltwise_backward(EltwiseKind::sigmoid)},
                         {"channelScaleBackward", parse_channel_scale_backward},
                         {"globalAvgPoolBackward", parse_global_avg_pool_backward},
                         {"linearBackward", parse_linear_backward},
                         {"softmaxCrossEntropy", parse_softmax_cross_entropy},
                         {"sgdStep", parse_sgd_step},
                         {"emaUpdate", parse_ema_update},
                         {"customL2", parse_custom_l2},
                         {"retainFreedMemory", parse_retain_freed_memory}};
  for (const OpEntry& op : ops) {
    auto parse = op.parse;
    exports.Set(op.name, Napi::Function::New(env, [parse](const Napi::CallbackInfo& info) { return dispatch(info, true, parse); }));
    exports.Set(std::string(op.name) + "Sync",
                Napi::Function::New(env, [parse](const Napi::CallbackInfo& info) { return dispatch(info, false, parse); }));
  }
  exports.Set("info", Napi::Function::New(env, Info));
  exports.Set("setComputeNice", Napi::Function::New(env, SetComputeNice));
  exports.Set("resampleBilinearRgb", Napi::Function::New(env, ResampleBilinearRgb));
  exports.Set("decodeJpeg", Napi::Function::New(env, DecodeJpeg));
  exports.Set("Program", ProgramWrap::Define(env));
  return exports;
}

}  // namespace repvgg::addon

static Napi::Object InitModule(Napi::Env env, Napi::Object exports) { return repvgg::addon::Init(env, exports); }

NODE_API_MODULE(repvgg_cpu, InitModule)
