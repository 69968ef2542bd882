// The node-addon-api surface of the CUDA backend (repvgg_cuda.node): info() (never throws: says what was found
// or exactly why CUDA is unavailable), init() (where to look for cuDNN) and Program, with the same JS contract
// as the CPU addon's Program plus benchmark(); Buffer and train (the training ops) come from cuda_training.cc.
// Heavy calls (plan building with cudnnFind, runs) go through an AsyncWorker on the libuv pool; errors surface as
// "CODE: message" like the CPU addon's.
// Not for: the CPU backend (native/addon/addon.cc builds separately, with oneDNN).
#include <napi.h>

#include <functional>
#include <memory>

#include "../cuda/device_info.h"
#include "../cuda/program.h"
#include "args.h"
#include "network_spec_args.h"
#include "task_worker.h"

namespace repvgg::addon {

namespace {

// ---- Program spec: the shared network fields (network_spec_args.h) plus this backend's options ----

cuda::ProgramSpec parse_program(const Napi::Object& o) {
  cuda::ProgramSpec spec;
  const std::string precision = get_string(o, "precision", "fp32");
  RV_CHECK(precision == "fp32" || precision == "fp16", "ERR_ARG_VALUE",
           "the cuda backend runs precision fp32 or fp16, got " + precision);
  spec.precision = precision == "fp16" ? cuda::Precision::fp16 : cuda::Precision::fp32;
  const std::string algorithm = get_string(o, "convAlgorithm", "auto");
  RV_CHECK(algorithm == "auto", "ERR_ARG_VALUE",
           "the cuda backend chooses convolution algorithms with cudnnFind: convAlgorithm must be 'auto', got " + algorithm);
  spec.cuda_graph = get_bool(o, "cudaGraph");
  spec.device = static_cast<int>(get_number(o, "device", 0));
  parse_network(o, spec);
  for (const StepSpec& step : spec.steps)
    RV_CHECK(!step.conv.int8, "ERR_ARG_VALUE", "int8 convolutions run on the cpu backend only");
  return spec;
}

Napi::Number number(Napi::Env env, int64_t v) { return Napi::Number::New(env, static_cast<double>(v)); }

Napi::Object report_to_js(Napi::Env env, const cuda::PlanReport& r) {
  Napi::Object out = Napi::Object::New(env);
  out.Set("batch", number(env, r.batch));
  out.Set("height", number(env, r.height));
  out.Set("width", number(env, r.width));
  out.Set("activationBytes", number(env, r.activation_bytes));
  out.Set("weightBytes", number(env, r.weight_bytes));
  out.Set("workspaceBytes", number(env, r.workspace_bytes));
  out.Set("layout", Napi::String::New(env, r.layout));
  out.Set("precision", Napi::String::New(env, r.precision));
  out.Set("inputChannelsStored", number(env, r.input_channels_stored));
  out.Set("cudaGraph", Napi::Boolean::New(env, r.cuda_graph));
  if (!r.cuda_graph_error.empty()) out.Set("cudaGraphError", Napi::String::New(env, r.cuda_graph_error));
  Napi::Array convs = Napi::Array::New(env, r.convs.size());
  for (size_t i = 0; i < r.convs.size(); i++) {
    const cuda::ConvChoice& c = r.convs[i];
    Napi::Object o = Napi::Object::New(env);
    o.Set("step", Napi::Number::New(env, c.step));
    o.Set("algorithm", Napi::String::New(env, c.algorithm));
    o.Set("implementation",
          Napi::String::New(env, "cudnn " + c.algorithm + " " + c.math + (c.fused ? " fused bias+ReLU" : "")));
    o.Set("layout", Napi::String::New(env, r.layout));  // one layout for the whole network
    o.Set("mathType", Napi::String::New(env, c.math));
    o.Set("fused", Napi::Boolean::New(env, c.fused));
    if (c.fused_max_diff >= 0) o.Set("fusedMaxDiff", Napi::Number::New(env, c.fused_max_diff));
    if (c.find_ms >= 0) o.Set("findMs", Napi::Number::New(env, c.find_ms));
    o.Set("workspaceBytes", number(env, c.workspace_bytes));
    if (!c.note.empty()) o.Set("note", Napi::String::New(env, c.note));
    convs.Set(static_cast<uint32_t>(i), o);
  }
  out.Set("convs", convs);
  return out;
}

class ProgramWrap : public Napi::ObjectWrap<ProgramWrap> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "Program",
                       {InstanceMethod("run", &ProgramWrap::Run), InstanceMethod("runSync", &ProgramWrap::RunSync),
                        InstanceMethod("prepare", &ProgramWrap::Prepare), InstanceMethod("benchmark", &ProgramWrap::Benchmark),
                        InstanceMethod("dispose", &ProgramWrap::Dispose)});
  }

  explicit ProgramWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<ProgramWrap>(info) {
    try {
      program_ = std::make_shared<cuda::Program>(parse_program(options_arg(info)));
      // Host-side view of the native footprint, so that the GC does not treat an undisposed program as free;
      // the device memory itself is freed by dispose() or, as a safety net, by this wrapper's destructor.
      external_bytes_ = program_->device_weight_bytes();
      Napi::MemoryManagement::AdjustExternalMemory(info.Env(), external_bytes_);
    } catch (const std::exception& e) {
      throw Napi::Error::New(info.Env(), e.what());
    }
  }

  ~ProgramWrap() override = default;

 private:
  std::shared_ptr<cuda::Program> live(Napi::Env env) {
    if (!program_) throw Napi::Error::New(env, "ERR_DISPOSED: the network was used after dispose()");
    return program_;
  }

  struct Shape {
    int64_t batch, height, width;
  };
  static Shape shape_of(const Napi::Object& o) {
    return {get_int(o, "batch"), get_int(o, "height"), get_int(o, "width")};
  }

  // options: { input: Float32Array (batch, C, H, W), output: Float32Array (batch, classes), batch, height, width }
  Work parse_run(const Napi::Object& o, std::shared_ptr<cuda::Program> program) {
    const Shape s = shape_of(o);
    F32View input = get_f32(o, "input"), output = get_f32(o, "output");
    require_length(input, s.batch * program->in_channels() * s.height * s.width, "input");
    require_length(output, s.batch * program->classes(), "output");
    return [=] { program->run(s.batch, s.height, s.width, input.data, output.data); };
  }

  Napi::Value Run(const Napi::CallbackInfo& info) {
    auto program = live(info.Env());
    try {
      Napi::Object o = options_arg(info);
      return queue(info.Env(), parse_run(o, program), o);
    } catch (const std::exception& e) {
      throw Napi::Error::New(info.Env(), e.what());
    }
  }

  Napi::Value RunSync(const Napi::CallbackInfo& info) {
    auto program = live(info.Env());
    try {
      parse_run(options_arg(info), program)();
      return info.Env().Undefined();
    } catch (const std::exception& e) {
      throw Napi::Error::New(info.Env(), e.what());
    }
  }

  // options: { batch, height, width } -> Promise<report>
  Napi::Value Prepare(const Napi::CallbackInfo& info) {
    auto program = live(info.Env());
    try {
      Napi::Object o = options_arg(info);
      const Shape s = shape_of(o);
      auto report = std::make_shared<cuda::PlanReport>();
      return queue(
          info.Env(), [=] { *report = program->prepare(s.batch, s.height, s.width); }, o,
          [report](Napi::Env env) -> Napi::Value { return report_to_js(env, *report); });
    } catch (const std::exception& e) {
      throw Napi::Error::New(info.Env(), e.what());
    }
  }

  // options: { input, batch, height, width, warmup?, iterations? } -> Promise<{ ms: number[], cudaGraph }>:
  // device time of each forward with the input already uploaded (what PyTorch benchmarks measure).
  Napi::Value Benchmark(const Napi::CallbackInfo& info) {
    auto program = live(info.Env());
    try {
      Napi::Object o = options_arg(info);
      const Shape s = shape_of(o);
      F32View input = get_f32(o, "input");
      require_length(input, s.batch * program->in_channels() * s.height * s.width, "input");
      const int warmup = static_cast<int>(get_number(o, "warmup", 3));
      const int iterations = static_cast<int>(get_number(o, "iterations", 20));
      auto result = std::make_shared<cuda::BenchmarkResult>();
      return queue(
          info.Env(), [=] { *result = program->benchmark(s.batch, s.height, s.width, input.data, warmup, iterations); }, o,
          [result](Napi::Env env) -> Napi::Value {
            Napi::Object out = Napi::Object::New(env);
            Napi::Array ms = Napi::Array::New(env, result->ms.size());
            for (size_t i = 0; i < result->ms.size(); i++) ms.Set(static_cast<uint32_t>(i), Napi::Number::New(env, result->ms[i]));
            out.Set("ms", ms);
            out.Set("cudaGraph", Napi::Boolean::New(env, result->cuda_graph));
            return out;
          });
    } catch (const std::exception& e) {
      throw Napi::Error::New(info.Env(), e.what());
    }
  }

  // Frees device memory now (work already queued keeps its own reference and finishes first).
  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    if (program_) {
      program_.reset();
      Napi::MemoryManagement::AdjustExternalMemory(info.Env(), -external_bytes_);
      external_bytes_ = 0;
    }
    return info.Env().Undefined();
  }

  std::shared_ptr<cuda::Program> program_;
  int64_t external_bytes_ = 0;
};

// ---- info / init ----

Napi::Array strings(Napi::Env env, const std::vector<std::string>& values) {
  Napi::Array out = Napi::Array::New(env, values.size());
  for (size_t i = 0; i < values.size(); i++) out.Set(static_cast<uint32_t>(i), Napi::String::New(env, values[i]));
  return out;
}

// The probe of info()/infoAsync(): everything found, or why probing failed (never throws).
struct Probe {
  cuda::DeviceReport report;
  std::string failure;  // set when probing itself threw
};

Probe run_probe(int device) {
  Probe p;
  try {
    p.report = cuda::probe_device(device, true);
  } catch (const std::exception& e) {
    p.failure = std::string("probing CUDA failed: ") + e.what();
  }
  return p;
}

int device_option(const Napi::CallbackInfo& info) {
  if (info.Length() >= 1 && info[0].IsObject()) return static_cast<int>(get_number(info[0].As<Napi::Object>(), "device", 0));
  return 0;
}

Napi::Object probe_object(Napi::Env env, const Probe& p) {
  Napi::Object out = Napi::Object::New(env);
  out.Set("backend", "cuda");
  out.Set("builtFor", cuda::built_architectures());
  out.Set("buildCudaVersion", cuda::built_cuda_version());
  if (!p.failure.empty()) {
    out.Set("available", false);
    out.Set("reason", p.failure);
    return out;
  }
  const cuda::DeviceReport& r = p.report;
  out.Set("available", r.available);
  if (!r.available) out.Set("reason", r.reason);
  out.Set("runtimeVersion", cuda::cuda_version_string(r.runtime_version));
  out.Set("driverVersion", cuda::cuda_version_string(r.driver_version));
  out.Set("deviceCount", r.device_count);
  if (!r.device_error.empty()) out.Set("deviceError", r.device_error);
  if (!r.device_name.empty()) {
    out.Set("device", r.device);
    out.Set("deviceName", r.device_name);
    out.Set("computeCapability", std::to_string(r.cc_major) + "." + std::to_string(r.cc_minor));
    out.Set("totalMemoryBytes", static_cast<double>(r.total_memory));
  }
  if (!r.kernel_error.empty()) out.Set("kernelError", r.kernel_error);
  out.Set("cudnnLoaded", r.cudnn.loaded);
  if (r.cudnn.loaded) {
    out.Set("cudnnVersion", std::to_string(r.cudnn.major) + "." + std::to_string(r.cudnn.minor) + "." + std::to_string(r.cudnn.patch));
    out.Set("cudnnPath", r.cudnn.path);
  } else {
    out.Set("cudnnError", r.cudnn.error);
  }
  out.Set("cudnnCandidates", strings(env, r.cudnn.candidates));
  out.Set("cudnnTried", strings(env, r.cudnn.tried));
  out.Set("cudnnWarnings", strings(env, r.cudnn.warnings));
  if (!r.cudnn_handle_error.empty()) out.Set("cudnnHandleError", r.cudnn_handle_error);
  return out;
}

// info({ device? }) -> what the backend found, probed on the calling thread; never throws (a failure to probe
// is itself the reason).
Napi::Value Info(const Napi::CallbackInfo& info) { return probe_object(info.Env(), run_probe(device_option(info))); }

// infoAsync({ device? }) -> Promise of info()'s object, probed on a worker thread (driver initialization and
// loading cuDNN take up to seconds); never rejects.
Napi::Value InfoAsync(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const int device = device_option(info);
  auto probe = std::make_shared<Probe>();
  return queue(
      env, [probe, device] { *probe = run_probe(device); }, Napi::Object::New(env),
      [probe](Napi::Env e) -> Napi::Value { return probe_object(e, *probe); });
}

// init({ cudnnSearchDirs: string[] }): where the next cuDNN load looks (no effect once cuDNN is loaded).
Napi::Value Init(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  try {
    Napi::Object o = options_arg(info);
    Napi::Value dirs = o.Get("cudnnSearchDirs");
    RV_CHECK(dirs.IsArray(), "ERR_ARG_TYPE", "Expected an array of strings for cudnnSearchDirs");
    auto array = dirs.As<Napi::Array>();
    std::vector<std::string> entries;
    for (uint32_t i = 0; i < array.Length(); i++) {
      Napi::Value v = array.Get(i);
      RV_CHECK(v.IsString(), "ERR_ARG_TYPE", "Expected a string for cudnnSearchDirs[" + std::to_string(i) + "]");
      entries.push_back(v.As<Napi::String>().Utf8Value());
    }
    cuda::cudnn_set_search(std::move(entries));
    return env.Undefined();
  } catch (const std::exception& e) {
    throw Napi::Error::New(env, e.what());
  }
}

}  // namespace

// native/addon/cuda_training.cc: Buffer and the training ops.
void InitCudaTraining(Napi::Env env, Napi::Object exports);

Napi::Object InitCuda(Napi::Env env, Napi::Object exports) {
  exports.Set("info", Napi::Function::New(env, Info));
  exports.Set("infoAsync", Napi::Function::New(env, InfoAsync));
  exports.Set("init", Napi::Function::New(env, Init));
  exports.Set("Program", ProgramWrap::Define(env));
  InitCudaTraining(env, exports);
  return exports;
}

}  // namespace repvgg::addon

static Napi::Object InitModule(Napi::Env env, Napi::Object exports) { return repvgg::addon::InitCuda(env, exports); }

NODE_API_MODULE(repvgg_cuda, InitModule)
