// bfloat16 x bfloat16 -> float32 matrix products with AVX512-BF16 (see bf16_gemm.h). The kernel keeps a block of
// kRows rows x 48 columns of sums in 21 registers and, for each pair of k, loads three packed B vectors, broadcasts
// each row's A pair and issues one vdpbf16ps per (row, vector). Compiled for AVX512-BF16 with target attributes
// whatever the rest of the addon targets; called only when bf16_pair_gemm_available().
#include "bf16_gemm.h"

#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "dnnl_common.h"

namespace repvgg::cpu {

namespace {

constexpr int64_t kRows = 7;  // 7 x 3 sums + 3 B vectors + 1 broadcast: 25 of the 32 registers

#define RV_BF16_TARGET __attribute__((target("avx512f,avx512bf16")))

// Sums of `Rows` rows of A times `Vectors` x 16 columns of packed B, over all of k, stored to c; requests the cache
// line at prefetch + 64 i at each pair i of k when prefetch is set.
// a: the first row; b: the column panel's pair row 0; n: the panel's columns (its pair-row stride is 2 n).
template <int Rows, int Vectors>
RV_BF16_TARGET inline __attribute__((always_inline)) void block(const uint16_t* a, int64_t lda, const uint16_t* b, int64_t n,
                                                                int64_t k, float* c, int64_t ldc, const char* prefetch) {
  __m512 sums[Rows][Vectors];
  for (int r = 0; r < Rows; r++)
    for (int v = 0; v < Vectors; v++) sums[r][v] = _mm512_setzero_ps();
  for (int64_t pair = 0; pair < k / 2; pair++) {
    __m512bh columns[Vectors];
    for (int v = 0; v < Vectors; v++) columns[v] = (__m512bh)_mm512_loadu_si512(b + pair * n * 2 + v * 32);
    if (prefetch) _mm_prefetch(prefetch + pair * kCacheLineBytes, _MM_HINT_T0);
    for (int r = 0; r < Rows; r++) {
      int32_t a_pair;
      std::memcpy(&a_pair, a + r * lda + pair * 2, sizeof(a_pair));
      const __m512bh broadcast = (__m512bh)_mm512_set1_epi32(a_pair);
      for (int v = 0; v < Vectors; v++) sums[r][v] = _mm512_dpbf16_ps(sums[r][v], broadcast, columns[v]);
    }
  }
  for (int r = 0; r < Rows; r++)
    for (int v = 0; v < Vectors; v++) _mm512_storeu_ps(c + r * ldc + v * 16, sums[r][v]);
}

// Rows [m0, m1) for `Vectors` x 16 columns: blocks of kRows, then one block of the remaining 1..kRows-1 rows.
template <int Vectors>
RV_BF16_TARGET void rows(const uint16_t* a, int64_t lda, const uint16_t* b, int64_t n, int64_t k, float* c, int64_t ldc, int64_t m0,
                         int64_t m1, PrefetchRange& prefetch) {
  int64_t m = m0;
  for (; m + kRows <= m1; m += kRows) block<kRows, Vectors>(a + m * lda, lda, b, n, k, c + m * ldc, ldc, take_prefetch_lines(prefetch, k / 2));
  const uint16_t* a_rest = a + m * lda;
  float* c_rest = c + m * ldc;
  const char* lines = m < m1 ? take_prefetch_lines(prefetch, k / 2) : nullptr;
  switch (m1 - m) {
    case 1: return block<1, Vectors>(a_rest, lda, b, n, k, c_rest, ldc, lines);
    case 2: return block<2, Vectors>(a_rest, lda, b, n, k, c_rest, ldc, lines);
    case 3: return block<3, Vectors>(a_rest, lda, b, n, k, c_rest, ldc, lines);
    case 4: return block<4, Vectors>(a_rest, lda, b, n, k, c_rest, ldc, lines);
    case 5: return block<5, Vectors>(a_rest, lda, b, n, k, c_rest, ldc, lines);
    case 6: return block<6, Vectors>(a_rest, lda, b, n, k, c_rest, ldc, lines);
    default: return;  // 0 rows left (kRows is 7)
  }
}

}  // namespace

bool bf16_pair_gemm_available() {
  static const bool available = isa_includes(dnnl::cpu_isa::avx512_core_bf16) && __builtin_cpu_supports("avx512bf16");
  return available;
}

bool bf16_pair_gemm_fits(int64_t k, int64_t n) { return k > 0 && k % 2 == 0 && n > 0 && n % 16 == 0; }

void pack_bf16_pairs(const uint16_t* b, int64_t k, int64_t n, uint16_t* packed) {
  for (int64_t n0 = 0; n0 < n; n0 += kBf16GemmColumns) {
    const int64_t width = std::min(kBf16GemmColumns, n - n0);
    uint16_t* panel = packed + n0 * k;  // the panels before it hold k x n0 values
    for (int64_t pair = 0; pair < k / 2; pair++)
      for (int64_t j = 0; j < width; j++) {
        panel[(pair * width + j) * 2] = b[(pair * 2) * n + n0 + j];
        panel[(pair * width + j) * 2 + 1] = b[(pair * 2 + 1) * n + n0 + j];
      }
  }
}

void bf16_pair_gemm(const uint16_t* a, int64_t lda, const uint16_t* packed, int64_t k, int64_t n, float* c, int64_t ldc, int64_t m0,
                    int64_t m1, int64_t n0, PrefetchRange& prefetch) {
  const int64_t width = std::min(kBf16GemmColumns, n - n0);
  const uint16_t* panel = packed + n0 * k;
  float* c0 = c + n0;
  switch (width / 16) {
    case 3: return rows<3>(a, lda, panel, width, k, c0, ldc, m0, m1, prefetch);
    case 2: return rows<2>(a, lda, panel, width, k, c0, ldc, m0, m1, prefetch);
    case 1: return rows<1>(a, lda, panel, width, k, c0, ldc, m0, m1, prefetch);
    default: return;  // n is a multiple of 16 (bf16_pair_gemm_fits)
  }
}

}  // namespace repvgg::cpu
