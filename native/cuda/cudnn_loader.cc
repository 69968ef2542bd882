// Implementation of cudnn_loader.h: dlopen, sub-library pre-loading, dlsym of every function, version check.
// Handles stay open for the life of the process: unloading cuDNN while any handle or kernel may still refer to
// it is never safe, and a process loads it at most once.
#include "cudnn_loader.h"

#include <dirent.h>
#include <dlfcn.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstdlib>
#include <mutex>

#include "../core/check.h"

namespace repvgg::cuda {

namespace {

struct LoaderState {
  std::mutex mutex;
  std::vector<std::string> search = cudnn_default_search();
  bool loaded = false;
  CudnnTable table;
  CudnnLoadStatus status;
};

// Never destroyed: Programs freed by static destructors at exit may still call into cuDNN.
LoaderState& state() {
  static LoaderState* s = new LoaderState();
  return *s;
}

bool is_directory(const std::string& path) {
  struct stat st{};
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

bool is_file(const std::string& path) {
  struct stat st{};
  return ::stat(path.c_str(), &st) == 0 && !S_ISDIR(st.st_mode);
}

std::string dirname_of(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  return slash == std::string::npos ? std::string(".") : path.substr(0, slash == 0 ? 1 : slash);
}

std::string last_dl_error() {
  const char* e = dlerror();
  return e ? e : "unknown dlopen error";
}

// Sub-libraries the front library loads by soname, in dependency order (graph first in 9, ops first in 8).
std::vector<std::string> sub_libraries(int major) {
  if (major >= 9) {
    return {"libcudnn_graph.so.9",     "libcudnn_engines_precompiled.so.9", "libcudnn_engines_runtime_compiled.so.9",
            "libcudnn_heuristic.so.9", "libcudnn_ops.so.9",                 "libcudnn_cnn.so.9",
            "libcudnn_adv.so.9"};
  }
  return {"libcudnn_ops_infer.so.8", "libcudnn_ops_train.so.8", "libcudnn_cnn_infer.so.8",
          "libcudnn_cnn_train.so.8", "libcudnn_adv_infer.so.8", "libcudnn_adv_train.so.8"};
}

// Files in dir whose names start with prefix (e.g. "libcublasLt.so."), sorted so that the choice is stable.
std::vector<std::string> files_with_prefix(const std::string& dir, const std::string& prefix) {
  std::vector<std::string> out;
  DIR* d = ::opendir(dir.c_str());
  if (!d) return out;
  while (dirent* entry = ::readdir(d)) {
    const std::string name = entry->d_name;
    if (name.rfind(prefix, 0) == 0) out.push_back(dir + "/" + name);
  }
  ::closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

// A pip wheel's cuDNN (<site>/nvidia/cudnn/lib) finds its own dependencies (cuBLAS(Lt), NVRTC) in sibling
// wheels (<site>/nvidia/cublas/lib, .../cuda_nvrtc/lib, or .../cu13/lib for CUDA 13 wheels) only through the
// loader path, which Python's import of torch sets up and Node does not: pre-load them from every
// <site>/nvidia/*/lib when that layout is there. Failures only become warnings: cuDNN reports the real
// problem if a missing dependency matters for the calls we make.
void preload_wheel_dependencies(const std::string& dir, CudnnLoadStatus& status) {
  // dir = <site>/nvidia/<package>/lib
  const std::string package_dir = dirname_of(dir);
  const std::string nvidia = dirname_of(package_dir);
  if (dir.size() < 4 || dir.compare(dir.size() - 4, 4, "/lib") != 0) return;
  if (nvidia.size() < 7 || nvidia.compare(nvidia.size() - 7, 7, "/nvidia") != 0) return;
  std::vector<std::string> lib_dirs;
  if (DIR* d = ::opendir(nvidia.c_str())) {
    while (dirent* entry = ::readdir(d)) {
      const std::string name = entry->d_name;
      if (name == "." || name == ".." || nvidia + "/" + name == package_dir) continue;
      if (is_directory(nvidia + "/" + name + "/lib")) lib_dirs.push_back(nvidia + "/" + name + "/lib");
    }
    ::closedir(d);
  }
  std::sort(lib_dirs.begin(), lib_dirs.end());
  for (const char* prefix : {"libnvrtc-builtins.so.", "libnvrtc.so.", "libcublasLt.so.", "libcublas.so."}) {
    for (const std::string& lib_dir : lib_dirs) {
      const std::vector<std::string> files = files_with_prefix(lib_dir, prefix);
      if (files.empty()) continue;
      const std::string& file = files.front();  // one version per library is enough
      if (!dlopen(file.c_str(), RTLD_NOW | RTLD_GLOBAL)) status.warnings.push_back(file + ": " + last_dl_error());
      break;
    }
  }
}

void preload_sub_libraries(const std::string& dir, int major, CudnnLoadStatus& status) {
  for (const std::string& name : sub_libraries(major)) {
    const std::string file = dir + "/" + name;
    if (!is_file(file)) continue;  // e.g. a trimmed install without the adv library
    if (!dlopen(file.c_str(), RTLD_NOW | RTLD_GLOBAL)) status.warnings.push_back(file + ": " + last_dl_error());
  }
}

// Resolves every function of the table from handle; returns the first missing name or "".
std::string resolve_all(void* handle, CudnnTable& table) {
#define RV_RESOLVE(name)                                                                   \
  table.name = reinterpret_cast<cudnn_api::PFN_##name>(dlsym(handle, #name));               \
  if (!table.name) return #name;
  REPVGG_CUDNN_FUNCTIONS(RV_RESOLVE)
#undef RV_RESOLVE
  return "";
}

// Opens one candidate file (or bare soname for the system search); on success fills table and status.
bool try_open(const std::string& target, int major, const std::string& where, CudnnTable& table, CudnnLoadStatus& status) {
  dlerror();
  void* handle = dlopen(target.c_str(), RTLD_NOW | RTLD_GLOBAL);
  if (!handle) {
    status.tried.push_back(where + ": " + last_dl_error());
    return false;
  }
  CudnnTable candidate;
  const std::string missing = resolve_all(handle, candidate);
  if (!missing.empty()) {
    status.tried.push_back(where + ": opened, but it lacks " + missing + " (not a cuDNN 8/9 library with the legacy API?)");
    dlclose(handle);
    return false;
  }
  std::string path = target;
  Dl_info info{};
  if (dladdr(reinterpret_cast<void*>(candidate.cudnnGetVersion), &info) && info.dli_fname) path = info.dli_fname;
  const size_t version = candidate.cudnnGetVersion();
  // cuDNN 9 encodes versions as M*10000 + m*100 + p, cuDNN 8 as M*1000 + m*100 + p.
  const int found_major = version >= 90000 ? static_cast<int>(version / 10000) : static_cast<int>(version / 1000);
  if (found_major != major) {
    status.warnings.push_back(path + " reports version " + std::to_string(version) + ", not cuDNN " + std::to_string(major));
  }
  if (found_major != 8 && found_major != 9) {
    status.tried.push_back(where + ": cuDNN version " + std::to_string(version) + " is neither 8.x nor 9.x");
    dlclose(handle);
    return false;
  }
  table = candidate;
  status.loaded = true;
  status.path = path;
  status.version = version;
  status.major = found_major;
  if (found_major >= 9) {
    status.minor = static_cast<int>(version % 10000 / 100);
  } else {
    status.minor = static_cast<int>(version % 1000 / 100);
  }
  status.patch = static_cast<int>(version % 100);
  return true;
}

bool try_entry(const std::string& entry, CudnnTable& table, CudnnLoadStatus& status) {
  if (entry == "@system") {
    for (int major : {9, 8}) {
      const std::string soname = "libcudnn.so." + std::to_string(major);
      if (try_open(soname, major, soname + " (system loader path)", table, status)) {
        // Sub-libraries sit next to it and are normally on the same loader path; pre-load anyway so that an
        // rpath- or LD_PRELOAD-found front library still finds them.
        preload_sub_libraries(dirname_of(status.path), major, status);
        return true;
      }
    }
    return false;
  }
  if (is_directory(entry)) {
    std::string dir = entry;
    while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
    for (int major : {9, 8}) {
      const std::string file = dir + "/libcudnn.so." + std::to_string(major);
      if (!is_file(file)) {
        status.tried.push_back(file + ": not found");
        continue;
      }
      preload_wheel_dependencies(dir, status);
      preload_sub_libraries(dir, major, status);
      if (try_open(file, major, file, table, status)) return true;
    }
    return false;
  }
  if (is_file(entry)) {
    const int major = entry.find(".so.8") != std::string::npos ? 8 : 9;
    const std::string dir = dirname_of(entry);
    preload_wheel_dependencies(dir, status);
    preload_sub_libraries(dir, major, status);
    return try_open(entry, major, entry, table, status);
  }
  status.tried.push_back(entry + ": no such file or directory");
  return false;
}

}  // namespace

std::vector<std::string> cudnn_default_search() {
  std::vector<std::string> entries;
  if (const char* env = std::getenv("REPVGG_CUDNN_PATH"); env && *env) entries.emplace_back(env);
  entries.emplace_back("@system");
  return entries;
}

void cudnn_set_search(std::vector<std::string> entries) {
  LoaderState& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  s.search = std::move(entries);
}

CudnnLoadStatus cudnn_load() {
  LoaderState& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  if (s.loaded) return s.status;
  CudnnLoadStatus status;
  CudnnTable table;
  for (const std::string& entry : s.search) {
    if (entry.empty()) continue;
    if (try_entry(entry, table, status)) break;
  }
  if (status.loaded) {
    s.table = table;
    s.loaded = true;
  } else {
    status.error = "cuDNN 9 or 8 (libcudnn.so.9 / libcudnn.so.8) was not found; tried: ";
    for (size_t i = 0; i < status.tried.size(); i++) status.error += (i ? "; " : "") + status.tried[i];
    if (status.tried.empty()) status.error += "(no search entries)";
    status.error += ". Install it (e.g. `pip install nvidia-cudnn-cu12`) or set REPVGG_CUDNN_PATH to its lib folder.";
  }
  s.status = status;
  return status;
}

const CudnnTable& cudnn() {
  LoaderState& s = state();
  {
    std::lock_guard<std::mutex> lock(s.mutex);
    if (s.loaded) return s.table;
  }
  const CudnnLoadStatus status = cudnn_load();
  if (!status.loaded) throw NativeError("ERR_BACKEND_UNAVAILABLE", status.error);
  return s.table;  // written once under the mutex and never changed afterwards
}

std::string cudnn_error_string(int status) {
  LoaderState& s = state();
  cudnn_api::PFN_cudnnGetErrorString fn = nullptr;
  {
    std::lock_guard<std::mutex> lock(s.mutex);
    if (s.loaded) fn = s.table.cudnnGetErrorString;
  }
  const char* text = fn ? fn(static_cast<cudnn_api::cudnnStatus_t>(status)) : nullptr;
  return text ? text : "cuDNN error";
}

}  // namespace repvgg::cuda
