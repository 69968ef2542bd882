// PIL's 8-bit bilinear resampling loops (Resample.c: a horizontal pass rounded to bytes, then a vertical pass, in
// 22-bit fixed point), for lib/data/images.ts, which computes the filter taps exactly as PIL does and checks sizes.
// Native because the two passes over a 500x375 photo took ~3 ms in JavaScript per image, on the decoding workers that
// share the cores with inference. Not for: other filters, channel counts other than 3.
#pragma once

#include <cstdint>

namespace repvgg::cpu {

// The taps of n output positions along one axis: position i reads `count[i]` inputs from `first[i]` with weights
// weights[i * max_taps .. + count[i]] (fixed point, 22 fraction bits).
struct ResampleTaps {
  const int32_t* first;
  const int32_t* count;
  const int32_t* weights;
  int64_t n;
  int64_t max_taps;
};

// src: RGB bytes, the region's top-left pixel first, rows `src_stride` bytes apart; the vertical taps index rows
// relative to it and lie within [row_first, row_end). out: (vertical.n rows `out_stride` bytes apart, horizontal.n
// pixels, 3) bytes. The caller has checked every index (resample_taps_fit).
void resample_bilinear_rgb(const uint8_t* src, int64_t src_stride, const ResampleTaps& horizontal, const ResampleTaps& vertical,
                           int64_t row_first, int64_t row_end, uint8_t* out, int64_t out_stride);

// Whether every tap of `taps` reads an input in [lo, hi) and has at most max_taps weights.
bool resample_taps_fit(const ResampleTaps& taps, int64_t lo, int64_t hi);

}  // namespace repvgg::cpu
