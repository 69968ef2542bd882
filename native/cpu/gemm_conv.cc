// Convolutions as matrix products (oneDNN's sgemm) on NHWC activations, for the single ops (training), where
// oneDNN 2.6's direct kernels are slow: on tiny planes everywhere, and through these ops on AVX2 in general.
//
// The plane GEMM. When every output position of a convolution sees every input position
// (conv_links_every_position: RepVGG's 3x3 convs on 2x2 planes, which its last two stages are on 32x32 images, and
// the stride-2 conv from 2x2 to 1x1), the conv is a dense linear map from an image's P = H*W input positions times C
// channels to its Q = OH*OW output positions times O channels. With the NHWC rows of a batch as matrices X (N x P*C)
// and Y (N x Q*O) and the "transfer matrix"
//   T[p*C + c, q*O + o] = w[o, c, kh, kw],  (kh, kw) = the kernel tap that links input position p to output q,
// the three passes are single GEMMs:
//   forward       Y  = X @ T (+ bias, ReLU)
//   input grad    dX = dY @ T^T
//   weight grad   dT = X^T @ dY, and dw[o, c, kh, kw] = the sum of dT's (p, q) blocks linked by tap (kh, kw).
// The multiply-adds are exactly the direct convolution's without its zero padding. oneDNN 2.6 does such shapes
// badly: its direct kernels run at a fraction of their speed on 2x2 planes, and its weight gradient falls back
// to im2col + GEMM image by image. On a 2-core Zen 3 at batch 128, 192 -> 1280 channels from 2x2 to 1x1 took
// 16 / 12 / 58-86 ms (forward / input grad / weight grad) there against about 2 ms each as one GEMM.
// T is rebuilt on every call (weights change every training step) from the weights reordered to HWIO, where each of
// its blocks is a contiguous (C x O) slice; it and the weight-gradient blocks live in the ops' scratch slots.
//
// im2col + GEMM, for any kernel, stride and pad. The column matrix of a chunk of images has one row per output
// position (n, oy, ox) holding the K*K*C inputs its kernel window sees (zeros in the padding), in the HWIO weights'
// row order (kh, kw, c); with Wt the weights as a (K*K*C x O) matrix (HWIO):
//   forward       Y rows  = col @ Wt (+ bias, ReLU)        (Y's NHWC rows are its output positions)
//   input grad    dcol    = dY rows @ Wt^T, then each input position gathers the dcol entries of its windows
//   weight grad   dWt    += col^T @ dY rows, chunk after chunk
// Chunks of images keep the column matrix within kIm2colChunkBytes. Through the single ops on AVX2 this beat oneDNN's
// direct kernels on every 3x3 conv measured (1.07x to 2.3x for a conv's three passes; lib/ops/conv.ts,
// autoReplacesDirectKernelsOnThisCpu, has the numbers and the rule for 'auto').
#include "gemm_conv.h"

#include <algorithm>
#include <cstring>

#include "dnnl_common.h"
#include "primitive_cache.h"

namespace repvgg::cpu {

namespace {

// The geometry of a conv run as matrix products.
struct GemmConv {
  int64_t batch, in_channels, height, width, out_channels, kernel, stride, pad;

  int64_t out_height() const { return conv_out_size(height, kernel, stride, pad); }
  int64_t out_width() const { return conv_out_size(width, kernel, stride, pad); }
  int64_t in_row() const { return height * width * in_channels; }                 // P*C: one image of x
  int64_t out_row() const { return out_height() * out_width() * out_channels; }   // Q*O: one image of y
  int64_t col_width() const { return kernel * kernel * in_channels; }             // K*K*C: one row of im2col's matrix
  dims weight_dims() const { return {out_channels, in_channels, kernel, kernel}; }
  std::string key() const {
    return std::to_string(in_channels) + "," + std::to_string(out_channels) + "," + std::to_string(kernel);
  }
};

// The geometry of a single op's conv (Conv2dParams or Conv2dBackwardParams) or of an Im2colConv::Shape.
template <class Params>
GemmConv geometry_of(const Params& p) {
  return {p.batch, p.in_channels, p.height, p.width, p.out_channels, p.kernel, p.stride, p.pad};
}

// An input position p linked to an output position q by kernel tap (kh, kw) = tap / kernel, tap % kernel.
struct Link {
  int64_t p, q, tap;
};

// Every link of the conv: each output position q with each kernel tap that falls inside the input plane.
std::vector<Link> links_of(const GemmConv& c) {
  std::vector<Link> links;
  const int64_t ow = c.out_width();
  for (int64_t oy = 0; oy < c.out_height(); oy++) {
    for (int64_t ox = 0; ox < ow; ox++) {
      for (int64_t kh = 0; kh < c.kernel; kh++) {
        for (int64_t kw = 0; kw < c.kernel; kw++) {
          const int64_t iy = oy * c.stride - c.pad + kh, ix = ox * c.stride - c.pad + kw;
          if (iy >= 0 && iy < c.height && ix >= 0 && ix < c.width) links.push_back({iy * c.width + ix, oy * ow + ox, kh * c.kernel + kw});
        }
      }
    }
  }
  return links;
}

void check_plane_geometry(const GemmConv& c, int64_t groups, bool src_channels_last, bool dst_channels_last) {
  const bool dense = conv_links_every_position(c.height, c.kernel, c.stride, c.pad) &&
                     conv_links_every_position(c.width, c.kernel, c.stride, c.pad);
  RV_CHECK(groups == 1 && src_channels_last && dst_channels_last && dense && c.in_row() * c.out_row() <= kMaxPlaneGemmElements,
           "ERR_ARG_VALUE",
           "plane GEMM conv: needs groups 1, NHWC activations, outputs that see the whole input plane and a matrix of at most " +
               std::to_string(kMaxPlaneGemmElements) + " elements");
}

// C = op(A) @ op(B) + beta C with row-major matrices (oneDNN's sgemm, OpenMP-parallel).
void gemm(char trans_a, char trans_b, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b, int64_t ldb,
          float* c, int64_t ldc, float beta = 0.f) {
  const dnnl::status status = dnnl::sgemm(trans_a, trans_b, m, n, k, 1.f, a, lda, b, ldb, beta, c, ldc);
  RV_CHECK(status == dnnl::status::success, "ERR_BACKEND", "GEMM conv: oneDNN sgemm failed with status " + std::to_string(static_cast<int>(status)));
}

// Reorders weights between OIHW (the caller's) and HWIO (taps, then C x O blocks) with a cached oneDNN reorder.
void reorder_weights(const GemmConv& c, const float* from, bool from_oihw, float* to) {
  const dnnl::memory::desc oihw = plain_f32(c.weight_dims()), hwio(c.weight_dims(), dt::f32, tag::hwio);
  const dnnl::memory::desc& src = from_oihw ? oihw : hwio;
  const dnnl::memory::desc& dst = from_oihw ? hwio : oihw;
  auto reorder = cached_primitive(std::string("gemm_conv:") + (from_oihw ? "to_hwio:" : "to_oihw:") + c.key(), [&] {
    return dnnl::primitive(dnnl::reorder(dnnl::reorder::primitive_desc(engine(), src, engine(), dst)));
  });
  reorder.execute(stream(), {{DNNL_ARG_FROM, dnnl::memory(src, engine(), const_cast<float*>(from))}, {DNNL_ARG_TO, dnnl::memory(dst, engine(), to)}});
  stream().wait();
}

// The transfer matrix T (P*C x Q*O, in Scratch::src) of weights w (OIHW); every block is linked (a dense conv).
const float* transfer_matrix(const GemmConv& c, const std::vector<Link>& links, const float* w) {
  const int64_t channels_out = c.out_channels, row = c.out_row();
  float* hwio = static_cast<float*>(scratch(Scratch::weights, sizeof(float) * c.out_channels * c.in_channels * c.kernel * c.kernel));
  reorder_weights(c, w, true, hwio);
  float* t = static_cast<float*>(scratch(Scratch::src, sizeof(float) * c.in_row() * row));
#pragma omp parallel for schedule(static)
  for (int64_t ic = 0; ic < c.in_channels; ic++) {
    for (const Link& l : links) {
      std::memcpy(t + (l.p * c.in_channels + ic) * row + l.q * channels_out, hwio + (l.tap * c.in_channels + ic) * channels_out,
                  sizeof(float) * channels_out);
    }
  }
  return t;
}

// y (pixels x channels) += bias (when not null), then ReLU (when relu).
void add_bias_relu(float* y, int64_t pixels, int64_t channels, const float* bias, bool relu) {
  if (bias == nullptr && !relu) return;
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < pixels; i++) {
    float* out = y + i * channels;
    for (int64_t o = 0; o < channels; o++) {
      const float v = bias != nullptr ? out[o] + bias[o] : out[o];
      out[o] = !relu || v > 0.f ? v : v * 0.f;  // as oneDNN's ReLU post-op: NaN stays NaN
    }
  }
}

// y (NHWC) += bias, then ReLU, as p asks.
void add_bias_relu(const Conv2dParams& p, const GemmConv& c, const float* bias, float* y) {
  add_bias_relu(y, c.batch * c.out_height() * c.out_width(), c.out_channels, p.has_bias ? bias : nullptr, p.relu);
}

// ---- im2col + GEMM ----

// The column matrix of one chunk of images stays within this, or holds one image where that alone is larger.
constexpr int64_t kIm2colChunkBytes = int64_t{8} << 20;

void check_im2col_geometry(const GemmConv& c, int64_t groups, bool src_channels_last, bool dst_channels_last) {
  RV_CHECK(c.out_height() >= 1 && c.out_width() >= 1 && c.in_channels >= 1, "ERR_SHAPE", "im2col GEMM conv: input too small for the kernel");
  const int64_t image_elements = c.out_height() * c.out_width() * c.col_width();
  RV_CHECK(groups == 1 && src_channels_last && dst_channels_last && image_elements <= kMaxIm2colImageElements, "ERR_ARG_VALUE",
           "im2col GEMM conv: needs groups 1, NHWC activations and at most " + std::to_string(kMaxIm2colImageElements) +
               " column-matrix elements per image");
}

// Images per chunk: as many as keep the chunk's column matrix within kIm2colChunkBytes, at least one.
int64_t im2col_chunk_images(const GemmConv& c) {
  const int64_t image_bytes = static_cast<int64_t>(sizeof(float)) * c.out_height() * c.out_width() * c.col_width();
  return std::clamp<int64_t>(kIm2colChunkBytes / image_bytes, 1, c.batch);
}

// The column matrix of images [first, first + images) of x (NHWC): row (n - first, oy, ox), columns (kh, kw, c).
void im2col(const GemmConv& c, const float* x, int64_t first, int64_t images, float* col) {
  const int64_t oh = c.out_height(), ow = c.out_width(), width = c.col_width(), channels = c.in_channels;
#pragma omp parallel for schedule(static)
  for (int64_t row = 0; row < images * oh * ow; row++) {
    const int64_t n = first + row / (oh * ow), oy = row / ow % oh, ox = row % ow;
    for (int64_t kh = 0; kh < c.kernel; kh++) {
      for (int64_t kw = 0; kw < c.kernel; kw++) {
        const int64_t iy = oy * c.stride - c.pad + kh, ix = ox * c.stride - c.pad + kw;
        float* to = col + row * width + (kh * c.kernel + kw) * channels;
        if (iy < 0 || iy >= c.height || ix < 0 || ix >= c.width) {
          std::memset(to, 0, sizeof(float) * channels);
        } else {
          std::memcpy(to, x + ((n * c.height + iy) * c.width + ix) * channels, sizeof(float) * channels);
        }
      }
    }
  }
}

// dx of images [first, first + images) (NHWC) from their column-matrix gradient dcol: each input row (n, iy) is
// zeroed and then sums, in (kh, ox, kw) order, the dcol entries of the windows that contain it. Every (n, iy) is
// written by one iteration alone, so the rows run in parallel.
void col2im(const GemmConv& c, const float* dcol, int64_t first, int64_t images, float* dx) {
  const int64_t oh = c.out_height(), ow = c.out_width(), width = c.col_width(), channels = c.in_channels;
#pragma omp parallel for schedule(static)
  for (int64_t image_row = 0; image_row < images * c.height; image_row++) {
    const int64_t i = image_row / c.height, iy = image_row % c.height;
    float* dx_row = dx + ((first + i) * c.height + iy) * c.width * channels;
    std::memset(dx_row, 0, sizeof(float) * c.width * channels);
    for (int64_t kh = 0; kh < c.kernel; kh++) {
      const int64_t oy_stride = iy + c.pad - kh;  // oy * stride for the windows whose tap row kh is iy
      if (oy_stride < 0 || oy_stride % c.stride != 0 || oy_stride / c.stride >= oh) continue;
      const int64_t oy = oy_stride / c.stride;
      for (int64_t ox = 0; ox < ow; ox++) {
        const float* window = dcol + ((i * oh + oy) * ow + ox) * width;
        for (int64_t kw = 0; kw < c.kernel; kw++) {
          const int64_t ix = ox * c.stride - c.pad + kw;
          if (ix < 0 || ix >= c.width) continue;
          float* to = dx_row + ix * channels;
          const float* from = window + (kh * c.kernel + kw) * channels;
          for (int64_t ch = 0; ch < channels; ch++) to[ch] += from[ch];
        }
      }
    }
  }
}

}  // namespace

void plane_gemm_forward(const Conv2dParams& p, const float* x, const float* w, const float* bias, float* y) {
  const GemmConv c = geometry_of(p);
  check_plane_geometry(c, p.groups, p.src_channels_last, p.dst_channels_last);
  wrap_dnnl("conv2d", [&] {
    const float* t = transfer_matrix(c, links_of(c), w);
    gemm('N', 'N', c.batch, c.out_row(), c.in_row(), x, c.in_row(), t, c.out_row(), y, c.out_row());
    add_bias_relu(p, c, bias, y);
  });
}

void plane_gemm_backward(const Conv2dBackwardParams& p, const float* x, const float* w, const float* dy, float* dx, float* dw) {
  const GemmConv c = geometry_of(p);
  check_plane_geometry(c, p.groups, p.src_channels_last, p.dst_channels_last);
  const std::vector<Link> links = links_of(c);
  const int64_t in_row = c.in_row(), out_row = c.out_row(), channels_out = c.out_channels;
  wrap_dnnl("conv2d_backward", [&] {
    if (p.need_input_grad) {
      const float* t = transfer_matrix(c, links, w);
      gemm('N', 'T', c.batch, in_row, out_row, dy, out_row, t, out_row, dx, in_row);
    }
    float* dt = static_cast<float*>(scratch(Scratch::src, sizeof(float) * in_row * out_row));
    gemm('T', 'N', in_row, out_row, c.batch, x, in_row, dy, out_row, dt, out_row);
    // dw in HWIO: each tap's (C x O) block is the sum of the dT blocks it links, added in the order of `links`.
    const int64_t taps = c.kernel * c.kernel;
    float* dw_hwio = static_cast<float*>(scratch(Scratch::diff_weights, sizeof(float) * taps * c.in_channels * channels_out));
#pragma omp parallel for schedule(static)
    for (int64_t ic = 0; ic < c.in_channels; ic++) {
      for (int64_t tap = 0; tap < taps; tap++) std::memset(dw_hwio + (tap * c.in_channels + ic) * channels_out, 0, sizeof(float) * channels_out);
      for (const Link& l : links) {
        float* to = dw_hwio + (l.tap * c.in_channels + ic) * channels_out;
        const float* from = dt + (l.p * c.in_channels + ic) * out_row + l.q * channels_out;
        for (int64_t o = 0; o < channels_out; o++) to[o] += from[o];
      }
    }
    reorder_weights(c, dw_hwio, false, dw);
  });
}

void im2col_gemm_forward(const Conv2dParams& p, const float* x, const float* w, const float* bias, float* y) {
  const GemmConv c = geometry_of(p);
  check_im2col_geometry(c, p.groups, p.src_channels_last, p.dst_channels_last);
  const int64_t chunk = im2col_chunk_images(c), positions = c.out_height() * c.out_width(), width = c.col_width();
  wrap_dnnl("conv2d", [&] {
    float* hwio = static_cast<float*>(scratch(Scratch::weights, sizeof(float) * width * c.out_channels));  // Wt: (K*K*C, O)
    reorder_weights(c, w, true, hwio);
    float* col = static_cast<float*>(scratch(Scratch::src, sizeof(float) * chunk * positions * width));
    for (int64_t first = 0; first < c.batch; first += chunk) {
      const int64_t images = std::min(chunk, c.batch - first);
      im2col(c, x, first, images, col);
      gemm('N', 'N', images * positions, c.out_channels, width, col, width, hwio, c.out_channels, y + first * c.out_row(), c.out_channels);
    }
    add_bias_relu(p, c, bias, y);
  });
}

void im2col_gemm_backward(const Conv2dBackwardParams& p, const float* x, const float* w, const float* dy, float* dx, float* dw) {
  const GemmConv c = geometry_of(p);
  check_im2col_geometry(c, p.groups, p.src_channels_last, p.dst_channels_last);
  const int64_t chunk = im2col_chunk_images(c), positions = c.out_height() * c.out_width(), width = c.col_width();
  const int64_t channels_out = c.out_channels;
  wrap_dnnl("conv2d_backward", [&] {
    float* col = static_cast<float*>(scratch(Scratch::src, sizeof(float) * chunk * positions * width));  // col, then dcol
    if (p.need_input_grad) {
      float* hwio = static_cast<float*>(scratch(Scratch::weights, sizeof(float) * width * channels_out));
      reorder_weights(c, w, true, hwio);
      for (int64_t first = 0; first < c.batch; first += chunk) {
        const int64_t images = std::min(chunk, c.batch - first);
        gemm('N', 'T', images * positions, width, channels_out, dy + first * c.out_row(), channels_out, hwio, channels_out, col, width);
        col2im(c, col, first, images, dx);
      }
    }
    float* dw_hwio = static_cast<float*>(scratch(Scratch::diff_weights, sizeof(float) * width * channels_out));
    for (int64_t first = 0; first < c.batch; first += chunk) {
      const int64_t images = std::min(chunk, c.batch - first);
      im2col(c, x, first, images, col);
      gemm('T', 'N', width, channels_out, images * positions, col, width, dy + first * c.out_row(), channels_out, dw_hwio, channels_out,
           first == 0 ? 0.f : 1.f);
    }
    reorder_weights(c, dw_hwio, false, dw);
  });
}

Im2colConv::Im2colConv(const Shape& shape, const float* hwio, const std::vector<float>& bias, bool relu)
    : shape_(shape), hwio_(hwio), bias_(bias), relu_(relu) {
  const GemmConv c = geometry_of(shape);
  check_im2col_geometry(c, 1, true, true);
  RV_CHECK(bias.empty() || static_cast<int64_t>(bias.size()) == shape.out_channels, "ERR_SHAPE", "im2col GEMM conv: bias size");
  chunk_images_ = im2col_chunk_images(c);
}

size_t Im2colConv::col_bytes() const {
  const GemmConv c = geometry_of(shape_);
  return sizeof(float) * static_cast<size_t>(chunk_images_ * c.out_height() * c.out_width() * c.col_width());
}

void Im2colConv::run(const float* src, float* dst, float* col) const {
  const GemmConv c = geometry_of(shape_);
  const int64_t positions = c.out_height() * c.out_width(), width = c.col_width();
  for (int64_t first = 0; first < c.batch; first += chunk_images_) {
    const int64_t images = std::min(chunk_images_, c.batch - first);
    im2col(c, src, first, images, col);
    gemm('N', 'N', images * positions, c.out_channels, width, col, width, hwio_, c.out_channels, dst + first * c.out_row(), c.out_channels);
  }
  add_bias_relu(dst, c.batch * positions, c.out_channels, bias_.empty() ? nullptr : bias_.data(), relu_);
}

}  // namespace repvgg::cpu
