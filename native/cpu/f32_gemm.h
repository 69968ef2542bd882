// Our float32 matrix product for the Winograd kernel's batched matmul (winograd.cc) on AVX-512: C = A x B with B
// packed once in groups of 16 columns, each group's k rows contiguous, and the next matrix's B requested into the
// cache while one is multiplied. Why not oneDNN's: at batch 1 the Winograd products are short (tens of tile rows per
// thread) and their weights come from memory, not cache (A0's fp32 weights, 47.6 MiB with the Winograd ones, are
// read once per forward), and oneDNN 2.6's brgemm matmul waits for them. A0's stage-3 products on a 2-core Zen 5,
// each thread 16 x (25 x 192) x (192 x 192), 14 layers' weights cycling: oneDNN 217 us a layer, this kernel 178-186
// us (241-249 without the prefetch: the hardware alone does not follow its three weight streams); one layer's
// weights kept in cache: 158 and 149 us. Whole forwards (docs/ARCHITECTURE.md): A0 1.09x as fast at batch 1, 1.02x
// at 8, 1.06x at 32; B0 1.07x at batch 1, 1.00x at 8. The sums run over k in order, as oneDNN's do: the same bits.
// Not for: n not a multiple of 16, CPUs without AVX-512 (f32_group_gemm_available() says; winograd.cc then keeps
// oneDNN's matmul on plain weights).
#pragma once

#include <cstdint>

#include "prefetch.h"

namespace repvgg::cpu {

// Whether this CPU has AVX-512 and oneDNN may use it (DNNL_MAX_CPU_ISA below avx512_core turns ours off too).
bool f32_group_gemm_available();

// Columns per group: one AVX-512 register of float32.
constexpr int64_t kF32GemmGroup = 16;

// Whether a product with n columns suits f32_group_gemm (whole groups).
bool f32_group_gemm_fits(int64_t n);

// b: (k, n) float32 row-major -> packed (n / 16, k, 16): group g's k rows of 16 columns, contiguous. n a multiple of 16.
void pack_f32_groups(const float* b, int64_t k, int64_t n, float* packed);

// c[m0:m1, :] = a[m0:m1, :] x b (c overwritten). a: (m, k) row-major with row stride lda; packed: pack_f32_groups of
// b (k, n); c: row stride ldc. Requests lines of `prefetch` (prefetch.h), one per step of k. Single-threaded:
// callers split rows.
void f32_group_gemm(const float* a, int64_t lda, const float* packed, int64_t k, int64_t n, float* c, int64_t ldc, int64_t m0, int64_t m1,
                    PrefetchRange& prefetch);

}  // namespace repvgg::cpu
