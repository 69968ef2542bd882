// Checking every CUDA runtime and cuDNN call, and small RAII owners for device memory, pinned host memory and
// cuDNN descriptors. A failed call throws NativeError("ERR_BACKEND", "<file>:<line> <call>: <library message>"),
// which the addon turns into a rejected Promise; nothing here exits or aborts.
// Not for: deciding what to run (program.cc) or loading cuDNN (cudnn_loader.cc).
#pragma once

#include <cuda_runtime_api.h>

#include <cstring>
#include <string>
#include <utility>

#include "../core/check.h"
#include "cudnn_loader.h"

namespace repvgg::cuda {

// "native/cuda/program.cc" -> "program.cc": short, stable locations in messages.
inline const char* base_name(const char* path) {
  const char* slash = std::strrchr(path, '/');
  return slash ? slash + 1 : path;
}

[[noreturn]] inline void throw_cuda(cudaError_t e, const char* call, const char* file, int line) {
  throw NativeError("ERR_BACKEND", std::string(base_name(file)) + ":" + std::to_string(line) + " " + call + ": " +
                                       cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")");
}

[[noreturn]] inline void throw_cudnn(int status, const char* call, const char* file, int line) {
  throw NativeError("ERR_BACKEND", std::string(base_name(file)) + ":" + std::to_string(line) + " " + call + ": " +
                                       cudnn_error_string(status) + " (cudnnStatus_t " + std::to_string(status) + ")");
}

}  // namespace repvgg::cuda

// Evaluates a cudaError_t expression once; throws on anything but cudaSuccess.
#define RV_CUDA(call)                                                                   \
  do {                                                                                  \
    const cudaError_t rv_cuda_error_ = (call);                                          \
    if (rv_cuda_error_ != cudaSuccess) {                                                \
      (void)cudaGetLastError(); /* clear a non-sticky error so later calls start clean */ \
      ::repvgg::cuda::throw_cuda(rv_cuda_error_, #call, __FILE__, __LINE__);            \
    }                                                                                   \
  } while (0)

// Calls cuDNN through the loaded table: RV_CUDNN(cudnnCreate, &handle). Throws on anything but SUCCESS.
#define RV_CUDNN(fn, ...)                                                                          \
  do {                                                                                             \
    const int rv_cudnn_status_ = static_cast<int>(::repvgg::cuda::cudnn().fn(__VA_ARGS__));        \
    if (rv_cudnn_status_ != 0) ::repvgg::cuda::throw_cudnn(rv_cudnn_status_, #fn, __FILE__, __LINE__); \
  } while (0)

namespace repvgg::cuda {

// Device memory owned by one object; freed in the destructor (errors there are ignored: a destructor must not
// throw, and a failed free at teardown leaves nothing to recover).
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t bytes) { allocate(bytes); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept : ptr_(std::exchange(o.ptr_, nullptr)), bytes_(std::exchange(o.bytes_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    if (this != &o) {
      release();
      ptr_ = std::exchange(o.ptr_, nullptr);
      bytes_ = std::exchange(o.bytes_, 0);
    }
    return *this;
  }
  ~DeviceBuffer() { release(); }

  void allocate(size_t bytes) {
    release();
    if (bytes == 0) return;
    RV_CUDA(cudaMalloc(&ptr_, bytes));
    bytes_ = bytes;
  }
  void release() noexcept {
    if (ptr_) cudaFree(ptr_);
    ptr_ = nullptr;
    bytes_ = 0;
  }
  void* get() const { return ptr_; }
  template <typename T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }
  size_t bytes() const { return bytes_; }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

// Page-locked host memory (cudaHostAlloc) for the staging copies of inputs and logits: asynchronous copies from
// pageable memory would be staged by the driver through its own small pinned buffer, at a fraction of the speed.
class PinnedBuffer {
 public:
  PinnedBuffer() = default;
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;
  ~PinnedBuffer() { release(); }
  // Grows (never shrinks) to at least bytes.
  void reserve(size_t bytes) {
    if (bytes <= bytes_) return;
    release();
    RV_CUDA(cudaHostAlloc(&ptr_, bytes, cudaHostAllocDefault));
    bytes_ = bytes;
  }
  void release() noexcept {
    if (ptr_) cudaFreeHost(ptr_);
    ptr_ = nullptr;
    bytes_ = 0;
  }
  void* get() const { return ptr_; }
  size_t bytes() const { return bytes_; }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

// One cuDNN descriptor (tensor, filter, convolution or activation), created with its owner and destroyed with
// it (a failed destroy is ignored, as for memory).
#define RV_DESCRIPTOR_CLASS(Name, Type, CreateFn, DestroyFn)         \
  class Name {                                                      \
   public:                                                          \
    Name() { RV_CUDNN(CreateFn, &desc_); }                          \
    Name(const Name&) = delete;                                     \
    Name& operator=(const Name&) = delete;                          \
    ~Name() {                                                       \
      if (desc_) ::repvgg::cuda::cudnn().DestroyFn(desc_);          \
    }                                                               \
    Type get() const { return desc_; }                              \
                                                                    \
   private:                                                         \
    Type desc_ = nullptr;                                           \
  };

RV_DESCRIPTOR_CLASS(TensorDesc, cudnn_api::cudnnTensorDescriptor_t, cudnnCreateTensorDescriptor, cudnnDestroyTensorDescriptor)
RV_DESCRIPTOR_CLASS(FilterDesc, cudnn_api::cudnnFilterDescriptor_t, cudnnCreateFilterDescriptor, cudnnDestroyFilterDescriptor)
RV_DESCRIPTOR_CLASS(ConvDesc, cudnn_api::cudnnConvolutionDescriptor_t, cudnnCreateConvolutionDescriptor,
                    cudnnDestroyConvolutionDescriptor)
RV_DESCRIPTOR_CLASS(ActivationDesc, cudnn_api::cudnnActivationDescriptor_t, cudnnCreateActivationDescriptor,
                    cudnnDestroyActivationDescriptor)
#undef RV_DESCRIPTOR_CLASS

}  // namespace repvgg::cuda
