// Our own Winograd convolution, F(2x2, 3x3) or F(4x4, 3x3), for 3x3 stride-1 layers on channels-last (NHWC)
// float32 activations, the deployed RepVGG's layer. Each m x m output tile (m = 2 or 4) needs an (m+2) x (m+2)
// input tile; the input tiles and the weights are transformed into (m+2)^2 "positions", where the convolution
// becomes that many independent matrix products (tiles x in_channels) x (in_channels x out_channels), done by one
// batched oneDNN matmul; an output transform then turns each tile's products into its outputs, adding the bias and
// the ReLU. Per output, F(4x4) needs 36/16 multiply-adds per channel pair instead of 9 (4x fewer), F(2x2) 16/4
// (2.25x fewer), paid for with the two transforms, 4x or 16/9x the weights, and a few more rounding errors (tested
// against the float64 reference).
// Used by program.cc for the layers where measuring shows it beats oneDNN's direct kernel (oneDNN 2.6's own
// Winograd wants nChw16c and large batches, and lost at every RepVGG shape we measured), and by the single-op
// conv2d on request. Transforms follow Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks" (2016),
// with interpolation points 0, +-1 (+-2) and infinity.
// Not for: strided, grouped or non-3x3 convolutions, other layouts, int8.
#pragma once

#include <oneapi/dnnl/dnnl.hpp>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace repvgg::cpu {

struct WinogradShape {
  int64_t batch, in_channels, out_channels, height, width, pad;  // pad on every side: 0 or 1
  // float32 in and out; or bfloat16 in (weights and transformed inputs in bfloat16, products in float32) and
  // bfloat16 or float32 out, with F(2x2, 3x3) only (F(4x4)'s transforms, with coefficients up to 24, would magnify
  // bfloat16's rounding).
  dnnl::memory::data_type src_type = dnnl::memory::data_type::f32, dst_type = dnnl::memory::data_type::f32;
};

// Output tile side: F(2x2, 3x3) on 4x4 input tiles (16 positions) or F(4x4, 3x3) on 6x6 ones (36 positions).
enum class WinogradTile { f2x2 = 2, f4x4 = 4 };

// The transformed weights of a layer, (positions, in, out) plain float32 in memory oneDNN allocated (64-byte
// aligned, for the matmul): 16/9 or 4x the bytes of its 3x3 kernels. bfloat16 ones that bf16_gemm.cc multiplies
// are packed in pairs of input channels instead: (positions, in / 2, out, 2). They do not depend on the batch, so
// every plan of a network shares them.
using WinogradWeights = std::shared_ptr<const dnnl::memory>;
// weight: (out, in, 3, 3) float32; type: the activations' (f32, or bf16 with F(2x2)), transformed in float64 and
// rounded once.
WinogradWeights transform_winograd_weights(WinogradTile tile, const float* weight, int64_t in_channels, int64_t out_channels,
                                           dnnl::memory::data_type type);

class WinogradConv {
 public:
  // bias: out values or empty.
  WinogradConv(const WinogradShape& shape, WinogradTile tile, WinogradWeights weights, const std::vector<float>& bias, bool relu);
  // src: (batch, height, width, in) of src_type; dst: (batch, out_height, out_width, out) of dst_type.
  // transformed_input and products: scratch of at least the sizes below, which the caller may reuse between layers.
  // Runs on the OpenMP team of the calling thread (the compute thread).
  void run(const void* src, void* dst, void* transformed_input, float* products);
  size_t transformed_input_bytes() const;
  size_t products_bytes() const;
  size_t weight_bytes() const { return weights_->get_desc().get_size(); }
  // For reports: the algorithm and the matmul's oneDNN implementation.
  std::string implementation() const;

 private:
  // The products by bf16_gemm.cc (own_matmul_) instead of matmul_: transformed (positions, rows_, in) bf16 ->
  // products (positions, rows_, out) float32, tile rows only.
  void own_matmul(const uint16_t* transformed, float* products, int64_t positions) const;

  WinogradShape shape_;
  WinogradTile tile_;
  int64_t out_h_, out_w_, tiles_h_, tiles_w_, tiles_;
  int64_t rows_;  // tiles plus zero rows that keep the positions' matrices off a 4 KiB distance (winograd.cc)
  bool relu_;
  std::vector<float> bias_;  // out values (zeros when the layer has none)
  WinogradWeights weights_;
  bool own_matmul_ = false;  // bf16 on AVX512-BF16 with suitable channels: bf16_pair_gemm, weights packed in pairs
  dnnl::matmul::primitive_desc matmul_pd_;
  dnnl::matmul matmul_;
  // The matmul's operands: (positions, rows_, in) x (positions, in, out) -> (positions, rows_, out), plain row-major; the two
  // activation-sized ones point into the caller's scratch at each run.
  dnnl::memory transformed_input_, products_;
};

}  // namespace repvgg::cpu
