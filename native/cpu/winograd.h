// Our own Winograd convolution, F(2x2, 3x3) or F(4x4, 3x3), for 3x3 stride-1 layers on channels-last (NHWC)
// float32 activations, the deployed RepVGG's layer. Each m x m output tile (m = 2 or 4) needs an (m+2) x (m+2)
// input tile; the input tiles and the weights are transformed into (m+2)^2 "positions", where the convolution
// becomes that many independent matrix products (tiles x in_channels) x (in_channels x out_channels), done by a
// batched matmul; an output transform then turns each tile's products into its outputs, adding the bias and the
// ReLU. Each thread runs all three steps for its own part of the tiles (see run()). Per output, F(4x4) needs 36/16
// multiply-adds per channel pair instead of 9 (4x fewer), F(2x2) 16/4 (2.25x fewer), paid for with the two
// transforms, 4x or 16/9x the weights, and a few more rounding errors (tested against the float64 reference).
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
// aligned, for the matmul): 16/9 or 4x the bytes of its 3x3 kernels. Those our kernels multiply are packed instead:
// float32 for f32_gemm.cc in groups of 16 output channels (pack_f32_groups, f32_gemm.h), (positions, out / 16, in,
// 16); bfloat16 for bf16_gemm.cc in pairs of input channels and column panels (pack_bf16_pairs, bf16_gemm.h), the
// size of (positions, in / 2, out, 2). They do not depend on the batch, so every plan of a network shares them.
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
  // Runs on the OpenMP team of the calling thread (the compute thread), one part per thread, split in one of two
  // ways. By tiles: each thread one part of the tiles, from its input transform through its own matmul to its
  // outputs, with no barrier in between; only the rows at a part's edge were written by another thread (the previous
  // layer's outputs). By output channels, where a layer has few tiles for its weights (batch 1, small maps): each
  // thread transforms a part of the tiles into one shared matrix, and after a barrier multiplies all tiles by its
  // share of the weights' columns and writes those output channels, so each thread reads only its share of the
  // weights and multiplies taller matrices (see split_by_columns in winograd.cc).
  void run(const void* src, void* dst, void* transformed_input, float* products);
  size_t transformed_input_bytes() const { return transformed_bytes_; }
  size_t products_bytes() const { return products_bytes_; }
  size_t weight_bytes() const { return weights_->get_desc().get_size(); }
  // For reports: the algorithm and the matmul's oneDNN implementation.
  std::string implementation() const;

 private:
  // One thread's share of a run. Split by tiles: tiles [first_tile, first_tile + tiles), whose transformed inputs
  // and products are (positions, rows, in) and (positions, rows, out) matrices of their own at the byte offsets in
  // the scratch, so the matmul of a part reads only what its own thread wrote, and the parts' matrices share no cache
  // line; all output channels. Split by output channels: the matrices of all tiles, shared (offsets 0), the input
  // transform of tiles [transform_first_tile, + transform_tiles), and output channels [first_column, + columns).
  struct Part {
    int64_t first_tile = 0, tiles = 0;
    int64_t rows = 0;  // tiles plus zero rows that keep the positions' matrices off a 4 KiB distance (winograd.cc)
    int64_t transform_first_tile = 0, transform_tiles = 0;
    int64_t first_column = 0, columns = 0;
    size_t transformed_offset = 0, products_offset = 0;
    // The part's oneDNN matmul (none with own_matmul_), its operands (pointed into the caller's scratch at each
    // run), scratchpad and stream: the parts' matmuls run at the same time, each on one thread.
    dnnl::matmul matmul;
    dnnl::memory transformed, products, scratchpad;
    dnnl::memory weight_columns;  // split by output channels: the part's columns of the weights (strided)
    dnnl::stream stream;
  };
  // A part's input transform (and the zero padding rows of its matrices), and its matmul and output transform.
  void transform_part_input(const Part& part, const void* src, void* transformed_scratch) const;
  void finish_part(Part& part, void* dst, void* transformed_scratch, float* products_scratch);
  // The products by f32_gemm.cc or bf16_gemm.cc (own_matmul_) instead of a oneDNN matmul: a part's transformed
  // (positions, rows, in) float32 or bf16 -> products (positions, rows, out) float32, tile rows and the part's columns only.
  void own_matmul(const Part& part, const void* transformed, float* products, int64_t positions) const;

  WinogradShape shape_;
  WinogradTile tile_;
  int64_t out_h_, out_w_, tiles_h_, tiles_w_, tiles_;
  bool relu_;
  std::vector<float> bias_;  // out values (zeros when the layer has none)
  WinogradWeights weights_;
  bool own_matmul_ = false;  // float32 on AVX-512 or bf16 on AVX512-BF16, suitable channels: our kernels, packed weights
  bool by_columns_ = false;  // parts split the output channels (run())
  std::vector<Part> parts_;
  size_t transformed_bytes_ = 0, products_bytes_ = 0;  // all parts' matrices
  std::string matmul_implementation_;                 // oneDNN's, for reports
};

// The weight gradient of a 3x3 stride-1 pad-1 conv (groups 1) by Winograd F(3x3, 2x2), the transpose of
// F(2x2, 3x3) (Lavin & Gray): dw[o, c] = G^T (sum over tiles of (A dY A^T) * (B^T d B)) G, where each 2x2 tile of
// output gradients dY meets the 4x4 input tile d it was computed from; the sum over tiles is 16 matrix products
// (in x tiles) @ (tiles x out), oneDNN's sgemm, in chunks of tiles. 2.25x fewer multiply-adds than im2col's dw.
// x: (batch, height, width, in) float32; dy: (batch, out_h, out_w, out); dw: (out, in, 3, 3). Runs on the calling
// thread's OpenMP team, in the single ops' scratch slots (primitive_cache.h: src, diff_dst and diff_weights).
void winograd_weight_grad(const WinogradShape& shape, const float* x, const float* dy, float* dw);

}  // namespace repvgg::cpu
