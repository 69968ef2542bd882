// What the machine offers the CUDA backend — driver, device, kernels for its architecture, cuDNN — and the one
// sentence that says why the backend is unavailable when something is missing. Never throws from probe().
// Not for: running anything (program.cc).
#pragma once

#include <cstddef>
#include <string>

#include "cudnn_loader.h"

namespace repvgg::cuda {

struct DeviceReport {
  bool available = false;
  std::string reason;           // set when !available: the first thing that is missing, and how to fix it
  int runtime_version = 0;      // the CUDA runtime linked into this addon (e.g. 13000)
  int driver_version = 0;       // the CUDA version the driver supports (0 = no driver)
  int device_count = 0;
  std::string device_error;     // cudaGetDeviceCount's error, if any
  int device = 0;
  std::string device_name;
  int cc_major = 0, cc_minor = 0;
  size_t total_memory = 0;
  std::string kernel_error;     // this build has no kernels for the device's architecture
  CudnnLoadStatus cudnn;
  std::string cudnn_handle_error;  // cudnnCreate failed (e.g. a cuDNN that dropped this GPU's architecture)
};

// Probes everything (loading cuDNN if needed). create_handle: also create and destroy a cuDNN handle on the
// device, which proves that this cuDNN runs on this GPU (done once per process and device, then cached).
DeviceReport probe_device(int device, bool create_handle);
// Throws NativeError("ERR_BACKEND_UNAVAILABLE", reason) unless probe_device(device, false) is available.
void require_available(int device);
// 13000 -> "13.0", 12040 -> "12.4" (CUDA's encoding: 1000 * major + 10 * minor).
std::string cuda_version_string(int version);
// The architectures this addon was compiled for, e.g. "75;80;86;89;90", and the nvcc version it was built with.
const char* built_architectures();
const char* built_cuda_version();

}  // namespace repvgg::cuda
