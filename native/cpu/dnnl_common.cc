// Shared oneDNN engine/stream and helpers of the CPU backend (see dnnl_common.h).
#include "dnnl_common.h"

namespace repvgg::cpu {

dnnl::engine& engine() {
  static dnnl::engine eng(dnnl::engine::kind::cpu, 0);
  return eng;
}

dnnl::stream& stream() {
  static dnnl::stream strm(engine());
  return strm;
}

std::mutex& compute_mutex() {
  static std::mutex m;
  return m;
}

dnnl::memory::desc plain_f32(const dims& shape) {
  switch (shape.size()) {
    case 1: return {shape, dt::f32, tag::a};
    case 2: return {shape, dt::f32, tag::ab};
    case 4: return {shape, dt::f32, tag::abcd};
    case 5: return {shape, dt::f32, tag::abcde};
    default: throw NativeError("ERR_SHAPE", "unsupported rank " + std::to_string(shape.size()));
  }
}

std::string effective_isa() {
  switch (dnnl::get_effective_cpu_isa()) {
    case dnnl::cpu_isa::sse41: return "sse41";
    case dnnl::cpu_isa::avx: return "avx";
    case dnnl::cpu_isa::avx2: return "avx2";
    case dnnl::cpu_isa::avx2_vnni: return "avx2_vnni";
    case dnnl::cpu_isa::avx512_core: return "avx512_core";
    case dnnl::cpu_isa::avx512_core_vnni: return "avx512_core_vnni";
    case dnnl::cpu_isa::avx512_core_bf16: return "avx512_core_bf16";
    case dnnl::cpu_isa::avx512_core_amx: return "avx512_core_amx";
    default: return "other";
  }
}

bool has_native_bf16() {
  auto isa = dnnl::get_effective_cpu_isa();
  return isa == dnnl::cpu_isa::avx512_core_bf16 || isa == dnnl::cpu_isa::avx512_core_amx;
}

std::string dnnl_version() {
  const dnnl_version_t* v = ::dnnl_version();
  return std::to_string(v->major) + "." + std::to_string(v->minor) + "." + std::to_string(v->patch);
}

}  // namespace repvgg::cpu
