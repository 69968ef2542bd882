// Parsing the network spec that lib/engine.ts passes to both addons' Program constructors
// ({ inChannels, numBuffers, steps, head }); each addon then reads its own options (precision, ...).
#pragma once

#include <napi.h>

#include "../core/network_spec.h"
#include "args.h"

namespace repvgg::addon {

inline StepSpec parse_step(const Napi::Object& o) {
  const std::string kind = get_string(o, "kind", "");
  StepSpec step;
  if (kind == "conv") {
    step.kind = StepKind::conv;
    auto& c = step.conv;
    c.src = static_cast<int>(get_int(o, "src"));
    c.dst = static_cast<int>(get_int(o, "dst"));
    c.in_channels = get_int(o, "inChannels");
    c.out_channels = get_int(o, "outChannels");
    c.kernel = get_int(o, "kernel");
    c.stride = get_int(o, "stride");
    c.pad = get_int(o, "pad");
    c.groups = get_int(o, "groups");
    c.weight = copy_f32(o, "weight");
    c.bias = copy_optional_f32(o, "bias");
    c.relu = get_bool(o, "relu");
    Napi::Value quant = o.Get("int8");
    if (!quant.IsUndefined()) {
      RV_CHECK(quant.IsObject(), "ERR_ARG_TYPE", "Expected an object { inputScale, weightScales, outputScale } for int8");
      auto q = quant.As<Napi::Object>();
      c.int8 = true;
      c.input_scale = static_cast<float>(get_number(q, "inputScale", 0));
      c.output_scale = static_cast<float>(get_number(q, "outputScale", 0));
      c.weight_scales = copy_f32(q, "weightScales");
    }
  } else if (kind == "batchnorm") {
    step.kind = StepKind::batchnorm;
    auto& b = step.bn;
    b.src = static_cast<int>(get_int(o, "src"));
    b.dst = static_cast<int>(get_int(o, "dst"));
    b.channels = get_int(o, "channels");
    b.eps = static_cast<float>(get_number(o, "eps", 1e-5));
    b.mean = copy_f32(o, "mean");
    b.var = copy_f32(o, "var");
    b.gamma = copy_f32(o, "gamma");
    b.beta = copy_f32(o, "beta");
  } else if (kind == "add") {
    step.kind = StepKind::add;
    step.add = {static_cast<int>(get_int(o, "a")), static_cast<int>(get_int(o, "b")), static_cast<int>(get_int(o, "dst")), get_bool(o, "relu")};
  } else if (kind == "se") {
    step.kind = StepKind::se;
    auto& s = step.se;
    s.buf = static_cast<int>(get_int(o, "buf"));
    s.channels = get_int(o, "channels");
    s.internal = get_int(o, "internal");
    s.down_weight = copy_f32(o, "downWeight");
    s.down_bias = copy_f32(o, "downBias");
    s.up_weight = copy_f32(o, "upWeight");
    s.up_bias = copy_f32(o, "upBias");
    s.relu = get_bool(o, "relu");
  } else {
    throw NativeError("ERR_ARG_VALUE", "unknown step kind '" + kind + "'");
  }
  return step;
}

// Fills the backend-neutral part of a spec from the options object.
inline void parse_network(const Napi::Object& o, NetworkSpec& spec) {
  spec.in_channels = get_int(o, "inChannels");
  spec.num_buffers = static_cast<int>(get_int(o, "numBuffers"));
  Napi::Value steps = o.Get("steps");
  RV_CHECK(steps.IsArray(), "ERR_ARG_TYPE", "Expected an array for steps");
  auto array = steps.As<Napi::Array>();
  for (uint32_t i = 0; i < array.Length(); i++) {
    Napi::Value s = array.Get(i);
    RV_CHECK(s.IsObject(), "ERR_ARG_TYPE", "Expected an object for steps[" + std::to_string(i) + "]");
    spec.steps.push_back(parse_step(s.As<Napi::Object>()));
  }
  Napi::Value head = o.Get("head");
  RV_CHECK(head.IsObject(), "ERR_ARG_TYPE", "Expected an object for head");
  auto h = head.As<Napi::Object>();
  spec.head_src = static_cast<int>(get_int(h, "src"));
  spec.features = get_int(h, "features");
  spec.classes = get_int(h, "classes");
  spec.head_weight = copy_f32(h, "weight");
  spec.head_bias = copy_f32(h, "bias");
}

}  // namespace repvgg::addon
