// Compiles a ProgramSpec into cuDNN calls and our kernels for one input shape and runs it (see program.h).
// A plan is a list of enqueue functions over the shared activation buffers; they read buffer and workspace
// pointers when called, so a plan stays valid when another plan grows the shared memory (only captured graphs,
// which bake pointers in, are re-captured then).
#include "program.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <limits>

#include "device_info.h"

namespace repvgg::cuda {

using namespace cudnn_api;

namespace {

const char* algo_name(int algo) {
  static const char* names[] = {"IMPLICIT_GEMM", "IMPLICIT_PRECOMP_GEMM", "GEMM", "DIRECT",
                                "FFT",           "FFT_TILING",            "WINOGRAD", "WINOGRAD_NONFUSED"};
  return algo >= 0 && algo < 8 ? names[algo] : "UNKNOWN";
}

const char* math_name(int math) {
  static const char* names[] = {"DEFAULT", "TENSOR_OP", "TENSOR_OP_ALLOW_CONVERSION", "FMA"};
  return math >= 0 && math < 4 ? names[math] : "UNKNOWN";
}

int checked_int(int64_t v, const char* what) {
  RV_CHECK(v >= 0 && v <= std::numeric_limits<int>::max(), "ERR_SHAPE",
           std::string(what) + " of " + std::to_string(v) + " exceeds what cuDNN's 32-bit descriptors accept");
  return static_cast<int>(v);
}

int64_t round_up(int64_t v, int64_t multiple) { return (v + multiple - 1) / multiple * multiple; }

// Activation geometry of one buffer while a plan is compiled.
struct BufferState {
  bool written = false;
  int64_t c = 0, c_stored = 0, h = 0, w = 0;  // c_stored > c only for the fp16 input (padded channels)
};

}  // namespace

// Device weights of one conv step in the layout and type its precision runs.
struct ConvWeights {
  DeviceBuffer weight;    // fp32: (k, c/g, r, s) float; fp16: (k, r, s, c_stored/g) half
  DeviceBuffer bias_act;  // bias in the activation type, for the fused op (empty when the step has no bias)
  DeviceBuffer bias_f32;  // bias as float, for our bias kernel after an unfused conv
  int64_t in_stored = 0;  // input channels as stored in the source buffer
  bool has_bias = false;  // (the spec's host vectors are released after upload: ask this, not the spec)
};

class Plan {
 public:
  Plan(Program& p, int64_t batch, int64_t height, int64_t width);
  ~Plan();
  Plan(const Plan&) = delete;
  Plan& operator=(const Plan&) = delete;

  // Host input -> logits, synchronously on the program's stream.
  void run(const float* input, float* logits);
  void upload_input(const float* input);
  // The forward from the input already on the device to the logits on the device (graph or eager).
  void launch_forward();
  void ensure_graph();
  PlanReport report();
  // The workspace the algorithms this plan chose need (the largest of its convolutions').
  size_t workspace_needed() const;

 private:
  struct ConvExec {
    int step = 0, src = 0, dst = 0;
    TensorDesc x, y, bias;
    FilterDesc w;
    ConvDesc conv;
    int algo = 0;
    bool fused = false, has_bias = false, relu = false;
    size_t workspace = 0;
    ActShape out;
  };

  void enqueue_forward();
  void compile(int64_t height, int64_t width);
  void compile_conv(int index, const ConvStepSpec& c, BufferState& src, BufferState& dst, DeviceBuffer& find_workspace);
  void choose_algorithm(ConvExec& e, const std::string& key, DeviceBuffer& find_workspace, ConvChoice& choice);
  struct FusedCheck {
    enum { refused, differs, agrees } outcome = refused;
    float max_diff = 0, max_output = 0;
  };
  FusedCheck check_fused(ConvExec& e);
  // Enqueues conv step e as the forward runs it: the fused conv+bias+ReLU, or the conv then our bias/ReLU kernel.
  void run_conv(const ConvExec& e);
  // Milliseconds one run_conv(e) takes on the device (CUDA events, the mean of a few runs after a warm-up).
  float time_conv(const ConvExec& e);
  void allocate_find_scratch(DeviceBuffer& scratch);
  void destroy_graph();
  void* buf(int i) const { return p_.buffers_[static_cast<size_t>(i)].get(); }
  ActShape shape_of(const BufferState& b) const {
    return ActShape{batch_, b.c_stored, b.h, b.w, layout_, half_};
  }

  Program& p_;
  int64_t batch_;
  bool half_;
  Layout layout_;
  size_t elem_;
  std::vector<std::unique_ptr<ConvExec>> convs_;
  std::vector<std::function<void()>> ops_;
  DeviceBuffer input_f32_;  // the float NCHW input, copied (fp32) or converted (fp16) into buffer 0 by the first op
  DeviceBuffer pooled_, hidden_, gates_, head_pooled_, logits_;
  int64_t input_count_ = 0;
  cudaGraphExec_t graph_ = nullptr;
  uint64_t graph_generation_ = 0;
  bool graph_failed_ = false;
  PlanReport report_;
};

// ---------------------------------------------------------------------------------------------------------------
// Plan

Plan::Plan(Program& p, int64_t batch, int64_t height, int64_t width)
    : p_(p),
      batch_(batch),
      half_(p.spec_.precision == Precision::fp16),
      layout_(half_ ? Layout::nhwc : Layout::nchw),
      elem_(half_ ? 2 : 4) {
  report_.batch = batch;
  report_.height = height;
  report_.width = width;
  report_.layout = half_ ? "NHWC" : "NCHW";
  report_.precision = half_ ? "fp16" : "fp32";
  report_.input_channels_stored = p.input_channels_stored_;
  compile(height, width);
}

Plan::~Plan() { destroy_graph(); }

void Plan::destroy_graph() {
  if (graph_) cudaGraphExecDestroy(graph_);
  graph_ = nullptr;
}

void Plan::compile(int64_t height, int64_t width) {
  const ProgramSpec& spec = p_.spec_;
  const cudaStream_t stream = p_.stream_;
  std::vector<BufferState> state(static_cast<size_t>(spec.num_buffers));
  state[0] = {true, spec.in_channels, p_.input_channels_stored_, height, width};
  input_count_ = batch_ * spec.in_channels * height * width;

  // Shape pass: every buffer's largest use, so that the shared buffers are big enough before anything runs.
  std::vector<size_t> need(state.size(), 0);
  auto note_use = [&](int b, const BufferState& s) {
    const int64_t count = batch_ * s.c_stored * s.h * s.w;
    checked_int(count, "a tensor's element count");
    need[static_cast<size_t>(b)] = std::max(need[static_cast<size_t>(b)], static_cast<size_t>(count) * elem_);
  };
  auto read = [&](int b, const char* what) -> const BufferState& {
    const BufferState& s = state[static_cast<size_t>(b)];
    RV_CHECK(s.written, "ERR_ARG_VALUE", std::string(what) + " reads buffer " + std::to_string(b) + " before anything wrote it");
    return s;
  };
  int64_t max_se_channels = 0, max_se_internal = 0;
  note_use(0, state[0]);
  for (size_t i = 0; i < spec.steps.size(); i++) {
    const StepSpec& step = spec.steps[i];
    switch (step.kind) {
      case StepKind::conv: {
        const ConvStepSpec& c = step.conv;
        const BufferState src = read(c.src, "conv");
        RV_CHECK(src.c == c.in_channels, "ERR_SHAPE",
                 "conv step " + std::to_string(i) + " expects " + std::to_string(c.in_channels) + " input channels but its buffer holds " +
                     std::to_string(src.c));
        const int64_t oh = (src.h + 2 * c.pad - c.kernel) / c.stride + 1, ow = (src.w + 2 * c.pad - c.kernel) / c.stride + 1;
        RV_CHECK(oh >= 1 && ow >= 1 && src.h + 2 * c.pad >= c.kernel && src.w + 2 * c.pad >= c.kernel, "ERR_SHAPE",
                 "input " + std::to_string(height) + "x" + std::to_string(width) + " too small for conv step " + std::to_string(i));
        state[static_cast<size_t>(c.dst)] = {true, c.out_channels, c.out_channels, oh, ow};
        note_use(c.dst, state[static_cast<size_t>(c.dst)]);
        break;
      }
      case StepKind::batchnorm: {
        const BatchNormStepSpec& b = step.bn;
        const BufferState src = read(b.src, "batch norm");
        RV_CHECK(src.c == b.channels && src.c_stored == b.channels, "ERR_SHAPE",
                 "batch norm over " + std::to_string(b.channels) + " channels reads a buffer of " + std::to_string(src.c));
        state[static_cast<size_t>(b.dst)] = src;
        note_use(b.dst, src);
        break;
      }
      case StepKind::add: {
        const AddStepSpec& a = step.add;
        const BufferState sa = read(a.a, "add"), sb = read(a.b, "add");
        RV_CHECK(sa.c == sb.c && sa.c_stored == sb.c_stored && sa.h == sb.h && sa.w == sb.w, "ERR_SHAPE",
                 "add of buffers with different shapes");
        state[static_cast<size_t>(a.dst)] = sa;
        note_use(a.dst, sa);
        break;
      }
      case StepKind::se: {
        const SeStepSpec& s = step.se;
        const BufferState x = read(s.buf, "squeeze-excitation");
        RV_CHECK(x.c == s.channels && x.c_stored == s.channels, "ERR_SHAPE",
                 "squeeze-excitation over " + std::to_string(s.channels) + " channels reads a buffer of " + std::to_string(x.c));
        max_se_channels = std::max(max_se_channels, s.channels);
        max_se_internal = std::max(max_se_internal, s.internal);
        break;
      }
    }
  }
  {
    const BufferState head = read(spec.head_src, "the classifier");
    RV_CHECK(head.c == spec.features, "ERR_SHAPE",
             "classifier expects " + std::to_string(spec.features) + " features but its buffer holds " + std::to_string(head.c));
  }
  for (size_t b = 0; b < need.size(); b++) p_.ensure_buffer(static_cast<int>(b), need[b]);

  input_f32_.allocate(static_cast<size_t>(input_count_) * sizeof(float));
  RV_CUDA(fill_values(input_f32_.get(), input_count_, false, 0.01f, stream));  // finite until the first input arrives
  if (max_se_channels > 0) {
    pooled_.allocate(static_cast<size_t>(batch_ * max_se_channels) * sizeof(float));
    hidden_.allocate(static_cast<size_t>(batch_ * std::max<int64_t>(max_se_internal, 1)) * sizeof(float));
    gates_.allocate(static_cast<size_t>(batch_ * max_se_channels) * sizeof(float));
  }
  head_pooled_.allocate(static_cast<size_t>(batch_ * spec.features) * sizeof(float));
  logits_.allocate(static_cast<size_t>(batch_ * spec.classes) * sizeof(float));

  // cudnnFind gets a scratch of its own (allocated on first need, see find_scratch), freed after compiling;
  // the shared workspace then grows to what the chosen algorithms need.
  DeviceBuffer find_workspace;

  // Second pass: the ops themselves.
  state.assign(state.size(), BufferState{});
  state[0] = {true, spec.in_channels, p_.input_channels_stored_, height, width};
  // The input stays in its own device buffer and is copied (fp32) or converted (fp16) into buffer 0 by the first
  // op: the network overwrites buffer 0, and a forward must be repeatable from the same input (graph replays,
  // benchmark()).
  if (half_) {
    ops_.push_back([this, height, width, stream] {
      RV_CUDA(images_nchw_to_nhwc_f16(input_f32_.as<float>(), buf(0), batch_, p_.spec_.in_channels, height, width,
                                      p_.input_channels_stored_, stream));
    });
  } else {
    ops_.push_back([this, stream] {
      RV_CUDA(cudaMemcpyAsync(buf(0), input_f32_.get(), input_f32_.bytes(), cudaMemcpyDeviceToDevice, stream));
    });
  }
  for (size_t i = 0; i < spec.steps.size(); i++) {
    const StepSpec& step = spec.steps[i];
    switch (step.kind) {
      case StepKind::conv: {
        BufferState src = state[static_cast<size_t>(step.conv.src)];
        compile_conv(static_cast<int>(i), step.conv, src, state[static_cast<size_t>(step.conv.dst)], find_workspace);
        break;
      }
      case StepKind::batchnorm: {
        const BatchNormStepSpec& b = step.bn;
        const BufferState src = state[static_cast<size_t>(b.src)];
        const ActShape shape = shape_of(src);
        const float* scale = p_.bn_scale_[i].as<float>();
        const float* shift = p_.bn_shift_[i].as<float>();
        const int s = b.src, d = b.dst;
        ops_.push_back([this, shape, scale, shift, s, d, stream] { RV_CUDA(scale_shift(buf(s), buf(d), shape, scale, shift, stream)); });
        state[static_cast<size_t>(d)] = src;
        break;
      }
      case StepKind::add: {
        const AddStepSpec& a = step.add;
        const BufferState src = state[static_cast<size_t>(a.a)];
        const int64_t count = shape_of(src).count();
        const int ia = a.a, ib = a.b, id = a.dst;
        const bool relu = a.relu, half = half_;
        ops_.push_back([this, count, ia, ib, id, relu, half, stream] {
          RV_CUDA(add_tensors(buf(ia), buf(ib), buf(id), count, half, relu, stream));
        });
        state[static_cast<size_t>(id)] = src;
        break;
      }
      case StepKind::se: {
        const SeStepSpec& s = step.se;
        const ActShape shape = shape_of(state[static_cast<size_t>(s.buf)]);
        const int b = s.buf;
        const int64_t c = s.channels, r = s.internal;
        const bool relu = s.relu;
        const float *dw = p_.se_down_w_[i].as<float>(), *db = p_.se_down_b_[i].as<float>();
        const float *uw = p_.se_up_w_[i].as<float>(), *ub = p_.se_up_b_[i].as<float>();
        ops_.push_back([this, shape, b, c, r, relu, dw, db, uw, ub, stream] {
          RV_CUDA(global_mean(buf(b), shape, pooled_.as<float>(), stream));
          RV_CUDA(linear_forward(pooled_.as<float>(), dw, db, hidden_.as<float>(), batch_, c, r, Activation::relu, stream));
          RV_CUDA(linear_forward(hidden_.as<float>(), uw, ub, gates_.as<float>(), batch_, r, c, Activation::sigmoid, stream));
          RV_CUDA(channel_scale(buf(b), shape, gates_.as<float>(), relu, stream));
        });
        break;
      }
    }
  }
  {
    const ActShape shape = shape_of(state[static_cast<size_t>(spec.head_src)]);
    const int src = spec.head_src;
    ops_.push_back([this, shape, src, stream] {
      const ProgramSpec& s = p_.spec_;
      RV_CUDA(global_mean(buf(src), shape, head_pooled_.as<float>(), stream));
      RV_CUDA(linear_forward(head_pooled_.as<float>(), p_.head_w_.as<float>(), p_.head_b_.as<float>(), logits_.as<float>(), batch_,
                             s.features, s.classes, Activation::none, stream));
    });
  }
  RV_CUDA(cudaStreamSynchronize(stream));  // the fused-op trials above ran on the stream
  if (spec.cuda_graph) ensure_graph();
}

void Plan::compile_conv(int index, const ConvStepSpec& c, BufferState& src, BufferState& dst, DeviceBuffer& find_workspace) {
  auto e = std::make_unique<ConvExec>();
  const ConvWeights& cw = *p_.conv_weights_[static_cast<size_t>(index)];
  const cudnnDataType_t type = half_ ? CUDNN_DATA_HALF : CUDNN_DATA_FLOAT;
  const cudnnTensorFormat_t format = half_ ? CUDNN_TENSOR_NHWC : CUDNN_TENSOR_NCHW;
  const int64_t in_stored = cw.in_stored;
  RV_CHECK(in_stored == src.c_stored, "ERR_BACKEND",
           "internal: conv step " + std::to_string(index) + " weights were prepared for " + std::to_string(in_stored) +
               " stored input channels, its buffer holds " + std::to_string(src.c_stored));
  e->step = index;
  e->src = c.src;
  e->dst = c.dst;
  e->has_bias = cw.has_bias;
  e->relu = c.relu;

  RV_CUDNN(cudnnSetTensor4dDescriptor, e->x.get(), format, type, checked_int(batch_, "batch"), checked_int(in_stored, "channels"),
           checked_int(src.h, "height"), checked_int(src.w, "width"));
  RV_CUDNN(cudnnSetFilter4dDescriptor, e->w.get(), type, format, checked_int(c.out_channels, "channels"),
           checked_int(in_stored / c.groups, "channels"), checked_int(c.kernel, "kernel"), checked_int(c.kernel, "kernel"));
  // Compute type FLOAT in both precisions: fp16 runs "pseudo-half" (half storage, float accumulation).
  RV_CUDNN(cudnnSetConvolution2dDescriptor, e->conv.get(), checked_int(c.pad, "pad"), checked_int(c.pad, "pad"),
           checked_int(c.stride, "stride"), checked_int(c.stride, "stride"), 1, 1, CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT);
  RV_CUDNN(cudnnSetConvolutionGroupCount, e->conv.get(), checked_int(c.groups, "groups"));
  int on = 0, oc = 0, oh = 0, ow = 0;
  RV_CUDNN(cudnnGetConvolution2dForwardOutputDim, e->conv.get(), e->x.get(), e->w.get(), &on, &oc, &oh, &ow);
  const int64_t expect_h = (src.h + 2 * c.pad - c.kernel) / c.stride + 1, expect_w = (src.w + 2 * c.pad - c.kernel) / c.stride + 1;
  RV_CHECK(on == batch_ && oc == c.out_channels && oh == expect_h && ow == expect_w, "ERR_BACKEND",
           "cuDNN computes a different output shape for conv step " + std::to_string(index));
  RV_CUDNN(cudnnSetTensor4dDescriptor, e->y.get(), format, type, on, oc, oh, ow);
  if (e->has_bias) RV_CUDNN(cudnnSetTensor4dDescriptor, e->bias.get(), format, type, 1, oc, 1, 1);
  e->out = ActShape{batch_, c.out_channels, oh, ow, layout_, half_};

  // Algorithm: cudnnFind once per distinct convolution (shape, precision, and whether the fused op is wanted).
  const bool want_fused = e->has_bias && e->relu;
  const std::string key = std::to_string(batch_) + "," + std::to_string(in_stored) + "," + std::to_string(src.h) + "," +
                          std::to_string(src.w) + "|" + std::to_string(c.out_channels) + "," + std::to_string(c.kernel) + "," +
                          std::to_string(c.stride) + "," + std::to_string(c.pad) + "," + std::to_string(c.groups) + "|" +
                          (half_ ? "fp16" : "fp32") + (want_fused ? "|fused" : "");
  ConvChoice choice;
  choice.step = index;
  choose_algorithm(*e, key, find_workspace, choice);
  report_.convs.push_back(choice);

  ConvExec* ex = e.get();
  ops_.push_back([this, ex] { run_conv(*ex); });
  convs_.push_back(std::move(e));
  dst = {true, c.out_channels, c.out_channels, oh, ow};
}

void Plan::run_conv(const ConvExec& e) {
  const ConvWeights& cw = *p_.conv_weights_[static_cast<size_t>(e.step)];
  const float one = 1.f, zero = 0.f;
  void* ws = e.workspace ? p_.workspace_.get() : nullptr;
  if (e.fused) {
    // z = y with alpha2 = 0: the residual input of the fused op is unused.
    RV_CUDNN(cudnnConvolutionBiasActivationForward, p_.handle_, &one, e.x.get(), buf(e.src), e.w.get(), cw.weight.get(), e.conv.get(),
             static_cast<cudnnConvolutionFwdAlgo_t>(e.algo), ws, e.workspace, &zero, e.y.get(), buf(e.dst), e.bias.get(), cw.bias_act.get(),
             p_.relu_desc_->get(), e.y.get(), buf(e.dst));
    return;
  }
  RV_CUDNN(cudnnConvolutionForward, p_.handle_, &one, e.x.get(), buf(e.src), e.w.get(), cw.weight.get(), e.conv.get(),
           static_cast<cudnnConvolutionFwdAlgo_t>(e.algo), ws, e.workspace, &zero, e.y.get(), buf(e.dst));
  if (e.has_bias || e.relu) {
    RV_CUDA(bias_activation(buf(e.dst), e.out, e.has_bias ? cw.bias_f32.as<float>() : nullptr, e.relu ? Activation::relu : Activation::none,
                            p_.stream_));
  }
}

float Plan::time_conv(const ConvExec& e) {
  constexpr int kRuns = 5;
  run_conv(e);  // warm-up (lazy kernel loading)
  cudaEvent_t start = nullptr, stop = nullptr;
  RV_CUDA(cudaEventCreate(&start));
  if (const cudaError_t err = cudaEventCreate(&stop); err != cudaSuccess) {
    (void)cudaEventDestroy(start);
    RV_CUDA(err);
  }
  float ms = 0.f;
  cudaError_t err = cudaEventRecord(start, p_.stream_);
  try {
    for (int r = 0; r < kRuns && err == cudaSuccess; r++) run_conv(e);
  } catch (...) {
    (void)cudaEventDestroy(start);
    (void)cudaEventDestroy(stop);
    throw;
  }
  if (err == cudaSuccess) err = cudaEventRecord(stop, p_.stream_);
  if (err == cudaSuccess) err = cudaEventSynchronize(stop);
  if (err == cudaSuccess) err = cudaEventElapsedTime(&ms, start, stop);
  (void)cudaEventDestroy(start);
  (void)cudaEventDestroy(stop);
  RV_CUDA(err);
  return ms / kRuns;
}

void Plan::choose_algorithm(ConvExec& e, const std::string& key, DeviceBuffer& find_workspace, ConvChoice& choice) {
  const bool want_fused = e.has_bias && e.relu;
  auto apply_choice = [&](int algo, int math, size_t workspace) {
    RV_CUDNN(cudnnSetConvolutionMathType, e.conv.get(), static_cast<cudnnMathType_t>(math));
    p_.ensure_workspace(workspace);
    e.algo = algo;
    e.workspace = workspace;
  };
  auto cached = p_.algo_cache_.find(key);
  if (cached != p_.algo_cache_.end()) {
    const Program::AlgoChoice& a = cached->second;
    apply_choice(a.algo, a.math, a.workspace);
    e.fused = a.fused;
    choice.algorithm = algo_name(a.algo);
    choice.math = math_name(a.math);
    choice.fused = a.fused;
    choice.fused_max_diff = a.fused_max_diff;
    choice.find_ms = a.time_ms;
    choice.workspace_bytes = static_cast<int64_t>(a.workspace);
    choice.note = a.note;
    return;
  }

  // fp32 must not use TF32 tensor cores (10-bit mantissa): FMA_MATH restricts cuDNN to FMA kernels on every
  // GPU (DEFAULT_MATH allows TF32 on Ampere and later). fp16 asks for tensor cores.
  const cudnnMathType_t requested = half_ ? CUDNN_TENSOR_OP_MATH : CUDNN_FMA_MATH;
  RV_CUDNN(cudnnSetConvolutionMathType, e.conv.get(), requested);
  if (!find_workspace.get()) allocate_find_scratch(find_workspace);
  // Room for every algorithm in both math modes, in case Find lists an algorithm twice.
  constexpr int kMaxResults = 2 * CUDNN_CONVOLUTION_FWD_ALGO_COUNT;
  cudnnConvolutionFwdAlgoPerf_t perf[kMaxResults];
  std::memset(perf, 0, sizeof(perf));
  int returned = 0;
  RV_CUDNN(cudnnFindConvolutionForwardAlgorithmEx, p_.handle_, e.x.get(), buf(e.src), e.w.get(),
           p_.conv_weights_[static_cast<size_t>(e.step)]->weight.get(), e.conv.get(), e.y.get(), buf(e.dst),
           kMaxResults, &returned, perf, find_workspace.get(), find_workspace.bytes());

  // Candidates in Find's order (fastest first) that this precision may run, with the math mode to run them in
  // and their workspace under that mode.
  struct Candidate {
    int algo, math;
    size_t workspace;
    float time_ms;
  };
  std::vector<Candidate> candidates;
  std::string rejected, statuses;
  for (int i = 0; i < returned && i < kMaxResults; i++) {
    const cudnnConvolutionFwdAlgoPerf_t& p = perf[i];
    statuses += std::string(i ? ", " : "") + algo_name(p.algo) + "/" + math_name(p.mathType) + ": " +
                cudnn_error_string(static_cast<int>(p.status));
    if (static_cast<int>(p.status) != 0) continue;
    const bool tensor_math = p.mathType == CUDNN_TENSOR_OP_MATH || p.mathType == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION;
    if (!half_ && tensor_math) {
      rejected += std::string(rejected.empty() ? "" : ", ") + algo_name(p.algo) + "/" + math_name(p.mathType);
      continue;
    }
    // fp32 keeps FMA on the descriptor whatever Find reports; fp16 runs the math mode Find measured.
    const int math = half_ ? static_cast<int>(p.mathType) : static_cast<int>(CUDNN_FMA_MATH);
    RV_CUDNN(cudnnSetConvolutionMathType, e.conv.get(), static_cast<cudnnMathType_t>(math));
    size_t workspace = 0;
    if (static_cast<int>(cudnn().cudnnGetConvolutionForwardWorkspaceSize(p_.handle_, e.x.get(), e.w.get(), e.conv.get(), e.y.get(),
                                                                       p.algo, &workspace)) != 0) {
      continue;  // not runnable in this math mode after all
    }
    candidates.push_back({static_cast<int>(p.algo), math, workspace, p.time});
  }
  if (candidates.empty()) {
    throw NativeError("ERR_BACKEND", "cudnnFindConvolutionForwardAlgorithmEx found no usable algorithm for conv step " +
                                         std::to_string(e.step) + " (" + key + "): " + (statuses.empty() ? "none returned" : statuses) +
                                         (rejected.empty() ? "" : "; rejected for fp32 (tensor-core math): " + rejected));
  }

  // Find timed each algorithm once, as a plain convolution. The forward runs it fused with bias and ReLU where
  // cuDNN allows (one kernel instead of two), and one run is noisy at batch 1 (the first H200 run had every
  // RepVGG-A1 layer at batch 1 fused on IMPLICIT_GEMM, at half PyTorch's speed). So the fastest few are timed
  // again, each as the forward will run it (fused where a fused variant exists and agrees with the unfused path),
  // and the fastest of those wins.
  constexpr size_t kTimed = 4;
  struct Option {
    Candidate candidate;
    bool fused = false;
    double fused_max_diff = -1;
    float ms = 0.f;
  };
  std::vector<Option> options;
  std::string mismatches, failures;
  for (size_t i = 0; i < candidates.size() && options.size() < kTimed; i++) {
    Option option{candidates[i]};
    apply_choice(option.candidate.algo, option.candidate.math, option.candidate.workspace);
    if (want_fused) {
      const FusedCheck check = check_fused(e);
      if (check.outcome == FusedCheck::agrees) {
        option.fused = true;
        option.fused_max_diff = check.max_diff;
      } else if (check.outcome == FusedCheck::differs) {
        char text[160];
        std::snprintf(text, sizeof(text), "%s fused differs from conv, bias, ReLU by %.3g (largest output %.3g)",
                      algo_name(option.candidate.algo), static_cast<double>(check.max_diff), static_cast<double>(check.max_output));
        mismatches += std::string(mismatches.empty() ? "" : "; ") + text;
      }
    }
    e.fused = option.fused;
    try {
      option.ms = time_conv(e);
    } catch (const NativeError& err) {
      failures += std::string(failures.empty() ? "" : "; ") + algo_name(option.candidate.algo) + ": " + err.what();
      continue;
    }
    options.push_back(option);
  }
  if (options.empty()) {
    throw NativeError("ERR_BACKEND", "no algorithm cuDNN's Find returned ran for conv step " + std::to_string(e.step) + " (" + key + "): " + failures);
  }
  std::sort(options.begin(), options.end(), [](const Option& a, const Option& b) { return a.ms < b.ms; });
  const Option& best = options.front();
  Candidate chosen = best.candidate;
  e.fused = best.fused;
  choice.fused_max_diff = best.fused ? best.fused_max_diff : -1;
  if (options.size() > 1) {
    choice.note = "timed as run:";
    for (const Option& o : options) {
      char text[96];
      std::snprintf(text, sizeof(text), " %s%s %.4f ms%s", algo_name(o.candidate.algo), o.fused ? "+fused" : "", static_cast<double>(o.ms),
                    &o == &options.back() ? "" : ",");
      choice.note += text;
    }
  }
  if (want_fused && !e.fused) {
    choice.note += std::string(choice.note.empty() ? "" : "; ") +
                   (mismatches.empty() ? "conv, then our bias+ReLU kernel" : "not fused: " + mismatches + "; conv, then our bias+ReLU kernel");
  }
  if (!failures.empty()) choice.note += "; failed to run: " + failures;
  apply_choice(chosen.algo, chosen.math, chosen.workspace);
  if (!rejected.empty()) choice.note += std::string(choice.note.empty() ? "" : "; ") + "TF32 tensor-core algorithms skipped for fp32: " + rejected;

  choice.algorithm = algo_name(chosen.algo);
  choice.math = math_name(chosen.math);
  choice.fused = e.fused;
  choice.find_ms = chosen.time_ms;
  choice.workspace_bytes = static_cast<int64_t>(chosen.workspace);
  p_.algo_cache_[key] =
      Program::AlgoChoice{chosen.algo, chosen.math, chosen.workspace, chosen.time_ms, e.fused, choice.fused_max_diff, choice.note};
}

// A generous scratch for cudnnFind (a quarter of the free memory, at most 1 GiB): algorithms that need more
// are skipped by Find, so this bounds what the chosen algorithm may use.
void Plan::allocate_find_scratch(DeviceBuffer& scratch) {
  size_t free_bytes = 0, total_bytes = 0;
  RV_CUDA(cudaMemGetInfo(&free_bytes, &total_bytes));
  for (size_t bytes = std::min<size_t>(free_bytes / 4, size_t(1) << 30); bytes >= (size_t(1) << 20); bytes /= 2) {
    try {
      scratch.allocate(bytes);
      return;
    } catch (const NativeError&) {
      // fragmentation or another process holding memory: try half as much
    }
  }
}

// Runs the fused op once on the plan's buffers (its input filled with a fixed pattern) and compares its output
// with the unfused path (the same algorithm's plain conv, then our bias+ReLU kernel). refused: cuDNN does not
// run this algorithm fused; differs: it runs but computes something else (max_diff says by how much).
Plan::FusedCheck Plan::check_fused(ConvExec& e) {
  const ConvWeights& cw = *p_.conv_weights_[static_cast<size_t>(e.step)];
  const float one = 1.f, zero = 0.f;
  const size_t element = half_ ? 2 : 4;
  FusedCheck check;
  RV_CUDA(fill_pattern(buf(e.src), static_cast<int64_t>(p_.buffers_[static_cast<size_t>(e.src)].bytes() / element), half_, p_.stream_));
  void* ws = e.workspace ? p_.workspace_.get() : nullptr;
  const int status = static_cast<int>(cudnn().cudnnConvolutionBiasActivationForward(
      p_.handle_, &one, e.x.get(), buf(e.src), e.w.get(), cw.weight.get(), e.conv.get(), static_cast<cudnnConvolutionFwdAlgo_t>(e.algo),
      ws, e.workspace, &zero, e.y.get(), buf(e.dst), e.bias.get(), cw.bias_act.get(), p_.relu_desc_->get(), e.y.get(), buf(e.dst)));
  if (status != 0) {
    check.outcome = FusedCheck::refused;
    return check;
  }
  const int64_t count = e.out.count();
  DeviceBuffer fused_output(static_cast<size_t>(count) * element), result(2 * sizeof(float));
  RV_CUDA(cudaMemcpyAsync(fused_output.get(), buf(e.dst), fused_output.bytes(), cudaMemcpyDeviceToDevice, p_.stream_));
  RV_CUDNN(cudnnConvolutionForward, p_.handle_, &one, e.x.get(), buf(e.src), e.w.get(), cw.weight.get(), e.conv.get(),
           static_cast<cudnnConvolutionFwdAlgo_t>(e.algo), ws, e.workspace, &zero, e.y.get(), buf(e.dst));
  RV_CUDA(bias_activation(buf(e.dst), e.out, cw.bias_f32.as<float>(), Activation::relu, p_.stream_));
  RV_CUDA(max_abs_difference(fused_output.get(), buf(e.dst), count, half_, result.as<float>(), p_.stream_));
  float host[2] = {0.f, 0.f};
  RV_CUDA(cudaMemcpyAsync(host, result.get(), sizeof(host), cudaMemcpyDeviceToHost, p_.stream_));
  RV_CUDA(cudaStreamSynchronize(p_.stream_));  // also surfaces an asynchronous failure of the trial here
  check.max_diff = host[0];
  check.max_output = host[1];
  // The two paths round differently (fp16: the fused op adds the bias before its one rounding to half, ours
  // after), so they agree to a few units in the last place of the output type, scaled by the output's size.
  const double tolerance = (half_ ? 4e-3 : 1e-5) * std::max(1.0, static_cast<double>(check.max_output));
  const bool agrees = check.max_diff <= tolerance && check.max_output > 0.f;  // an all-zero output proves nothing
  check.outcome = agrees ? FusedCheck::agrees : FusedCheck::differs;
  return check;
}

void Plan::enqueue_forward() {
  for (const auto& op : ops_) op();
}

void Plan::ensure_graph() {
  if (!p_.spec_.cuda_graph || graph_failed_) return;
  if (graph_ && graph_generation_ == p_.memory_generation_) return;
  destroy_graph();
  const cudaStream_t stream = p_.stream_;
  try {
    // One eager pass first: cuDNN and the driver load kernels lazily, which must not happen inside a capture.
    enqueue_forward();
    RV_CUDA(cudaStreamSynchronize(stream));
    cudaGraph_t graph = nullptr;
    // Relaxed: calls that are unsafe during capture (e.g. a lazy module load inside cuDNN) stay legal.
    RV_CUDA(cudaStreamBeginCapture(stream, cudaStreamCaptureModeRelaxed));
    try {
      enqueue_forward();
    } catch (...) {
      cudaStreamEndCapture(stream, &graph);
      if (graph) cudaGraphDestroy(graph);
      (void)cudaGetLastError();
      throw;
    }
    RV_CUDA(cudaStreamEndCapture(stream, &graph));
    const cudaError_t instantiated = cudaGraphInstantiateWithFlags(&graph_, graph, 0);
    cudaGraphDestroy(graph);
    RV_CUDA(instantiated);
    graph_generation_ = p_.memory_generation_;
    report_.cuda_graph = true;
    report_.cuda_graph_error.clear();
  } catch (const std::exception& e) {
    // Not fatal: the plan runs eagerly and the report says why.
    graph_ = nullptr;
    graph_failed_ = true;
    report_.cuda_graph = false;
    report_.cuda_graph_error = e.what();
  }
}

void Plan::launch_forward() {
  ensure_graph();
  if (graph_) {
    RV_CUDA(cudaGraphLaunch(graph_, p_.stream_));
  } else {
    enqueue_forward();
  }
}

void Plan::upload_input(const float* input) {
  const size_t bytes = static_cast<size_t>(input_count_) * sizeof(float);
  p_.pinned_input_.reserve(bytes);
  std::memcpy(p_.pinned_input_.get(), input, bytes);
  RV_CUDA(cudaMemcpyAsync(input_f32_.get(), p_.pinned_input_.get(), bytes, cudaMemcpyHostToDevice, p_.stream_));
}

void Plan::run(const float* input, float* logits) {
  const size_t logit_bytes = static_cast<size_t>(batch_ * p_.spec_.classes) * sizeof(float);
  p_.pinned_logits_.reserve(logit_bytes);
  upload_input(input);
  launch_forward();
  RV_CUDA(cudaMemcpyAsync(p_.pinned_logits_.get(), logits_.get(), logit_bytes, cudaMemcpyDeviceToHost, p_.stream_));
  RV_CUDA(cudaStreamSynchronize(p_.stream_));
  std::memcpy(logits, p_.pinned_logits_.get(), logit_bytes);
}

size_t Plan::workspace_needed() const {
  size_t needed = 0;
  for (const auto& c : convs_) needed = std::max(needed, c->workspace);
  return needed;
}

PlanReport Plan::report() {
  PlanReport r = report_;
  r.activation_bytes = 0;
  for (const DeviceBuffer& b : p_.buffers_) r.activation_bytes += static_cast<int64_t>(b.bytes());
  r.weight_bytes = p_.weight_bytes_;
  r.workspace_bytes = static_cast<int64_t>(p_.workspace_.bytes());
  return r;
}

// ---------------------------------------------------------------------------------------------------------------
// Program

namespace {

// fp16 tensor-core convolutions want a channel count that is a multiple of 8; the 3-channel input gets padded
// with zero channels (and zero weights) when only ungrouped convs read it before it is overwritten.
bool can_pad_input(const ProgramSpec& spec) {
  for (const StepSpec& s : spec.steps) {
    switch (s.kind) {
      case StepKind::conv:
        if (s.conv.src == 0 && s.conv.groups != 1) return false;
        if (s.conv.dst == 0) return true;  // the input is gone after this step
        break;
      case StepKind::batchnorm:
        if (s.bn.src == 0) return false;
        if (s.bn.dst == 0) return true;
        break;
      case StepKind::add:
        if (s.add.a == 0 || s.add.b == 0) return false;
        if (s.add.dst == 0) return true;
        break;
      case StepKind::se:
        if (s.se.buf == 0) return false;
        break;
    }
  }
  return spec.head_src != 0;
}

}  // namespace

void Program::enter_device() const { RV_CUDA(cudaSetDevice(spec_.device)); }

Program::Program(ProgramSpec spec) : spec_(std::move(spec)) {
  validate_network(spec_);
  require_available(spec_.device);  // clear ERR_BACKEND_UNAVAILABLE before any CUDA call can fail obscurely
  enter_device();
  input_channels_stored_ = spec_.in_channels;
  if (spec_.precision == Precision::fp16 && spec_.in_channels % 8 != 0 && can_pad_input(spec_)) {
    input_channels_stored_ = round_up(spec_.in_channels, 8);
  }
  try {
    RV_CUDA(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    RV_CUDNN(cudnnCreate, &handle_);
    RV_CUDNN(cudnnSetStream, handle_, stream_);
    relu_desc_ = std::make_unique<ActivationDesc>();
    // As PyTorch's fused conv+ReLU sets it: NOT_PROPAGATE_NAN (engines may refuse PROPAGATE_NAN for the fused op)
    // and coef = the largest double (an engine that reads coef as a clipping ceiling must not clip at 0).
    RV_CUDNN(cudnnSetActivationDescriptor, relu_desc_->get(), CUDNN_ACTIVATION_RELU, CUDNN_NOT_PROPAGATE_NAN,
             std::numeric_limits<double>::max());
    buffers_.resize(static_cast<size_t>(spec_.num_buffers));
    upload_weights();
  } catch (...) {
    // The destructor does not run for a throwing constructor: free what exists so far.
    buffers_.clear();
    conv_weights_.clear();
    relu_desc_.reset();
    if (handle_) cudnn().cudnnDestroy(handle_);
    if (stream_) cudaStreamDestroy(stream_);
    handle_ = nullptr;
    stream_ = nullptr;
    throw;
  }
}

Program::~Program() {
  if (cudaSetDevice(spec_.device) != cudaSuccess) (void)cudaGetLastError();
  if (stream_) cudaStreamSynchronize(stream_);
  plans_.clear();
  relu_desc_.reset();
  if (handle_) cudnn().cudnnDestroy(handle_);
  if (stream_) cudaStreamDestroy(stream_);
  (void)cudaGetLastError();
  // Device buffers are freed by their members' destructors.
}

void* Program::upload(const std::vector<float>& host, DeviceBuffer& into) {
  into.allocate(host.size() * sizeof(float));
  if (!host.empty()) RV_CUDA(cudaMemcpyAsync(into.get(), host.data(), host.size() * sizeof(float), cudaMemcpyHostToDevice, stream_));
  weight_bytes_ += static_cast<int64_t>(into.bytes());
  return into.get();
}

void Program::upload_weights() {
  const bool half = spec_.precision == Precision::fp16;
  const size_t n = spec_.steps.size();
  conv_weights_.resize(n);
  bn_scale_.resize(n);
  bn_shift_.resize(n);
  se_down_w_.resize(n);
  se_down_b_.resize(n);
  se_up_w_.resize(n);
  se_up_b_.resize(n);
  std::vector<DeviceBuffer> staging;  // float copies converted to half; freed after the stream drains
  bool input_live = true;             // buffer 0 still holds the (possibly channel-padded) input
  for (size_t i = 0; i < n; i++) {
    StepSpec& s = spec_.steps[i];
    switch (s.kind) {
      case StepKind::conv: {
        ConvStepSpec& c = s.conv;
        auto w = std::make_unique<ConvWeights>();
        // Only convs reading the input see padded channels (can_pad_input allowed it for all of them).
        w->in_stored = input_live && c.src == 0 ? input_channels_stored_ : c.in_channels;
        w->has_bias = !c.bias.empty();
        if (!half) {
          upload(c.weight, w->weight);
          if (!c.bias.empty()) {
            upload(c.bias, w->bias_f32);
            w->bias_act.allocate(w->bias_f32.bytes());
            RV_CUDA(cudaMemcpyAsync(w->bias_act.get(), w->bias_f32.get(), w->bias_f32.bytes(), cudaMemcpyDeviceToDevice, stream_));
          }
        } else {
          staging.emplace_back();
          DeviceBuffer& f32 = staging.back();
          upload(c.weight, f32);
          weight_bytes_ -= static_cast<int64_t>(f32.bytes());
          const int64_t per_group_stored = w->in_stored / c.groups;
          w->weight.allocate(static_cast<size_t>(c.out_channels * c.kernel * c.kernel * per_group_stored) * 2);
          weight_bytes_ += static_cast<int64_t>(w->weight.bytes());
          RV_CUDA(weights_kcrs_to_krsc_f16(f32.as<float>(), w->weight.get(), c.out_channels, c.in_channels / c.groups, c.kernel, c.kernel,
                                           per_group_stored, stream_));
          if (!c.bias.empty()) {
            upload(c.bias, w->bias_f32);
            w->bias_act.allocate(c.bias.size() * 2);
            weight_bytes_ += static_cast<int64_t>(w->bias_act.bytes());
            RV_CUDA(convert_f32_to_f16(w->bias_f32.as<float>(), w->bias_act.get(), static_cast<int64_t>(c.bias.size()), stream_));
          }
        }
        conv_weights_[i] = std::move(w);
        break;
      }
      case StepKind::batchnorm: {
        // Inference BN folded into one multiply-add per element, computed in double: scale = gamma / sqrt(var + eps),
        // shift = beta - mean * scale (the same algebra as re-parameterization).
        const BatchNormStepSpec& b = s.bn;
        std::vector<float> scale(static_cast<size_t>(b.channels)), shift(static_cast<size_t>(b.channels));
        for (size_t ch = 0; ch < scale.size(); ch++) {
          const double t = static_cast<double>(b.gamma[ch]) / std::sqrt(static_cast<double>(b.var[ch]) + static_cast<double>(b.eps));
          scale[ch] = static_cast<float>(t);
          shift[ch] = static_cast<float>(static_cast<double>(b.beta[ch]) - static_cast<double>(b.mean[ch]) * t);
        }
        upload(scale, bn_scale_[i]);
        upload(shift, bn_shift_[i]);
        break;
      }
      case StepKind::se:
        upload(s.se.down_weight, se_down_w_[i]);
        upload(s.se.down_bias, se_down_b_[i]);
        upload(s.se.up_weight, se_up_w_[i]);
        upload(s.se.up_bias, se_up_b_[i]);
        break;
      case StepKind::add:
        break;
    }
    const bool writes_input = (s.kind == StepKind::conv && s.conv.dst == 0) || (s.kind == StepKind::batchnorm && s.bn.dst == 0) ||
                              (s.kind == StepKind::add && s.add.dst == 0) || (s.kind == StepKind::se && s.se.buf == 0);
    if (writes_input) input_live = false;
  }
  upload(spec_.head_weight, head_w_);
  upload(spec_.head_bias, head_b_);
  RV_CUDA(cudaStreamSynchronize(stream_));
  // The host copies are no longer needed: the device holds the weights from now on.
  for (StepSpec& s : spec_.steps) {
    std::vector<float>().swap(s.conv.weight);
    std::vector<float>().swap(s.conv.bias);
    for (auto* v : {&s.bn.mean, &s.bn.var, &s.bn.gamma, &s.bn.beta, &s.se.down_weight, &s.se.down_bias, &s.se.up_weight, &s.se.up_bias}) {
      std::vector<float>().swap(*v);
    }
  }
  std::vector<float>().swap(spec_.head_weight);
  std::vector<float>().swap(spec_.head_bias);
}

void Program::ensure_buffer(int index, size_t bytes) {
  DeviceBuffer& b = buffers_[static_cast<size_t>(index)];
  bytes = std::max<size_t>(bytes, 256);
  if (b.bytes() >= bytes) return;
  RV_CUDA(cudaStreamSynchronize(stream_));
  b.allocate(bytes);
  // Finite, non-zero contents: cudnnFind and the fused-op trial read buffers before any real input arrives.
  const bool half = spec_.precision == Precision::fp16;
  RV_CUDA(fill_values(b.get(), static_cast<int64_t>(bytes / (half ? 2 : 4)), half, 0.01f, stream_));
  memory_generation_++;
}

void Program::ensure_workspace(size_t bytes) {
  if (workspace_.bytes() >= bytes) return;
  RV_CUDA(cudaStreamSynchronize(stream_));
  workspace_.allocate(bytes);
  memory_generation_++;
}

void Program::trim_workspace() {
  size_t needed = 0;
  for (const auto& [key, plan] : plans_) needed = std::max(needed, plan->workspace_needed());
  if (workspace_.bytes() <= needed) return;
  RV_CUDA(cudaStreamSynchronize(stream_));
  DeviceBuffer smaller;
  try {
    smaller.allocate(needed);  // before the old one is freed: a failure leaves the larger workspace in place
  } catch (const NativeError&) {
    return;
  }
  workspace_ = std::move(smaller);
  memory_generation_++;  // graphs captured with the old workspace are captured again
}

Plan& Program::plan_for(int64_t batch, int64_t height, int64_t width) {
  RV_CHECK(batch >= 1 && height >= 1 && width >= 1, "ERR_SHAPE", "input must have a positive batch and spatial size");
  const auto key = std::make_tuple(batch, height, width);
  auto it = plans_.find(key);
  if (it == plans_.end()) {
    if (plans_.size() >= kMaxPlans) {  // drop the least recently used plan (its graph and descriptors)
      plans_.erase(plan_order_.front());
      plan_order_.erase(plan_order_.begin());
    }
    it = plans_.emplace(key, std::make_unique<Plan>(*this, batch, height, width)).first;
    // Timing the candidates grew the workspace to the largest of them: keep what the chosen ones need.
    trim_workspace();
  } else {
    plan_order_.erase(std::find(plan_order_.begin(), plan_order_.end(), key));
  }
  plan_order_.push_back(key);
  return *it->second;
}

namespace {
// After a failure mid-run, drain the stream so that the next call does not race work still queued; errors
// here are secondary to the one being reported.
void drain(cudaStream_t stream) {
  if (stream) cudaStreamSynchronize(stream);
  (void)cudaGetLastError();
}
}  // namespace

void Program::run(int64_t batch, int64_t height, int64_t width, const float* input, float* logits) {
  std::lock_guard<std::mutex> lock(mutex_);
  enter_device();
  try {
    plan_for(batch, height, width).run(input, logits);
  } catch (...) {
    drain(stream_);
    throw;
  }
}

PlanReport Program::prepare(int64_t batch, int64_t height, int64_t width) {
  std::lock_guard<std::mutex> lock(mutex_);
  enter_device();
  try {
    Plan& plan = plan_for(batch, height, width);
    plan.ensure_graph();
    return plan.report();
  } catch (...) {
    drain(stream_);
    throw;
  }
}

BenchmarkResult Program::benchmark(int64_t batch, int64_t height, int64_t width, const float* input, int warmup, int iterations) {
  RV_CHECK(warmup >= 0 && iterations >= 1 && iterations <= 100000, "ERR_ARG_VALUE", "benchmark: bad warmup/iterations");
  std::lock_guard<std::mutex> lock(mutex_);
  enter_device();
  std::vector<cudaEvent_t> events(static_cast<size_t>(iterations) * 2, nullptr);
  auto destroy_events = [&] {
    for (cudaEvent_t& e : events) {
      if (e) cudaEventDestroy(e);
      e = nullptr;
    }
  };
  try {
    Plan& plan = plan_for(batch, height, width);
    plan.upload_input(input);
    for (int i = 0; i < warmup; i++) plan.launch_forward();
    RV_CUDA(cudaStreamSynchronize(stream_));
    for (cudaEvent_t& e : events) RV_CUDA(cudaEventCreate(&e));
    for (int i = 0; i < iterations; i++) {
      RV_CUDA(cudaEventRecord(events[static_cast<size_t>(2 * i)], stream_));
      plan.launch_forward();
      RV_CUDA(cudaEventRecord(events[static_cast<size_t>(2 * i + 1)], stream_));
    }
    RV_CUDA(cudaStreamSynchronize(stream_));
    BenchmarkResult result;
    for (int i = 0; i < iterations; i++) {
      float ms = 0;
      RV_CUDA(cudaEventElapsedTime(&ms, events[static_cast<size_t>(2 * i)], events[static_cast<size_t>(2 * i + 1)]));
      result.ms.push_back(ms);
    }
    result.cuda_graph = plan.report().cuda_graph;
    destroy_events();
    return result;
  } catch (...) {
    drain(stream_);
    destroy_events();
    throw;
  }
}

}  // namespace repvgg::cuda
