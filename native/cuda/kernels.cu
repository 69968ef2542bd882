// The CUDA kernels declared in kernels.h. Plain and memory-bound: each touches every element once, computes in
// float (half values are widened on load and rounded once on store) and uses grid-stride loops with 64-bit
// indices so that any tensor size works. None of them is on the hot path of a deployed network without SE:
// there, cuDNN's fused conv+bias+ReLU does all the work and only the input conversion and the head run here.
#include <cuda_fp16.h>

#include <algorithm>

#include "kernels.h"

namespace repvgg::cuda {

namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ float load(const float* p, int64_t i) { return p[i]; }
__device__ __forceinline__ float load(const __half* p, int64_t i) { return __half2float(p[i]); }
__device__ __forceinline__ void store(float* p, int64_t i, float v) { p[i] = v; }
__device__ __forceinline__ void store(__half* p, int64_t i, float v) { p[i] = __float2half_rn(v); }

__device__ __forceinline__ float apply(Activation act, float v) {
  switch (act) {
    case Activation::relu: return v > 0.f ? v : 0.f;
    case Activation::sigmoid: return 1.f / (1.f + __expf(-v));
    case Activation::none: break;
  }
  return v;
}

// Channel of flat element i of an (n, c, h, w) tensor stored in layout.
__device__ __forceinline__ int64_t channel_of(int64_t i, int64_t c, int64_t spatial, Layout layout) {
  return layout == Layout::nhwc ? i % c : (i / spatial) % c;
}

// Image (batch index) of flat element i.
__device__ __forceinline__ int64_t image_of(int64_t i, int64_t c, int64_t spatial) { return i / (c * spatial); }

unsigned grid_for(int64_t count) {
  const int64_t blocks = (count + kThreads - 1) / kThreads;
  return static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>(blocks, 1 << 20)));
}

#define RV_GRID_STRIDE(i, count) \
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < (count); i += static_cast<int64_t>(gridDim.x) * blockDim.x)

template <typename T>
__global__ void fill_kernel(T* data, int64_t count, float value) {
  RV_GRID_STRIDE(i, count) store(data, i, value);
}

template <typename T>
__global__ void pattern_kernel(T* data, int64_t count) {
  RV_GRID_STRIDE(i, count) {
    // Knuth's multiplicative hash of the index, 10 bits of it: 1024 levels over [-0.5, 1).
    const uint32_t h = static_cast<uint32_t>(i) * 2654435761u;
    store(data, i, static_cast<float>(h >> 22) * (1.5f / 1024.f) - 0.5f);
  }
}

// Non-negative floats order like their bit patterns as unsigned integers, so atomicMax on the bits is a float max.
template <typename T>
__global__ void max_abs_difference_kernel(const T* a, const T* b, int64_t count, float* result) {
  float diff = 0.f, magnitude = 0.f;
  RV_GRID_STRIDE(i, count) {
    const float vb = load(b, i);
    const float d = fabsf(load(a, i) - vb);
    if (!(d <= diff)) diff = d;  // a NaN difference wins (fmaxf would drop it); its bits order above every float
    if (!(fabsf(vb) <= magnitude)) magnitude = fabsf(vb);
  }
  atomicMax(reinterpret_cast<unsigned*>(result), __float_as_uint(diff));
  atomicMax(reinterpret_cast<unsigned*>(result + 1), __float_as_uint(magnitude));
}

__global__ void f32_to_f16_kernel(const float* src, __half* dst, int64_t count) {
  RV_GRID_STRIDE(i, count) dst[i] = __float2half_rn(src[i]);
}

__global__ void kcrs_to_krsc_kernel(const float* src, __half* dst, int64_t k, int64_t c, int64_t rs, int64_t c_pad) {
  const int64_t count = k * rs * c_pad;
  RV_GRID_STRIDE(i, count) {
    const int64_t ch = i % c_pad, pos = (i / c_pad) % rs, out = i / (c_pad * rs);
    dst[i] = __float2half_rn(ch < c ? src[(out * c + ch) * rs + pos] : 0.f);
  }
}

__global__ void nchw_to_nhwc_kernel(const float* src, __half* dst, int64_t n, int64_t c, int64_t hw, int64_t c_pad) {
  const int64_t count = n * hw * c_pad;
  RV_GRID_STRIDE(i, count) {
    const int64_t ch = i % c_pad, pos = (i / c_pad) % hw, img = i / (c_pad * hw);
    dst[i] = __float2half_rn(ch < c ? src[(img * c + ch) * hw + pos] : 0.f);
  }
}

template <typename T>
__global__ void bias_activation_kernel(T* y, int64_t count, int64_t c, int64_t spatial, Layout layout, const float* bias, Activation act) {
  RV_GRID_STRIDE(i, count) store(y, i, apply(act, load(y, i) + (bias ? bias[channel_of(i, c, spatial, layout)] : 0.f)));
}

template <typename T>
__global__ void scale_shift_kernel(const T* x, T* y, int64_t count, int64_t c, int64_t spatial, Layout layout, const float* scale,
                                   const float* shift) {
  RV_GRID_STRIDE(i, count) {
    const int64_t ch = channel_of(i, c, spatial, layout);
    store(y, i, load(x, i) * scale[ch] + shift[ch]);
  }
}

template <typename T>
__global__ void add_kernel(const T* a, const T* b, T* y, int64_t count, bool relu) {
  RV_GRID_STRIDE(i, count) {
    const float v = load(a, i) + load(b, i);
    store(y, i, relu && v < 0.f ? 0.f : v);
  }
}

template <typename T>
__global__ void channel_scale_kernel(T* x, int64_t count, int64_t c, int64_t spatial, Layout layout, const float* gate, bool relu) {
  RV_GRID_STRIDE(i, count) {
    const float v = load(x, i) * gate[image_of(i, c, spatial) * c + channel_of(i, c, spatial, layout)];
    store(x, i, relu && v < 0.f ? 0.f : v);
  }
}

__device__ __forceinline__ float warp_sum(float v) {
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_down_sync(0xffffffffu, v, offset);
  return v;
}

// NCHW: one block per (image, channel) plane, kThreads threads summing strided elements, then a block reduce.
template <typename T>
__global__ void mean_nchw_kernel(const T* x, int64_t planes, int64_t spatial, float* out) {
  __shared__ float partial[kThreads / 32];
  // Block-stride over planes: the grid is capped, any n * c works.
  for (int64_t plane = blockIdx.x; plane < planes; plane += gridDim.x) {
    const T* p = x + plane * spatial;
    float sum = 0.f;
    for (int64_t i = threadIdx.x; i < spatial; i += blockDim.x) sum += load(p, i);
    sum = warp_sum(sum);
    if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = sum;
    __syncthreads();
    if (threadIdx.x < 32) {
      float v = threadIdx.x < kThreads / 32 ? partial[threadIdx.x] : 0.f;
      v = warp_sum(v);
      if (threadIdx.x == 0) out[plane] = v / static_cast<float>(spatial);
    }
    __syncthreads();  // partial is rewritten by the next plane
  }
}

// NHWC: a block covers 32 consecutive channels of one image (coalesced reads along c); its 8 rows of threads
// split the spatial positions, then the rows are summed through shared memory. Images are block-strided over
// grid.y, which the launcher caps at its hardware limit (65535), so any batch works.
template <typename T>
__global__ void mean_nhwc_kernel(const T* x, int64_t n, int64_t c, int64_t spatial, float* out) {
  __shared__ float rows[8][33];
  const int64_t ch = blockIdx.x * 32 + threadIdx.x;
  for (int64_t img = blockIdx.y; img < n; img += gridDim.y) {
    float sum = 0.f;
    if (ch < c) {
      for (int64_t pos = threadIdx.y; pos < spatial; pos += blockDim.y) sum += load(x, (img * spatial + pos) * c + ch);
    }
    rows[threadIdx.y][threadIdx.x] = sum;
    __syncthreads();
    if (threadIdx.y == 0 && ch < c) {
      float total = 0.f;
      for (int r = 0; r < 8; r++) total += rows[r][threadIdx.x];
      out[img * c + ch] = total / static_cast<float>(spatial);
    }
    __syncthreads();  // rows is rewritten by the next image
  }
}

// One warp per output element: the row of W is read contiguously by the 32 lanes.
__global__ void linear_kernel(const float* x, const float* weight, const float* bias, float* y, int64_t n, int64_t in, int64_t out,
                              Activation act) {
  const int64_t warp = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (warp >= n * out) return;
  const int64_t row = warp / out, k = warp % out;
  const float* xr = x + row * in;
  const float* wr = weight + k * in;
  float sum = 0.f;
  for (int64_t i = lane; i < in; i += 32) sum += xr[i] * wr[i];
  sum = warp_sum(sum);
  if (lane == 0) y[warp] = apply(act, sum + bias[k]);
}

}  // namespace

cudaError_t fill_values(void* data, int64_t count, bool half, float value, cudaStream_t stream) {
  if (count <= 0) return cudaSuccess;
  if (half) {
    fill_kernel<<<grid_for(count), kThreads, 0, stream>>>(static_cast<__half*>(data), count, value);
  } else {
    fill_kernel<<<grid_for(count), kThreads, 0, stream>>>(static_cast<float*>(data), count, value);
  }
  return cudaGetLastError();
}

cudaError_t fill_pattern(void* data, int64_t count, bool half, cudaStream_t stream) {
  if (count <= 0) return cudaSuccess;
  if (half) {
    pattern_kernel<<<grid_for(count), kThreads, 0, stream>>>(static_cast<__half*>(data), count);
  } else {
    pattern_kernel<<<grid_for(count), kThreads, 0, stream>>>(static_cast<float*>(data), count);
  }
  return cudaGetLastError();
}

cudaError_t max_abs_difference(const void* a, const void* b, int64_t count, bool half, float* result, cudaStream_t stream) {
  if (const cudaError_t e = cudaMemsetAsync(result, 0, 2 * sizeof(float), stream); e != cudaSuccess) return e;
  if (count <= 0) return cudaSuccess;
  if (half) {
    max_abs_difference_kernel<<<grid_for(count), kThreads, 0, stream>>>(static_cast<const __half*>(a), static_cast<const __half*>(b),
                                                                        count, result);
  } else {
    max_abs_difference_kernel<<<grid_for(count), kThreads, 0, stream>>>(static_cast<const float*>(a), static_cast<const float*>(b),
                                                                        count, result);
  }
  return cudaGetLastError();
}

cudaError_t convert_f32_to_f16(const float* src, void* dst, int64_t count, cudaStream_t stream) {
  if (count <= 0) return cudaSuccess;
  f32_to_f16_kernel<<<grid_for(count), kThreads, 0, stream>>>(src, static_cast<__half*>(dst), count);
  return cudaGetLastError();
}

cudaError_t weights_kcrs_to_krsc_f16(const float* src, void* dst, int64_t k, int64_t c, int64_t r, int64_t s, int64_t c_pad,
                                     cudaStream_t stream) {
  const int64_t count = k * r * s * c_pad;
  if (count <= 0) return cudaSuccess;
  kcrs_to_krsc_kernel<<<grid_for(count), kThreads, 0, stream>>>(src, static_cast<__half*>(dst), k, c, r * s, c_pad);
  return cudaGetLastError();
}

cudaError_t images_nchw_to_nhwc_f16(const float* src, void* dst, int64_t n, int64_t c, int64_t h, int64_t w, int64_t c_pad,
                                    cudaStream_t stream) {
  const int64_t count = n * h * w * c_pad;
  if (count <= 0) return cudaSuccess;
  nchw_to_nhwc_kernel<<<grid_for(count), kThreads, 0, stream>>>(src, static_cast<__half*>(dst), n, c, h * w, c_pad);
  return cudaGetLastError();
}

cudaError_t bias_activation(void* y, const ActShape& s, const float* bias, Activation act, cudaStream_t stream) {
  const int64_t count = s.count();
  if (count <= 0) return cudaSuccess;
  if (s.half) {
    bias_activation_kernel<<<grid_for(count), kThreads, 0, stream>>>(static_cast<__half*>(y), count, s.c, s.spatial(), s.layout, bias, act);
  } else {
    bias_activation_kernel<<<grid_for(count), kThreads, 0, stream>>>(static_cast<float*>(y), count, s.c, s.spatial(), s.layout, bias, act);
  }
  return cudaGetLastError();
}

cudaError_t scale_shift(const void* x, void* y, const ActShape& s, const float* scale, const float* shift, cudaStream_t stream) {
  const int64_t count = s.count();
  if (count <= 0) return cudaSuccess;
  if (s.half) {
    scale_shift_kernel<<<grid_for(count), kThreads, 0, stream>>>(static_cast<const __half*>(x), static_cast<__half*>(y), count, s.c,
                                                                 s.spatial(), s.layout, scale, shift);
  } else {
    scale_shift_kernel<<<grid_for(count), kThreads, 0, stream>>>(static_cast<const float*>(x), static_cast<float*>(y), count, s.c,
                                                                 s.spatial(), s.layout, scale, shift);
  }
  return cudaGetLastError();
}

cudaError_t add_tensors(const void* a, const void* b, void* y, int64_t count, bool half, bool relu, cudaStream_t stream) {
  if (count <= 0) return cudaSuccess;
  if (half) {
    add_kernel<<<grid_for(count), kThreads, 0, stream>>>(static_cast<const __half*>(a), static_cast<const __half*>(b),
                                                         static_cast<__half*>(y), count, relu);
  } else {
    add_kernel<<<grid_for(count), kThreads, 0, stream>>>(static_cast<const float*>(a), static_cast<const float*>(b),
                                                         static_cast<float*>(y), count, relu);
  }
  return cudaGetLastError();
}

cudaError_t global_mean(const void* x, const ActShape& s, float* out, cudaStream_t stream) {
  if (s.count() <= 0) return cudaSuccess;
  if (s.layout == Layout::nchw) {
    const int64_t planes = s.n * s.c;
    const unsigned blocks = static_cast<unsigned>(std::min<int64_t>(planes, 1 << 20));
    if (s.half) {
      mean_nchw_kernel<<<blocks, kThreads, 0, stream>>>(static_cast<const __half*>(x), planes, s.spatial(), out);
    } else {
      mean_nchw_kernel<<<blocks, kThreads, 0, stream>>>(static_cast<const float*>(x), planes, s.spatial(), out);
    }
  } else {
    constexpr int64_t kMaxGridY = 65535;
    const dim3 grid(static_cast<unsigned>((s.c + 31) / 32), static_cast<unsigned>(std::min(s.n, kMaxGridY)));
    const dim3 block(32, 8);
    if (s.half) {
      mean_nhwc_kernel<<<grid, block, 0, stream>>>(static_cast<const __half*>(x), s.n, s.c, s.spatial(), out);
    } else {
      mean_nhwc_kernel<<<grid, block, 0, stream>>>(static_cast<const float*>(x), s.n, s.c, s.spatial(), out);
    }
  }
  return cudaGetLastError();
}

cudaError_t linear_forward(const float* x, const float* weight, const float* bias, float* y, int64_t n, int64_t in, int64_t out,
                           Activation act, cudaStream_t stream) {
  const int64_t warps = n * out;
  if (warps <= 0) return cudaSuccess;
  const int64_t blocks = (warps * 32 + kThreads - 1) / kThreads;
  linear_kernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(x, weight, bias, y, n, in, out, act);
  return cudaGetLastError();
}

cudaError_t channel_scale(void* x, const ActShape& s, const float* gate, bool relu, cudaStream_t stream) {
  const int64_t count = s.count();
  if (count <= 0) return cudaSuccess;
  if (s.half) {
    channel_scale_kernel<<<grid_for(count), kThreads, 0, stream>>>(static_cast<__half*>(x), count, s.c, s.spatial(), s.layout, gate, relu);
  } else {
    channel_scale_kernel<<<grid_for(count), kThreads, 0, stream>>>(static_cast<float*>(x), count, s.c, s.spatial(), s.layout, gate, relu);
  }
  return cudaGetLastError();
}

cudaError_t probe_kernels() {
  cudaFuncAttributes attributes{};
  return cudaFuncGetAttributes(&attributes, fill_kernel<float>);
}

}  // namespace repvgg::cuda
