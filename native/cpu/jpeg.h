// The fast path of lib/data/images.ts decodeImage for plain JPEGs: libjpeg-turbo (Debian's libjpeg62-turbo, the
// library under sharp's and PIL's JPEG decoding) straight to 8-bit RGB. Why not sharp alone: sharp spent 2.9 ms of
// CPU per 500x375 JPEG here (libvips builds a pipeline per image), libjpeg-turbo itself 0.6 ms, and every served or
// trained-on JPEG pays it. Same library, same default IDCT and upsampling, so the pixels are the same.
// Not for: anything unusual. A file it does not handle exactly as sharp would (CMYK/YCCK, an EXIF orientation
// other than 1, any libjpeg warning or error, a progressive file of very many scans, more pixels than allowed) is
// declined with the reason, and images.ts hands it to sharp, whose behaviour (rotation, errors) stays the reference.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace repvgg::cpu {

struct JpegDecode {
  bool decoded = false;
  std::string declined;      // why not, when !decoded
  int64_t width = 0, height = 0;
  std::vector<uint8_t> rgb;  // (height, width, 3) when decoded
};

// Scans allowed before declining by default (libjpeg-turbo's own tools cap them too: a few bytes per progressive scan
// can make a decoder loop for minutes).
constexpr int kMaxJpegScans = 500;

// data: the file's bytes (the caller has checked they start with a JPEG SOI marker). max_pixels: the decoded
// buffer's bound, checked on the header before anything is allocated. max_scans: see kMaxJpegScans.
JpegDecode decode_jpeg_rgb(const uint8_t* data, size_t size, int64_t max_pixels, int max_scans = kMaxJpegScans);

}  // namespace repvgg::cpu
