// A process-wide cache of oneDNN primitives for the single-op API, keyed by a string of every parameter that
// shapes the primitive. Creating a oneDNN primitive JIT-compiles a kernel (milliseconds); executing it is cheap.
#pragma once

#include <oneapi/dnnl/dnnl.hpp>

#include <functional>
#include <mutex>
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

}  // namespace repvgg::cpu
