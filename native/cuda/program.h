// A whole network on one CUDA device: the same flat step list as the CPU program (native/cpu/program.h: conv,
// batch norm, add, squeeze-excitation over numbered activation buffers, then global average pool + linear),
// run with cuDNN convolutions (fused conv+bias+ReLU for the deployed layers) and our kernels for the rest.
// Weights are uploaded (and converted, for fp16) once, at construction; per input shape a "plan" holds the
// tensor descriptors, the algorithms cudnnFind chose and, optionally, a captured CUDA graph of the forward.
// Not for: deciding the step list (lib/engine.ts) or parsing JS options (native/addon/cuda_addon.cc).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

#include "../core/network_spec.h"
#include "cuda_check.h"
#include "kernels.h"

namespace repvgg::cuda {

// fp32: float NCHW activations, FMA-only convolutions (no TF32), so results match the CPU within MODEL_FP32.
// fp16: half NHWC activations and weights on tensor cores, float accumulation (convolution compute type FLOAT).
enum class Precision { fp32, fp16 };

// The spec mirrors the CPU backend's ProgramSpec field by field (kept separate so that this addon builds
// without oneDNN's headers).
struct ProgramSpec : NetworkSpec {
  Precision precision = Precision::fp32;
  bool cuda_graph = false;  // capture each plan's forward once and replay it with cudaGraphLaunch
  int device = 0;
};

// What one conv step of a plan runs, for reports.
struct ConvChoice {
  int step = 0;
  std::string algorithm;  // cuDNN forward algorithm, e.g. "IMPLICIT_PRECOMP_GEMM"
  std::string math;       // "FMA", "TENSOR_OP", ...
  bool fused = false;     // cudnnConvolutionBiasActivationForward (else conv, then our bias/ReLU kernel)
  double fused_max_diff = -1;  // when a fused variant agreed: max |fused - (conv, bias, ReLU)| measured once at prepare time
  double find_ms = -1;    // cudnnFind's time for the chosen algorithm
  int64_t workspace_bytes = 0;
  std::string note;       // why the unfused path or an unexpected math mode was taken
};

struct PlanReport {
  int64_t batch = 0, height = 0, width = 0;
  std::string layout;     // "NCHW" (fp32) or "NHWC" (fp16)
  std::string precision;  // "fp32" or "fp16"
  int64_t activation_bytes = 0;  // the shared activation buffers (all plans use the same ones)
  int64_t weight_bytes = 0;      // device weights of the whole program
  int64_t workspace_bytes = 0;   // the shared cuDNN workspace
  int64_t input_channels_stored = 0;  // input channels as stored on the device (fp16 pads 3 to 8)
  bool cuda_graph = false;       // this plan replays a captured graph
  std::string cuda_graph_error;  // why capture was requested but not used
  std::vector<ConvChoice> convs;
};

// Results of Program::benchmark: device time of each forward, input already on the device.
struct BenchmarkResult {
  std::vector<double> ms;
  bool cuda_graph = false;
};

class Plan;
struct ConvWeights;

class Program {
 public:
  // Validates the spec, creates the stream and cuDNN handle, uploads weights. Throws NativeError.
  explicit Program(ProgramSpec spec);
  ~Program();
  Program(const Program&) = delete;
  Program& operator=(const Program&) = delete;

  // input: (batch, in_channels, height, width) float32 NCHW host memory; logits: (batch, classes) float32.
  void run(int64_t batch, int64_t height, int64_t width, const float* input, float* logits);
  // Builds the plan for this input shape now (cudnnFind, workspace, graph capture) and reports it.
  PlanReport prepare(int64_t batch, int64_t height, int64_t width);
  // Uploads input once, then times `iterations` forwards after `warmup` ones with CUDA events (device time).
  BenchmarkResult benchmark(int64_t batch, int64_t height, int64_t width, const float* input, int warmup, int iterations);

  int64_t in_channels() const { return spec_.in_channels; }
  int64_t classes() const { return spec_.classes; }
  int64_t device_weight_bytes() const { return weight_bytes_; }

 private:
  friend class Plan;
  Plan& plan_for(int64_t batch, int64_t height, int64_t width);
  void upload_weights();
  void* upload(const std::vector<float>& host, DeviceBuffer& into);
  // Grows the shared activation buffers / workspace; growth invalidates captured graphs (they hold pointers).
  void ensure_buffer(int index, size_t bytes);
  void ensure_workspace(size_t bytes);
  // Shrinks the workspace to what the live plans' chosen algorithms need (after a plan is compiled).
  void trim_workspace();
  void enter_device() const;

  ProgramSpec spec_;
  std::mutex mutex_;  // one run/prepare at a time: the buffers, workspace and cuDNN handle are shared
  cudaStream_t stream_ = nullptr;
  cudnn_api::cudnnHandle_t handle_ = nullptr;
  std::unique_ptr<ActivationDesc> relu_desc_;

  // Device weights, per step (index = step index), then the head.
  std::vector<std::unique_ptr<ConvWeights>> conv_weights_;
  std::vector<DeviceBuffer> bn_scale_, bn_shift_;
  std::vector<DeviceBuffer> se_down_w_, se_down_b_, se_up_w_, se_up_b_;
  DeviceBuffer head_w_, head_b_;
  int64_t weight_bytes_ = 0;
  int64_t input_channels_stored_ = 0;  // in_channels, or rounded up to 8 for fp16 tensor cores

  std::vector<DeviceBuffer> buffers_;
  DeviceBuffer workspace_;
  uint64_t memory_generation_ = 0;  // bumped whenever a shared buffer moves
  PinnedBuffer pinned_input_, pinned_logits_;

  // cudnnFind results by convolution shape, shared by all plans and by identical layers of one plan.
  struct AlgoChoice {
    int algo = 0;
    int math = 0;
    size_t workspace = 0;
    float time_ms = -1;
    bool fused = false;
    double fused_max_diff = -1;
    std::string note;
  };
  std::map<std::string, AlgoChoice> algo_cache_;

  std::map<std::tuple<int64_t, int64_t, int64_t>, std::unique_ptr<Plan>> plans_;
  std::vector<std::tuple<int64_t, int64_t, int64_t>> plan_order_;  // least recently used first
  static constexpr size_t kMaxPlans = 4;
};

}  // namespace repvgg::cuda
