// Winograd F(2x2, 3x3) and F(4x4, 3x3) convolution on NHWC float32 (see winograd.h): weights transformed once
// (transform_winograd_weights), then per run an input transform, one batched matmul (oneDNN's; for float32 on
// AVX-512 our f32_gemm.cc, for bfloat16 on AVX512-BF16 our bf16_gemm.cc, ~1.9x oneDNN 2.6's speed there) and an
// output transform with bias and ReLU. The two tile sizes differ only in their transform matrices (F2x2, F4x4 below).
// The transforms work on 16 channels at a time with GCC vector types (one AVX-512 register, or two AVX2 ones:
// RV_SIMD_CLONES compiles them per instruction set), and on single channels for a remainder of fewer than 16.
#include "winograd.h"

#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <exception>
#include <numeric>

#include "../core/check.h"
#include "bf16_gemm.h"
#include "f32_gemm.h"
#include "dnnl_common.h"
#include "primitive_cache.h"
#include "simd.h"

// The vector helpers below must be compiled inside each RV_SIMD_CLONES caller, for its instruction set: called out
// of line they would be baseline x86-64 code, passing 16-float vectors in pieces.
#define RV_INLINE inline __attribute__((always_inline))
// GCC warns that 16-float vectors would be passed differently without AVX-512; always inlined, they are never passed.
#pragma GCC diagnostic ignored "-Wpsabi"

namespace repvgg::cpu {

namespace {

constexpr int64_t kLanes = 16;

typedef float v16 __attribute__((vector_size(kLanes * sizeof(float))));
typedef uint32_t u32x16 __attribute__((vector_size(kLanes * sizeof(uint32_t))));
typedef uint16_t u16x16 __attribute__((vector_size(kLanes * sizeof(uint16_t))));

// A bfloat16 value as stored: the upper 16 bits of a float32.
struct bf16 {
  uint16_t bits;
};

// Loads one value (float) or 16 (v16) from float32 or bfloat16 storage into float32 registers.
RV_INLINE void load(float& v, const float* p) { v = *p; }
RV_INLINE void load(v16& v, const float* p) { std::memcpy(&v, p, sizeof(v)); }
RV_INLINE void load(float& v, const bf16* p) {
  const uint32_t bits = static_cast<uint32_t>(p->bits) << 16;
  std::memcpy(&v, &bits, sizeof(v));
}
RV_INLINE void load(v16& v, const bf16* p) {
  u16x16 half;
  std::memcpy(&half, p, sizeof(half));
  const u32x16 bits = __builtin_convertvector(half, u32x16) << 16;
  std::memcpy(&v, &bits, sizeof(v));
}
template <class V, class T>
RV_INLINE V load(const T* p) {
  V v;
  load(v, p);
  return v;
}

// Stores float32 registers as float32, or as bfloat16 rounded to nearest even (as oneDNN's conversions round; the
// values are finite: the network checks its input).
RV_INLINE void store(float* p, float v) { *p = v; }
RV_INLINE void store(float* p, const v16& v) { std::memcpy(p, &v, sizeof(v)); }
RV_INLINE void store(bf16* p, float v) {
  uint32_t bits;
  std::memcpy(&bits, &v, sizeof(bits));
  p->bits = static_cast<uint16_t>((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16);
}
RV_INLINE void store(bf16* p, const v16& v) {
  u32x16 bits;
  std::memcpy(&bits, &v, sizeof(bits));
  const u16x16 half = __builtin_convertvector((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16, u16x16);
  std::memcpy(p, &half, sizeof(half));
}

// F(4x4, 3x3): 6x6 input tiles, 36 positions (4x fewer multiplications than direct, 4x the weights).
struct F4x4 {
  static constexpr int64_t kTile = 4, kAlpha = 6;
  // B^T d for one column of an input tile: rows of
  //   [4  0 -5  0  1  0]
  //   [0 -4 -4  1  1  0]
  //   [0  4 -4 -1  1  0]
  //   [0 -2 -1  2  1  0]
  //   [0  2 -1 -2  1  0]
  //   [0  4  0 -5  0  1]
  template <class V>
  static RV_INLINE void input_1d(const V d[kAlpha], V r[kAlpha]) {
    const V d2_4 = d[4] - 4.f * d[2], d1_3 = d[3] - 4.f * d[1];
    const V e2_4 = d[4] - d[2], e1_3 = 2.f * (d[3] - d[1]);
    r[0] = 4.f * d[0] - 5.f * d[2] + d[4];
    r[1] = d2_4 + d1_3;
    r[2] = d2_4 - d1_3;
    r[3] = e2_4 + e1_3;
    r[4] = e2_4 - e1_3;
    r[5] = 4.f * d[1] - 5.f * d[3] + d[5];
  }
  // A^T m for one column of a tile's products: rows of
  //   [1  1  1  1  1  0]
  //   [0  1 -1  2 -2  0]
  //   [0  1  1  4  4  0]
  //   [0  1 -1  8 -8  1]
  template <class V>
  static RV_INLINE void output_1d(const V m[kAlpha], V o[kTile]) {
    const V s12 = m[1] + m[2], d12 = m[1] - m[2], s34 = m[3] + m[4], d34 = m[3] - m[4];
    o[0] = m[0] + s12 + s34;
    o[1] = d12 + 2.f * d34;
    o[2] = s12 + 4.f * s34;
    o[3] = d12 + 8.f * d34 + m[5];
  }
  // G, which takes a 3-tap kernel to its 6 positions.
  static constexpr double G[kAlpha][3] = {{1.0 / 4, 0, 0},           {-1.0 / 6, -1.0 / 6, -1.0 / 6}, {-1.0 / 6, 1.0 / 6, -1.0 / 6},
                                          {1.0 / 24, 1.0 / 12, 1.0 / 6}, {1.0 / 24, -1.0 / 12, 1.0 / 6},  {0, 0, 1}};
};

// F(2x2, 3x3): 4x4 input tiles, 16 positions (2.25x fewer multiplications, 1.8x the weights): at batch 1 a whole
// network's F(4x4) weights no longer fit in the caches and the layers wait on memory instead.
struct F2x2 {
  static constexpr int64_t kTile = 2, kAlpha = 4;
  // B^T rows: [1 0 -1 0], [0 1 1 0], [0 -1 1 0], [0 1 0 -1]
  template <class V>
  static RV_INLINE void input_1d(const V d[kAlpha], V r[kAlpha]) {
    r[0] = d[0] - d[2];
    r[1] = d[1] + d[2];
    r[2] = d[2] - d[1];
    r[3] = d[1] - d[3];
  }
  // A^T rows: [1 1 1 0], [0 1 -1 -1]
  template <class V>
  static RV_INLINE void output_1d(const V m[kAlpha], V o[kTile]) {
    o[0] = m[0] + m[1] + m[2];
    o[1] = m[1] - m[2] - m[3];
  }
  // A, the transpose of A^T: takes one column of a tile's 2 output gradients to its 4 positions (weight gradient).
  template <class V>
  static RV_INLINE void output_grad_1d(const V dy[kTile], V u[kAlpha]) {
    u[0] = dy[0];
    u[1] = dy[0] + dy[1];
    u[2] = dy[0] - dy[1];
    u[3] = -dy[1];
  }
  static constexpr double G[kAlpha][3] = {{1, 0, 0}, {0.5, 0.5, 0.5}, {0.5, -0.5, 0.5}, {0, 0, 1}};
};

// A layer's shape, seen from one of its parts (winograd.h, WinogradConv::Part): the part's tiles, from first_tile
// on, have (positions, rows, channels) matrices of their own.
struct Geometry {
  int64_t height, width, pad, in_channels, out_channels, out_h, out_w, tiles_h, tiles_w;
  int64_t first_tile;
  int64_t rows;  // tile rows of each position's matrix: the part's tiles plus the padding of padded_tiles()
};

// The positions' matrices are written and read together, one vector each. At a distance of a multiple of 4 KiB
// they would all fall into the same L1 set and alias in the store buffer (a 14x14x192 layer's 16 x 192 floats are
// exactly 12 KiB), which made the transforms twice as slow. So the matrices get extra (zero) tile rows until one
// matrix spans a number of cache lines whose greatest common divisor with 64 (the L1 sets) is at most 4: the
// positions then spread over at least 16 sets. (Strides padded inside the matmul's memory descriptor instead made
// oneDNN fall back from its brgemm matmul to a slower gemm.)
// in_row_bytes, out_row_bytes: one tile row of the transformed inputs and of the products.
int64_t padded_tiles(int64_t tiles, int64_t in_row_bytes, int64_t out_row_bytes) {
  auto spreads = [](int64_t rows, int64_t row_bytes) {
    return rows * row_bytes % 64 != 0 || std::gcd<int64_t>(rows * row_bytes / 64, 64) <= 4;
  };
  for (int64_t rows = tiles; rows < tiles + 16; rows++)
    if (spreads(rows, in_row_bytes) && spreads(rows, out_row_bytes)) return rows;
  return tiles;
}

// Transforms channels [c0, c0 + lanes of V) of input tile `tile` into transformed[position][tile][c]: B^T d B, first
// along each row (rows outside the image are zeros), then down each column.
template <class F, class V, class In, class Out>
RV_INLINE void input_tile(const Geometry& g, const In* src, Out* transformed, int64_t tile, int64_t c0) {
  const int64_t n = tile / (g.tiles_h * g.tiles_w), t = tile % (g.tiles_h * g.tiles_w);
  const int64_t y0 = (t / g.tiles_w) * F::kTile - g.pad, x0 = (t % g.tiles_w) * F::kTile - g.pad;
  const bool columns_inside = x0 >= 0 && x0 + F::kAlpha <= g.width;
  V rows[F::kAlpha][F::kAlpha];  // rows[i] = (d B)[i], the row transform of input row y0 + i
  for (int64_t i = 0; i < F::kAlpha; i++) {
    const int64_t y = y0 + i;
    if (y < 0 || y >= g.height) {
      for (int64_t j = 0; j < F::kAlpha; j++) rows[i][j] = V{};
      continue;
    }
    const In* row = src + ((n * g.height + y) * g.width + x0) * g.in_channels + c0;
    V d[F::kAlpha];
    if (columns_inside) {
      for (int64_t j = 0; j < F::kAlpha; j++) d[j] = load<V>(row + j * g.in_channels);
    } else {
      for (int64_t j = 0; j < F::kAlpha; j++) d[j] = x0 + j >= 0 && x0 + j < g.width ? load<V>(row + j * g.in_channels) : V{};
    }
    F::input_1d(d, rows[i]);
  }
  for (int64_t j = 0; j < F::kAlpha; j++) {
    V column[F::kAlpha], out[F::kAlpha];
    for (int64_t i = 0; i < F::kAlpha; i++) column[i] = rows[i][j];
    F::input_1d(column, out);
    for (int64_t i = 0; i < F::kAlpha; i++) store(transformed + ((i * F::kAlpha + j) * g.rows + tile - g.first_tile) * g.in_channels + c0, out[i]);
  }
}

// Turns channels [k0, k0 + lanes) of tile `tile`'s products into its outputs (fewer at the edges), with bias and ReLU.
template <class F, class V, class Dst>
RV_INLINE void output_tile(const Geometry& g, const float* products, const float* bias, bool relu, Dst* dst, int64_t tile, int64_t k0) {
  const int64_t n = tile / (g.tiles_h * g.tiles_w), t = tile % (g.tiles_h * g.tiles_w);
  const int64_t y0 = (t / g.tiles_w) * F::kTile, x0 = (t % g.tiles_w) * F::kTile;
  V rows[F::kTile][F::kAlpha];  // rows[r][j] = (A^T m)[r][j]
  for (int64_t j = 0; j < F::kAlpha; j++) {
    V column[F::kAlpha], out[F::kTile];
    for (int64_t i = 0; i < F::kAlpha; i++) column[i] = load<V>(products + ((i * F::kAlpha + j) * g.rows + tile - g.first_tile) * g.out_channels + k0);
    F::output_1d(column, out);
    for (int64_t r = 0; r < F::kTile; r++) rows[r][j] = out[r];
  }
  const V b = load<V>(bias + k0);
  for (int64_t r = 0; r < F::kTile && y0 + r < g.out_h; r++) {
    V out[F::kTile];
    F::output_1d(rows[r], out);
    for (int64_t c = 0; c < F::kTile && x0 + c < g.out_w; c++) {
      V y = out[c] + b;
      if (relu) y = y > 0.f ? y : V{};
      store(dst + ((n * g.out_h + y0 + r) * g.out_w + x0 + c) * g.out_channels + k0, y);
    }
  }
}

// Items [first, last) of tiles x channel groups (16 channels, the last group possibly narrower).
template <class F, class In, class Out>
RV_SIMD_CLONES void input_transform(const Geometry& g, const In* src, Out* transformed, int64_t first, int64_t last) {
  const int64_t groups = (g.in_channels + kLanes - 1) / kLanes;
  for (int64_t item = first; item < last; item++) {
    const int64_t tile = item / groups, c0 = (item % groups) * kLanes;
    if (c0 + kLanes <= g.in_channels) {
      input_tile<F, v16>(g, src, transformed, tile, c0);
    } else {
      for (int64_t c = c0; c < g.in_channels; c++) input_tile<F, float>(g, src, transformed, tile, c);
    }
  }
}

// Tiles [first_tile, last_tile) x output channel groups [first_group, last_group) (16 channels, the last group of the
// layer possibly narrower).
template <class F, class Dst>
RV_SIMD_CLONES void output_transform(const Geometry& g, const float* products, const float* bias, bool relu, Dst* dst, int64_t first_tile,
                                     int64_t last_tile, int64_t first_group, int64_t last_group) {
  for (int64_t tile = first_tile; tile < last_tile; tile++) {
    for (int64_t group = first_group; group < last_group; group++) {
      const int64_t k0 = group * kLanes;
      if (k0 + kLanes <= g.out_channels) {
        output_tile<F, v16>(g, products, bias, relu, dst, tile, k0);
      } else {
        for (int64_t k = k0; k < g.out_channels; k++) output_tile<F, float>(g, products, bias, relu, dst, tile, k);
      }
    }
  }
}

// Transforms channels [k0, k0 + lanes of V) of output-gradient tile `tile` into transformed[position][tile][k]:
// A dY A^T (F2x2::output_grad_1d), first along each row, then down each column; outputs outside the map are zeros.
template <class V>
RV_INLINE void output_grad_tile(const Geometry& g, const float* dy, float* transformed, int64_t tile, int64_t k0) {
  using F = F2x2;
  const int64_t n = tile / (g.tiles_h * g.tiles_w), t = tile % (g.tiles_h * g.tiles_w);
  const int64_t y0 = (t / g.tiles_w) * F::kTile, x0 = (t % g.tiles_w) * F::kTile;
  V rows[F::kTile][F::kAlpha];  // rows[r] = the row transform of output-gradient row y0 + r
  for (int64_t r = 0; r < F::kTile; r++) {
    V d[F::kTile];
    for (int64_t c = 0; c < F::kTile; c++) {
      const bool inside = y0 + r < g.out_h && x0 + c < g.out_w;
      d[c] = inside ? load<V>(dy + ((n * g.out_h + y0 + r) * g.out_w + x0 + c) * g.out_channels + k0) : V{};
    }
    F::output_grad_1d(d, rows[r]);
  }
  for (int64_t j = 0; j < F::kAlpha; j++) {
    const V column[F::kTile] = {rows[0][j], rows[1][j]};
    V out[F::kAlpha];
    F::output_grad_1d(column, out);
    for (int64_t i = 0; i < F::kAlpha; i++) store(transformed + ((i * F::kAlpha + j) * g.rows + tile - g.first_tile) * g.out_channels + k0, out[i]);
  }
}

// Items [first, last) of tiles x output channel groups (16 channels, the last group possibly narrower).
RV_SIMD_CLONES void output_grad_transform(const Geometry& g, const float* dy, float* transformed, int64_t first, int64_t last) {
  const int64_t groups = (g.out_channels + kLanes - 1) / kLanes;
  for (int64_t item = first; item < last; item++) {
    const int64_t tile = item / groups, k0 = (item % groups) * kLanes;
    if (k0 + kLanes <= g.out_channels) {
      output_grad_tile<v16>(g, dy, transformed, tile, k0);
    } else {
      for (int64_t k = k0; k < g.out_channels; k++) output_grad_tile<float>(g, dy, transformed, tile, k);
    }
  }
}

// G g G^T for every (out, in) pair of 3x3 kernels, computed in float64, stored as (positions, in, out) float32.
template <class F>
dnnl::memory transform_weights(const float* weight, int64_t in, int64_t out) {
  constexpr int64_t alpha = F::kAlpha;
  dnnl::memory memory(dnnl::memory::desc({alpha * alpha, in, out}, dt::f32, tag::abc), engine());
  auto* u = static_cast<float*>(memory.get_data_handle());
  for (int64_t k = 0; k < out; k++) {
    for (int64_t c = 0; c < in; c++) {
      const float* g = weight + (k * in + c) * 9;
      double gt[alpha][3];  // G g
      for (int64_t i = 0; i < alpha; i++)
        for (int64_t v = 0; v < 3; v++) gt[i][v] = F::G[i][0] * g[0 * 3 + v] + F::G[i][1] * g[1 * 3 + v] + F::G[i][2] * g[2 * 3 + v];
      for (int64_t i = 0; i < alpha; i++)
        for (int64_t j = 0; j < alpha; j++)
          u[((i * alpha + j) * in + c) * out + k] =
              static_cast<float>(gt[i][0] * F::G[j][0] + gt[i][1] * F::G[j][1] + gt[i][2] * F::G[j][2]);
    }
  }
  return memory;
}

int64_t alpha_of(WinogradTile tile) { return static_cast<int64_t>(tile) + 2; }

// Whether a layer's products run our kernels instead of oneDNN's matmul: bfloat16 ones bf16_pair_gemm (the weights
// then packed in pairs), float32 ones f32_group_gemm (the weights packed in groups of 16 columns).
bool own_matmul_for(dt type, int64_t in, int64_t out) {
  if (type == dt::f32) return f32_group_gemm_available() && f32_group_gemm_fits(out);
  return type == dt::bf16 && bf16_pair_gemm_available() && bf16_pair_gemm_fits(in, out);
}

// Calls fn(F, Act, Out) with the tile (F4x4 or F2x2), activation and output types of a layer, as values.
template <class Fn>
void with_types(const WinogradShape& shape, WinogradTile tile, Fn&& fn) {
  if (shape.src_type == dt::f32 && tile == WinogradTile::f4x4) return fn(F4x4{}, float{}, float{});
  if (shape.src_type == dt::f32) return fn(F2x2{}, float{}, float{});
  if (shape.dst_type == dt::bf16) return fn(F2x2{}, bf16{}, bf16{});
  fn(F2x2{}, bf16{}, float{});
}

// Whether a layer's parts split its output channels rather than its tiles (WinogradConv::run): when each part would
// get at most kColumnSplitMaxTilesPerPart tiles and the columns divide into whole groups of kLanes per part. With
// few tiles per part, every part reading all the weights costs more than the barrier: oneDNN's matmul alone, two
// threads, on a 2-core Zen 3 (avx2), A0 at batch 1: 16 x (49 x 192) x (192 x 192) 0.50 -> 0.47 ms split by columns,
// 36 x (49 x 96) x (96 x 96) 0.36 -> 0.28, 36 x (16 x 192) x (192 x 192) 1.09 -> 0.77; but 16 x (196 x 96) x (96 x 96)
// 0.42 -> 0.44. Whole layers (profile, both ways in one process): stage 2 0.80 -> 0.72 ms, stage 3 0.99 -> 0.89.
// Below AVX-512 only. On a Zen 5 an earlier column split, each thread transforming all tiles itself, was slower than
// the tile split (docs/ARCHITECTURE.md), and so was this one, twice: with oneDNN's matmul, which fell back from
// brgemm to a slower gemm on the strided columns (A0 fp32 at batch 1, interleaved whole forwards in one process,
// 0.87-0.89x), and with our f32_group_gemm, which reads a part's columns contiguously and alone beat its tile split
// (f32_gemm.h), but in the network each thread then reads half of every tile from the other core's cache: the input
// transform a stage-3 layer's products need (the previous layer's outputs, written by channels) took 36-42 us instead
// of 12-20, the output transform 19-22 instead of 6-8, and A0's whole forward 6.33 ms instead of 5.55.
constexpr int64_t kColumnSplitMaxTilesPerPart = 64;
bool split_by_columns(int64_t tiles, int64_t parts, int64_t out) {
  static const bool below_avx512 = !isa_includes(dnnl::cpu_isa::avx512_core);
  return below_avx512 && parts >= 2 && out % (kLanes * parts) == 0 && tiles <= kColumnSplitMaxTilesPerPart * parts;
}

}  // namespace

WinogradWeights transform_winograd_weights(WinogradTile tile, const float* weight, int64_t in, int64_t out, dt type) {
  RV_CHECK(type == dt::f32 || (type == dt::bf16 && tile == WinogradTile::f2x2), "ERR_ARG_VALUE",
           "Winograd weights are float32, or bfloat16 for F(2x2, 3x3)");
  dnnl::memory f32 = tile == WinogradTile::f4x4 ? transform_weights<F4x4>(weight, in, out) : transform_weights<F2x2>(weight, in, out);
  const int64_t positions = alpha_of(tile) * alpha_of(tile);
  if (type == dt::f32 && !own_matmul_for(type, in, out)) return std::make_shared<const dnnl::memory>(f32);
  if (type == dt::f32) {
    dnnl::memory packed(dnnl::memory::desc({positions, out / kF32GemmGroup, in, kF32GemmGroup}, dt::f32, tag::abcd), engine());
    const auto* plain = static_cast<const float*>(f32.get_data_handle());
    auto* groups = static_cast<float*>(packed.get_data_handle());
    for (int64_t position = 0; position < positions; position++)
      pack_f32_groups(plain + position * in * out, in, out, groups + position * in * out);
    return std::make_shared<const dnnl::memory>(packed);
  }
  dnnl::memory rounded(dnnl::memory::desc(f32.get_desc().dims(), dt::bf16, tag::abc), engine());
  dnnl::reorder(f32, rounded).execute(stream(), f32, rounded);
  stream().wait();
  if (!own_matmul_for(type, in, out)) return std::make_shared<const dnnl::memory>(rounded);
  dnnl::memory packed(dnnl::memory::desc({positions, in / 2, out, 2}, dt::bf16, tag::abcd), engine());
  const auto* plain = static_cast<const uint16_t*>(rounded.get_data_handle());
  auto* pairs = static_cast<uint16_t*>(packed.get_data_handle());
  for (int64_t position = 0; position < positions; position++)
    pack_bf16_pairs(plain + position * in * out, in, out, pairs + position * in * out);
  return std::make_shared<const dnnl::memory>(packed);
}

WinogradConv::WinogradConv(const WinogradShape& shape, WinogradTile tile, WinogradWeights weights, const std::vector<float>& bias, bool relu)
    : shape_(shape), tile_(tile), relu_(relu), weights_(std::move(weights)) {
  RV_CHECK(shape.pad == 0 || shape.pad == 1, "ERR_ARG_VALUE", "Winograd conv supports padding 0 or 1, got " + std::to_string(shape.pad));
  RV_CHECK((shape.src_type == dt::f32 && shape.dst_type == dt::f32) ||
               (shape.src_type == dt::bf16 && (shape.dst_type == dt::bf16 || shape.dst_type == dt::f32) && tile == WinogradTile::f2x2),
           "ERR_ARG_VALUE", "Winograd conv runs float32, or bfloat16 (to bfloat16 or float32) with F(2x2, 3x3)");
  out_h_ = shape.height + 2 * shape.pad - 2;
  out_w_ = shape.width + 2 * shape.pad - 2;
  RV_CHECK(out_h_ >= 1 && out_w_ >= 1, "ERR_SHAPE", "Winograd conv input too small");
  const int64_t side = static_cast<int64_t>(tile), positions = alpha_of(tile) * alpha_of(tile);
  tiles_h_ = (out_h_ + side - 1) / side;
  tiles_w_ = (out_w_ + side - 1) / side;
  tiles_ = shape.batch * tiles_h_ * tiles_w_;
  const int64_t in = shape.in_channels, out = shape.out_channels;
  own_matmul_ = own_matmul_for(shape.src_type, in, out);
  const bool f32 = shape.src_type == dt::f32;
  const dnnl::memory::dims weight_dims = !own_matmul_ ? dnnl::memory::dims({positions, in, out})
                                         : f32        ? dnnl::memory::dims({positions, out / kF32GemmGroup, in, kF32GemmGroup})
                                                      : dnnl::memory::dims({positions, in / 2, out, 2});
  RV_CHECK(weights_->get_desc().dims() == weight_dims && weights_->get_desc().data_type() == shape.src_type, "ERR_SHAPE",
           "Winograd conv weights shape or type");
  RV_CHECK(bias.empty() || static_cast<int64_t>(bias.size()) == out, "ERR_SHAPE", "Winograd conv bias size");
  bias_ = bias.empty() ? std::vector<float>(out, 0.f) : bias;
  // One part per thread of the calling thread's OpenMP team, each with tiles, at most as many parts as tiles.
  const int64_t element = shape.src_type == dt::bf16 ? 2 : 4;
  const int64_t part_count = std::clamp<int64_t>(omp_get_max_threads(), 1, tiles_);
  by_columns_ = !own_matmul_ && split_by_columns(tiles_, part_count, out);
  using md_t = dnnl::memory::desc;
  const md_t weights_md({positions, in, out}, shape.src_type, tag::abc);
  const int64_t shared_rows = padded_tiles(tiles_, in * element, out * static_cast<int64_t>(sizeof(float)));
  for (int64_t index = 0; index < part_count; index++) {
    Part part;
    part.transform_first_tile = tiles_ * index / part_count;
    part.transform_tiles = tiles_ * (index + 1) / part_count - part.transform_first_tile;
    if (by_columns_) {
      // All tiles in one shared pair of matrices; columns in whole groups of kLanes (split_by_columns checked).
      part.first_tile = 0;
      part.tiles = tiles_;
      part.rows = shared_rows;
      part.first_column = out * index / part_count;
      part.columns = out * (index + 1) / part_count - part.first_column;
    } else {
      part.first_tile = part.transform_first_tile;
      part.tiles = part.transform_tiles;
      part.rows = padded_tiles(part.tiles, in * element, out * static_cast<int64_t>(sizeof(float)));
      part.first_column = 0;
      part.columns = out;
      part.transformed_offset = transformed_bytes_;
      part.products_offset = products_bytes_;
      // Each part's matrices start on their own cache line, so that no line is written by two threads.
      transformed_bytes_ += (static_cast<size_t>(positions * part.rows * in * element) + 63) / 64 * 64;
      products_bytes_ += (static_cast<size_t>(positions * part.rows * out) * sizeof(float) + 63) / 64 * 64;
    }
    if (!own_matmul_) {
      // (positions, rows, in) x (positions, in, columns) in the activations' type -> (positions, rows, columns)
      // float32, inside matrices of `out` columns. Its own scratchpad and stream: the parts' matmuls run at the same
      // time, one on each thread.
      const md_t src_md({positions, part.rows, in}, shape.src_type, tag::abc);
      const md_t dst_md({positions, part.rows, part.columns}, dt::f32, dnnl::memory::dims{part.rows * out, out, 1});
      const md_t part_weights_md = by_columns_ ? md_t({positions, in, part.columns}, shape.src_type, dnnl::memory::dims{in * out, out, 1}) : weights_md;
      dnnl::primitive_attr attr;
      attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
      const dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(src_md, part_weights_md, dst_md), attr, engine());
      if (index == 0) matmul_implementation_ = pd.impl_info_str();
      part.matmul = dnnl::matmul(pd);
      part.transformed = dnnl::memory(src_md, engine(), nullptr);
      part.products = dnnl::memory(dst_md, engine(), nullptr);
      part.weight_columns = dnnl::memory(part_weights_md, engine(), static_cast<uint8_t*>(weights_->get_data_handle()) + part.first_column * element);
      part.scratchpad = dnnl::memory(pd.scratchpad_desc(), engine());
      part.stream = dnnl::stream(engine());
    }
    parts_.push_back(std::move(part));
  }
  if (by_columns_) {
    transformed_bytes_ = static_cast<size_t>(positions * shared_rows * in * element);
    products_bytes_ = static_cast<size_t>(positions * shared_rows * out) * sizeof(float);
  }
}

std::string WinogradConv::implementation() const {
  const std::string side = std::to_string(static_cast<int>(tile_));
  const std::string own = shape_.src_type == dt::f32 ? "own:avx512" : "own:avx512_bf16";
  return "winograd F(" + side + "x" + side + ",3x3) + matmul " + (own_matmul_ ? own : matmul_implementation_) +
         (by_columns_ ? ", " + std::to_string(parts_.size()) + " parts by output channels" : "");
}

void WinogradConv::run(const void* src, void* dst, void* transformed, float* products) {
  const int64_t part_count = static_cast<int64_t>(parts_.size());
  if (part_count == 1) {
    transform_part_input(parts_[0], src, transformed);
    return finish_part(parts_[0], dst, transformed, products);
  }
  std::exception_ptr error;  // an exception must not leave an OpenMP region: the first one is rethrown after it
  auto keep_first_error = [&] {
#pragma omp critical(repvgg_winograd_error)
    if (!error) error = std::current_exception();
  };
#pragma omp parallel num_threads(part_count)
  {
    // Fewer threads than parts (a team cut short by the OpenMP runtime) take several parts each.
    const int64_t threads = omp_get_num_threads();
    const int64_t thread = omp_get_thread_num();
    if (!by_columns_) {
      try {
        for (int64_t index = thread; index < part_count; index += threads) {
          transform_part_input(parts_[index], src, transformed);
          finish_part(parts_[index], dst, transformed, products);
        }
      } catch (...) {
        keep_first_error();
      }
    } else {
      try {
        for (int64_t index = thread; index < part_count; index += threads) transform_part_input(parts_[index], src, transformed);
      } catch (...) {
        keep_first_error();
      }
#pragma omp barrier  // every tile's transformed input is written (the barrier also makes `error` visible)
      if (!error) {
        try {
          for (int64_t index = thread; index < part_count; index += threads) finish_part(parts_[index], dst, transformed, products);
        } catch (...) {
          keep_first_error();
        }
      }
    }
  }
  if (error) std::rethrow_exception(error);
}

void WinogradConv::transform_part_input(const Part& part, const void* src, void* transformed_scratch) const {
  const Geometry g{shape_.height, shape_.width, shape_.pad, shape_.in_channels, shape_.out_channels, out_h_, out_w_, tiles_h_, tiles_w_,
                   part.first_tile, part.rows};
  const int64_t positions = alpha_of(tile_) * alpha_of(tile_);
  void* transformed = static_cast<uint8_t*>(transformed_scratch) + part.transformed_offset;
  // The padding rows of each position's matrix: zeros, whatever another layer left in the shared scratch (oneDNN's
  // matmul multiplies them; ours reads tile rows only). Split by output channels, the part with the last tiles.
  const size_t row_bytes = static_cast<size_t>(shape_.in_channels * (shape_.src_type == dt::bf16 ? 2 : 4));
  const bool pads = !own_matmul_ && part.rows > part.tiles && part.transform_first_tile + part.transform_tiles == part.first_tile + part.tiles;
  for (int64_t position = 0; position < positions && pads; position++)
    std::memset(static_cast<uint8_t*>(transformed) + (position * part.rows + part.tiles) * row_bytes, 0, (part.rows - part.tiles) * row_bytes);
  const int64_t in_groups = (shape_.in_channels + kLanes - 1) / kLanes;
  with_types(shape_, tile_, [&](auto f, auto act, auto) {
    using F = decltype(f);
    using Act = decltype(act);
    input_transform<F>(g, static_cast<const Act*>(src), static_cast<Act*>(transformed), part.transform_first_tile * in_groups,
                       (part.transform_first_tile + part.transform_tiles) * in_groups);
  });
}

void WinogradConv::finish_part(Part& part, void* dst, void* transformed_scratch, float* products_scratch) {
  const Geometry g{shape_.height, shape_.width, shape_.pad, shape_.in_channels, shape_.out_channels, out_h_, out_w_, tiles_h_, tiles_w_,
                   part.first_tile, part.rows};
  const int64_t positions = alpha_of(tile_) * alpha_of(tile_);
  void* transformed = static_cast<uint8_t*>(transformed_scratch) + part.transformed_offset;
  float* products = reinterpret_cast<float*>(reinterpret_cast<uint8_t*>(products_scratch) + part.products_offset);
  if (own_matmul_) {
    own_matmul(part, transformed, products, positions);
  } else {
    part.transformed.set_data_handle(transformed);
    part.products.set_data_handle(products + part.first_column);
    part.matmul.execute(part.stream, {{DNNL_ARG_SRC, part.transformed},
                                      {DNNL_ARG_WEIGHTS, part.weight_columns},
                                      {DNNL_ARG_DST, part.products},
                                      {DNNL_ARG_SCRATCHPAD, part.scratchpad}});
    part.stream.wait();
  }
  with_types(shape_, tile_, [&](auto f, auto, auto out) {
    using F = decltype(f);
    using Out = decltype(out);
    output_transform<F>(g, products, bias_.data(), relu_, static_cast<Out*>(dst), part.first_tile, part.first_tile + part.tiles,
                        part.first_column / kLanes, (part.first_column + part.columns + kLanes - 1) / kLanes);
  });
}

// A part's products with our kernels. bf16_pair_gemm: (position, 48 columns, 112 rows) blocks in that order, so
// that consecutive blocks share a position's weights. f32_group_gemm: (position, 112 rows) blocks of all columns,
// each block's groups read from L1 by its rows, its rows from L2 by its groups. While they multiply one position,
// they request the next position's weights into the cache (prefetch.h).
void WinogradConv::own_matmul(const Part& part, const void* transformed_scratch, float* products, int64_t positions) const {
  const int64_t in = shape_.in_channels, out = shape_.out_channels;
  constexpr int64_t kChunkRows = 112;
  const bool f32 = shape_.src_type == dt::f32;
  const auto* weight_bytes = static_cast<const char*>(weights_->get_data_handle());
  const int64_t position_bytes = in * out * (f32 ? 4 : 2);
  auto next_position_weights = [&](int64_t position) {
    PrefetchRange range;
    if (position + 1 < positions) range = {weight_bytes + (position + 1) * position_bytes, weight_bytes + (position + 2) * position_bytes};
    return range;
  };
  if (f32) {
    const auto* transformed = static_cast<const float*>(transformed_scratch);
    const auto* weights = static_cast<const float*>(weights_->get_data_handle());  // (positions, out / 16, in, 16)
    for (int64_t position = 0; position < positions; position++) {
      PrefetchRange prefetch = next_position_weights(position);
      for (int64_t m0 = 0; m0 < part.tiles; m0 += kChunkRows) {
        f32_group_gemm(transformed + position * part.rows * in, in, weights + position * in * out, in, out, products + position * part.rows * out,
                       out, m0, std::min(m0 + kChunkRows, part.tiles), prefetch);
      }
    }
    return;
  }
  const auto* transformed = static_cast<const uint16_t*>(transformed_scratch);
  const auto* weights = static_cast<const uint16_t*>(weights_->get_data_handle());  // (positions, in / 2, out, 2) in panels
  for (int64_t position = 0; position < positions; position++) {
    PrefetchRange prefetch = next_position_weights(position);
    for (int64_t n0 = 0; n0 < out; n0 += kBf16GemmColumns) {
      for (int64_t m0 = 0; m0 < part.tiles; m0 += kChunkRows) {
        bf16_pair_gemm(transformed + position * part.rows * in, in, weights + position * in * out, in, out, products + position * part.rows * out,
                       out, m0, std::min(m0 + kChunkRows, part.tiles), n0, prefetch);
      }
    }
  }
}

// The weight gradient's chunks of tiles keep the transformed inputs and output gradients within this.
constexpr int64_t kWeightGradChunkBytes = int64_t{8} << 20;

void winograd_weight_grad(const WinogradShape& shape, const float* x, const float* dy, float* dw) {
  using F = F2x2;
  constexpr int64_t positions = F::kAlpha * F::kAlpha;
  RV_CHECK(shape.pad == 1, "ERR_ARG_VALUE", "Winograd weight gradient: needs pad 1");
  const int64_t in = shape.in_channels, out = shape.out_channels;
  const int64_t out_h = shape.height + 2 * shape.pad - 2, out_w = shape.width + 2 * shape.pad - 2;
  RV_CHECK(out_h >= 1 && out_w >= 1, "ERR_SHAPE", "Winograd weight gradient: input smaller than the kernel");
  const int64_t tiles_h = (out_h + F::kTile - 1) / F::kTile, tiles_w = (out_w + F::kTile - 1) / F::kTile;
  const int64_t tiles = shape.batch * tiles_h * tiles_w;
  const int64_t chunk = std::clamp<int64_t>(kWeightGradChunkBytes / (positions * (in + out) * int64_t{sizeof(float)}), 1, tiles);
  Geometry g{shape.height, shape.width, shape.pad, in, out, out_h, out_w, tiles_h, tiles_w, 0,
             padded_tiles(chunk, in * int64_t{sizeof(float)}, out * int64_t{sizeof(float)})};
  auto* v = static_cast<float*>(scratch(Scratch::src, sizeof(float) * positions * g.rows * in));        // (positions, rows, in)
  auto* u = static_cast<float*>(scratch(Scratch::diff_dst, sizeof(float) * positions * g.rows * out));  // (positions, rows, out)
  auto* m = static_cast<float*>(scratch(Scratch::diff_weights, sizeof(float) * positions * in * out));  // (positions, in, out)
  const int64_t in_groups = (in + kLanes - 1) / kLanes, out_groups = (out + kLanes - 1) / kLanes;
  constexpr int64_t kTilesPerTask = 8;
  for (int64_t first = 0; first < tiles; first += chunk) {
    const int64_t count = std::min(chunk, tiles - first);
    g.first_tile = first;
#pragma omp parallel for schedule(static)
    for (int64_t task = 0; task < (count + kTilesPerTask - 1) / kTilesPerTask; task++) {
      const int64_t t0 = first + task * kTilesPerTask, t1 = std::min(first + count, t0 + kTilesPerTask);
      input_transform<F, float, float>(g, x, v, t0 * in_groups, t1 * in_groups);
      output_grad_transform(g, dy, u, t0 * out_groups, t1 * out_groups);
    }
    // Each position: M += V^T U, (in x count) @ (count x out).
    for (int64_t e = 0; e < positions; e++) {
      const dnnl::status status = dnnl::sgemm('T', 'N', in, out, count, 1.f, v + e * g.rows * in, in, u + e * g.rows * out, out,
                                              first == 0 ? 0.f : 1.f, m + e * in * out, out);
      RV_CHECK(status == dnnl::status::success, "ERR_BACKEND", "Winograd weight gradient: oneDNN sgemm failed");
    }
  }
  // dw[o, c] = G^T M[., c, o] G, the 4x4 positions back to the 3x3 taps: G's entries (0, +-1/2, 1) and sums of four
  // terms keep float32 within a rounding or two of the products.
#pragma omp parallel
  {
    std::vector<float> half(F::kAlpha * 3 * out);  // (i, kw, o): (M G)[i][kw] for one input channel
#pragma omp for schedule(static)
    for (int64_t c = 0; c < in; c++) {
      for (int64_t i = 0; i < F::kAlpha; i++) {
        for (int64_t kw = 0; kw < 3; kw++) {
          float* h = half.data() + (i * 3 + kw) * out;
          std::fill(h, h + out, 0.f);
          for (int64_t j = 0; j < F::kAlpha; j++) {
            const float gj = static_cast<float>(F::G[j][kw]);
            if (gj == 0.f) continue;
            const float* mij = m + ((i * F::kAlpha + j) * in + c) * out;
#pragma omp simd
            for (int64_t o = 0; o < out; o++) h[o] += gj * mij[o];
          }
        }
      }
      for (int64_t o = 0; o < out; o++) {
        for (int64_t kh = 0; kh < 3; kh++) {
          for (int64_t kw = 0; kw < 3; kw++) {
            float sum = 0.f;
            for (int64_t i = 0; i < F::kAlpha; i++) sum += static_cast<float>(F::G[i][kh]) * half[(i * 3 + kw) * out + o];
            dw[((o * in + c) * 3 + kh) * 3 + kw] = sum;
          }
        }
      }
    }
  }
}

}  // namespace repvgg::cpu
