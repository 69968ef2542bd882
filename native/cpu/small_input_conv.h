// Our own direct convolution for the first layer of an int8 network, whose input has few channels (RGB images: 3):
// it reads the plain NCHW float32 input as the caller gives it and writes channels-last (NHWC) float32 or, for the
// int8 layer after it, u8, with the bias, the ReLU and the quantization fused. Why not oneDNN's: its float32 kernels
// cannot write u8, so an int8 network paid a separate quantizing pass over the first layer's output (RepVGG-A0: 48
// x 112 x 112 values, 0.08 ms of a 2.6 ms forward at batch 1 on a 2-core Zen 5), and with 3 input channels they
// want the input reordered first. (Where no quantizing is saved, float32 and bf16 networks, ours only ties oneDNN's:
// program.cc, runs_small_input_conv.) Each output pixel's in*k*k taps are broadcast from the input rows and
// multiplied into vectors of 16 output channels; a block of pixels x vectors of sums stays in registers. Runs on the
// calling thread's OpenMP team, output rows split between the threads.
// Not for: more than kMaxInChannels input channels, groups, CPUs below AVX-512 (available()).
#pragma once

#include <cstdint>
#include <vector>

namespace repvgg::cpu {

struct SmallInputConvShape {
  int64_t batch, in_channels, height, width, out_channels, kernel, stride, pad;
};

// What the conv writes: float32, or u8 = round(y / output_scale) saturated to [0, 255] (rounded to nearest even, as
// oneDNN's quantizing reorder does).
enum class SmallInputOutput { f32, u8 };

class SmallInputConv {
 public:
  static constexpr int64_t kMaxInChannels = 4;
  // AVX-512 (F, BW, VL) on this CPU, and oneDNN allowed to use it (DNNL_MAX_CPU_ISA).
  static bool available();

  // weight: (out, in, kernel, kernel); bias: out values or empty; output_scale: u8 only, positive.
  SmallInputConv(const SmallInputConvShape& shape, const std::vector<float>& weight, const std::vector<float>& bias, bool relu,
                 SmallInputOutput output, float output_scale);
  // src: (batch, in, height, width) float32; dst: (batch, out_h, out_w, out) of the output type.
  void run(const float* src, void* dst) const;

  const SmallInputConvShape& shape() const { return shape_; }

 private:
  SmallInputConvShape shape_;
  int64_t out_h_, out_w_;
  int64_t padded_out_;           // out_channels rounded up to whole vectors of 16
  std::vector<float> weights_;   // (in * kernel * kernel taps, padded_out_): one row of output channels per tap
  std::vector<float> bias_;      // padded_out_ values, zeros past out_channels
  bool relu_;
  SmallInputOutput output_;
  float inverse_scale_ = 1.f;    // u8: 1 / output_scale
};

}  // namespace repvgg::cpu
