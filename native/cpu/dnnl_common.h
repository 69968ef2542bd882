// Shared oneDNN state of the CPU backend: one engine and stream, one compute thread on which every primitive is
// created and executed (oneDNN's Winograd kernel crashed when created on one thread and run on another, and
// OpenMP already uses every core, so concurrent calls would only oversubscribe), and small helpers.
// Not for: op logic (conv.cc, norm.cc, eltwise.cc, pool.cc, linear.cc) or whole networks (program.cc).
#pragma once

#include <oneapi/dnnl/dnnl.hpp>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace repvgg::cpu {

using dims = dnnl::memory::dims;
using tag = dnnl::memory::format_tag;
using dt = dnnl::memory::data_type;

dnnl::engine& engine();
dnnl::stream& stream();
// Runs fn on the backend's single compute thread and waits for it; exceptions are rethrown to the caller.
// Called from the compute thread itself, it runs fn inline.
void on_compute_thread(const std::function<void()>& fn);
// Queues fn on the compute thread (after the tasks already queued) and returns at once. fn must report its own
// errors: an exception escaping it is caught, printed to stderr and dropped, so the thread keeps serving.
void post_to_compute_thread(std::function<void()> fn);
// Sets the nice value of the compute thread and of every thread of its OpenMP team (threads it starts later
// inherit it), so that the JavaScript thread of the same process, when it has work, runs before the numerics.
// Linux only. Throws NativeError(ERR_BACKEND) naming errno when the kernel refuses (lowering needs privileges).
void set_compute_nice(int nice);

// A plain (row-major) float32 memory descriptor: nchw for rank 4, nc for rank 2, x for rank 1.
dnnl::memory::desc plain_f32(const dims& shape);

// Runs fn, turning a dnnl::error into NativeError(ERR_BACKEND, "<what>: <oneDNN message>").
template <typename Fn>
auto wrap_dnnl(const char* what, Fn&& fn) -> decltype(fn());

// Name of the best instruction set oneDNN dispatches to on this machine (e.g. "avx512_core_bf16").
std::string effective_isa();
// True when oneDNN may dispatch to `isa` here: its effective instruction set (the CPU's, or less under
// DNNL_MAX_CPU_ISA) has all of isa's features (oneDNN's cpu_isa values are bit sets). Our own kernels ask this too,
// so that DNNL_MAX_CPU_ISA turns them off with oneDNN's.
bool isa_includes(dnnl::cpu_isa isa);
// True when the CPU has native bf16 dot-product instructions (AVX512-BF16 or AMX).
bool has_native_bf16();
// True when oneDNN has a bfloat16 convolution for this CPU (oneDNN 2.6: AVX-512 or newer; none on AVX2), found by
// asking it for one (a small NHWC bf16 conv with bias and ReLU, as the deployed plan builds), once.
bool supports_bf16_convolutions();
// True when the CPU multiplies u8 x s8 with VNNI (AVX512-VNNI or AVX-VNNI): exact int32 sums. Without it oneDNN
// adds pairs of products in int16 with saturation (vpmaddubsw), exact only while |weight| <= 63 (lib/quant/params.ts).
bool has_int8_vnni();
std::string dnnl_version();

}  // namespace repvgg::cpu

#include "../core/check.h"

template <typename Fn>
auto repvgg::cpu::wrap_dnnl(const char* what, Fn&& fn) -> decltype(fn()) {
  try {
    return fn();
  } catch (const dnnl::error& e) {
    throw NativeError("ERR_BACKEND", std::string(what) + ": oneDNN error " + std::to_string(static_cast<int>(e.status)) + " (" + e.what() + ")");
  }
}
