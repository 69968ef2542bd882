// Implementation of cudnn_loader.h: dlopen, sub-library pre-loading, dlsym of every function, version check.
// Handles stay open for the life of the process: unloading cuDNN while any handle or kernel may still refer to
// it is never safe, and a process loads it at most once.
#include "cudnn_loader.h"

#include <dirent.h>
#include <dlfcn.h>
#include <sys/stat.h>

#include <algorithm>
#include <climits>
#include <cstdio>
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

// cuDNN loads cuBLAS(Lt) and NVRTC by soname at run time. A pip wheel's cuDNN (<site>/nvidia/cudnn/lib) finds
// them in sibling wheels (<site>/nvidia/cublas/lib, .../cuda_nvrtc/lib, or .../cu13/lib for CUDA 13 wheels) only
// through the loader path, which Python's import of torch sets up and Node does not; a system or tarball cuDNN
// finds them in the CUDA toolkit's lib64, which is not always on the loader path either. So before opening cuDNN
// we pre-load them with RTLD_GLOBAL from, in order: cuDNN's own folder, every <site>/nvidia/*/lib beside a wheel,
// $CUDA_HOME/lib64, $CUDA_PATH/lib64 and /usr/local/cuda/lib64. Failures only become warnings: cuDNN reports the
// real problem if a missing dependency matters for the calls we make.
std::vector<std::string> dependency_dirs(const std::string& dir) {
  std::vector<std::string> dirs{dir};
  const std::string package_dir = dirname_of(dir);
  const std::string nvidia = dirname_of(package_dir);
  const bool wheel = dir.size() >= 4 && dir.compare(dir.size() - 4, 4, "/lib") == 0 && nvidia.size() >= 7 &&
                     nvidia.compare(nvidia.size() - 7, 7, "/nvidia") == 0;
  if (wheel) {
    std::vector<std::string> siblings;
    if (DIR* d = ::opendir(nvidia.c_str())) {
      while (dirent* entry = ::readdir(d)) {
        const std::string name = entry->d_name;
        if (name == "." || name == ".." || nvidia + "/" + name == package_dir) continue;
        if (is_directory(nvidia + "/" + name + "/lib")) siblings.push_back(nvidia + "/" + name + "/lib");
      }
      ::closedir(d);
    }
    std::sort(siblings.begin(), siblings.end());
    dirs.insert(dirs.end(), siblings.begin(), siblings.end());
  }
  for (const char* var : {"CUDA_HOME", "CUDA_PATH"}) {
    if (const char* root = std::getenv(var); root && *root) dirs.push_back(std::string(root) + "/lib64");
  }
  dirs.emplace_back("/usr/local/cuda/lib64");
  return dirs;
}

void preload_dependencies(const std::string& dir, CudnnLoadStatus& status) {
  const std::vector<std::string> dirs = dependency_dirs(dir);
  for (const char* prefix : {"libnvrtc-builtins.so.", "libnvrtc.so.", "libcublasLt.so.", "libcublas.so."}) {
    for (const std::string& lib_dir : dirs) {
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

// One libcudnn.so.N that could be opened, found without opening it.
struct Candidate {
  std::string target;   // a file path, or a bare soname for the dynamic loader's own search
  int major = 0;        // from the file name (8 or 9)
  int version = 0;      // M*10000 + m*100 + p when known without loading (file name, header, wheel metadata), else 0
  bool explicit_entry;  // listed before "@system": tried first, in the given order
  size_t order;         // position in the search, for a stable ranking
  std::string origin;   // how it was found, for the report
};

int encode_version(int major, int minor, int patch) { return major * 10000 + minor * 100 + patch; }

// "9.6.0" from libcudnn.so.9.6.0 (what a system or tarball install's symlink points to).
int version_from_file_name(const std::string& file) {
  char resolved[PATH_MAX];
  if (!::realpath(file.c_str(), resolved)) return 0;
  const std::string name = resolved;
  const size_t at = name.rfind("libcudnn.so.");
  if (at == std::string::npos) return 0;
  int major = 0, minor = 0, patch = 0;
  if (std::sscanf(name.c_str() + at, "libcudnn.so.%d.%d.%d", &major, &minor, &patch) == 3) return encode_version(major, minor, patch);
  return 0;
}

// CUDNN_MAJOR/MINOR/PATCHLEVEL from <dir>/../include/cudnn_version.h (wheels and tarballs ship it).
int version_from_header(const std::string& dir) {
  for (const char* name : {"/include/cudnn_version.h", "/include/cudnn_version_v9.h", "/include/cudnn_version_v8.h"}) {
    std::FILE* f = std::fopen((dirname_of(dir) + name).c_str(), "r");
    if (!f) continue;
    int major = -1, minor = -1, patch = -1;
    char line[256];
    for (int lines = 0; lines < 200 && std::fgets(line, sizeof(line), f); lines++) {  // the defines are near the top
      int value = 0;
      if (std::sscanf(line, "#define CUDNN_MAJOR %d", &value) == 1) major = value;
      if (std::sscanf(line, "#define CUDNN_MINOR %d", &value) == 1) minor = value;
      if (std::sscanf(line, "#define CUDNN_PATCHLEVEL %d", &value) == 1) patch = value;
    }
    std::fclose(f);
    if (major >= 0 && minor >= 0 && patch >= 0) return encode_version(major, minor, patch);
  }
  return 0;
}

// The version in a wheel's metadata folder name: <site>/nvidia_cudnn_cu12-9.1.0.70.dist-info for <site>/nvidia/cudnn/lib.
int version_from_wheel(const std::string& dir) {
  const std::string site = dirname_of(dirname_of(dirname_of(dir)));
  int best = 0;
  for (const std::string& path : files_with_prefix(site, "nvidia_cudnn_cu")) {
    const std::string name = path.substr(path.find_last_of('/') + 1);
    const size_t dash = name.find('-');
    int major = 0, minor = 0, patch = 0;
    if (dash != std::string::npos && std::sscanf(name.c_str() + dash + 1, "%d.%d.%d", &major, &minor, &patch) == 3) {
      best = std::max(best, encode_version(major, minor, patch));
    }
  }
  return best;
}

int version_without_loading(const std::string& file) {
  if (const int v = version_from_file_name(file)) return v;
  if (const int v = version_from_header(dirname_of(file))) return v;
  return version_from_wheel(dirname_of(file));
}

// Folders the dynamic loader searches that we can list ourselves: $LD_LIBRARY_PATH, then the usual install places.
std::vector<std::string> system_dirs() {
  std::vector<std::string> dirs;
  if (const char* path = std::getenv("LD_LIBRARY_PATH"); path && *path) {
    std::string rest = path;
    for (size_t start = 0; start <= rest.size();) {
      const size_t colon = rest.find(':', start);
      const std::string dir = rest.substr(start, colon == std::string::npos ? std::string::npos : colon - start);
      if (!dir.empty()) dirs.push_back(dir);
      if (colon == std::string::npos) break;
      start = colon + 1;
    }
  }
  for (const char* dir : {"/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib",
                          "/usr/local/cuda/lib64", "/usr/local/cudnn/lib64", "/usr/local/cudnn/lib"}) {
    dirs.emplace_back(dir);
  }
  return dirs;
}

void add_file_candidates(const std::string& dir, bool explicit_entry, size_t order, const std::string& origin, std::vector<Candidate>& out,
                         CudnnLoadStatus& status) {
  std::string folder = dir;
  while (folder.size() > 1 && folder.back() == '/') folder.pop_back();
  for (int major : {9, 8}) {
    const std::string file = folder + "/libcudnn.so." + std::to_string(major);
    if (!is_file(file)) {
      if (explicit_entry) status.tried.push_back(file + ": not found");
      continue;
    }
    out.push_back({file, major, version_without_loading(file), explicit_entry, order, origin});
  }
}

// Every candidate the search list names, in the order they are tried: explicit entries (those before
// "@system") first as given; then the rest newest first (by major, then by the version read without loading,
// unknown versions last within their major), ties in search order; the loader's bare sonames last in their major.
std::vector<Candidate> ranked_candidates(const std::vector<std::string>& search, CudnnLoadStatus& status) {
  std::vector<Candidate> out;
  bool after_system = false;
  size_t order = 0;
  for (const std::string& entry : search) {
    if (entry.empty()) continue;
    order++;
    if (entry == "@system") {
      after_system = true;
      for (const std::string& dir : system_dirs()) add_file_candidates(dir, false, order++, "system", out, status);
      for (int major : {9, 8}) {
        // Whatever ld.so.cache or an rpath resolves that the folders above missed.
        out.push_back({"libcudnn.so." + std::to_string(major), major, -1, false, order++, "system loader path"});
      }
      continue;
    }
    const bool explicit_entry = !after_system;
    if (is_directory(entry)) {
      add_file_candidates(entry, explicit_entry, order, explicit_entry ? "given" : "Python wheel or listed folder", out, status);
    } else if (is_file(entry)) {
      const int major = entry.find(".so.8") != std::string::npos ? 8 : 9;
      out.push_back({entry, major, version_without_loading(entry), explicit_entry, order, "given"});
    } else {
      status.tried.push_back(entry + ": no such file or directory");
    }
  }
  std::stable_sort(out.begin(), out.end(), [](const Candidate& a, const Candidate& b) {
    if (a.explicit_entry != b.explicit_entry) return a.explicit_entry;
    if (a.explicit_entry) return a.order < b.order;
    if (a.major != b.major) return a.major > b.major;
    if (a.version != b.version) return a.version > b.version;
    return a.order < b.order;
  });
  // The same library reached twice (a symlinked folder, a folder listed twice) is one candidate.
  std::vector<Candidate> unique;
  std::vector<std::string> seen;
  for (const Candidate& c : out) {
    char resolved[PATH_MAX];
    const std::string key = ::realpath(c.target.c_str(), resolved) ? std::string(resolved) : c.target;
    if (std::find(seen.begin(), seen.end(), key) != seen.end()) continue;
    seen.push_back(key);
    unique.push_back(c);
  }
  return unique;
}

std::string describe(const Candidate& c) {
  std::string version = "version unknown until loaded";
  if (c.version > 0) {
    version = std::to_string(c.version / 10000) + "." + std::to_string(c.version % 10000 / 100) + "." + std::to_string(c.version % 100);
  }
  return c.target + " (" + version + ", " + c.origin + ")";
}

bool try_candidate(const Candidate& c, CudnnTable& table, CudnnLoadStatus& status) {
  if (c.target.find('/') == std::string::npos) {  // a bare soname: the loader finds the folder
    if (!try_open(c.target, c.major, c.target + " (system loader path)", table, status)) return false;
    // Sub-libraries sit next to it and are normally on the same loader path; pre-load anyway so that an
    // rpath- or LD_PRELOAD-found front library still finds them.
    preload_sub_libraries(dirname_of(status.path), c.major, status);
    return true;
  }
  const std::string dir = dirname_of(c.target);
  preload_dependencies(dir, status);
  preload_sub_libraries(dir, c.major, status);
  return try_open(c.target, c.major, c.target, table, status);
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
  const std::vector<Candidate> candidates = ranked_candidates(s.search, status);
  for (const Candidate& c : candidates) status.candidates.push_back(describe(c));
  for (const Candidate& c : candidates) {
    if (try_candidate(c, table, status)) break;
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
