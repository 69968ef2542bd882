// Batch normalization of the single-op API on NCHW or NHWC buffers: inference mode (running statistics, scale
// and shift, an optional fused ReLU), training mode (batch statistics) and the training-mode backward pass.
// Own loops rather than oneDNN: on plain NCHW oneDNN 2.6 only has its generic ncsp_bnorm (3.9 ms forward and
// 4.6 ms backward for 128x32x28x28, against about 1.2 and 1.8 ms here), and its NHWC kernel was no faster than
// these loops. Statistics are summed in float32 vector lanes over a plane or a block of 64 rows, then in float64.
// Two data layouts of the loops:
// - planes: NCHW with H*W >= kSmallPlane. OpenMP over channels; a channel's N planes are streamed once per pass
//   and mostly stay in cache between the passes.
// - columns: NHWC (rows N*H*W, columns C) and NCHW with small planes (rows N, columns C*H*W, where column j
//   belongs to channel j / (H*W)). OpenMP over blocks of rows and columns; every pass streams whole rows and
//   vectorizes over columns, whatever H*W is.
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "../core/check.h"
#include "../core/ops.h"
#include "simd.h"

namespace repvgg::cpu {

namespace {

void check_shape(const BatchNormParams& p) {
  RV_CHECK(p.batch >= 1 && p.channels >= 1 && p.height >= 1 && p.width >= 1, "ERR_SHAPE", "batchnorm: empty tensor");
  RV_CHECK(p.eps > 0 && std::isfinite(p.eps), "ERR_ARG_VALUE", "batchnorm: eps must be positive");
}

// ---- planes ----

// Below this H*W, NCHW tensors use the column loops: per-plane loops would touch a few values at a stride of C*H*W.
constexpr int64_t kSmallPlane = 64;

// One channel's planes: plane n starts at base + n * stride and holds `spatial` values.
struct Planes {
  int64_t count, stride, spatial;
};

RV_SIMD_CLONES double channel_sum(const float* base, Planes p) {
  double total = 0;
  for (int64_t n = 0; n < p.count; n++) {
    const float* x = base + n * p.stride;
    float s = 0;
#pragma omp simd reduction(+ : s)
    for (int64_t i = 0; i < p.spatial; i++) s += x[i];
    total += s;
  }
  return total;
}

RV_SIMD_CLONES double channel_sum_sq_dev(const float* base, Planes p, float mean) {
  double total = 0;
  for (int64_t n = 0; n < p.count; n++) {
    const float* x = base + n * p.stride;
    float s = 0;
#pragma omp simd reduction(+ : s)
    for (int64_t i = 0; i < p.spatial; i++) {
      const float d = x[i] - mean;
      s += d * d;
    }
    total += s;
  }
  return total;
}

// y = x * scale + shift, then max(y, 0) when relu.
RV_SIMD_CLONES void channel_affine(const float* x_base, float* y_base, Planes p, float scale, float shift, bool relu) {
  for (int64_t n = 0; n < p.count; n++) {
    const float* x = x_base + n * p.stride;
    float* y = y_base + n * p.stride;
    if (relu) {
#pragma omp simd
      for (int64_t i = 0; i < p.spatial; i++) {
        const float v = x[i] * scale + shift;
        y[i] = v > 0.f ? v : 0.f;
      }
    } else {
#pragma omp simd
      for (int64_t i = 0; i < p.spatial; i++) y[i] = x[i] * scale + shift;
    }
  }
}

// sum(dy) and sum(dy * (x - mean)) over the channel.
RV_SIMD_CLONES void channel_grad_sums(const float* x_base, const float* dy_base, Planes p, float mean, double* sum_dy,
                                      double* sum_dy_xmu) {
  double total_dy = 0, total_dy_xmu = 0;
  for (int64_t n = 0; n < p.count; n++) {
    const float* x = x_base + n * p.stride;
    const float* dy = dy_base + n * p.stride;
    float a = 0, b = 0;
#pragma omp simd reduction(+ : a, b)
    for (int64_t i = 0; i < p.spatial; i++) {
      a += dy[i];
      b += dy[i] * (x[i] - mean);
    }
    total_dy += a;
    total_dy_xmu += b;
  }
  *sum_dy = total_dy;
  *sum_dy_xmu = total_dy_xmu;
}

// dx = k * dy + b * (x - mean) + c.
RV_SIMD_CLONES void channel_grad_input(const float* x_base, const float* dy_base, float* dx_base, Planes p, float mean,
                                       float k, float b, float c) {
  for (int64_t n = 0; n < p.count; n++) {
    const float* x = x_base + n * p.stride;
    const float* dy = dy_base + n * p.stride;
    float* dx = dx_base + n * p.stride;
#pragma omp simd
    for (int64_t i = 0; i < p.spatial; i++) dx[i] = k * dy[i] + b * (x[i] - mean) + c;
  }
}

// ---- columns ----

// A (rows x row_len) row-major matrix view of an activation; column j belongs to channel j / spatial.
struct Columns {
  int64_t rows, row_len, spatial;
};

Columns columns_of(const BatchNormParams& p) {
  const int64_t spatial = p.height * p.width;
  return p.channels_last ? Columns{p.batch * spatial, p.channels, 1} : Columns{p.batch, p.channels * spatial, spatial};
}

// A block of the matrix: rows [r0, r1), columns [j0, j1).
struct Block {
  int64_t r0, r1, j0, j1;
};

// The blocks the passes are split into: at most kColumnChunk columns wide, and enough row blocks for about 16
// blocks in all, scheduled dynamically (when another process holds one of the two cores, the running thread takes
// the remaining blocks instead of waiting a scheduler tick for the other). row_blocks is the number of row blocks,
// each of which gets its own partial sums.
struct Tiling {
  int64_t row_blocks, column_chunk, column_chunks;
  int64_t count() const { return row_blocks * column_chunks; }
  Block block(const Columns& m, int64_t index) const {
    const int64_t rb = index / column_chunks, cb = index % column_chunks;
    const int64_t rows_per = (m.rows + row_blocks - 1) / row_blocks;
    return {std::min(m.rows, rb * rows_per), std::min(m.rows, (rb + 1) * rows_per), cb * column_chunk,
            std::min(m.row_len, (cb + 1) * column_chunk)};
  }
};

Tiling tiling_of(const Columns& m) {
  constexpr int64_t kColumnChunk = 2048, kBlocks = 16;
  const int64_t column_chunks = (m.row_len + kColumnChunk - 1) / kColumnChunk;
  const int64_t row_blocks = std::clamp<int64_t>(kBlocks / column_chunks, 1, m.rows);
  return {row_blocks, std::min(kColumnChunk, m.row_len), column_chunks};
}

// The column sums below run over tiles of W adjacent columns whose W float32 partial sums stay in vector
// registers for kRowsPerFlush rows and are then added to the float64 totals. (Adding each row straight into
// float64 column totals in memory was 3x slower for NHWC with 32 channels.)
constexpr int64_t kRowsPerFlush = 64;

// Running moments of the columns [j, j + W) over rows [r0, r1), in one read of memory. Each group of kRowsPerFlush
// rows is summed as deviations from a reference (the group's first row, then the running mean: so that a mean far
// from zero costs no precision), then its squared deviations from the group's mean are summed (the group is in L1
// by then), both in float32 vector registers; the group's (mean, M2) is merged into the float64 running mean[j + t]
// and m2[j + t] (M2 = the sum of squared deviations from the mean) by Chan et al.'s pairwise update. As accurate
// as two passes over the whole tensor (no E[x^2] - E[x]^2 cancellation) at half the memory traffic.
template <int W>
inline __attribute__((always_inline)) void tile_moments(const float* x, int64_t row_len, int64_t r0, int64_t r1, int64_t j,
                                                        double* mean, double* m2) {
  double seen = 0;
  for (int64_t rb = r0; rb < r1; rb += kRowsPerFlush) {
    const int64_t re = std::min(r1, rb + kRowsPerFlush);
    const float rows = static_cast<float>(re - rb);
    float reference[W], sum[W] = {}, center[W], dev[W] = {};
    for (int t = 0; t < W; t++) reference[t] = seen == 0 ? x[rb * row_len + j + t] : static_cast<float>(mean[j + t]);
    for (int64_t r = rb; r < re; r++) {
      const float* row = x + r * row_len + j;
#pragma omp simd
      for (int t = 0; t < W; t++) sum[t] += row[t] - reference[t];
    }
    for (int t = 0; t < W; t++) center[t] = reference[t] + sum[t] / rows;
    for (int64_t r = rb; r < re; r++) {
      const float* row = x + r * row_len + j;
#pragma omp simd
      for (int t = 0; t < W; t++) {
        const float d = row[t] - center[t];
        dev[t] += d * d;
      }
    }
    const double n = re - rb, total = seen + n;
    for (int t = 0; t < W; t++) {
      const double group_mean = static_cast<double>(reference[t]) + static_cast<double>(sum[t]) / n;
      // The deviations were from the float32 center c, not the mean m: sum (x - m)^2 = sum (x - c)^2 - n (m - c)^2.
      const double shift = group_mean - center[t];
      const double group_m2 = std::max(0.0, static_cast<double>(dev[t]) - n * shift * shift);
      const double delta = group_mean - mean[j + t];
      mean[j + t] += delta * n / total;
      m2[j + t] += group_m2 + delta * delta * seen * n / total;
    }
    seen = total;
  }
}

// acc_dy[j + t] += sum of dy, acc_dy_xmu[j + t] += sum of dy * (x - center[j + t]) over rows [r0, r1), t < W.
// The product is accumulated with an explicit fma, as tile_branch_grad_sums does, so both give the same bits
// whatever the compiler would contract (in the baseline x86-64 clone, for CPUs before AVX2, fma is a libm call).
template <int W>
inline __attribute__((always_inline)) void tile_grad_sums(const float* x, const float* dy, int64_t row_len, int64_t r0, int64_t r1,
                                                          int64_t j, const float* center, double* acc_dy, double* acc_dy_xmu) {
  float c[W];
  for (int t = 0; t < W; t++) c[t] = center[j + t];
  for (int64_t rb = r0; rb < r1; rb += kRowsPerFlush) {
    const int64_t re = std::min(r1, rb + kRowsPerFlush);
    float part_dy[W] = {}, part_dy_xmu[W] = {};
    for (int64_t r = rb; r < re; r++) {
      const float* xr = x + r * row_len + j;
      const float* dyr = dy + r * row_len + j;
#pragma omp simd
      for (int t = 0; t < W; t++) {
        part_dy[t] += dyr[t];
        part_dy_xmu[t] = std::fma(dyr[t], xr[t] - c[t], part_dy_xmu[t]);
      }
    }
    for (int t = 0; t < W; t++) {
      acc_dy[j + t] += part_dy[t];
      acc_dy_xmu[j + t] += part_dy_xmu[t];
    }
  }
}

// mean[j] and m2[j] of the block's columns over the block's rows (tile_moments).
RV_SIMD_CLONES void block_moments(const float* x, int64_t row_len, Block b, double* mean, double* m2) {
  for (int64_t j = b.j0; j < b.j1; j++) mean[j] = m2[j] = 0;
  int64_t j = b.j0;
  for (; j + 64 <= b.j1; j += 64) tile_moments<64>(x, row_len, b.r0, b.r1, j, mean, m2);
  for (; j + 16 <= b.j1; j += 16) tile_moments<16>(x, row_len, b.r0, b.r1, j, mean, m2);
  for (; j < b.j1; j++) tile_moments<1>(x, row_len, b.r0, b.r1, j, mean, m2);
}

// acc_dy[j] = sum of dy, acc_dy_xmu[j] = sum of dy * (x - center[j]) over the block's rows.
RV_SIMD_CLONES void block_grad_sums(const float* x, const float* dy, int64_t row_len, Block b, const float* center,
                                    double* acc_dy, double* acc_dy_xmu) {
  for (int64_t j = b.j0; j < b.j1; j++) acc_dy[j] = acc_dy_xmu[j] = 0;
  int64_t j = b.j0;
  for (; j + 64 <= b.j1; j += 64) tile_grad_sums<64>(x, dy, row_len, b.r0, b.r1, j, center, acc_dy, acc_dy_xmu);
  for (; j + 16 <= b.j1; j += 16) tile_grad_sums<16>(x, dy, row_len, b.r0, b.r1, j, center, acc_dy, acc_dy_xmu);
  for (; j < b.j1; j++) tile_grad_sums<1>(x, dy, row_len, b.r0, b.r1, j, center, acc_dy, acc_dy_xmu);
}

// out = a[j] * in + c[j] (max(., 0) when relu), or with in2: out = a[j] * in + b[j] * (in2 - center[j]) + c[j].
RV_SIMD_CLONES void block_affine(const float* in, const float* in2, float* out, int64_t row_len, Block blk, const float* a,
                                 const float* b, const float* center, const float* c, bool relu) {
  for (int64_t r = blk.r0; r < blk.r1; r++) {
    const float* ir = in + r * row_len;
    float* orow = out + r * row_len;
    if (in2 != nullptr) {
      const float* i2 = in2 + r * row_len;
#pragma omp simd
      for (int64_t j = blk.j0; j < blk.j1; j++) orow[j] = a[j] * ir[j] + b[j] * (i2[j] - center[j]) + c[j];
    } else if (relu) {
#pragma omp simd
      for (int64_t j = blk.j0; j < blk.j1; j++) {
        const float v = a[j] * ir[j] + c[j];
        orow[j] = v > 0.f ? v : 0.f;
      }
    } else {
#pragma omp simd
      for (int64_t j = blk.j0; j < blk.j1; j++) orow[j] = a[j] * ir[j] + c[j];
    }
  }
}

// Runs body(block, row_block_index) over every block of m.
template <typename Body>
void for_blocks(const Columns& m, const Tiling& t, const Body& body) {
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t i = 0; i < t.count(); i++) body(t.block(m, i), i / t.column_chunks);
}

// Per-channel totals of the partial column sums of every row block (partials: row_blocks x row_len).
std::vector<double> channel_totals(const std::vector<double>& partials, const Columns& m, int64_t channels) {
  std::vector<double> totals(channels, 0.0);
  for (size_t base = 0; base < partials.size(); base += m.row_len) {
    for (int64_t j = 0; j < m.row_len; j++) totals[j / m.spatial] += partials[base + j];
  }
  return totals;
}

// Column values of per-channel values: column j gets per_channel[j / spatial].
std::vector<float> to_columns(const float* per_channel, const Columns& m) {
  std::vector<float> columns(m.row_len);
  for (int64_t j = 0; j < m.row_len; j++) columns[j] = per_channel[j / m.spatial];
  return columns;
}

bool use_columns(const BatchNormParams& p) { return p.channels_last || p.height * p.width < kSmallPlane; }

// Batch mean and biased variance per channel of a column view, in one read of x: every block's column moments
// (block_moments), then, per channel, the moments of its columns in every row block merged in order (Chan et al.).
void column_statistics(const Columns& m, const Tiling& t, const float* x, int64_t channels, double count, float* mean, float* var) {
  std::vector<double> partial_mean(t.row_blocks * m.row_len), partial_m2(t.row_blocks * m.row_len);
  for_blocks(m, t, [&](Block b, int64_t rb) {
    block_moments(x, m.row_len, b, partial_mean.data() + rb * m.row_len, partial_m2.data() + rb * m.row_len);
  });
  std::vector<double> seen(channels, 0.0), channel_mean(channels, 0.0), channel_m2(channels, 0.0);
  for (int64_t rb = 0; rb < t.row_blocks; rb++) {
    const Block b = t.block(m, rb * t.column_chunks);
    const double n = static_cast<double>(b.r1 - b.r0);
    if (n == 0) continue;
    for (int64_t j = 0; j < m.row_len; j++) {
      const int64_t c = j / m.spatial;
      const double total = seen[c] + n, delta = partial_mean[rb * m.row_len + j] - channel_mean[c];
      channel_mean[c] += delta * n / total;
      channel_m2[c] += partial_m2[rb * m.row_len + j] + delta * delta * seen[c] * n / total;
      seen[c] = total;
    }
  }
  for (int64_t c = 0; c < channels; c++) {
    mean[c] = static_cast<float>(channel_mean[c]);
    var[c] = static_cast<float>(channel_m2[c] / count);
  }
}

// y = scale * x + shift per column: the normalization with batch statistics, scale = gamma / sqrt(var + eps).
struct ColumnAffine {
  std::vector<float> scale, shift;
};

ColumnAffine column_affine(const Columns& m, const BatchNormParams& p, const float* gamma, const float* beta, const float* mean,
                           const float* var) {
  std::vector<float> scale(p.channels), shift(p.channels);
  for (int64_t c = 0; c < p.channels; c++) {
    scale[c] = gamma[c] / std::sqrt(var[c] + p.eps);
    shift[c] = beta[c] - mean[c] * scale[c];
  }
  return {to_columns(scale.data(), m), to_columns(shift.data(), m)};
}

// The per-channel results of the batch-norm gradient from its two sums (see batchnorm_backward): dgamma, dbeta and
// the coefficients of dx = k * dy + b * (x - mean) + c.
struct GradCoefficients {
  float dgamma, dbeta, k, b, c;
};

GradCoefficients grad_coefficients(double sum_dy, double sum_dy_xmu, float gamma, float var, float eps, double count) {
  const double invstd = 1.0 / std::sqrt(static_cast<double>(var) + static_cast<double>(eps));
  const double kd = static_cast<double>(gamma) * invstd;
  return {static_cast<float>(sum_dy_xmu * invstd), static_cast<float>(sum_dy), static_cast<float>(kd),
          static_cast<float>(-kd * invstd * invstd * sum_dy_xmu / count), static_cast<float>(-kd * sum_dy / count)};
}

}  // namespace

void batchnorm_forward_inference(const BatchNormParams& p, const float* x, const float* mean, const float* var,
                                 const float* gamma, const float* beta, float* y) {
  check_shape(p);
  // PyTorch's inference batch norm: scale = gamma / sqrt(var + eps), y = x * scale + (beta - mean * scale).
  std::vector<float> scale(p.channels), shift(p.channels);
  for (int64_t c = 0; c < p.channels; c++) {
    scale[c] = gamma[c] / std::sqrt(var[c] + p.eps);
    shift[c] = beta[c] - mean[c] * scale[c];
  }
  if (use_columns(p)) {
    const Columns m = columns_of(p);
    const std::vector<float> a = to_columns(scale.data(), m), c = to_columns(shift.data(), m);
    for_blocks(m, tiling_of(m), [&](Block b, int64_t) { block_affine(x, nullptr, y, m.row_len, b, a.data(), nullptr, nullptr, c.data(), p.relu); });
    return;
  }
  const int64_t spatial = p.height * p.width;
  const Planes planes{p.batch, p.channels * spatial, spatial};
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t c = 0; c < p.channels; c++) channel_affine(x + c * spatial, y + c * spatial, planes, scale[c], shift[c], p.relu);
}

// The statistics without E[x^2] - E[x]^2's cancellation: on the column view in one read of x (column_statistics),
// per NCHW channel in two passes over the channel (mean, then the mean squared deviation); then one pass for the
// output.
void batchnorm_forward_training(const BatchNormParams& p, const float* x, const float* gamma, const float* beta, float* y,
                                float* mean, float* var) {
  RV_CHECK(!p.relu, "ERR_ARG_VALUE", "batchnorm training: fused ReLU is not supported");
  check_shape(p);
  const int64_t spatial = p.height * p.width;
  const double count = static_cast<double>(p.batch * spatial);
  if (use_columns(p)) {
    const Columns m = columns_of(p);
    const Tiling t = tiling_of(m);
    column_statistics(m, t, x, p.channels, count, mean, var);
    const ColumnAffine affine = column_affine(m, p, gamma, beta, mean, var);
    for_blocks(m, t, [&](Block b, int64_t) {
      block_affine(x, nullptr, y, m.row_len, b, affine.scale.data(), nullptr, nullptr, affine.shift.data(), false);
    });
    return;
  }
  const Planes planes{p.batch, p.channels * spatial, spatial};
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t c = 0; c < p.channels; c++) {
    const float* xc = x + c * spatial;
    const float m = static_cast<float>(channel_sum(xc, planes) / count);
    const float v = static_cast<float>(channel_sum_sq_dev(xc, planes, m) / count);
    const float scale = gamma[c] / std::sqrt(v + p.eps);
    channel_affine(xc, y + c * spatial, planes, scale, beta[c] - m * scale, false);
    mean[c] = m;
    var[c] = v;
  }
}

// PyTorch's training-mode gradient with M = N*H*W values per channel and invstd = 1 / sqrt(var + eps):
// dbeta = sum(dy), dgamma = invstd * sum(dy * (x - mean)),
// dx = gamma * invstd * (dy - dbeta / M - (x - mean) * invstd^2 * sum(dy * (x - mean)) / M),
// computed as dx = k * dy + b * (x - mean) + c with per-channel k, b, c.
void batchnorm_backward(const BatchNormParams& p, const float* x, const float* dy, const float* gamma, const float* mean,
                        const float* var, float* dx, float* dgamma, float* dbeta) {
  check_shape(p);
  const int64_t spatial = p.height * p.width;
  const double count = static_cast<double>(p.batch * spatial);
  // Writes dgamma, dbeta and the coefficients of dx for channel ch from its two sums.
  auto coefficients = [&](int64_t ch, double sum_dy, double sum_dy_xmu, float* k, float* b, float* c) {
    const GradCoefficients g = grad_coefficients(sum_dy, sum_dy_xmu, gamma[ch], var[ch], p.eps, count);
    dgamma[ch] = g.dgamma;
    dbeta[ch] = g.dbeta;
    *k = g.k;
    *b = g.b;
    *c = g.c;
  };
  if (use_columns(p)) {
    const Columns m = columns_of(p);
    const Tiling t = tiling_of(m);
    const std::vector<float> center = to_columns(mean, m);
    std::vector<double> partial_dy(t.row_blocks * m.row_len), partial_dy_xmu(t.row_blocks * m.row_len);
    for_blocks(m, t, [&](Block b, int64_t rb) {
      block_grad_sums(x, dy, m.row_len, b, center.data(), partial_dy.data() + rb * m.row_len, partial_dy_xmu.data() + rb * m.row_len);
    });
    const std::vector<double> sum_dy = channel_totals(partial_dy, m, p.channels);
    const std::vector<double> sum_dy_xmu = channel_totals(partial_dy_xmu, m, p.channels);
    std::vector<float> k(p.channels), b(p.channels), c(p.channels);
    for (int64_t ch = 0; ch < p.channels; ch++) coefficients(ch, sum_dy[ch], sum_dy_xmu[ch], &k[ch], &b[ch], &c[ch]);
    const std::vector<float> kc = to_columns(k.data(), m), bc = to_columns(b.data(), m), cc = to_columns(c.data(), m);
    for_blocks(m, t, [&](Block blk, int64_t) {
      block_affine(dy, x, dx, m.row_len, blk, kc.data(), bc.data(), center.data(), cc.data(), false);
    });
    return;
  }
  const Planes planes{p.batch, p.channels * spatial, spatial};
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t ch = 0; ch < p.channels; ch++) {
    const int64_t offset = ch * spatial;
    double sum_dy = 0, sum_dy_xmu = 0;
    channel_grad_sums(x + offset, dy + offset, planes, mean[ch], &sum_dy, &sum_dy_xmu);
    float k, b, c;
    coefficients(ch, sum_dy, sum_dy_xmu, &k, &b, &c);
    channel_grad_input(x + offset, dy + offset, dx + offset, planes, mean[ch], k, b, c);
  }
}

// ---- sums of batch-normalized branches (a RepVGG block) ----
//
// The same arithmetic as the separate ops, in the same order, so the results are the same bits: each branch's
// statistics by column_statistics, each normalized value a * x + c as block_affine computes it, the branch values
// added left to right as add_forward does, the ReLU as max(., 0); the gradient sums in float32 tiles of kRowsPerFlush rows
// flushed to float64 like tile_grad_sums, and dx as block_affine's gradient form. What is saved is memory traffic:
// no BN output per branch, no intermediate sums, and the ReLU mask applied on the fly.

namespace {

// The branch gradient g = dy where y > 0 and dy * below elsewhere (y <= 0 or NaN), with below = below_zero(relu):
// under a ReLU dy * 0 (so that NaN/Inf propagate as oneDNN's ReLU backward propagates them), without one dy * 1,
// which is dy bit for bit. Written as a product with max(y > 0, below), which GCC vectorizes in every clone: as
// `relu && y <= 0 ? dy * 0.f : dy` (or `y > 0 ? 1.f : below`) it kept the loops scalar in the AVX2 clone ("control
// flow in loop"; only AVX-512 has the masked instructions it then used), 5x slower on an AVX2 CPU.
inline float below_zero(bool relu) { return relu ? 0.f : 1.f; }

inline __attribute__((always_inline)) float masked_gradient(float y, float dy, float below) {
  return dy * std::max(static_cast<float>(y > 0.f), below);
}

// out = (a[0] * in[0] + c[0]) + (a[1] * in[1] + c[1]) + ... over the block, then max(., 0) when relu.
RV_SIMD_CLONES void block_branch_sum(int count, const float* const* in, float* out, int64_t row_len, Block blk, const float* const* a,
                                     const float* const* c, bool relu) {
  for (int64_t r = blk.r0; r < blk.r1; r++) {
    float* orow = out + r * row_len;
    const float* i0 = in[0] + r * row_len;
    const float *a0 = a[0], *c0 = c[0];
#pragma omp simd
    for (int64_t j = blk.j0; j < blk.j1; j++) orow[j] = a0[j] * i0[j] + c0[j];
    for (int k = 1; k < count; k++) {
      const float* ik = in[k] + r * row_len;
      const float *ak = a[k], *ck = c[k];
#pragma omp simd
      for (int64_t j = blk.j0; j < blk.j1; j++) orow[j] = orow[j] + (ak[j] * ik[j] + ck[j]);
    }
    if (relu) {
#pragma omp simd
      for (int64_t j = blk.j0; j < blk.j1; j++) orow[j] = orow[j] > 0.f ? orow[j] : 0.f;
    }
  }
}

// acc_g[j + t] += sum of g, acc_gx[k][j + t] += sum of g * (x_k - center[k][j + t]) over rows [r0, r1), t < W, for K
// branches; g = masked_gradient(y, dy, below).
template <int K, int W>
inline __attribute__((always_inline)) void tile_branch_grad_sums(const float* y, const float* dy, float below, const float* const* xs,
                                                                 int64_t row_len, int64_t r0, int64_t r1, int64_t j,
                                                                 const float* const* centers, double* acc_g, double* const* acc_gx) {
  float c[K][W];
  for (int k = 0; k < K; k++)
    for (int t = 0; t < W; t++) c[k][t] = centers[k][j + t];
  for (int64_t rb = r0; rb < r1; rb += kRowsPerFlush) {
    const int64_t re = std::min(r1, rb + kRowsPerFlush);
    float part_g[W] = {}, part_gx[K][W] = {};
    for (int64_t r = rb; r < re; r++) {
      const float* yr = y + r * row_len + j;
      const float* dyr = dy + r * row_len + j;
#pragma omp simd
      for (int t = 0; t < W; t++) {
        const float g = masked_gradient(yr[t], dyr[t], below);
        part_g[t] += g;
        for (int k = 0; k < K; k++) part_gx[k][t] = std::fma(g, xs[k][r * row_len + j + t] - c[k][t], part_gx[k][t]);
      }
    }
    for (int t = 0; t < W; t++) {
      acc_g[j + t] += part_g[t];
      for (int k = 0; k < K; k++) acc_gx[k][j + t] += part_gx[k][t];
    }
  }
}

template <int K>
inline __attribute__((always_inline)) void branch_grad_sums(const float* y, const float* dy, float below, const float* const* xs,
                                                            int64_t row_len, Block b, const float* const* centers, double* acc_g,
                                                            double* const* acc_gx) {
  int64_t j = b.j0;
  for (; j + 32 <= b.j1; j += 32) tile_branch_grad_sums<K, 32>(y, dy, below, xs, row_len, b.r0, b.r1, j, centers, acc_g, acc_gx);
  for (; j + 16 <= b.j1; j += 16) tile_branch_grad_sums<K, 16>(y, dy, below, xs, row_len, b.r0, b.r1, j, centers, acc_g, acc_gx);
  for (; j < b.j1; j++) tile_branch_grad_sums<K, 1>(y, dy, below, xs, row_len, b.r0, b.r1, j, centers, acc_g, acc_gx);
}

// The gradient sums of `count` branches over one block (acc_g and acc_gx[k] are zeroed over its columns first).
RV_SIMD_CLONES void block_branch_grad_sums(int count, const float* y, const float* dy, float below, const float* const* xs, int64_t row_len,
                                           Block b, const float* const* centers, double* acc_g, double* const* acc_gx) {
  for (int64_t j = b.j0; j < b.j1; j++) {
    acc_g[j] = 0;
    for (int k = 0; k < count; k++) acc_gx[k][j] = 0;
  }
  switch (count) {
    case 1: branch_grad_sums<1>(y, dy, below, xs, row_len, b, centers, acc_g, acc_gx); break;
    case 2: branch_grad_sums<2>(y, dy, below, xs, row_len, b, centers, acc_g, acc_gx); break;
    default: branch_grad_sums<3>(y, dy, below, xs, row_len, b, centers, acc_g, acc_gx); break;
  }
}

// dx_k = k_k * g + b_k * (x_k - center_k) + c_k over the block, for each branch k; g = masked_gradient(y, dy, below).
RV_SIMD_CLONES void block_branch_grad_input(int count, const float* y, const float* dy, float below, const float* const* xs, float* const* dxs,
                                            int64_t row_len, Block blk, const float* const* kc, const float* const* bc,
                                            const float* const* centers, const float* const* cc) {
  for (int64_t r = blk.r0; r < blk.r1; r++) {
    const float* yr = y + r * row_len;
    const float* dyr = dy + r * row_len;
    for (int k = 0; k < count; k++) {
      const float* xr = xs[k] + r * row_len;
      float* dxr = dxs[k] + r * row_len;
      const float *a = kc[k], *b = bc[k], *center = centers[k], *c = cc[k];
#pragma omp simd
      for (int64_t j = blk.j0; j < blk.j1; j++) dxr[j] = a[j] * masked_gradient(yr[j], dyr[j], below) + b[j] * (xr[j] - center[j]) + c[j];
    }
  }
}

void check_branches(const BatchNormParams& p, size_t count, const char* op) {
  check_shape(p);
  RV_CHECK(count >= 1 && count <= static_cast<size_t>(kMaxNormBranches), "ERR_ARG_VALUE",
           std::string(op) + ": expected 1 to " + std::to_string(kMaxNormBranches) + " branches but received " + std::to_string(count));
  RV_CHECK(p.channels_last, "ERR_ARG_VALUE", std::string(op) + ": expected NHWC tensors");
}

}  // namespace

void batchnorm_sum_forward(const BatchNormParams& p, const std::vector<NormBranch>& branches, float* y) {
  check_branches(p, branches.size(), "batchnorm sum");
  const int count = static_cast<int>(branches.size());
  const double values = static_cast<double>(p.batch * p.height * p.width);
  const Columns m = columns_of(p);
  const Tiling t = tiling_of(m);
  std::vector<ColumnAffine> affine;
  const float* in[kMaxNormBranches];
  const float *a[kMaxNormBranches], *c[kMaxNormBranches];
  for (int k = 0; k < count; k++) {
    const NormBranch& b = branches[k];
    column_statistics(m, t, b.x, p.channels, values, b.mean, b.var);
    affine.push_back(column_affine(m, p, b.gamma, b.beta, b.mean, b.var));
  }
  for (int k = 0; k < count; k++) {
    in[k] = branches[k].x;
    a[k] = affine[k].scale.data();
    c[k] = affine[k].shift.data();
  }
  for_blocks(m, t, [&](Block b, int64_t) { block_branch_sum(count, in, y, m.row_len, b, a, c, p.relu); });
}

void batchnorm_sum_backward(const BatchNormParams& p, const std::vector<NormBranchGrad>& branches, const float* y, const float* dy) {
  check_branches(p, branches.size(), "batchnorm sum backward");
  const int count = static_cast<int>(branches.size());
  const double values = static_cast<double>(p.batch * p.height * p.width);
  const Columns m = columns_of(p);
  const Tiling t = tiling_of(m);
  const int64_t partial_len = t.row_blocks * m.row_len;
  std::vector<std::vector<float>> centers;
  std::vector<double> partial_g(partial_len);
  std::vector<std::vector<double>> partial_gx(count, std::vector<double>(partial_len));
  const float* xs[kMaxNormBranches];
  const float* center[kMaxNormBranches];
  for (int k = 0; k < count; k++) centers.push_back(to_columns(branches[k].mean, m));
  for (int k = 0; k < count; k++) {
    xs[k] = branches[k].x;
    center[k] = centers[k].data();
  }
  for_blocks(m, t, [&](Block b, int64_t rb) {
    double* acc_gx[kMaxNormBranches];
    for (int k = 0; k < count; k++) acc_gx[k] = partial_gx[k].data() + rb * m.row_len;
    block_branch_grad_sums(count, y, dy, below_zero(p.relu), xs, m.row_len, b, center, partial_g.data() + rb * m.row_len, acc_gx);
  });
  const std::vector<double> sum_g = channel_totals(partial_g, m, p.channels);
  std::vector<std::vector<float>> kc, bc, cc;
  for (int k = 0; k < count; k++) {
    const NormBranchGrad& b = branches[k];
    const std::vector<double> sum_gx = channel_totals(partial_gx[k], m, p.channels);
    std::vector<float> kk(p.channels), bb(p.channels), c(p.channels);
    for (int64_t ch = 0; ch < p.channels; ch++) {
      const GradCoefficients g = grad_coefficients(sum_g[ch], sum_gx[ch], b.gamma[ch], b.var[ch], p.eps, values);
      b.dgamma[ch] = g.dgamma;
      b.dbeta[ch] = g.dbeta;
      kk[ch] = g.k;
      bb[ch] = g.b;
      c[ch] = g.c;
    }
    kc.push_back(to_columns(kk.data(), m));
    bc.push_back(to_columns(bb.data(), m));
    cc.push_back(to_columns(c.data(), m));
  }
  float* dxs[kMaxNormBranches];
  const float *kp[kMaxNormBranches], *bp[kMaxNormBranches], *cp[kMaxNormBranches];
  for (int k = 0; k < count; k++) {
    dxs[k] = branches[k].dx;
    kp[k] = kc[k].data();
    bp[k] = bc[k].data();
    cp[k] = cc[k].data();
  }
  for_blocks(m, t, [&](Block b, int64_t) { block_branch_grad_input(count, y, dy, below_zero(p.relu), xs, dxs, m.row_len, b, kp, bp, center, cp); });
}

}  // namespace repvgg::cpu
