// The backend-neutral description of a network that both addons compile: a flat list of steps (conv, batch
// norm, add, squeeze-excitation) over numbered activation buffers, then global average pooling and a linear
// classifier. lib/engine.ts builds it (deployedProgram / trainProgram); cpu/program.cc and cuda/program.cc run it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "check.h"

namespace repvgg {

struct ConvStepSpec {
  int src = 0, dst = 0;
  int64_t in_channels = 0, out_channels = 0, kernel = 3, stride = 1, pad = 1, groups = 1;
  std::vector<float> weight;  // (out_channels, in_channels / groups, kernel, kernel)
  std::vector<float> bias;    // (out_channels) or empty
  bool relu = false;
  // int8 convolution (CPU int8 programs): the input is read as u8 with x = input_scale * q (it is quantized first
  // when the buffer holds float32), weight holds integers in [-127, 127] with w = weight_scales[oc] * q, s32
  // accumulation; the output is u8 with y = output_scale * q (after ReLU, so never negative), or float32 when
  // output_scale is 0. bias stays in real units.
  bool int8 = false;
  float input_scale = 0, output_scale = 0;
  std::vector<float> weight_scales;  // (out_channels)
};

struct BatchNormStepSpec {
  int src = 0, dst = 0;
  int64_t channels = 0;
  float eps = 1e-5f;
  std::vector<float> mean, var, gamma, beta;  // (channels) each
};

struct AddStepSpec {
  int a = 0, b = 0, dst = 0;  // dst may be a
  bool relu = false;
};

// In place on buf: x = x * sigmoid(up(relu(down(mean_hw(x))))), then ReLU when relu.
struct SeStepSpec {
  int buf = 0;
  int64_t channels = 0, internal = 0;
  std::vector<float> down_weight, down_bias;  // (internal, channels), (internal)
  std::vector<float> up_weight, up_bias;      // (channels, internal), (channels)
  bool relu = false;
};

enum class StepKind { conv, batchnorm, add, se };

struct StepSpec {
  StepKind kind = StepKind::conv;
  ConvStepSpec conv;
  BatchNormStepSpec bn;
  AddStepSpec add;
  SeStepSpec se;
};

// What every backend's ProgramSpec holds; each adds its own options (precision, algorithms, device...).
struct NetworkSpec {
  int64_t in_channels = 3;
  int num_buffers = 2;  // buffer 0 receives the input
  std::vector<StepSpec> steps;
  int head_src = 0;
  int64_t features = 0, classes = 0;
  std::vector<float> head_weight, head_bias;  // (classes, features), (classes)
};

// The quantization parameters of an int8 conv: positive finite scales, integer weights in [-127, 127], an
// output that can be u8 only after a ReLU.
inline void validate_int8_conv(const ConvStepSpec& c) {
  auto positive = [](float v) { return v > 0 && v < 3.0e38f; };
  RV_CHECK(positive(c.input_scale), "ERR_ARG_VALUE", "int8 conv: inputScale must be positive and finite, got " + std::to_string(c.input_scale));
  RV_CHECK(c.output_scale == 0 || (positive(c.output_scale) && c.relu), "ERR_ARG_VALUE",
           "int8 conv: outputScale must be 0 (float32 output) or positive after a ReLU, got " + std::to_string(c.output_scale));
  RV_CHECK(static_cast<int64_t>(c.weight_scales.size()) == c.out_channels, "ERR_SHAPE",
           "int8 conv: weightScales has " + std::to_string(c.weight_scales.size()) + " values for " + std::to_string(c.out_channels) + " output channels");
  for (float s : c.weight_scales) RV_CHECK(positive(s), "ERR_ARG_VALUE", "int8 conv: weight scales must be positive and finite, got " + std::to_string(s));
  for (size_t i = 0; i < c.weight.size(); i++) {
    const float q = c.weight[i];
    RV_CHECK(q >= -127 && q <= 127 && q == static_cast<float>(static_cast<int>(q)), "ERR_ARG_VALUE",
             "int8 conv: weight[" + std::to_string(i) + "] = " + std::to_string(q) + " is not an integer in [-127, 127]");
  }
}

// Checks buffer indices and that every weight's size matches its step; throws NativeError otherwise.
inline void validate_network(const NetworkSpec& spec) {
  RV_CHECK(spec.num_buffers >= 1, "ERR_ARG_VALUE", "a program needs at least one buffer");
  RV_CHECK(spec.in_channels >= 1, "ERR_ARG_VALUE", "inChannels must be positive");
  auto check_buffer = [&](int b, const char* what) {
    RV_CHECK(b >= 0 && b < spec.num_buffers, "ERR_ARG_VALUE",
             std::string(what) + " refers to buffer " + std::to_string(b) + " of " + std::to_string(spec.num_buffers));
  };
  for (const StepSpec& s : spec.steps) {
    switch (s.kind) {
      case StepKind::conv: {
        const ConvStepSpec& c = s.conv;
        check_buffer(c.src, "conv");
        check_buffer(c.dst, "conv");
        RV_CHECK(c.src != c.dst, "ERR_ARG_VALUE", "conv cannot run in place");
        RV_CHECK(c.kernel >= 1 && c.stride >= 1 && c.pad >= 0, "ERR_ARG_VALUE", "conv: bad kernel/stride/pad");
        RV_CHECK(c.groups >= 1 && c.in_channels % c.groups == 0 && c.out_channels % c.groups == 0, "ERR_SHAPE",
                 "conv groups must divide its channels");
        RV_CHECK(static_cast<int64_t>(c.weight.size()) == c.out_channels * c.in_channels / c.groups * c.kernel * c.kernel, "ERR_SHAPE",
                 "conv weight size does not match its shape");
        RV_CHECK(c.bias.empty() || static_cast<int64_t>(c.bias.size()) == c.out_channels, "ERR_SHAPE",
                 "conv bias size does not match its channels");
        if (c.int8) validate_int8_conv(c);
        break;
      }
      case StepKind::batchnorm:
        check_buffer(s.bn.src, "batch norm");
        check_buffer(s.bn.dst, "batch norm");
        RV_CHECK(static_cast<int64_t>(s.bn.mean.size()) == s.bn.channels && s.bn.var.size() == s.bn.mean.size() &&
                     s.bn.gamma.size() == s.bn.mean.size() && s.bn.beta.size() == s.bn.mean.size(),
                 "ERR_SHAPE", "batch norm statistics do not match its channels");
        break;
      case StepKind::add:
        check_buffer(s.add.a, "add");
        check_buffer(s.add.b, "add");
        check_buffer(s.add.dst, "add");
        break;
      case StepKind::se:
        check_buffer(s.se.buf, "squeeze-excitation");
        RV_CHECK(s.se.internal >= 1 && static_cast<int64_t>(s.se.down_weight.size()) == s.se.internal * s.se.channels &&
                     static_cast<int64_t>(s.se.up_weight.size()) == s.se.internal * s.se.channels &&
                     static_cast<int64_t>(s.se.down_bias.size()) == s.se.internal &&
                     static_cast<int64_t>(s.se.up_bias.size()) == s.se.channels,
                 "ERR_SHAPE", "squeeze-excitation weights do not match its channels");
        break;
    }
  }
  check_buffer(spec.head_src, "classifier");
  RV_CHECK(spec.classes >= 1 && spec.features >= 1, "ERR_ARG_VALUE", "the classifier needs positive features and classes");
  RV_CHECK(static_cast<int64_t>(spec.head_weight.size()) == spec.classes * spec.features &&
               static_cast<int64_t>(spec.head_bias.size()) == spec.classes,
           "ERR_SHAPE", "classifier weights do not match features x classes");
}

}  // namespace repvgg
