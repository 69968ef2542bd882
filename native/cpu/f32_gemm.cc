// float32 matrix products with AVX-512 for the Winograd products (see f32_gemm.h). The kernel keeps a block of up to
// kRows rows x 3 groups (48 columns) of sums in 21 registers and, for each k, loads the three groups' 16 weights,
// broadcasts each row's A value and issues one FMA per (row, group); the sums run over k in order, as oneDNN's
// matmul sums them. Compiled for AVX-512 with target attributes whatever the rest of the addon targets; called only
// when f32_group_gemm_available().
#include "f32_gemm.h"

#include <immintrin.h>

#include <algorithm>

#include "dnnl_common.h"

namespace repvgg::cpu {

namespace {

constexpr int kRows = 7;          // 7 x 3 sums + 3 weight vectors + 1 broadcast: 25 of the 32 registers
constexpr int kGroupsPerBlock = 3;

#define RV_AVX512_TARGET __attribute__((target("avx512f")))

// Sums of `Rows` rows of A times `Groups` packed groups of B, over all of k, stored to c; requests the cache line at
// prefetch + 64 i at each step i of k when prefetch is set.
// a: the first row; b: the first group's row 0 (group v at b + v k 16).
template <int Rows, int Groups>
RV_AVX512_TARGET inline __attribute__((always_inline)) void block(const float* a, int64_t lda, const float* b, int64_t k, float* c,
                                                                  int64_t ldc, const char* prefetch) {
  __m512 sums[Rows][Groups];
  for (int r = 0; r < Rows; r++)
    for (int v = 0; v < Groups; v++) sums[r][v] = _mm512_setzero_ps();
  for (int64_t i = 0; i < k; i++) {
    __m512 columns[Groups];
    for (int v = 0; v < Groups; v++) columns[v] = _mm512_loadu_ps(b + (v * k + i) * kF32GemmGroup);
    if (prefetch) _mm_prefetch(prefetch + i * kCacheLineBytes, _MM_HINT_T0);
    for (int r = 0; r < Rows; r++) {
      const __m512 broadcast = _mm512_set1_ps(a[r * lda + i]);
      for (int v = 0; v < Groups; v++) sums[r][v] = _mm512_fmadd_ps(broadcast, columns[v], sums[r][v]);
    }
  }
  for (int r = 0; r < Rows; r++)
    for (int v = 0; v < Groups; v++) _mm512_storeu_ps(c + r * ldc + v * kF32GemmGroup, sums[r][v]);
}

// Rows [m0, m1) for `Groups` groups, in blocks of at most kRows rows whose sizes differ by at most one (25 rows: 7,
// 6, 6, 6 rather than 7, 7, 7, 4, whose last block would load the weights for few FMAs).
template <int Groups>
RV_AVX512_TARGET void rows(const float* a, int64_t lda, const float* b, int64_t k, float* c, int64_t ldc, int64_t m0, int64_t m1,
                           PrefetchRange& prefetch) {
  const int64_t count = m1 - m0, blocks = (count + kRows - 1) / kRows;
  for (int64_t block_index = 0; block_index < blocks; block_index++) {
    const int64_t first = m0 + count * block_index / blocks, last = m0 + count * (block_index + 1) / blocks;
    const float* a_block = a + first * lda;
    float* c_block = c + first * ldc;
    const char* lines = take_prefetch_lines(prefetch, k);
    switch (last - first) {
      case 1: block<1, Groups>(a_block, lda, b, k, c_block, ldc, lines); break;
      case 2: block<2, Groups>(a_block, lda, b, k, c_block, ldc, lines); break;
      case 3: block<3, Groups>(a_block, lda, b, k, c_block, ldc, lines); break;
      case 4: block<4, Groups>(a_block, lda, b, k, c_block, ldc, lines); break;
      case 5: block<5, Groups>(a_block, lda, b, k, c_block, ldc, lines); break;
      case 6: block<6, Groups>(a_block, lda, b, k, c_block, ldc, lines); break;
      default: block<kRows, Groups>(a_block, lda, b, k, c_block, ldc, lines); break;  // 7 rows
    }
  }
}

}  // namespace

bool f32_group_gemm_available() {
  static const bool available = isa_includes(dnnl::cpu_isa::avx512_core) && __builtin_cpu_supports("avx512f");
  return available;
}

bool f32_group_gemm_fits(int64_t n) { return n > 0 && n % kF32GemmGroup == 0; }

void pack_f32_groups(const float* b, int64_t k, int64_t n, float* packed) {
  for (int64_t group = 0; group < n / kF32GemmGroup; group++)
    for (int64_t i = 0; i < k; i++)
      std::copy_n(b + i * n + group * kF32GemmGroup, kF32GemmGroup, packed + (group * k + i) * kF32GemmGroup);
}

void f32_group_gemm(const float* a, int64_t lda, const float* packed, int64_t k, int64_t n, float* c, int64_t ldc, int64_t m0, int64_t m1,
                    PrefetchRange& prefetch) {
  const int64_t groups = n / kF32GemmGroup;
  for (int64_t group = 0; group < groups; group += kGroupsPerBlock) {
    const float* b = packed + group * k * kF32GemmGroup;
    float* c_groups = c + group * kF32GemmGroup;
    switch (std::min<int64_t>(kGroupsPerBlock, groups - group)) {
      case 3: rows<3>(a, lda, b, k, c_groups, ldc, m0, m1, prefetch); break;
      case 2: rows<2>(a, lda, b, k, c_groups, ldc, m0, m1, prefetch); break;
      default: rows<1>(a, lda, b, k, c_groups, ldc, m0, m1, prefetch); break;
    }
  }
}

}  // namespace repvgg::cpu
