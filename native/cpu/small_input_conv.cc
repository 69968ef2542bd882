// The first layer's direct convolution (see small_input_conv.h). The kernel is compiled for AVX-512 with target
// pragmas whatever the rest of the addon targets, and is called only when available() says so.
#include "small_input_conv.h"

#include <immintrin.h>

#include <algorithm>

#include "../core/check.h"
#include "../core/ops.h"
#include "dnnl_common.h"

namespace repvgg::cpu {

namespace {

constexpr int64_t kLanes = 16;          // float32 lanes of an AVX-512 vector
constexpr int64_t kMaxChunkVectors = 4;  // output channels per pass over a pixel block: 4 x 16

// What every block of a run needs, in one place.
struct Geometry {
  int64_t in_channels, height, width, kernel, stride, pad;
  int64_t out_channels, padded_out, element_bytes;
  const float* weights;  // (taps, padded_out)
  const float* bias;     // (padded_out)
  bool relu;
  float inverse_scale;
};

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl")
// GCC 12's own AVX-512 header trips -Wmaybe-uninitialized at -O3 (GCC bug 105593).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

// Writes the 16 channels from `channel` of one pixel (fewer at the end of the channels).
template <SmallInputOutput Out>
inline void store(const Geometry& g, __m512 y, uint8_t* pixel, int64_t channel) {
  const int64_t left = g.out_channels - channel;
  if (left <= 0) return;
  const __mmask16 mask = left >= kLanes ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << left) - 1);
  if constexpr (Out == SmallInputOutput::f32) {
    _mm512_mask_storeu_ps(reinterpret_cast<float*>(pixel) + channel, mask, y);
  } else {
    // Saturate in float, then round to nearest even (the default rounding mode) and narrow.
    const __m512 scaled = _mm512_min_ps(_mm512_max_ps(_mm512_mul_ps(y, _mm512_set1_ps(g.inverse_scale)), _mm512_setzero_ps()), _mm512_set1_ps(255.f));
    _mm_mask_storeu_epi8(pixel + channel, mask, _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(scaled)));
  }
}

// Pixels ow0 .. ow0 + Pixels - 1 of output row oh, output channels chunk .. chunk + Vectors * 16 - 1. Checked: some
// of the pixel's taps fall left or right of the input (Pixels is then 1); rows above or below are skipped for all.
// image: this image's (in, height, width) input; pixel: the first pixel's output.
template <int Pixels, int Vectors, SmallInputOutput Out, bool Checked>
void pixel_block(const Geometry& g, const float* image, int64_t oh, int64_t ow0, int64_t chunk, uint8_t* pixel) {
  __m512 sums[Pixels][Vectors];
#pragma GCC unroll 4
  for (int v = 0; v < Vectors; v++) {
    const __m512 bias = _mm512_loadu_ps(g.bias + chunk + v * kLanes);
#pragma GCC unroll 8
    for (int p = 0; p < Pixels; p++) sums[p][v] = bias;
  }
  const int64_t first_iw = ow0 * g.stride - g.pad;
  for (int64_t c = 0; c < g.in_channels; c++) {
    for (int64_t kh = 0; kh < g.kernel; kh++) {
      const int64_t ih = oh * g.stride - g.pad + kh;
      if (ih < 0 || ih >= g.height) continue;  // zero padding above or below
      const float* row = image + (c * g.height + ih) * g.width + first_iw;
      const float* tap_weights = g.weights + ((c * g.kernel + kh) * g.kernel) * g.padded_out + chunk;
      for (int64_t kw = 0; kw < g.kernel; kw++) {
        if (Checked && (first_iw + kw < 0 || first_iw + kw >= g.width)) continue;  // zero padding left or right
        __m512 w[Vectors];
#pragma GCC unroll 4
        for (int v = 0; v < Vectors; v++) w[v] = _mm512_loadu_ps(tap_weights + kw * g.padded_out + v * kLanes);
#pragma GCC unroll 8
        for (int p = 0; p < Pixels; p++) {
          const __m512 x = _mm512_set1_ps(row[p * g.stride + kw]);
#pragma GCC unroll 4
          for (int v = 0; v < Vectors; v++) sums[p][v] = _mm512_fmadd_ps(x, w[v], sums[p][v]);
        }
      }
    }
  }
  const int64_t pixel_bytes = g.out_channels * g.element_bytes;
#pragma GCC unroll 8
  for (int p = 0; p < Pixels; p++) {
#pragma GCC unroll 4
    for (int v = 0; v < Vectors; v++) {
      const __m512 y = g.relu ? _mm512_max_ps(sums[p][v], _mm512_setzero_ps()) : sums[p][v];
      store<Out>(g, y, pixel + p * pixel_bytes, chunk + v * kLanes);
    }
  }
}

// The last `count` (below Count + 1) inside pixels of a row in one block: one pixel alone keeps only Vectors sums in
// flight, fewer than the multiply-adds' latency needs.
template <int Count, int Vectors, SmallInputOutput Out>
void fewer_pixels(const Geometry& g, const float* image, int64_t oh, int64_t ow, int64_t count, int64_t chunk, uint8_t* pixel) {
  if constexpr (Count >= 1) {
    if (count == Count) return pixel_block<Count, Vectors, Out, false>(g, image, oh, ow, chunk, pixel);
    fewer_pixels<Count - 1, Vectors, Out>(g, image, oh, ow, count, chunk, pixel);
  }
}

// One output row for one chunk of output channels: the pixels whose taps all lie inside the input in blocks, the
// ones at the left and right edges one at a time with checks. dst_row: the row's first pixel.
template <int Vectors, SmallInputOutput Out>
void chunk_of_row(const Geometry& g, const float* image, int64_t oh, int64_t out_w, int64_t chunk, uint8_t* dst_row) {
  constexpr int Pixels = Vectors == 4 ? 6 : 8;  // at most 24 registers of sums
  const int64_t pixel_bytes = g.out_channels * g.element_bytes;
  // Inside: ow * stride - pad >= 0 and ow * stride - pad + kernel - 1 <= width - 1.
  const int64_t inside_first = std::min(out_w, (g.pad + g.stride - 1) / g.stride);
  const int64_t last_start = g.width + g.pad - g.kernel;  // the largest ow * stride that stays inside
  const int64_t inside_end = last_start < 0 ? inside_first : std::max(inside_first, std::min(out_w, last_start / g.stride + 1));
  int64_t ow = 0;
  for (; ow < inside_first; ow++) pixel_block<1, Vectors, Out, true>(g, image, oh, ow, chunk, dst_row + ow * pixel_bytes);
  for (; ow + Pixels <= inside_end; ow += Pixels) pixel_block<Pixels, Vectors, Out, false>(g, image, oh, ow, chunk, dst_row + ow * pixel_bytes);
  if (ow < inside_end) fewer_pixels<Pixels - 1, Vectors, Out>(g, image, oh, ow, inside_end - ow, chunk, dst_row + ow * pixel_bytes);
  ow = inside_end;
  for (; ow < out_w; ow++) pixel_block<1, Vectors, Out, true>(g, image, oh, ow, chunk, dst_row + ow * pixel_bytes);
}

template <SmallInputOutput Out>
void output_row(const Geometry& g, const float* image, int64_t oh, int64_t out_w, uint8_t* dst_row) {
  for (int64_t chunk = 0; chunk < g.padded_out; chunk += kMaxChunkVectors * kLanes) {
    switch (std::min(kMaxChunkVectors, (g.padded_out - chunk) / kLanes)) {
      case 1: chunk_of_row<1, Out>(g, image, oh, out_w, chunk, dst_row); break;
      case 2: chunk_of_row<2, Out>(g, image, oh, out_w, chunk, dst_row); break;
      case 3: chunk_of_row<3, Out>(g, image, oh, out_w, chunk, dst_row); break;
      default: chunk_of_row<4, Out>(g, image, oh, out_w, chunk, dst_row); break;
    }
  }
}

__attribute__((noinline)) void run_row(const Geometry& g, SmallInputOutput output, const float* image, int64_t oh, int64_t out_w,
                                       uint8_t* dst_row) {
  switch (output) {
    case SmallInputOutput::f32: return output_row<SmallInputOutput::f32>(g, image, oh, out_w, dst_row);
    case SmallInputOutput::u8: return output_row<SmallInputOutput::u8>(g, image, oh, out_w, dst_row);
  }
}

#pragma GCC diagnostic pop
#pragma GCC pop_options

int64_t element_bytes(SmallInputOutput output) {
  return output == SmallInputOutput::f32 ? 4 : 1;
}

}  // namespace

bool SmallInputConv::available() {
  static const bool available = isa_includes(dnnl::cpu_isa::avx512_core) && __builtin_cpu_supports("avx512f") &&
                                __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
  return available;
}

SmallInputConv::SmallInputConv(const SmallInputConvShape& shape, const std::vector<float>& weight, const std::vector<float>& bias, bool relu,
                               SmallInputOutput output, float output_scale)
    : shape_(shape), relu_(relu), output_(output) {
  const SmallInputConvShape& s = shape_;
  RV_CHECK(s.in_channels >= 1 && s.in_channels <= kMaxInChannels && s.kernel >= 1 && s.stride >= 1 && s.pad >= 0 && s.pad < s.kernel,
           "ERR_ARG_VALUE", "the small-input conv takes 1 to " + std::to_string(kMaxInChannels) + " input channels and pad below the kernel");
  out_h_ = conv_out_size(s.height, s.kernel, s.stride, s.pad);
  out_w_ = conv_out_size(s.width, s.kernel, s.stride, s.pad);
  RV_CHECK(out_h_ >= 1 && out_w_ >= 1, "ERR_SHAPE", "input " + std::to_string(s.height) + "x" + std::to_string(s.width) + " too small for the conv");
  RV_CHECK(static_cast<int64_t>(weight.size()) == s.out_channels * s.in_channels * s.kernel * s.kernel &&
               (bias.empty() || static_cast<int64_t>(bias.size()) == s.out_channels),
           "ERR_SHAPE", "small-input conv weights or bias of the wrong size");
  RV_CHECK(output != SmallInputOutput::u8 || output_scale > 0, "ERR_ARG_VALUE", "a u8 output needs a positive output scale");
  if (output == SmallInputOutput::u8) inverse_scale_ = 1.f / output_scale;
  padded_out_ = (s.out_channels + kLanes - 1) / kLanes * kLanes;
  const int64_t taps = s.in_channels * s.kernel * s.kernel;
  weights_.assign(static_cast<size_t>(taps * padded_out_), 0.f);
  for (int64_t o = 0; o < s.out_channels; o++)
    for (int64_t tap = 0; tap < taps; tap++) weights_[tap * padded_out_ + o] = weight[o * taps + tap];  // (o, c, kh, kw) -> (tap, o)
  bias_.assign(static_cast<size_t>(padded_out_), 0.f);
  if (!bias.empty()) std::copy(bias.begin(), bias.end(), bias_.begin());
}

void SmallInputConv::run(const float* src, void* dst) const {
  const SmallInputConvShape& s = shape_;
  const Geometry g{s.in_channels, s.height, s.width, s.kernel, s.stride, s.pad, s.out_channels, padded_out_, element_bytes(output_),
                   weights_.data(), bias_.data(), relu_, inverse_scale_};
  const int64_t rows = s.batch * out_h_, image_values = s.in_channels * s.height * s.width;
  const int64_t row_bytes = out_w_ * s.out_channels * g.element_bytes;
  auto* out = static_cast<uint8_t*>(dst);
#pragma omp parallel for schedule(static)
  for (int64_t row = 0; row < rows; row++) {
    const int64_t n = row / out_h_, oh = row % out_h_;
    run_row(g, output_, src + n * image_values, oh, out_w_, out + row * row_bytes);
  }
}

}  // namespace repvgg::cpu
