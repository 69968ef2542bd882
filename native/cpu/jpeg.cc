// libjpeg-turbo decoding of plain JPEGs to RGB for images.ts (see jpeg.h): the library's error and warning handlers
// jump back here instead of exiting or printing, and every file that would need more than a straight decode is
// declined, with the reason, for sharp to handle.
#include "jpeg.h"

#include <algorithm>
#include <csetjmp>
#include <cstdio>  // jpeglib.h needs FILE and size_t declared first

#include <jpeglib.h>

namespace repvgg::cpu {

namespace {

// libjpeg's error manager plus where to jump back to and why.
struct ErrorJump {
  jpeg_error_mgr manager;
  std::jmp_buf back;
  char reason[JMSG_LENGTH_MAX + 64];
};

[[noreturn]] void jump_back(j_common_ptr cinfo, const char* what) {
  auto* jump = reinterpret_cast<ErrorJump*>(cinfo->err);
  char message[JMSG_LENGTH_MAX];
  jump->manager.format_message(cinfo, message);
  std::snprintf(jump->reason, sizeof(jump->reason), "%s: %s", what, message);
  std::longjmp(jump->back, 1);
}

void on_error(j_common_ptr cinfo) { jump_back(cinfo, "libjpeg error"); }

// msg_level -1 is a warning about the data (corrupt or truncated, which sharp's failOn 'warning' rejects); higher
// levels are trace messages, ignored.
void on_message(j_common_ptr cinfo, int msg_level) {
  if (msg_level < 0) jump_back(cinfo, "libjpeg warning");
}

struct ScanLimit {
  jpeg_progress_mgr progress;
  ErrorJump* jump;
  int max_scans;
};

void on_progress(j_common_ptr cinfo) {
  auto* limit = reinterpret_cast<ScanLimit*>(cinfo->progress);
  const auto* dinfo = reinterpret_cast<j_decompress_ptr>(cinfo);
  if (dinfo->input_scan_number <= limit->max_scans) return;
  std::snprintf(limit->jump->reason, sizeof(limit->jump->reason), "more than %d scans", limit->max_scans);
  std::longjmp(limit->jump->back, 1);
}

uint32_t read_u16(const uint8_t* p, bool big_endian) { return big_endian ? (p[0] << 8) | p[1] : (p[1] << 8) | p[0]; }
uint32_t read_u32(const uint8_t* p, bool big_endian) {
  return big_endian ? (uint32_t{p[0]} << 24) | (p[1] << 16) | (p[2] << 8) | p[3] : (uint32_t{p[3]} << 24) | (p[2] << 16) | (p[1] << 8) | p[0];
}

// The orientation tag (0x0112) of IFD0 in an APP1 payload: 0 when the payload is not EXIF, 1 when EXIF has no
// orientation, the tag's value otherwise, -1 when the EXIF structure points outside the payload.
int exif_orientation(const uint8_t* payload, size_t size) {
  static const uint8_t kExif[6] = {'E', 'x', 'i', 'f', 0, 0};
  if (size < 6 || !std::equal(kExif, kExif + 6, payload)) return 0;
  const uint8_t* tiff = payload + 6;
  const size_t tiff_size = size - 6;
  if (tiff_size < 8) return -1;
  const bool big_endian = tiff[0] == 'M' && tiff[1] == 'M';
  if (!big_endian && !(tiff[0] == 'I' && tiff[1] == 'I')) return -1;
  if (read_u16(tiff + 2, big_endian) != 42) return -1;
  const uint64_t ifd = read_u32(tiff + 4, big_endian);
  if (ifd + 2 > tiff_size) return -1;
  const uint64_t entries = read_u16(tiff + ifd, big_endian);
  if (ifd + 2 + entries * 12 > tiff_size) return -1;
  for (uint64_t i = 0; i < entries; i++) {
    const uint8_t* entry = tiff + ifd + 2 + i * 12;
    if (read_u16(entry, big_endian) != 0x0112) continue;
    const uint32_t type = read_u16(entry + 2, big_endian), count = read_u32(entry + 4, big_endian);
    if (type != 3 || count != 1) return -1;  // SHORT, one value, stored in the entry itself
    return static_cast<int>(read_u16(entry + 8, big_endian));
  }
  return 1;
}

// The decode proper, with the setjmp that libjpeg's handlers jump back to. Everything it changes lives behind its
// pointers, in the caller's frame (a local changed after setjmp would be indeterminate after the jump). Returns
// false when declined (out->declined says why); cinfo is destroyed either way.
bool decode_into(const uint8_t* data, size_t size, int64_t max_pixels, jpeg_decompress_struct* cinfo, ErrorJump* jump,
                 jpeg_progress_mgr* progress, JpegDecode* out) {
  if (setjmp(jump->back) != 0) {
    jpeg_destroy_decompress(cinfo);
    out->rgb.clear();
    out->declined = jump->reason;
    return false;
  }
  auto decline = [&](const std::string& why) {
    jpeg_destroy_decompress(cinfo);
    out->declined = why;
    return false;
  };
  jpeg_create_decompress(cinfo);  // zeroes all but cinfo->err
  cinfo->progress = progress;
  jpeg_mem_src(cinfo, data, static_cast<unsigned long>(size));
  jpeg_save_markers(cinfo, JPEG_APP0 + 1, 0xFFFF);
  jpeg_read_header(cinfo, TRUE);
  int exif_segments = 0;
  for (jpeg_saved_marker_ptr marker = cinfo->marker_list; marker != nullptr; marker = marker->next) {
    const int orientation = exif_orientation(marker->data, marker->data_length);
    if (orientation == 0) continue;
    if (++exif_segments > 1) return decline("more than one EXIF segment");
    if (orientation < 0) return decline("malformed EXIF");
    if (orientation != 1) return decline("EXIF orientation " + std::to_string(orientation));
  }
  const J_COLOR_SPACE space = cinfo->jpeg_color_space;
  if (space != JCS_YCbCr && space != JCS_GRAYSCALE && space != JCS_RGB) return decline("colour space " + std::to_string(space));
  const int64_t width = cinfo->image_width, height = cinfo->image_height;
  if (width < 1 || height < 1 || width * height > max_pixels) {
    return decline(std::to_string(width) + "x" + std::to_string(height) + " pixels (at most " + std::to_string(max_pixels) + ")");
  }
  cinfo->out_color_space = JCS_RGB;
  jpeg_start_decompress(cinfo);
  if (cinfo->output_components != 3 || cinfo->output_width != width || cinfo->output_height != height) {
    return decline("an output of " + std::to_string(cinfo->output_components) + " components");
  }
  out->rgb.resize(static_cast<size_t>(width * height * 3));
  while (cinfo->output_scanline < cinfo->output_height) {
    JSAMPROW row = out->rgb.data() + static_cast<size_t>(cinfo->output_scanline) * width * 3;
    jpeg_read_scanlines(cinfo, &row, 1);
  }
  jpeg_finish_decompress(cinfo);
  jpeg_destroy_decompress(cinfo);
  out->width = width;
  out->height = height;
  return true;
}

}  // namespace

JpegDecode decode_jpeg_rgb(const uint8_t* data, size_t size, int64_t max_pixels, int max_scans) {
  JpegDecode result;
  jpeg_decompress_struct cinfo;
  ErrorJump jump;
  cinfo.err = jpeg_std_error(&jump.manager);
  jump.manager.error_exit = on_error;
  jump.manager.emit_message = on_message;
  ScanLimit limit;
  limit.progress.progress_monitor = on_progress;
  limit.jump = &jump;
  limit.max_scans = max_scans;
  result.decoded = decode_into(data, size, max_pixels, &cinfo, &jump, &limit.progress, &result);
  return result;
}

}  // namespace repvgg::cpu
