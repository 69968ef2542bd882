// Software prefetch for our matrix-product kernels (f32_gemm.cc, bf16_gemm.cc): at batch 1 a network's Winograd
// weights come from memory once per forward, and the hardware prefetchers start too late on them, so a kernel
// requests the weights of its next matrix (the next Winograd position) while it multiplies the current one: one
// cache line per step of its inner loop, block after block, until the range is requested.
#pragma once

#include <cstdint>

namespace repvgg::cpu {

// Bytes a kernel's caller will read next; `next` advances past what was requested.
struct PrefetchRange {
  const char* next = nullptr;
  const char* end = nullptr;
};

constexpr int64_t kCacheLineBytes = 64;

// The start of the next `lines` cache lines of the range for one block of a kernel, which requests line i at step i
// of its loop; nullptr once the range is used up. The last block may request up to `lines` lines past the range's
// end: a prefetch never faults, and the kernels' ranges end inside or at the end of the weights.
inline const char* take_prefetch_lines(PrefetchRange& prefetch, int64_t lines) {
  if (prefetch.next == nullptr || prefetch.next >= prefetch.end) return nullptr;
  const char* first = prefetch.next;
  prefetch.next += lines * kCacheLineBytes;
  return first;
}

}  // namespace repvgg::cpu
