// Our bfloat16 matrix product for the Winograd kernel's batched matmul (winograd.cc): float32 C = bf16 A x bf16 B
// with float32 accumulation, on AVX512-BF16 (vdpbf16ps, two products per lane and instruction). Why not oneDNN's:
// oneDNN 2.6's batched bf16 matmul ran A0's stage-3 Winograd products (16 x (49 x 192) x (192 x 192)) at 360 GFLOP/s,
// barely faster than its float32 one (316), because it repacks plain B into bf16 pairs on every call and its
// 3-D form does not accept pre-packed B. These kernels read B packed once (pack_bf16_pairs) and ran the same products
// at 670 GFLOP/s with the weights coming from L3, as in a network (2-core Zen 5, one process, medians of 350 runs).
// The caller's next position's weights are requested into the cache as it goes (prefetch.h): whole bf16 forwards at
// batch 1 1.09x (A0) and 1.14x (B0) as fast.
// Not for: other instruction sets (bf16_pair_gemm_available() says; winograd.cc then keeps oneDNN's matmul),
// n not a multiple of 16, odd k.
#pragma once

#include <cstdint>

#include "prefetch.h"

namespace repvgg::cpu {

// Whether this CPU has AVX512-BF16 and oneDNN may use it (DNNL_MAX_CPU_ISA below avx512_core_bf16 turns ours off too).
bool bf16_pair_gemm_available();

// Whether a product with k rows of B and n columns suits bf16_pair_gemm (n a multiple of 16, k even).
bool bf16_pair_gemm_fits(int64_t k, int64_t n);

// Columns of B processed together by one call (three AVX-512 registers of float32 sums per row): a column panel.
constexpr int64_t kBf16GemmColumns = 48;

// b: (k, n) bf16 row-major -> packed: column panels of kBf16GemmColumns (the last one as wide as is left), one after
// the other, each (k / 2, panel width, 2): the pairs vdpbf16ps multiplies, in the order one call reads them, so that
// a call streams one contiguous block (k x n values in all). k even, n a multiple of 16.
void pack_bf16_pairs(const uint16_t* b, int64_t k, int64_t n, uint16_t* packed);

// c[m0:m1, n0:n0 + panel width] = a[m0:m1, :] x b[:, those columns] in float32 (c overwritten): the column panel
// starting at n0, a multiple of kBf16GemmColumns.
// a: (m, k) bf16 row-major with row stride lda; packed: pack_bf16_pairs of (k, n); c: (m, n) float32, row stride ldc.
// k even. Requests lines of `prefetch` (prefetch.h), one per pair of k. Single-threaded: callers split rows and panels.
void bf16_pair_gemm(const uint16_t* a, int64_t lda, const uint16_t* packed, int64_t k, int64_t n, float* c, int64_t ldc,
                    int64_t m0, int64_t m1, int64_t n0, PrefetchRange& prefetch);

}  // namespace repvgg::cpu
