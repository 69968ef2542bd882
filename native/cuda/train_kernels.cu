// The kernels declared in train_kernels.h. Per-channel reductions use double partial sums and a warp-shuffle block
// reduction (batch norm's over several blocks per channel, below), element-wise kernels use grid-stride loops with
// 64-bit indices. The optimizer kernels spell every double operation as a round-to-nearest
// intrinsic (__dmul_rn, __dadd_rn, ...): nvcc would otherwise contract a * b + c into one fused multiply-add, and
// the CPU ops round each operation separately.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cmath>

#include "train_kernels.h"

namespace repvgg::cuda::train {

namespace {

constexpr int kThreads = 256;

unsigned grid_for(int64_t count) {
  const int64_t blocks = (count + kThreads - 1) / kThreads;
  return static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>(blocks, 1 << 20)));
}

unsigned blocks_for(int64_t count) { return static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>(count, 1 << 20))); }

#define RV_GRID_STRIDE(i, count) \
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < (count); i += static_cast<int64_t>(gridDim.x) * blockDim.x)

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_down_sync(0xffffffffu, v, offset);
  return v;
}

// Sum of v over the block (kThreads threads); every thread gets the total. Uses `scratch` (kThreads / 32 values)
// and synchronizes, so every thread of the block must call it.
template <typename T>
__device__ T block_sum(T v, T* scratch) {
  v = warp_sum(v);
  if (threadIdx.x % 32 == 0) scratch[threadIdx.x / 32] = v;
  __syncthreads();
  T total = 0;
  for (int w = 0; w < kThreads / 32; w++) total += scratch[w];
  __syncthreads();  // scratch is reused by the caller's next reduction
  return total;
}

// The batch-norm reductions split each channel's m = n * spatial values over `splits` blocks (a grid of splits x
// channels, so a layer with few channels still fills the GPU): block (s, ch) sums the span [m * s / splits,
// m * (s + 1) / splits) of channel ch into partial[ch * splits + s] (double), and a per-channel finish adds the
// partials in order, so the results do not depend on timing. Index is uint32_t when m fits (a 32-bit division per
// value instead of a 64-bit one), else int64_t.

// Where the channel's value e (of m) lies in an (n, c, spatial) tensor.
template <typename Index>
__device__ __forceinline__ int64_t channel_value(Index e, Index spatial, int64_t c, int64_t ch) {
  const Index plane = e / spatial;
  return (static_cast<int64_t>(plane) * c + ch) * static_cast<int64_t>(spatial) + static_cast<int64_t>(e - plane * spatial);
}

template <typename Index>
__device__ __forceinline__ Index span_begin(Index m, unsigned s, unsigned splits) {
  return static_cast<Index>(static_cast<uint64_t>(m) * s / splits);
}

// partial[ch * splits + s] = the span's sum of x, or with center, of (x - center[ch])^2.
template <typename Index>
__global__ void bn_partial_kernel(const float* x, Index m, Index spatial, int64_t c, const float* center, double* partial) {
  __shared__ double scratch[kThreads / 32];
  const unsigned s = blockIdx.x, splits = gridDim.x;
  const Index begin = span_begin(m, s, splits), end = span_begin(m, s + 1, splits);
  for (int64_t ch = blockIdx.y; ch < c; ch += gridDim.y) {
    const double mu = center != nullptr ? static_cast<double>(center[ch]) : 0.0;
    double sum = 0;
    for (Index e = begin + threadIdx.x; e < end; e += blockDim.x) {
      const double v = static_cast<double>(x[channel_value(e, spatial, c, ch)]);
      sum += center != nullptr ? (v - mu) * (v - mu) : v;
    }
    sum = block_sum(sum, scratch);
    if (threadIdx.x == 0) partial[ch * splits + s] = sum;
  }
}

// out[ch] = (sum of the channel's partials) / m, rounded to float.
__global__ void bn_finish_mean_kernel(const double* partial, unsigned splits, int64_t c, double m, float* out) {
  RV_GRID_STRIDE(ch, c) {
    double total = 0;
    for (unsigned s = 0; s < splits; s++) total += partial[ch * splits + s];
    out[ch] = static_cast<float>(total / m);
  }
}

// partial[(ch * splits + s) * 2 + {0, 1}] = the span's sums of dy and dy * (x - mean).
template <typename Index>
__global__ void bn_backward_partial_kernel(const float* x, const float* dy, Index m, Index spatial, int64_t c, const float* mean,
                                           double* partial) {
  __shared__ double scratch[kThreads / 32];
  const unsigned s = blockIdx.x, splits = gridDim.x;
  const Index begin = span_begin(m, s, splits), end = span_begin(m, s + 1, splits);
  for (int64_t ch = blockIdx.y; ch < c; ch += gridDim.y) {
    const float mu = mean[ch];
    double sum_dy = 0, sum_dy_xmu = 0;
    for (Index e = begin + threadIdx.x; e < end; e += blockDim.x) {
      const int64_t i = channel_value(e, spatial, c, ch);
      sum_dy += dy[i];
      sum_dy_xmu += static_cast<double>(dy[i]) * (static_cast<double>(x[i]) - mu);
    }
    sum_dy = block_sum(sum_dy, scratch);
    sum_dy_xmu = block_sum(sum_dy_xmu, scratch);
    if (threadIdx.x == 0) {
      partial[(ch * splits + s) * 2] = sum_dy;
      partial[(ch * splits + s) * 2 + 1] = sum_dy_xmu;
    }
  }
}

// Per channel: dgamma, dbeta, and the dx coefficients coef[ch * 3 + {0, 1, 2}] = k, mean_dy, proj.
__global__ void bn_backward_finish_kernel(const double* partial, unsigned splits, int64_t c, double m, const float* var,
                                          const float* gamma, float eps, float* dgamma, float* dbeta, double* coef) {
  RV_GRID_STRIDE(ch, c) {
    double sum_dy = 0, sum_dy_xmu = 0;
    for (unsigned s = 0; s < splits; s++) {
      sum_dy += partial[(ch * splits + s) * 2];
      sum_dy_xmu += partial[(ch * splits + s) * 2 + 1];
    }
    const double invstd = 1.0 / sqrt(static_cast<double>(var[ch]) + static_cast<double>(eps));
    dgamma[ch] = static_cast<float>(sum_dy_xmu * invstd);
    dbeta[ch] = static_cast<float>(sum_dy);
    coef[ch * 3] = static_cast<double>(gamma[ch]) * invstd;
    coef[ch * 3 + 1] = sum_dy / m;
    coef[ch * 3 + 2] = sum_dy_xmu * invstd * invstd / m;
  }
}

// The element-wise batch-norm kernels run over count = n * c * spatial values: Index is uint32_t when count fits.
template <typename Index>
__global__ void bn_apply_kernel(const float* x, Index count, Index c, Index spatial, const float* mean, const float* var,
                                const float* gamma, const float* beta, float eps, float* y) {
  for (Index i = blockIdx.x * blockDim.x + threadIdx.x; i < count; i += gridDim.x * blockDim.x) {
    const Index ch = (i / spatial) % c;
    const float scale = gamma[ch] / sqrtf(var[ch] + eps);
    const float shift = beta[ch] - mean[ch] * scale;
    y[i] = x[i] * scale + shift;
  }
}

// dx = k * (dy - mean_dy - (x - mean) * proj), per value, in double.
template <typename Index>
__global__ void bn_backward_dx_kernel(const float* x, const float* dy, Index count, Index c, Index spatial, const float* mean,
                                      const double* coef, float* dx) {
  for (Index i = blockIdx.x * blockDim.x + threadIdx.x; i < count; i += gridDim.x * blockDim.x) {
    const Index ch = (i / spatial) % c;
    const float mu = mean[ch];
    dx[i] = static_cast<float>(coef[ch * 3] *
                               (static_cast<double>(dy[i]) - coef[ch * 3 + 1] - (static_cast<double>(x[i]) - mu) * coef[ch * 3 + 2]));
  }
}

__global__ void running_stats_kernel(float* running_mean, float* running_var, const float* mean, const float* var, int64_t c,
                                     double count, double momentum, double keep) {
  RV_GRID_STRIDE(i, c) {
    const double unbiased = __ddiv_rn(__dmul_rn(static_cast<double>(var[i]), count), __dsub_rn(count, 1.0));
    running_mean[i] = __double2float_rn(__dadd_rn(__dmul_rn(momentum, mean[i]), __dmul_rn(keep, running_mean[i])));
    running_var[i] = __double2float_rn(__dadd_rn(__dmul_rn(momentum, unbiased), __dmul_rn(keep, running_var[i])));
  }
}

__global__ void relu_kernel(const float* x, float* y, int64_t count) {
  RV_GRID_STRIDE(i, count) y[i] = x[i] > 0.f ? x[i] : 0.f;
}

__global__ void relu_backward_kernel(const float* y, const float* dy, float* dx, int64_t count) {
  RV_GRID_STRIDE(i, count) dx[i] = y[i] > 0.f ? dy[i] : 0.f;
}

__global__ void sigmoid_kernel(const float* x, float* y, int64_t count) {
  RV_GRID_STRIDE(i, count) y[i] = 1.f / (1.f + expf(-x[i]));
}

__global__ void sigmoid_backward_kernel(const float* y, const float* dy, float* dx, int64_t count) {
  RV_GRID_STRIDE(i, count) dx[i] = dy[i] * y[i] * (1.f - y[i]);
}

__global__ void f16_to_f32_kernel(const __half* src, float* dst, int64_t count) {
  RV_GRID_STRIDE(i, count) dst[i] = __half2float(src[i]);
}

__global__ void f32_to_bf16_kernel(const float* src, __nv_bfloat16* dst, int64_t count) {
  RV_GRID_STRIDE(i, count) dst[i] = __float2bfloat16_rn(src[i]);
}

__global__ void bf16_to_f32_kernel(const __nv_bfloat16* src, float* dst, int64_t count) {
  RV_GRID_STRIDE(i, count) dst[i] = __bfloat162float(src[i]);
}

__global__ void non_finite_kernel(const float* x, int64_t count, int* flag) {
  bool bad = false;
  RV_GRID_STRIDE(i, count) bad |= !isfinite(x[i]);
  if (bad) *flag = 1;  // a benign race: every writer writes 1
}

__global__ void scale_kernel(const float* x, float* y, int64_t count, float factor) {
  RV_GRID_STRIDE(i, count) y[i] = x[i] * factor;
}

__global__ void add_kernel(const float* a, const float* b, float* y, int64_t count, bool relu) {
  RV_GRID_STRIDE(i, count) {
    const float v = a[i] + b[i];
    y[i] = relu && v < 0.f ? 0.f : v;
  }
}

__global__ void gap_backward_kernel(const float* dy, int64_t plane_count, int64_t spatial, float* dx) {
  RV_GRID_STRIDE(i, plane_count * spatial) dx[i] = dy[i / spatial] / static_cast<float>(spatial);
}

// One warp per output value: out[row * cols + col] = sum_k a(row, k) * b(k, col), with strides given.
__global__ void warp_dot_kernel(const float* a, int64_t a_row, int64_t a_k, const float* b, int64_t b_k, int64_t b_col, int64_t rows,
                                int64_t cols, int64_t inner, float* out) {
  const int64_t warp = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (warp >= rows * cols) return;
  const int64_t row = warp / cols, col = warp % cols;
  float sum = 0.f;
  for (int64_t k = lane; k < inner; k += 32) sum += a[row * a_row + k * a_k] * b[k * b_k + col * b_col];
  sum = warp_sum(sum);
  if (lane == 0) out[warp] = sum;
}

__global__ void column_sum_kernel(const float* dy, int64_t n, int64_t out, float* db) {
  RV_GRID_STRIDE(o, out) {
    float sum = 0.f;
    for (int64_t r = 0; r < n; r++) sum += dy[r * out + o];
    db[o] = sum;
  }
}

__global__ void channel_scale_kernel(const float* x, const float* scale, int64_t plane_count, int64_t spatial, float* y) {
  RV_GRID_STRIDE(i, plane_count * spatial) y[i] = x[i] * scale[i / spatial];
}

__global__ void channel_scale_backward_kernel(const float* x, const float* scale, const float* dy, int64_t plane_count, int64_t spatial,
                                              float* dx, float* dscale) {
  __shared__ double scratch[kThreads / 32];
  for (int64_t plane = blockIdx.x; plane < plane_count; plane += gridDim.x) {
    const float s = scale[plane];
    double sum = 0;
    for (int64_t p = threadIdx.x; p < spatial; p += blockDim.x) {
      const int64_t i = plane * spatial + p;
      sum += static_cast<double>(dy[i]) * x[i];
      dx[i] = dy[i] * s;
    }
    sum = block_sum(sum, scratch);
    if (threadIdx.x == 0) dscale[plane] = static_cast<float>(sum);
  }
}

__global__ void softmax_ce_kernel(const float* logits, const int32_t* labels, int64_t n, int64_t k, double ls, float* dlogits,
                                  double* row_loss) {
  RV_GRID_STRIDE(row, n) {
    const float* z = logits + row * k;
    float* dz = dlogits + row * k;
    const int64_t label = labels[row];
    double m = z[0];
    for (int64_t j = 1; j < k; j++) m = fmax(m, static_cast<double>(z[j]));
    double sum_exp = 0, sum_z = 0;
    for (int64_t j = 0; j < k; j++) {
      sum_exp += exp(static_cast<double>(z[j]) - m);
      sum_z += z[j];
    }
    const double log_sum = m + log(sum_exp);
    row_loss[row] = log_sum - (1 - ls) * z[label] - ls / static_cast<double>(k) * sum_z;
    for (int64_t j = 0; j < k; j++) {
      const double target = (j == label ? 1 - ls : 0) + ls / static_cast<double>(k);
      dz[j] = static_cast<float>((exp(static_cast<double>(z[j]) - log_sum) - target) / static_cast<double>(n));
    }
  }
}

__global__ void sgd_kernel(float* w, const float* g, float* buf, int64_t count, double lr, double momentum, bool nesterov, double wd,
                           bool first) {
  RV_GRID_STRIDE(i, count) {
    double d = __dadd_rn(static_cast<double>(g[i]), __dmul_rn(wd, static_cast<double>(w[i])));
    if (buf != nullptr) {
      const double b = first ? d : __dadd_rn(__dmul_rn(momentum, static_cast<double>(buf[i])), d);
      buf[i] = __double2float_rn(b);
      d = nesterov ? __dadd_rn(d, __dmul_rn(momentum, b)) : b;
    }
    w[i] = __double2float_rn(__dsub_rn(static_cast<double>(w[i]), __dmul_rn(lr, d)));
  }
}

__global__ void ema_kernel(float* shadow, const float* current, int64_t count, double keep, double take) {
  RV_GRID_STRIDE(i, count) {
    shadow[i] = __double2float_rn(__dadd_rn(__dmul_rn(keep, static_cast<double>(shadow[i])), __dmul_rn(take, static_cast<double>(current[i]))));
  }
}

// One thread per (o, i) kernel pair: the 8 ring taps get plain L2, the centre the equivalent-kernel term.
__global__ void custom_l2_kernel(const float* k3, float* k3_grad, const float* k1, float* k1_grad, const float* t3, const float* t1,
                                 int64_t out_channels, int64_t per_out, double wd, double* total) {
  __shared__ double scratch[kThreads / 32];
  constexpr int kCentre = 4;
  double partial = 0;
  // Every thread of a block runs the same number of iterations (block_sum synchronizes the block).
  const int64_t count = out_channels * per_out;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t rounds = (count + stride - 1) / stride;
  for (int64_t r = 0; r < rounds; r++) {
    const int64_t pair = r * stride + blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
    if (pair < count) {
      const int64_t o = pair / per_out;
      const double a3 = t3[o], a1 = t1[o];
      const double norm = __dadd_rn(__dmul_rn(a3, a3), __dmul_rn(a1, a1));
      const int64_t base = pair * 9;
      for (int tap = 0; tap < 9; tap++) {
        if (tap == kCentre) continue;
        const double v = k3[base + tap];
        partial += v * v;
        k3_grad[base + tap] = __double2float_rn(__dadd_rn(static_cast<double>(k3_grad[base + tap]), __dmul_rn(wd, v)));
      }
      const double c3 = k3[base + kCentre], c1 = k1[pair];
      const double eq = __dadd_rn(__dmul_rn(c3, a3), __dmul_rn(c1, a1));
      partial += eq * eq / norm;
      k3_grad[base + kCentre] =
          __double2float_rn(__dadd_rn(static_cast<double>(k3_grad[base + kCentre]), __ddiv_rn(__dmul_rn(__dmul_rn(wd, eq), a3), norm)));
      k1_grad[pair] = __double2float_rn(__dadd_rn(static_cast<double>(k1_grad[pair]), __ddiv_rn(__dmul_rn(__dmul_rn(wd, eq), a1), norm)));
    }
  }
  const double block_total = block_sum(partial, scratch);
  if (threadIdx.x == 0) atomicAdd(total, block_total);
}

}  // namespace

namespace {

// How many blocks share one channel's reduction: about 1024 blocks in all (a few per SM on today's largest GPUs),
// each with at least 4096 values to sum, at most 65535 (a grid dimension's limit).
unsigned reduction_splits(int64_t m, int64_t c) {
  const int64_t by_blocks = (1024 + c - 1) / c;
  const int64_t by_values = std::max<int64_t>(1, m / 4096);
  return static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>({by_blocks, by_values, 65535})));
}

// Whether 32-bit indices serve a batch-norm reduction over m values of a channel (a thread's last index plus
// blockDim stays below 2^32), and an element-wise loop over count values (the last index plus the grid's stride,
// at most 2^20 blocks of kThreads, does).
bool reduction_fits_32(int64_t m) { return m < (int64_t(1) << 32) - kThreads; }
bool elementwise_fits_32(int64_t count) { return count < (int64_t(1) << 32) - kThreads * int64_t(1 << 20); }

dim3 reduction_grid(unsigned splits, int64_t c) { return dim3(splits, static_cast<unsigned>(std::min<int64_t>(c, 65535))); }

template <typename Index>
void launch_partial(const float* x, int64_t m, int64_t spatial, int64_t c, const float* center, double* partial, unsigned splits,
                    cudaStream_t stream) {
  bn_partial_kernel<Index><<<reduction_grid(splits, c), kThreads, 0, stream>>>(x, static_cast<Index>(m), static_cast<Index>(spatial), c,
                                                                               center, partial);
}

}  // namespace

size_t batch_norm_scratch_bytes(int64_t n, int64_t c, int64_t spatial) {
  const int64_t splits = reduction_splits(n * spatial, c);
  return static_cast<size_t>(c) * static_cast<size_t>(2 * splits + 3) * sizeof(double);  // partials, then coefficients
}

cudaError_t batch_norm_stats(const float* x, int64_t n, int64_t c, int64_t spatial, float* mean, float* var, void* scratch,
                             cudaStream_t stream) {
  if (c <= 0) return cudaSuccess;
  const int64_t m = n * spatial;
  const unsigned splits = reduction_splits(m, c);
  auto* partial = static_cast<double*>(scratch);
  // Pass 1: the mean; pass 2: the mean squared deviation from it (as rounded to float, as the CPU op).
  for (const float* center : {static_cast<const float*>(nullptr), static_cast<const float*>(mean)}) {
    if (reduction_fits_32(m)) {
      launch_partial<uint32_t>(x, m, spatial, c, center, partial, splits, stream);
    } else {
      launch_partial<int64_t>(x, m, spatial, c, center, partial, splits, stream);
    }
    bn_finish_mean_kernel<<<grid_for(c), kThreads, 0, stream>>>(partial, splits, c, static_cast<double>(m), center == nullptr ? mean : var);
  }
  return cudaGetLastError();
}

cudaError_t batch_norm_apply(const float* x, int64_t n, int64_t c, int64_t spatial, const float* mean, const float* var,
                             const float* gamma, const float* beta, float eps, float* y, cudaStream_t stream) {
  const int64_t count = n * c * spatial;
  if (count <= 0) return cudaSuccess;
  if (elementwise_fits_32(count)) {
    bn_apply_kernel<uint32_t><<<grid_for(count), kThreads, 0, stream>>>(x, static_cast<uint32_t>(count), static_cast<uint32_t>(c),
                                                                        static_cast<uint32_t>(spatial), mean, var, gamma, beta, eps, y);
  } else {
    bn_apply_kernel<int64_t><<<grid_for(count), kThreads, 0, stream>>>(x, count, c, spatial, mean, var, gamma, beta, eps, y);
  }
  return cudaGetLastError();
}

cudaError_t batch_norm_backward(const float* x, const float* dy, int64_t n, int64_t c, int64_t spatial, const float* mean,
                                const float* var, const float* gamma, float eps, float* dx, float* dgamma, float* dbeta, void* scratch,
                                cudaStream_t stream) {
  if (c <= 0) return cudaSuccess;
  const int64_t m = n * spatial;
  const unsigned splits = reduction_splits(m, c);
  auto* partial = static_cast<double*>(scratch);
  if (reduction_fits_32(m)) {
    bn_backward_partial_kernel<uint32_t><<<reduction_grid(splits, c), kThreads, 0, stream>>>(
        x, dy, static_cast<uint32_t>(m), static_cast<uint32_t>(spatial), c, mean, partial);
  } else {
    bn_backward_partial_kernel<int64_t><<<reduction_grid(splits, c), kThreads, 0, stream>>>(x, dy, m, spatial, c, mean, partial);
  }
  double* coef = partial + c * 2 * static_cast<int64_t>(splits);
  bn_backward_finish_kernel<<<grid_for(c), kThreads, 0, stream>>>(partial, splits, c, static_cast<double>(m), var, gamma, eps, dgamma,
                                                                  dbeta, coef);
  const int64_t count = n * c * spatial;
  if (dx != nullptr && count > 0) {
    if (elementwise_fits_32(count)) {
      bn_backward_dx_kernel<uint32_t><<<grid_for(count), kThreads, 0, stream>>>(
          x, dy, static_cast<uint32_t>(count), static_cast<uint32_t>(c), static_cast<uint32_t>(spatial), mean, coef, dx);
    } else {
      bn_backward_dx_kernel<int64_t><<<grid_for(count), kThreads, 0, stream>>>(x, dy, count, c, spatial, mean, coef, dx);
    }
  }
  return cudaGetLastError();
}

cudaError_t update_running_stats(float* running_mean, float* running_var, const float* mean, const float* var, int64_t c,
                                 int64_t count, double momentum, cudaStream_t stream) {
  if (c <= 0) return cudaSuccess;
  running_stats_kernel<<<grid_for(c), kThreads, 0, stream>>>(running_mean, running_var, mean, var, c, static_cast<double>(count),
                                                             momentum, 1 - momentum);
  return cudaGetLastError();
}

#define RV_ELEMENTWISE(kernel, ...)                                        \
  if (count <= 0) return cudaSuccess;                                      \
  kernel<<<grid_for(count), kThreads, 0, stream>>>(__VA_ARGS__, count);    \
  return cudaGetLastError();

cudaError_t relu(const float* x, float* y, int64_t count, cudaStream_t stream) { RV_ELEMENTWISE(relu_kernel, x, y) }
cudaError_t relu_backward(const float* y, const float* dy, float* dx, int64_t count, cudaStream_t stream) {
  RV_ELEMENTWISE(relu_backward_kernel, y, dy, dx)
}
cudaError_t sigmoid(const float* x, float* y, int64_t count, cudaStream_t stream) { RV_ELEMENTWISE(sigmoid_kernel, x, y) }
cudaError_t sigmoid_backward(const float* y, const float* dy, float* dx, int64_t count, cudaStream_t stream) {
  RV_ELEMENTWISE(sigmoid_backward_kernel, y, dy, dx)
}
#undef RV_ELEMENTWISE

cudaError_t convert_f16_to_f32(const void* src, float* dst, int64_t count, cudaStream_t stream) {
  if (count <= 0) return cudaSuccess;
  f16_to_f32_kernel<<<grid_for(count), kThreads, 0, stream>>>(static_cast<const __half*>(src), dst, count);
  return cudaGetLastError();
}

cudaError_t convert_f32_to_bf16(const float* src, void* dst, int64_t count, cudaStream_t stream) {
  if (count <= 0) return cudaSuccess;
  f32_to_bf16_kernel<<<grid_for(count), kThreads, 0, stream>>>(src, static_cast<__nv_bfloat16*>(dst), count);
  return cudaGetLastError();
}

cudaError_t convert_bf16_to_f32(const void* src, float* dst, int64_t count, cudaStream_t stream) {
  if (count <= 0) return cudaSuccess;
  bf16_to_f32_kernel<<<grid_for(count), kThreads, 0, stream>>>(static_cast<const __nv_bfloat16*>(src), dst, count);
  return cudaGetLastError();
}

cudaError_t flag_non_finite(const float* x, int64_t count, int* flag, cudaStream_t stream) {
  if (count <= 0) return cudaSuccess;
  non_finite_kernel<<<grid_for(count), kThreads, 0, stream>>>(x, count, flag);
  return cudaGetLastError();
}

cudaError_t scale(const float* x, float* y, int64_t count, float factor, cudaStream_t stream) {
  if (count <= 0) return cudaSuccess;
  scale_kernel<<<grid_for(count), kThreads, 0, stream>>>(x, y, count, factor);
  return cudaGetLastError();
}

cudaError_t add(const float* a, const float* b, float* y, int64_t count, bool relu, cudaStream_t stream) {
  if (count <= 0) return cudaSuccess;
  add_kernel<<<grid_for(count), kThreads, 0, stream>>>(a, b, y, count, relu);
  return cudaGetLastError();
}

cudaError_t global_avg_pool_backward(const float* dy, int64_t n, int64_t c, int64_t spatial, float* dx, cudaStream_t stream) {
  const int64_t count = n * c * spatial;
  if (count <= 0) return cudaSuccess;
  gap_backward_kernel<<<grid_for(count), kThreads, 0, stream>>>(dy, n * c, spatial, dx);
  return cudaGetLastError();
}

namespace {
cudaError_t warp_dot(const float* a, int64_t a_row, int64_t a_k, const float* b, int64_t b_k, int64_t b_col, int64_t rows, int64_t cols,
                     int64_t inner, float* out, cudaStream_t stream) {
  const int64_t threads = rows * cols * 32;
  if (threads <= 0) return cudaSuccess;
  const unsigned blocks = static_cast<unsigned>((threads + kThreads - 1) / kThreads);
  warp_dot_kernel<<<blocks, kThreads, 0, stream>>>(a, a_row, a_k, b, b_k, b_col, rows, cols, inner, out);
  return cudaGetLastError();
}
}  // namespace

cudaError_t linear_backward(const float* x, const float* w, const float* dy, int64_t n, int64_t in, int64_t out, float* dx,
                            float* dw, float* db, cudaStream_t stream) {
  // dx (n, in) = dy (n, out) W (out, in): a(row = n, k = o) = dy[n * out + o], b(k = o, col = i) = w[o * in + i].
  if (dx != nullptr) {
    if (const cudaError_t e = warp_dot(dy, out, 1, w, in, 1, n, in, out, dx, stream); e != cudaSuccess) return e;
  }
  // dw (out, in) = dy^T x: a(row = o, k = r) = dy[r * out + o], b(k = r, col = i) = x[r * in + i].
  if (const cudaError_t e = warp_dot(dy, 1, out, x, in, 1, out, in, n, dw, stream); e != cudaSuccess) return e;
  if (out <= 0) return cudaSuccess;
  column_sum_kernel<<<grid_for(out), kThreads, 0, stream>>>(dy, n, out, db);
  return cudaGetLastError();
}

cudaError_t channel_scale(const float* x, const float* scale, int64_t n, int64_t c, int64_t spatial, float* y, cudaStream_t stream) {
  const int64_t count = n * c * spatial;
  if (count <= 0) return cudaSuccess;
  channel_scale_kernel<<<grid_for(count), kThreads, 0, stream>>>(x, scale, n * c, spatial, y);
  return cudaGetLastError();
}

cudaError_t channel_scale_backward(const float* x, const float* scale, const float* dy, int64_t n, int64_t c, int64_t spatial,
                                   float* dx, float* dscale, cudaStream_t stream) {
  if (n * c <= 0) return cudaSuccess;
  channel_scale_backward_kernel<<<blocks_for(n * c), kThreads, 0, stream>>>(x, scale, dy, n * c, spatial, dx, dscale);
  return cudaGetLastError();
}

cudaError_t softmax_cross_entropy(const float* logits, const int32_t* labels, int64_t n, int64_t k, double label_smoothing,
                                  float* dlogits, double* row_loss, cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  softmax_ce_kernel<<<grid_for(n), kThreads, 0, stream>>>(logits, labels, n, k, label_smoothing, dlogits, row_loss);
  return cudaGetLastError();
}

cudaError_t sgd_step(float* weight, const float* grad, float* momentum_buffer, int64_t count, double lr, double momentum,
                     bool nesterov, double weight_decay, bool first, cudaStream_t stream) {
  if (count <= 0) return cudaSuccess;
  sgd_kernel<<<grid_for(count), kThreads, 0, stream>>>(weight, grad, momentum_buffer, count, lr, momentum, nesterov, weight_decay, first);
  return cudaGetLastError();
}

cudaError_t ema_update(float* shadow, const float* current, int64_t count, double decay, cudaStream_t stream) {
  if (count <= 0) return cudaSuccess;
  ema_kernel<<<grid_for(count), kThreads, 0, stream>>>(shadow, current, count, decay, 1 - decay);
  return cudaGetLastError();
}

cudaError_t custom_l2(const float* k3, float* k3_grad, const float* k1, float* k1_grad, const float* t3, const float* t1,
                      int64_t out_channels, int64_t per_out, double weight_decay, double* total, cudaStream_t stream) {
  const int64_t count = out_channels * per_out;
  if (count <= 0) return cudaSuccess;
  custom_l2_kernel<<<grid_for(count), kThreads, 0, stream>>>(k3, k3_grad, k1, k1_grad, t3, t1, out_channels, per_out, weight_decay, total);
  return cudaGetLastError();
}

}  // namespace repvgg::cuda::train
