// Loads cuDNN at run time (dlopen of libcudnn.so.9, else .8) and resolves the functions of cudnn_api.h into one
// table, so that the CUDA addon builds without cuDNN and loads (reporting why) on machines without it.
// Each search entry is a directory holding libcudnn.so.N, a path to such a file, or the word "@system" for the
// dynamic loader's places ($LD_LIBRARY_PATH, the usual system folders, then ld.so.cache/rpath by soname). Entries
// before "@system" are explicit and tried first, in order; every other cuDNN found is ranked newest first (the
// version is read without loading: the file name a symlink points to, cudnn_version.h, or the wheel's metadata),
// so a system cuDNN 8 does not shadow a cuDNN 9 in a Python wheel. Before opening
// libcudnn.so.N from a folder we pre-load its sub-libraries from that folder with RTLD_GLOBAL: cuDNN's front
// library dlopens them by bare soname, which would fail for a folder that is not on the loader path (a Python
// wheel's nvidia/cudnn/lib) unless they are already loaded.
// Not for: the search list itself (lib/backend/cuda.ts computes it: env var, system, Python wheels).
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "cudnn_api.h"

namespace repvgg::cuda {

// The resolved functions; member names are the cuDNN function names.
struct CudnnTable {
#define RV_CUDNN_MEMBER(name) cudnn_api::PFN_##name name = nullptr;
  REPVGG_CUDNN_FUNCTIONS(RV_CUDNN_MEMBER)
#undef RV_CUDNN_MEMBER
};

struct CudnnLoadStatus {
  bool loaded = false;
  std::string path;                 // the libcudnn.so.N that was opened (absolute when known)
  size_t version = 0;               // cudnnGetVersion(), e.g. 90600 or 8907
  int major = 0, minor = 0, patch = 0;
  std::vector<std::string> candidates;  // "file (version, origin)" for every cuDNN found, in the order tried
  std::vector<std::string> tried;   // "where: why not", one per attempt that failed
  std::vector<std::string> warnings;  // sub-libraries (or their dependencies) that could not be pre-loaded
  std::string error;                // one-line summary when not loaded
};

// Replaces the search list used by the next load attempt (no effect once cuDNN is loaded).
void cudnn_set_search(std::vector<std::string> entries);
// The default search list: $REPVGG_CUDNN_PATH (when set), then "@system".
std::vector<std::string> cudnn_default_search();
// Loads cuDNN if not loaded yet (retrying after an earlier failure) and returns a snapshot of the state.
CudnnLoadStatus cudnn_load();
// The table; throws NativeError("ERR_BACKEND_UNAVAILABLE", why) when cuDNN could not be loaded.
const CudnnTable& cudnn();
// "CUDNN_STATUS_..." text for a status from the library itself, or a generic text before it is loaded.
std::string cudnn_error_string(int status);

}  // namespace repvgg::cuda
