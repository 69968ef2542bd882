// PIL's bilinear resampling passes on RGB bytes (see resample.h). Sums are int32: 255 x 2^22 (weights sum to 1.0 in
// fixed point) + 2^21 stays below 2^31. Each output byte is PIL's clip8 of its sum.
#include "resample.h"

#include <cstddef>
#include <vector>

namespace repvgg::cpu {

namespace {

constexpr int kPrecisionBits = 22;
constexpr int32_t kHalf = 1 << (kPrecisionBits - 1);

inline uint8_t clip8(int32_t sum) {
  const int32_t v = sum >> kPrecisionBits;
  return static_cast<uint8_t>(v < 0 ? 0 : v > 255 ? 255 : v);
}

}  // namespace

bool resample_taps_fit(const ResampleTaps& taps, int64_t lo, int64_t hi) {
  for (int64_t i = 0; i < taps.n; i++) {
    const int64_t first = taps.first[i], count = taps.count[i];
    if (count < 0 || count > taps.max_taps || first < lo || first + count > hi) return false;
  }
  return true;
}

void resample_bilinear_rgb(const uint8_t* src, int64_t src_stride, const ResampleTaps& horizontal, const ResampleTaps& vertical,
                           int64_t row_first, int64_t row_end, uint8_t* out, int64_t out_stride) {
  const int64_t columns = horizontal.n, temp_stride = columns * 3;
  // Horizontal pass over the rows the vertical taps read: (row_end - row_first, columns, 3) bytes.
  std::vector<uint8_t> temp(static_cast<size_t>((row_end - row_first) * temp_stride));
  for (int64_t r = row_first; r < row_end; r++) {
    const uint8_t* row = src + r * src_stride;
    uint8_t* t = temp.data() + (r - row_first) * temp_stride;
    for (int64_t c = 0; c < columns; c++) {
      const int32_t* w = horizontal.weights + c * horizontal.max_taps;
      const uint8_t* s = row + static_cast<int64_t>(horizontal.first[c]) * 3;
      int32_t red = kHalf, green = kHalf, blue = kHalf;
      for (int32_t i = 0; i < horizontal.count[c]; i++) {
        red += s[i * 3] * w[i];
        green += s[i * 3 + 1] * w[i];
        blue += s[i * 3 + 2] * w[i];
      }
      t[c * 3] = clip8(red);
      t[c * 3 + 1] = clip8(green);
      t[c * 3 + 2] = clip8(blue);
    }
  }
  // Vertical pass, one tap row at a time over a whole output row (contiguous, vectorizable).
  std::vector<int32_t> sums(static_cast<size_t>(temp_stride));
  for (int64_t y = 0; y < vertical.n; y++) {
    const int32_t* w = vertical.weights + y * vertical.max_taps;
    const uint8_t* t = temp.data() + (vertical.first[y] - row_first) * temp_stride;
    for (int64_t x = 0; x < temp_stride; x++) sums[x] = kHalf;
    for (int32_t i = 0; i < vertical.count[y]; i++)
      for (int64_t x = 0; x < temp_stride; x++) sums[x] += t[i * temp_stride + x] * w[i];
    uint8_t* o = out + y * out_stride;
    for (int64_t x = 0; x < temp_stride; x++) o[x] = clip8(sums[x]);
  }
}

}  // namespace repvgg::cpu
