// Implementation of device_info.h. Order of the checks = order of the reasons: driver, device, kernels for its
// architecture, cuDNN library, cuDNN on this GPU. Every CUDA call here is allowed to fail; none throws.
#include "device_info.h"

#include <cuda_runtime_api.h>

#include <mutex>
#include <set>

#include "../core/check.h"
#include "kernels.h"

#ifndef REPVGG_CUDA_ARCHS
#define REPVGG_CUDA_ARCHS "unknown"
#endif
#ifndef REPVGG_NVCC_VERSION
#define REPVGG_NVCC_VERSION "unknown"
#endif

namespace repvgg::cuda {

namespace {

std::string error_text(cudaError_t e) { return std::string(cudaGetErrorName(e)) + " (" + cudaGetErrorString(e) + ")"; }

std::mutex& handle_mutex() {
  static std::mutex m;
  return m;
}
std::set<int>& handle_ok_devices() {
  static std::set<int> s;
  return s;
}

}  // namespace

std::string cuda_version_string(int version) {
  if (version <= 0) return "none";
  return std::to_string(version / 1000) + "." + std::to_string(version % 1000 / 10);
}

const char* built_architectures() { return REPVGG_CUDA_ARCHS; }
const char* built_cuda_version() { return REPVGG_NVCC_VERSION; }

DeviceReport probe_device(int device, bool create_handle) {
  DeviceReport r;
  r.device = device;
  cudaRuntimeGetVersion(&r.runtime_version);
  if (cudaDriverGetVersion(&r.driver_version) != cudaSuccess) r.driver_version = 0;
  // cuDNN is probed even without a GPU: its presence is worth reporting on its own.
  r.cudnn = cudnn_load();

  const cudaError_t count_error = cudaGetDeviceCount(&r.device_count);
  if (count_error != cudaSuccess) {
    (void)cudaGetLastError();
    r.device_count = 0;
    r.device_error = "cudaGetDeviceCount: " + error_text(count_error);
    r.reason = r.driver_version == 0
                   ? "no NVIDIA driver is loaded (" + r.device_error + "); the CUDA backend needs an NVIDIA GPU and its driver"
                   : "the NVIDIA driver (CUDA " + cuda_version_string(r.driver_version) + ") reports no usable GPU: " + r.device_error +
                         (r.driver_version < r.runtime_version
                              ? "; this addon was built with CUDA " + cuda_version_string(r.runtime_version) +
                                    ", which needs a newer driver (or rebuild it with the CUDA toolkit that matches the driver)"
                              : "");
    return r;
  }
  if (r.device_count == 0) {
    r.reason = "the NVIDIA driver sees no GPU";
    return r;
  }
  if (device < 0 || device >= r.device_count) {
    r.reason = "CUDA device " + std::to_string(device) + " does not exist (" + std::to_string(r.device_count) + " found)";
    return r;
  }
  cudaDeviceProp props{};
  if (cudaGetDeviceProperties(&props, device) == cudaSuccess) {
    r.device_name = props.name;
    r.total_memory = props.totalGlobalMem;
  }
  (void)cudaGetLastError();
  cudaDeviceGetAttribute(&r.cc_major, cudaDevAttrComputeCapabilityMajor, device);
  cudaDeviceGetAttribute(&r.cc_minor, cudaDevAttrComputeCapabilityMinor, device);

  if (cudaSetDevice(device) != cudaSuccess) {
    (void)cudaGetLastError();
    r.reason = "cudaSetDevice(" + std::to_string(device) + ") failed";
    return r;
  }
  const cudaError_t kernel_error = probe_kernels();
  if (kernel_error != cudaSuccess) {
    (void)cudaGetLastError();
    r.kernel_error = error_text(kernel_error);
    r.reason = "this build has no kernels for " + r.device_name + " (sm_" + std::to_string(r.cc_major) + std::to_string(r.cc_minor) +
               "; built for " + built_architectures() + "): rebuild with `npm run build:cuda -- --CDREPVGG_CUDA_ARCHS=" +
               std::to_string(r.cc_major) + std::to_string(r.cc_minor) + "` (" + r.kernel_error + ")";
    return r;
  }
  if (!r.cudnn.loaded) {
    r.reason = r.cudnn.error;
    return r;
  }
  if (create_handle) {
    std::lock_guard<std::mutex> lock(handle_mutex());
    if (!handle_ok_devices().count(device)) {
      cudnn_api::cudnnHandle_t handle = nullptr;
      const int status = static_cast<int>(cudnn().cudnnCreate(&handle));
      if (status != 0) {
        r.cudnn_handle_error = "cudnnCreate: " + cudnn_error_string(status) + " (cudnnStatus_t " + std::to_string(status) + ")";
        r.reason = "cuDNN " + std::to_string(r.cudnn.major) + "." + std::to_string(r.cudnn.minor) + " at " + r.cudnn.path +
                   " cannot run on " + r.device_name + ": " + r.cudnn_handle_error;
        if (r.cc_major == 6 && r.cudnn.major == 9 && r.cudnn.minor > 10) {
          r.reason += " (cuDNN after 9.10 dropped Pascal GPUs: use cuDNN 9.10 or 8.x, e.g. via REPVGG_CUDNN_PATH)";
        }
        return r;
      }
      cudnn().cudnnDestroy(handle);
      handle_ok_devices().insert(device);
    }
  }
  r.available = true;
  return r;
}

void require_available(int device) {
  const DeviceReport r = probe_device(device, false);
  if (!r.available) throw NativeError("ERR_BACKEND_UNAVAILABLE", "the CUDA backend is unavailable: " + r.reason);
}

}  // namespace repvgg::cuda
