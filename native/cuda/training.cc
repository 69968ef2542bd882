// Implementation of training.h. The algorithms are chosen with cudnnFind*Ex on the op's own buffers (outputs are
// overwritten by the real call right after) and a scratch of at most 1 GiB; FMA math for float (no TF32), tensor-op
// math for 16-bit types; among the algorithms cuDNN reports as deterministic the fastest one (a non-deterministic one only
// when no deterministic one runs), so two identical training steps give identical weights. fp16/bf16 convolutions
// run on 16-bit copies of the float operands, made and widened back around the cuDNN call (float accumulation).
#include "training.h"

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "device_info.h"
#include "kernels.h"
#include "train_kernels.h"

namespace repvgg::cuda::train {

using namespace cudnn_api;

struct Context::Descriptors {
  TensorDesc x, y;
  FilterDesc w;
  ConvDesc conv;
};

std::string ConvGeometry::key() const {
  return std::to_string(batch) + "," + std::to_string(in_channels) + "," + std::to_string(height) + "," + std::to_string(width) + "|" +
         std::to_string(out_channels) + "," + std::to_string(kernel) + "," + std::to_string(stride) + "," + std::to_string(pad) + "," +
         std::to_string(groups) + (type == ConvType::f16 ? "|fp16" : type == ConvType::bf16 ? "|bf16" : "|fp32");
}

Context& Context::get() {
  // Never destroyed: device memory freed by finalizers at exit may still need the stream.
  static Context* context = new Context();
  return *context;
}

Context::Context() {
  require_available(device_);
  RV_CUDA(cudaSetDevice(device_));
  int pools = 0;
  if (cudaDeviceGetAttribute(&pools, cudaDevAttrMemoryPoolsSupported, device_) != cudaSuccess) (void)cudaGetLastError();
  memory_pools_ = pools != 0;
  if (memory_pools_) {
    // Freed memory stays in the pool across synchronizations (the default threshold 0 hands it back to the driver
    // at every sync, and a training step syncs for its loss): the next step's allocations then reuse it instead of
    // mapping fresh memory on the JS thread. The process keeps its peak training memory until it exits, as
    // PyTorch's caching allocator does.
    cudaMemPool_t pool = nullptr;
    RV_CUDA(cudaDeviceGetDefaultMemPool(&pool, device_));
    uint64_t keep_all = UINT64_MAX;
    RV_CUDA(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep_all));
  }
  RV_CUDA(cudaDeviceGetAttribute(&compute_major_, cudaDevAttrComputeCapabilityMajor, device_));
  const char* sync = std::getenv("REPVGG_CUDA_SYNC");
  sync_each_op_ = sync != nullptr && std::string(sync) == "1";
  const char* fail = std::getenv("REPVGG_CUDA_FAIL_OP");
  fail_op_ = fail != nullptr ? fail : "";
  RV_CUDA(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  RV_CUDNN(cudnnCreate, &handle_);
  RV_CUDNN(cudnnSetStream, handle_, stream_);
}

void Context::enter() const { RV_CUDA(cudaSetDevice(device_)); }

void Context::finish(const char* op) const {
  RV_CUDA(cudaGetLastError());
  if (!sync_each_op_) return;
  const cudaError_t e = cudaStreamSynchronize(stream_);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    throw NativeError("ERR_BACKEND", std::string(op) + " failed on the GPU: " + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")");
  }
}

void Context::record_failure(const char* op, const std::string& message) {
  if (failure_.empty()) failure_ = std::string(op) + ": " + message;
}

void Context::throw_failure() {
  if (failure_.empty()) return;
  const std::string failure = std::move(failure_);
  failure_.clear();
  throw NativeError("ERR_BACKEND", "a training op failed when it was enqueued, and the ops called after it were skipped: " + failure);
}

void Context::inject_failure(const char* op) const {
  if (!fail_op_.empty() && fail_op_ == op) throw NativeError("ERR_BACKEND", "REPVGG_CUDA_FAIL_OP=" + fail_op_ + " makes this op fail");
}

void* Context::allocate(size_t bytes) {
  void* ptr = nullptr;
  bytes = std::max<size_t>(bytes, 4);
  enter();  // Buffers are made on the JS thread, whose current device may not be set yet
  if (memory_pools_) {
    RV_CUDA(cudaMallocAsync(&ptr, bytes, stream_));
  } else {
    RV_CUDA(cudaMalloc(&ptr, bytes));
  }
  return ptr;
}

void Context::release(void* ptr) noexcept {
  if (ptr == nullptr) return;
  if (cudaSetDevice(device_) != cudaSuccess) (void)cudaGetLastError();
  const cudaError_t e = memory_pools_ ? cudaFreeAsync(ptr, stream_) : cudaFree(ptr);
  if (e != cudaSuccess) (void)cudaGetLastError();
}

void* Context::workspace(size_t bytes) {
  if (bytes == 0) return nullptr;
  if (workspace_.bytes() < bytes) {
    RV_CUDA(cudaStreamSynchronize(stream_));  // the old workspace may still be in use by enqueued work
    workspace_.allocate(bytes);
  }
  return workspace_.get();
}

void Context::describe(const ConvGeometry& g, Descriptors& d) const {
  RV_CHECK(g.out_height() >= 1 && g.out_width() >= 1, "ERR_SHAPE", "conv2d: the kernel does not fit the padded input");
  const auto i = [](int64_t v) { return static_cast<int>(v); };
  const cudnnDataType_t type = g.type == ConvType::f16 ? CUDNN_DATA_HALF : g.type == ConvType::bf16 ? CUDNN_DATA_BFLOAT16 : CUDNN_DATA_FLOAT;
  RV_CUDNN(cudnnSetTensor4dDescriptor, d.x.get(), CUDNN_TENSOR_NCHW, type, i(g.batch), i(g.in_channels), i(g.height), i(g.width));
  RV_CUDNN(cudnnSetTensor4dDescriptor, d.y.get(), CUDNN_TENSOR_NCHW, type, i(g.batch), i(g.out_channels), i(g.out_height()),
           i(g.out_width()));
  RV_CUDNN(cudnnSetFilter4dDescriptor, d.w.get(), type, CUDNN_TENSOR_NCHW, i(g.out_channels), i(g.in_channels / g.groups),
           i(g.kernel), i(g.kernel));
  // Float accumulation in every case (16-bit data: cuDNN's pseudo-half configuration).
  RV_CUDNN(cudnnSetConvolution2dDescriptor, d.conv.get(), i(g.pad), i(g.pad), i(g.stride), i(g.stride), 1, 1, CUDNN_CROSS_CORRELATION,
           CUDNN_DATA_FLOAT);
  RV_CUDNN(cudnnSetConvolutionGroupCount, d.conv.get(), i(g.groups));
  RV_CUDNN(cudnnSetConvolutionMathType, d.conv.get(), g.reduced() ? CUDNN_TENSOR_OP_MATH : CUDNN_FMA_MATH);
}

namespace {

// The fastest successful result, deterministic ones first, tensor-op math only when allowed (16-bit types); -1 when none
// ran. Its workspace size and math type go to *workspace and *math.
template <typename Perf>
int pick(const Perf* perf, int returned, size_t* workspace, int* math, bool allow_tensor_ops) {
  for (const bool need_deterministic : {true, false}) {
    for (int k = 0; k < returned; k++) {
      const Perf& p = perf[k];
      if (static_cast<int>(p.status) != 0) continue;
      const bool tensor_ops = p.mathType == CUDNN_TENSOR_OP_MATH || p.mathType == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION;
      if (tensor_ops && !allow_tensor_ops) continue;
      if (need_deterministic && p.determinism != CUDNN_DETERMINISTIC) continue;
      *workspace = p.memory;
      *math = static_cast<int>(p.mathType);
      return static_cast<int>(p.algo);
    }
  }
  return -1;
}

}  // namespace

ConvAlgorithms& Context::choose(const ConvGeometry& g, Descriptors& d, const void* x, const void* w, const void* dy) {
  const std::string key = g.key();
  auto found = algorithms_.find(key);
  if (found != algorithms_.end()) return found->second;
  // Find measures on real buffers and writes the outputs: scratch outputs of the right sizes, freed at the end.
  const size_t element = g.reduced() ? 2 : sizeof(float);
  const size_t y_bytes = static_cast<size_t>(g.y_count()) * element;
  const size_t x_bytes = static_cast<size_t>(g.x_count()) * element;
  const size_t w_bytes = static_cast<size_t>(g.w_count()) * element;
  DeviceBuffer out(std::max({y_bytes, x_bytes, w_bytes}));
  size_t free_bytes = 0, total_bytes = 0;
  RV_CUDA(cudaMemGetInfo(&free_bytes, &total_bytes));
  DeviceBuffer scratch;
  for (size_t bytes = std::min<size_t>(free_bytes / 4, size_t(1) << 30); bytes >= (size_t(1) << 20); bytes /= 2) {
    try {
      scratch.allocate(bytes);
      break;
    } catch (const NativeError&) {
      // another process holds memory: try half as much
    }
  }
  ConvAlgorithms a;
  int returned = 0;
  {
    cudnnConvolutionFwdAlgoPerf_t perf[2 * CUDNN_CONVOLUTION_FWD_ALGO_COUNT] = {};
    RV_CUDNN(cudnnFindConvolutionForwardAlgorithmEx, handle_, d.x.get(), x, d.w.get(), w, d.conv.get(), d.y.get(), out.get(),
             2 * CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &returned, perf, scratch.get(), scratch.bytes());
    a.forward = pick(perf, returned, &a.forward_workspace, &a.forward_math, g.reduced());
  }
  {
    cudnnConvolutionBwdDataAlgoPerf_t perf[2 * CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT] = {};
    RV_CUDNN(cudnnFindConvolutionBackwardDataAlgorithmEx, handle_, d.w.get(), w, d.y.get(), dy, d.conv.get(), d.x.get(), out.get(),
             2 * CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &returned, perf, scratch.get(), scratch.bytes());
    a.backward_data = pick(perf, returned, &a.backward_data_workspace, &a.backward_data_math, g.reduced());
  }
  {
    cudnnConvolutionBwdFilterAlgoPerf_t perf[2 * CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT] = {};
    RV_CUDNN(cudnnFindConvolutionBackwardFilterAlgorithmEx, handle_, d.x.get(), x, d.y.get(), dy, d.conv.get(), d.w.get(), out.get(),
             2 * CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &returned, perf, scratch.get(), scratch.bytes());
    a.backward_filter = pick(perf, returned, &a.backward_filter_workspace, &a.backward_filter_math, g.reduced());
  }
  RV_CUDA(cudaStreamSynchronize(stream_));  // the scratch buffers are freed when this returns
  RV_CHECK(a.forward >= 0 && a.backward_data >= 0 && a.backward_filter >= 0, "ERR_BACKEND",
           "cuDNN found no usable algorithm for the convolution " + key + " (forward " + std::to_string(a.forward) + ", backward data " +
               std::to_string(a.backward_data) + ", backward filter " + std::to_string(a.backward_filter) + ")");
  return algorithms_.emplace(key, a).first->second;
}

ConvAlgorithms Context::algorithms(const ConvGeometry& g) {
  auto found = algorithms_.find(g.key());
  return found == algorithms_.end() ? ConvAlgorithms{} : found->second;
}

void Context::require_type(ConvType type) const {
  RV_CHECK(type != ConvType::bf16 || compute_major_ >= 8, "ERR_ARG_VALUE",
           "bf16 convolutions need a GPU of compute capability 8.0 or newer, this one is " + std::to_string(compute_major_) + ".x: use fp16");
}

namespace {

// A 16-bit copy (half or bfloat16 by type) of `count` floats at src, in scratch.
const void* narrow(Scratch& scratch, ConvType type, const float* src, int64_t count, cudaStream_t stream) {
  void* dst = scratch.get(static_cast<size_t>(count) * 2);
  RV_CUDA(type == ConvType::bf16 ? convert_f32_to_bf16(src, dst, count, stream) : convert_f32_to_f16(src, dst, count, stream));
  return dst;
}

void widen(ConvType type, const void* src, float* dst, int64_t count, cudaStream_t stream) {
  RV_CUDA(type == ConvType::bf16 ? convert_bf16_to_f32(src, dst, count, stream) : convert_f16_to_f32(src, dst, count, stream));
}

}  // namespace

void Context::conv2d_forward(const ConvGeometry& g, const float* x, const float* w, float* y) {
  Descriptors d;
  describe(g, d);
  Scratch scratch(*this);
  const void *xc = x, *wc = w;
  void* yc = y;
  if (g.reduced()) {  // 16-bit copies in, the result widened back out
    xc = narrow(scratch, g.type, x, g.x_count(), stream_);
    wc = narrow(scratch, g.type, w, g.w_count(), stream_);
    yc = scratch.get(static_cast<size_t>(g.y_count()) * 2);
  }
  // The backward search needs a dy: the output serves (its values do not matter to Find).
  const ConvAlgorithms& a = choose(g, d, xc, wc, yc);
  const float one = 1.f, zero = 0.f;
  void* ws = workspace(a.forward_workspace);
  RV_CUDNN(cudnnSetConvolutionMathType, d.conv.get(), static_cast<cudnnMathType_t>(a.forward_math));
  RV_CUDNN(cudnnConvolutionForward, handle_, &one, d.x.get(), xc, d.w.get(), wc, d.conv.get(),
           static_cast<cudnnConvolutionFwdAlgo_t>(a.forward), ws, a.forward_workspace, &zero, d.y.get(), yc);
  if (g.reduced()) widen(g.type, yc, y, g.y_count(), stream_);
}

void Context::conv2d_backward(const ConvGeometry& g, const float* x, const float* w, const float* dy, float* dx, float* dw) {
  Descriptors d;
  describe(g, d);
  Scratch scratch(*this);
  const void *xc = x, *wc = w, *dyc = dy;
  void *dxc = dx, *dwc = dw;
  if (g.reduced()) {
    xc = narrow(scratch, g.type, x, g.x_count(), stream_);
    wc = narrow(scratch, g.type, w, g.w_count(), stream_);
    dyc = narrow(scratch, g.type, dy, g.y_count(), stream_);
    dxc = dx != nullptr ? scratch.get(static_cast<size_t>(g.x_count()) * 2) : nullptr;
    dwc = scratch.get(static_cast<size_t>(g.w_count()) * 2);
  }
  const ConvAlgorithms& a = choose(g, d, xc, wc, dyc);
  const float one = 1.f, zero = 0.f;
  if (dx != nullptr) {
    void* ws = workspace(a.backward_data_workspace);
    RV_CUDNN(cudnnSetConvolutionMathType, d.conv.get(), static_cast<cudnnMathType_t>(a.backward_data_math));
    RV_CUDNN(cudnnConvolutionBackwardData, handle_, &one, d.w.get(), wc, d.y.get(), dyc, d.conv.get(),
             static_cast<cudnnConvolutionBwdDataAlgo_t>(a.backward_data), ws, a.backward_data_workspace, &zero, d.x.get(), dxc);
    if (g.reduced()) widen(g.type, dxc, dx, g.x_count(), stream_);
  }
  void* ws = workspace(a.backward_filter_workspace);
  RV_CUDNN(cudnnSetConvolutionMathType, d.conv.get(), static_cast<cudnnMathType_t>(a.backward_filter_math));
  RV_CUDNN(cudnnConvolutionBackwardFilter, handle_, &one, d.x.get(), xc, d.y.get(), dyc, d.conv.get(),
           static_cast<cudnnConvolutionBwdFilterAlgo_t>(a.backward_filter), ws, a.backward_filter_workspace, &zero, d.w.get(), dwc);
  if (g.reduced()) widen(g.type, dwc, dw, g.w_count(), stream_);
}

void Context::flag_non_finite(const float* x, int64_t count, int* flag) { RV_CUDA(train::flag_non_finite(x, count, flag, stream_)); }

}  // namespace repvgg::cuda::train
