// The CUDA training backend's state and its cuDNN convolutions: one context per process (the first visible GPU:
// a cuDNN handle, a stream every training op is enqueued on in call order, one growing workspace and the chosen
// algorithm per convolution geometry), device tensors in stream-ordered memory, and conv2d forward and backward
// (data and filter) in fp32 with FMA math (no TF32, so results stay within float32 rounding of the CPU's).
// Not for: the element-wise and reduction kernels (train_kernels.h) or inference programs (program.h).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "cuda_check.h"

namespace repvgg::cuda::train {

// Geometry of a 2-D convolution without bias: x (batch, in_channels, height, width) NCHW, w (out_channels,
// in_channels / groups, kernel, kernel), y (batch, out_channels, out_height, out_width). type f16 or bf16: the
// convolution runs on 16-bit copies of its float operands (tensor cores, float accumulation) and its results are
// widened back; the operands themselves are always float.
enum class ConvType { f32, f16, bf16 };

struct ConvGeometry {
  int64_t batch, in_channels, height, width, out_channels, kernel, stride, pad, groups;
  ConvType type = ConvType::f32;
  bool reduced() const { return type != ConvType::f32; }
  int64_t x_count() const { return batch * in_channels * height * width; }
  int64_t w_count() const { return out_channels * (in_channels / groups) * kernel * kernel; }
  int64_t y_count() const { return batch * out_channels * out_height() * out_width(); }
  int64_t out_height() const { return (height + 2 * pad - kernel) / stride + 1; }
  int64_t out_width() const { return (width + 2 * pad - kernel) / stride + 1; }
  std::string key() const;
};

// The cuDNN algorithms chosen once per geometry (by measuring, deterministic ones preferred), for the report.
struct ConvAlgorithms {
  int forward = -1, backward_data = -1, backward_filter = -1;
  size_t forward_workspace = 0, backward_data_workspace = 0, backward_filter_workspace = 0;
  // The math type (cudnnMathType_t) each algorithm was found with: the descriptor must carry it when the algorithm
  // runs (for 16-bit data Find also tries the FMA variants, and running one with tensor-op math set is BAD_PARAM).
  int forward_math = 0, backward_data_math = 0, backward_filter_math = 0;
};

class Context {
 public:
  // The process's context, created on first use. Throws NativeError("ERR_BACKEND_UNAVAILABLE", why) without a
  // usable GPU and cuDNN.
  static Context& get();

  // Every training op holds this while it enqueues work, so ops are enqueued in the order they were called.
  std::mutex& mutex() { return mutex_; }
  cudaStream_t stream() const { return stream_; }
  int device() const { return device_; }
  // Makes the context's device current on the calling thread (ops run on pool threads).
  void enter() const;
  // After an op is enqueued: with REPVGG_CUDA_SYNC=1, waits for it and reports its errors as its own (for
  // debugging; otherwise an asynchronous failure surfaces at the next download, named as such).
  void finish(const char* op) const;

  // Ops enqueued without a Promise (most of them) cannot reject one: the first that throws while being enqueued
  // records its error here, every op after it is skipped (its inputs may be garbage), and the next call that returns
  // a Promise (a copy, the loss, allFinite, the custom L2) rejects with it and clears it. All three run on the
  // training thread, so "after" is call order.
  void record_failure(const char* op, const std::string& message);
  bool has_failure() const { return !failure_.empty(); }
  // Throws the recorded failure as NativeError("ERR_BACKEND", ...) and clears it; does nothing when there is none.
  void throw_failure();
  // With REPVGG_CUDA_FAIL_OP=<op> in the environment, the enqueue of that op throws (fault injection: how the tests
  // check that a failure is reported by the next awaited call).
  void inject_failure(const char* op) const;

  // Throws ERR_ARG_VALUE for bf16 before compute capability 8.0 (no bf16 tensor cores or cuDNN kernels).
  void require_type(ConvType type) const;

  // Stream-ordered device memory (cudaMallocAsync where the device supports memory pools, else cudaMalloc).
  void* allocate(size_t bytes);
  // Frees after every op enqueued so far (cudaFreeAsync on the stream; a plain free waits for the device first).
  void release(void* ptr) noexcept;

  // The convolutions expect require_type(g.type) to have passed (the addon checks it when the op is called).
  void conv2d_forward(const ConvGeometry& g, const float* x, const float* w, float* y);
  // Sets *flag (device int, zeroed by the caller) when any value of the `count` floats at x is NaN or infinite.
  void flag_non_finite(const float* x, int64_t count, int* flag);
  // dx may be null (no input gradient, e.g. the first layer). dy is read-only.
  void conv2d_backward(const ConvGeometry& g, const float* x, const float* w, const float* dy, float* dx, float* dw);
  ConvAlgorithms algorithms(const ConvGeometry& g);

 private:
  Context();
  struct Descriptors;
  void describe(const ConvGeometry& g, Descriptors& d) const;
  // x, w, dy: the operands in the convolution's own type (16-bit copies when g.reduced()).
  ConvAlgorithms& choose(const ConvGeometry& g, Descriptors& d, const void* x, const void* w, const void* dy);
  void* workspace(size_t bytes);

  std::mutex mutex_;
  int device_ = 0;
  int compute_major_ = 0;
  bool memory_pools_ = false;
  bool sync_each_op_ = false;
  std::string fail_op_;  // REPVGG_CUDA_FAIL_OP
  std::string failure_;  // "op: CODE: message" of the first op that failed since the last report; touched by the training thread only
  cudnn_api::cudnnHandle_t handle_ = nullptr;
  cudaStream_t stream_ = nullptr;
  DeviceBuffer workspace_;
  std::map<std::string, ConvAlgorithms> algorithms_;
};

// Stream-ordered device memory of one op's enqueued work (the 16-bit copies of a convolution's operands, a
// reduction's partial sums), released after that work when this goes out of scope.
class Scratch {
 public:
  explicit Scratch(Context& context) : context_(context) {}
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  ~Scratch() {
    for (void* p : held_) context_.release(p);
  }
  void* get(size_t bytes) {
    held_.push_back(context_.allocate(bytes));
    return held_.back();
  }

 private:
  Context& context_;
  std::vector<void*> held_;
};

}  // namespace repvgg::cuda::train
