// A process-wide cache of oneDNN primitives for the single-op API, keyed by a string of every parameter that
// shapes the primitive. Creating a oneDNN primitive JIT-compiles a kernel (milliseconds); executing it is cheap.
// Also: reusable scratch buffers for the temporaries of single ops (blocked copies of plain tensors), so that a
// training step does not malloc, page-fault and free tens of megabytes per op.
#pragma once

#include <oneapi/dnnl/dnnl.hpp>

#include <cstdlib>
#include <functional>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <unordered_map>

namespace repvgg::cpu {

// Returns the cached primitive for key, creating it with make() on first use.
inline dnnl::primitive cached_primitive(const std::string& key, const std::function<dnnl::primitive()>& make) {
  static std::mutex mutex;
  static std::unordered_map<std::string, dnnl::primitive> cache;
  std::lock_guard<std::mutex> lock(mutex);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  dnnl::primitive prim = make();
  cache.emplace(key, prim);
  return prim;
}

// Scratch slots of the single ops. Each op uses distinct slots for the temporaries that are alive at the same time.
enum class Scratch { src, weights, dst, diff_dst, diff_src, diff_weights, count };

// A grow-only buffer of at least `bytes` bytes (64-byte aligned) for `slot`, valid until the next call for the
// same slot. Only for the compute thread (cpu::on_compute_thread), which runs every single op one at a time; the
// contents are garbage on return. The largest tensor of a training step bounds each slot's size.
inline void* scratch(Scratch slot, size_t bytes) {
  struct Buffer {
    void* data = nullptr;
    size_t bytes = 0;
    ~Buffer() { std::free(data); }
  };
  static Buffer buffers[static_cast<int>(Scratch::count)];
  Buffer& b = buffers[static_cast<int>(slot)];
  if (b.bytes < bytes) {
    std::free(b.data);
    b.data = nullptr;
    b.bytes = 0;
    const size_t rounded = (bytes + 63) / 64 * 64;
    b.data = std::aligned_alloc(64, rounded);
    if (b.data == nullptr) throw std::bad_alloc();
    b.bytes = rounded;
  }
  return b.data;
}

// A oneDNN memory object over the scratch buffer of `slot`, sized for desc.
inline dnnl::memory scratch_memory(Scratch slot, const dnnl::memory::desc& desc, const dnnl::engine& engine) {
  return dnnl::memory(desc, engine, scratch(slot, desc.get_size()));
}

}  // namespace repvgg::cpu
