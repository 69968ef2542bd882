// The CUDA addon's training surface: `Buffer` (float32 device memory: upload, download, dispose, a finalizer as
// safety net) and `train`, the training ops over Buffers with the same names and option fields as the CPU addon's
// (conv2d, conv2dBackward, batchNormTrain, ...; NCHW only). Every op is checked here against its geometry (a
// device write out of bounds would corrupt memory silently), then runs on one FIFO thread of its own that
// enqueues the work on the training stream in call order. Most ops return nothing: the call returns as soon as the
// work is handed to that thread (a Promise per op cost more host time than the GPU spent on most ops), and a
// failure while enqueueing is reported by the next call that returns a Promise (Context::record_failure). Copies,
// allFinite and the two ops that return a number wait for the GPU and return Promises.
// Not for: inference programs (cuda_addon.cc) or the math (native/cuda/training.cc, train_kernels.cu).
#include <napi.h>

#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "../cuda/kernels.h"
#include "../cuda/train_kernels.h"
#include "../cuda/training.h"
#include "args.h"
#include "task_worker.h"

namespace repvgg::addon {

namespace {

using cuda::DeviceBuffer;
using cuda::train::Context;

// ---- the FIFO thread every training op and copy runs on ----

class TrainThread {
 public:
  static void post(std::function<void()> task) { instance().push(std::move(task)); }

 private:
  static TrainThread& instance() {
    static TrainThread* thread = new TrainThread();  // never joined: it lives as long as the process
    return *thread;
  }
  TrainThread() : worker_([this] { run(); }) { worker_.detach(); }
  void push(std::function<void()> task) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      tasks_.push_back(std::move(task));
    }
    ready_.notify_one();
  }
  void run() {
    for (;;) {
      std::function<void()> task;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        ready_.wait(lock, [this] { return !tasks_.empty(); });
        task = std::move(tasks_.front());
        tasks_.pop_front();
      }
      task();  // queue_posted's wrapper catches everything
    }
  }
  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<std::function<void()>> tasks_;
  std::thread worker_;
};

// ---- Buffer ----

// Device memory shared by the JS object and any op still holding it; freed (stream-ordered) by the last owner.
struct DeviceMemory {
  explicit DeviceMemory(size_t count) : count(count) { data = static_cast<float*>(Context::get().allocate(count * sizeof(float))); }
  ~DeviceMemory() { Context::get().release(data); }
  DeviceMemory(const DeviceMemory&) = delete;
  DeviceMemory& operator=(const DeviceMemory&) = delete;
  float* data = nullptr;
  size_t count;
};

class BufferWrap : public Napi::ObjectWrap<BufferWrap> {
 public:
  static Napi::FunctionReference* constructor;

  static Napi::Function Define(Napi::Env env) {
    Napi::Function fn = DefineClass(env, "Buffer",
                                    {InstanceAccessor<&BufferWrap::Length>("length"), InstanceMethod<&BufferWrap::Upload>("upload"),
                                     InstanceMethod<&BufferWrap::Download>("download"), InstanceMethod<&BufferWrap::Dispose>("dispose")});
    constructor = new Napi::FunctionReference(Napi::Persistent(fn));
    return fn;
  }

  // new Buffer({ length }): `length` float32 values of uninitialized device memory.
  explicit BufferWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<BufferWrap>(info) {
    try {
      Napi::Object o = options_arg(info);
      const int64_t length = get_int(o, "length");
      RV_CHECK(length >= 1 && length <= (int64_t(1) << 34), "ERR_ARG_VALUE",
               "Buffer length must be from 1 to 2^34 float32 values, got " + std::to_string(length));
      // Not reported to V8 as external memory: that budget is for host memory (V8 schedules collections as it
      // grows, in 64 MB steps), and a training step allocates gigabytes of device memory. The training backend
      // frees explicitly; the finalizer stays the safety net.
      memory_ = std::make_shared<DeviceMemory>(static_cast<size_t>(length));
    } catch (const std::exception& e) {
      throw Napi::Error::New(info.Env(), e.what());
    }
  }
  ~BufferWrap() override = default;  // memory_ releases itself (stream-ordered) when the last op is done with it

  // The device memory, or an ERR_DISPOSED error naming the operand.
  std::shared_ptr<DeviceMemory> memory(const std::string& name) const {
    RV_CHECK(memory_ != nullptr, "ERR_DISPOSED", name + " is a disposed Buffer");
    return memory_;
  }

 private:
  Napi::Value Length(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), memory_ ? static_cast<double>(memory_->count) : 0);
  }

  // upload(Float32Array of length values) -> Promise: host to device.
  Napi::Value Upload(const Napi::CallbackInfo& info) { return copy(info, true); }
  // download(Float32Array of length values) -> Promise: device to host, after every op enqueued before it.
  Napi::Value Download(const Napi::CallbackInfo& info) { return copy(info, false); }

  Napi::Value copy(const Napi::CallbackInfo& info, bool to_device) {
    Napi::Env env = info.Env();
    try {
      RV_CHECK(info.Length() >= 1, "ERR_ARG_TYPE", "Expected a Float32Array");
      const F32View host = as_f32(info[0], to_device ? "upload's source" : "download's target");
      auto memory = this->memory("this Buffer");
      RV_CHECK(host.length == memory->count, "ERR_SHAPE",
               "the Float32Array holds " + std::to_string(host.length) + " values but the Buffer " + std::to_string(memory->count));
      Napi::Object keep = Napi::Object::New(env);
      keep.Set("host", info[0]);
      keep.Set("buffer", Value());
      return queue_posted(env, TrainThread::post, [memory, host, to_device] {
        Context& c = Context::get();
        std::lock_guard<std::mutex> lock(c.mutex());
        c.throw_failure();
        c.enter();
        const size_t bytes = memory->count * sizeof(float);
        if (to_device) {
          RV_CUDA(cudaMemcpyAsync(memory->data, host.data, bytes, cudaMemcpyHostToDevice, c.stream()));
        } else {
          RV_CUDA(cudaMemcpyAsync(host.data, memory->data, bytes, cudaMemcpyDeviceToHost, c.stream()));
        }
        // Pageable host memory: wait, so the JS array may be touched as soon as the Promise settles (this also
        // surfaces a failure of any op enqueued before).
        const cudaError_t e = cudaStreamSynchronize(c.stream());
        if (e != cudaSuccess) {
          (void)cudaGetLastError();
          throw NativeError("ERR_BACKEND", std::string("a CUDA training op or copy failed on the GPU: ") + cudaGetErrorName(e) + " (" +
                                               cudaGetErrorString(e) + ")");
        }
      }, keep);
    } catch (const std::exception& e) {
      throw Napi::Error::New(env, e.what());
    }
  }

  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    memory_.reset();
    return info.Env().Undefined();
  }

  std::shared_ptr<DeviceMemory> memory_;
};

Napi::FunctionReference* BufferWrap::constructor = nullptr;

// ---- reading op arguments ----

// Operands of one op: device memory kept alive until the op is enqueued, looked up by name.
class Operands {
 public:
  explicit Operands(const Napi::Object& o) : options_(o) {}

  // The Buffer in field `name`, which must hold exactly `count` values.
  float* get(const char* name, int64_t count) {
    Napi::Value v = options_.Get(name);
    RV_CHECK(v.IsObject() && v.As<Napi::Object>().InstanceOf(BufferWrap::constructor->Value()), "ERR_ARG_TYPE",
             std::string("Expected a CUDA Buffer for ") + name);
    auto memory = BufferWrap::Unwrap(v.As<Napi::Object>())->memory(name);
    RV_CHECK(static_cast<int64_t>(memory->count) == count, "ERR_SHAPE",
             std::string(name) + " holds " + std::to_string(memory->count) + " values but the op needs " + std::to_string(count));
    held_.push_back(memory);
    return memory->data;
  }
  // Like get, or null when the field is missing, undefined or null.
  float* optional(const char* name, int64_t count) {
    Napi::Value v = options_.Get(name);
    return v.IsUndefined() || v.IsNull() ? nullptr : get(name, count);
  }
  std::vector<std::shared_ptr<DeviceMemory>> held() const { return held_; }

 private:
  Napi::Object options_;
  std::vector<std::shared_ptr<DeviceMemory>> held_;
};

int64_t positive(const Napi::Object& o, const char* name) {
  const int64_t v = get_int(o, name);
  RV_CHECK(v >= 1 && v < (int64_t(1) << 31), "ERR_ARG_VALUE", std::string(name) + " must be from 1 to 2^31 - 1, got " + std::to_string(v));
  return v;
}

// On the training thread, with the context locked: enqueues one op's work on the current device and finishes it.
void enqueue_now(Context& c, const char* name, const std::function<void(Context&)>& enqueue) {
  c.inject_failure(name);
  c.enter();
  enqueue(c);
  c.finish(name);
}

// Hands `enqueue` to the training thread, which runs it with the context locked and current and then finishes
// the op, and returns undefined at once. A throw is recorded for the next waiting call to report; while one is
// recorded, later ops are skipped. `held` keeps the operands' memory alive until the work is enqueued, so a Buffer
// disposed meanwhile is freed (stream-ordered) after it.
Napi::Value enqueue_op(Napi::Env env, const char* name, std::vector<std::shared_ptr<DeviceMemory>> held, std::function<void(Context&)> enqueue) {
  TrainThread::post([name, held = std::move(held), enqueue = std::move(enqueue)] {
    Context& c = Context::get();
    std::lock_guard<std::mutex> lock(c.mutex());
    if (c.has_failure()) return;
    try {
      enqueue_now(c, name, enqueue);
    } catch (const std::exception& e) {
      c.record_failure(name, e.what());
    }
  });
  return env.Undefined();
}

// Like enqueue_op but the call returns a Promise, which rejects with a failure recorded before it (or its own) and
// resolves with result(env) once `enqueue` (which waits for the GPU) has run.
Napi::Value waiting_op(Napi::Env env, const char* name, const Napi::Object& options, std::vector<std::shared_ptr<DeviceMemory>> held,
                       std::function<void(Context&)> enqueue, ResultFn result) {
  return queue_posted(env, TrainThread::post, [name, held = std::move(held), enqueue = std::move(enqueue)] {
    Context& c = Context::get();
    std::lock_guard<std::mutex> lock(c.mutex());
    c.throw_failure();
    enqueue_now(c, name, enqueue);
  }, options, std::move(result));
}

cuda::train::ConvGeometry conv_geometry(const Napi::Object& o) {
  cuda::train::ConvGeometry g{positive(o, "batch"), positive(o, "inChannels"), positive(o, "height"), positive(o, "width"),
                              positive(o, "outChannels"), positive(o, "kernel"), positive(o, "stride"), get_int(o, "pad"),
                              positive(o, "groups")};
  RV_CHECK(g.pad >= 0 && g.pad < g.kernel, "ERR_ARG_VALUE", "pad must be from 0 to kernel - 1, got " + std::to_string(g.pad));
  RV_CHECK(g.in_channels % g.groups == 0 && g.out_channels % g.groups == 0, "ERR_ARG_VALUE", "groups must divide both channel counts");
  RV_CHECK(g.out_height() >= 1 && g.out_width() >= 1, "ERR_SHAPE", "the kernel does not fit the padded input");
  const std::string precision = get_string(o, "precision", "fp32");
  RV_CHECK(precision == "fp32" || precision == "fp16" || precision == "bf16", "ERR_ARG_VALUE",
           "precision must be 'fp32', 'fp16' or 'bf16', got '" + precision + "'");
  g.type = precision == "fp16" ? cuda::train::ConvType::f16 : precision == "bf16" ? cuda::train::ConvType::bf16 : cuda::train::ConvType::f32;
  Context::get().require_type(g.type);
  return g;
}

// Wraps an op's body: argument errors become JS exceptions with the native "CODE: message" text.
template <typename Body>
Napi::Value guarded(const Napi::CallbackInfo& info, Body body) {
  try {
    return body(options_arg(info));
  } catch (const std::exception& e) {
    throw Napi::Error::New(info.Env(), e.what());
  }
}

// ---- the ops ----

// conv2d({ x, weight, y, batch, inChannels, height, width, outChannels, kernel, stride, pad, groups, precision? }):
// y = conv(x, w); precision 'fp16' or 'bf16' (compute capability 8.0+) convolves 16-bit copies on tensor cores
// (operands and result stay float).
Napi::Value Conv2d(const Napi::CallbackInfo& info) {
  return guarded(info, [&](const Napi::Object& o) {
    const auto g = conv_geometry(o);
    Operands b(o);
    const float* x = b.get("x", g.batch * g.in_channels * g.height * g.width);
    const float* w = b.get("weight", g.out_channels * (g.in_channels / g.groups) * g.kernel * g.kernel);
    float* y = b.get("y", g.batch * g.out_channels * g.out_height() * g.out_width());
    return enqueue_op(info.Env(), "conv2d", b.held(), [=](Context& c) { c.conv2d_forward(g, x, w, y); });
  });
}

// conv2dBackward({ x, weight, dy, dx?, dweight, ...geometry }).
Napi::Value Conv2dBackward(const Napi::CallbackInfo& info) {
  return guarded(info, [&](const Napi::Object& o) {
    const auto g = conv_geometry(o);
    Operands b(o);
    const int64_t x_count = g.batch * g.in_channels * g.height * g.width;
    const int64_t w_count = g.out_channels * (g.in_channels / g.groups) * g.kernel * g.kernel;
    const float* x = b.get("x", x_count);
    const float* w = b.get("weight", w_count);
    const float* dy = b.get("dy", g.batch * g.out_channels * g.out_height() * g.out_width());
    float* dx = b.optional("dx", x_count);
    float* dw = b.get("dweight", w_count);
    return enqueue_op(info.Env(), "conv2dBackward", b.held(), [=](Context& c) { c.conv2d_backward(g, x, w, dy, dx, dw); });
  });
}

struct PlaneGeometry {
  int64_t batch, channels, spatial;
  int64_t count() const { return batch * channels * spatial; }
};
// The CPU addon's fields: batch norm and pooling take height and width, SE's channel scale takes spatial.
PlaneGeometry planes(const Napi::Object& o) { return {positive(o, "batch"), positive(o, "channels"), positive(o, "spatial")}; }
PlaneGeometry image_planes(const Napi::Object& o) {
  const int64_t height = positive(o, "height"), width = positive(o, "width");
  return {positive(o, "batch"), positive(o, "channels"), height * width};
}

// batchNormTrain({ x, gamma, beta, y, mean, var, batch, channels, height, width, eps }): batch statistics (mean,
// biased variance) and the normalized output.
Napi::Value BatchNormTrain(const Napi::CallbackInfo& info) {
  return guarded(info, [&](const Napi::Object& o) {
    const auto p = image_planes(o);
    const float eps = static_cast<float>(get_number(o, "eps", 1e-5));
    Operands b(o);
    const float* x = b.get("x", p.count());
    const float* gamma = b.get("gamma", p.channels);
    const float* beta = b.get("beta", p.channels);
    float* y = b.get("y", p.count());
    float* mean = b.get("mean", p.channels);
    float* var = b.get("var", p.channels);
    return enqueue_op(info.Env(), "batchNormTrain", b.held(), [=](Context& c) {
      cuda::train::Scratch scratch(c);
      RV_CUDA(cuda::train::batch_norm_stats(x, p.batch, p.channels, p.spatial, mean, var,
                                            scratch.get(cuda::train::batch_norm_scratch_bytes(p.batch, p.channels, p.spatial)), c.stream()));
      RV_CUDA(cuda::train::batch_norm_apply(x, p.batch, p.channels, p.spatial, mean, var, gamma, beta, eps, y, c.stream()));
    });
  });
}

// batchNormBackward({ x, dy, gamma, mean, var, dx?, dgamma, dbeta, batch, channels, height, width, eps }).
Napi::Value BatchNormBackward(const Napi::CallbackInfo& info) {
  return guarded(info, [&](const Napi::Object& o) {
    const auto p = image_planes(o);
    const float eps = static_cast<float>(get_number(o, "eps", 1e-5));
    Operands b(o);
    const float* x = b.get("x", p.count());
    const float* dy = b.get("dy", p.count());
    const float* gamma = b.get("gamma", p.channels);
    const float* mean = b.get("mean", p.channels);
    const float* var = b.get("var", p.channels);
    float* dx = b.optional("dx", p.count());
    float* dgamma = b.get("dgamma", p.channels);
    float* dbeta = b.get("dbeta", p.channels);
    return enqueue_op(info.Env(), "batchNormBackward", b.held(), [=](Context& c) {
      cuda::train::Scratch scratch(c);
      RV_CUDA(cuda::train::batch_norm_backward(x, dy, p.batch, p.channels, p.spatial, mean, var, gamma, eps, dx, dgamma, dbeta,
                                               scratch.get(cuda::train::batch_norm_scratch_bytes(p.batch, p.channels, p.spatial)),
                                               c.stream()));
    });
  });
}

// updateRunningStats({ runningMean, runningVar, mean, var, channels, count, momentum }).
Napi::Value UpdateRunningStats(const Napi::CallbackInfo& info) {
  return guarded(info, [&](const Napi::Object& o) {
    const int64_t channels = positive(o, "channels");
    const int64_t count = get_int(o, "count");
    RV_CHECK(count >= 2, "ERR_ARG_VALUE", "count must be at least 2 (the unbiased variance divides by count - 1)");
    const double momentum = get_number(o, "momentum", 0.1);
    RV_CHECK(momentum >= 0 && momentum <= 1, "ERR_ARG_VALUE", "momentum must be in [0, 1]");
    Operands b(o);
    float* rm = b.get("runningMean", channels);
    float* rv = b.get("runningVar", channels);
    const float* mean = b.get("mean", channels);
    const float* var = b.get("var", channels);
    return enqueue_op(info.Env(), "updateRunningStats", b.held(), [=](Context& c) {
      RV_CUDA(cuda::train::update_running_stats(rm, rv, mean, var, channels, count, momentum, c.stream()));
    });
  });
}

// Element-wise ops over `count` values: relu/sigmoid({ x, y, count }), their backward({ y, dy, dx, count }),
// add({ a, b, y, count, relu? }).
template <cudaError_t (*Fn)(const float*, float*, int64_t, cudaStream_t)>
Napi::Value Unary(const Napi::CallbackInfo& info, const char* name) {
  return guarded(info, [&](const Napi::Object& o) {
    const int64_t count = positive(o, "count");
    Operands b(o);
    const float* x = b.get("x", count);
    float* y = b.get("y", count);
    return enqueue_op(info.Env(), name, b.held(), [=](Context& c) { RV_CUDA(Fn(x, y, count, c.stream())); });
  });
}

template <cudaError_t (*Fn)(const float*, const float*, float*, int64_t, cudaStream_t)>
Napi::Value UnaryBackward(const Napi::CallbackInfo& info, const char* name) {
  return guarded(info, [&](const Napi::Object& o) {
    const int64_t count = positive(o, "count");
    Operands b(o);
    const float* y = b.get("y", count);
    const float* dy = b.get("dy", count);
    float* dx = b.get("dx", count);
    return enqueue_op(info.Env(), name, b.held(), [=](Context& c) { RV_CUDA(Fn(y, dy, dx, count, c.stream())); });
  });
}

Napi::Value Add(const Napi::CallbackInfo& info) {
  return guarded(info, [&](const Napi::Object& o) {
    const int64_t count = positive(o, "count");
    const bool relu = get_bool(o, "relu");
    Operands b(o);
    const float* a = b.get("a", count);
    const float* bb = b.get("b", count);
    float* y = b.get("y", count);
    return enqueue_op(info.Env(), "add", b.held(), [=](Context& c) { RV_CUDA(cuda::train::add(a, bb, y, count, relu, c.stream())); });
  });
}

// scale({ x, y, count, factor }): y = x * factor (a loss gradient scaled by the loss's own gradient).
Napi::Value Scale(const Napi::CallbackInfo& info) {
  return guarded(info, [&](const Napi::Object& o) {
    const int64_t count = positive(o, "count");
    const float factor = static_cast<float>(get_number(o, "factor", 1));
    Operands b(o);
    const float* x = b.get("x", count);
    float* y = b.get("y", count);
    return enqueue_op(info.Env(), "scale", b.held(), [=](Context& c) { RV_CUDA(cuda::train::scale(x, y, count, factor, c.stream())); });
  });
}

// globalAvgPool({ x, y, batch, channels, height, width }) and its backward({ dy, dx, ... }).
Napi::Value GlobalAvgPool(const Napi::CallbackInfo& info) {
  return guarded(info, [&](const Napi::Object& o) {
    const auto p = image_planes(o);
    Operands b(o);
    const float* x = b.get("x", p.count());
    float* y = b.get("y", p.batch * p.channels);
    return enqueue_op(info.Env(), "globalAvgPool", b.held(), [=](Context& c) {
      const cuda::ActShape shape{p.batch, p.channels, 1, p.spatial, cuda::Layout::nchw, false};
      RV_CUDA(cuda::global_mean(x, shape, y, c.stream()));
    });
  });
}

Napi::Value GlobalAvgPoolBackward(const Napi::CallbackInfo& info) {
  return guarded(info, [&](const Napi::Object& o) {
    const auto p = image_planes(o);
    Operands b(o);
    const float* dy = b.get("dy", p.batch * p.channels);
    float* dx = b.get("dx", p.count());
    return enqueue_op(info.Env(), "globalAvgPoolBackward", b.held(), [=](Context& c) {
      RV_CUDA(cuda::train::global_avg_pool_backward(dy, p.batch, p.channels, p.spatial, dx, c.stream()));
    });
  });
}

// linear({ x, weight, bias, y, batch, inFeatures, outFeatures }) and linearBackward({ x, weight, dy, dx?, dweight,
// dbias, ... }).
Napi::Value Linear(const Napi::CallbackInfo& info) {
  return guarded(info, [&](const Napi::Object& o) {
    const int64_t n = positive(o, "batch"), in = positive(o, "inFeatures"), out = positive(o, "outFeatures");
    Operands b(o);
    const float* x = b.get("x", n * in);
    const float* w = b.get("weight", out * in);
    const float* bias = b.get("bias", out);
    float* y = b.get("y", n * out);
    return enqueue_op(info.Env(), "linear", b.held(), [=](Context& c) {
      RV_CUDA(cuda::linear_forward(x, w, bias, y, n, in, out, cuda::Activation::none, c.stream()));
    });
  });
}

Napi::Value LinearBackward(const Napi::CallbackInfo& info) {
  return guarded(info, [&](const Napi::Object& o) {
    const int64_t n = positive(o, "batch"), in = positive(o, "inFeatures"), out = positive(o, "outFeatures");
    Operands b(o);
    const float* x = b.get("x", n * in);
    const float* w = b.get("weight", out * in);
    const float* dy = b.get("dy", n * out);
    float* dx = b.optional("dx", n * in);
    float* dw = b.get("dweight", out * in);
    float* db = b.get("dbias", out);
    return enqueue_op(info.Env(), "linearBackward", b.held(), [=](Context& c) {
      RV_CUDA(cuda::train::linear_backward(x, w, dy, n, in, out, dx, dw, db, c.stream()));
    });
  });
}

// channelScale({ x, scale, y, batch, channels, spatial }) and its backward({ x, scale, dy, dx, dscale, ... }).
Napi::Value ChannelScale(const Napi::CallbackInfo& info) {
  return guarded(info, [&](const Napi::Object& o) {
    const auto p = planes(o);
    Operands b(o);
    const float* x = b.get("x", p.count());
    const float* scale = b.get("scale", p.batch * p.channels);
    float* y = b.get("y", p.count());
    return enqueue_op(info.Env(), "channelScale", b.held(), [=](Context& c) {
      RV_CUDA(cuda::train::channel_scale(x, scale, p.batch, p.channels, p.spatial, y, c.stream()));
    });
  });
}

Napi::Value ChannelScaleBackward(const Napi::CallbackInfo& info) {
  return guarded(info, [&](const Napi::Object& o) {
    const auto p = planes(o);
    Operands b(o);
    const float* x = b.get("x", p.count());
    const float* scale = b.get("scale", p.batch * p.channels);
    const float* dy = b.get("dy", p.count());
    float* dx = b.get("dx", p.count());
    float* dscale = b.get("dscale", p.batch * p.channels);
    return enqueue_op(info.Env(), "channelScaleBackward", b.held(), [=](Context& c) {
      RV_CUDA(cuda::train::channel_scale_backward(x, scale, dy, p.batch, p.channels, p.spatial, dx, dscale, c.stream()));
    });
  });
}

// allFinite({ tensors: Buffer[] }) -> Promise<boolean>: no NaN or infinity in any of them (waits for the GPU).
Napi::Value AllFinite(const Napi::CallbackInfo& info) {
  return guarded(info, [&](const Napi::Object& o) {
    Napi::Value list = o.Get("tensors");
    RV_CHECK(list.IsArray(), "ERR_ARG_TYPE", "Expected an array of CUDA Buffers for tensors");
    auto array = list.As<Napi::Array>();
    std::vector<std::pair<const float*, int64_t>> items;
    std::vector<std::shared_ptr<DeviceMemory>> held;
    for (uint32_t i = 0; i < array.Length(); i++) {
      Napi::Value v = array.Get(i);
      RV_CHECK(v.IsObject() && v.As<Napi::Object>().InstanceOf(BufferWrap::constructor->Value()), "ERR_ARG_TYPE",
               "Expected a CUDA Buffer for tensors[" + std::to_string(i) + "]");
      auto memory = BufferWrap::Unwrap(v.As<Napi::Object>())->memory("tensors[" + std::to_string(i) + "]");
      items.emplace_back(memory->data, static_cast<int64_t>(memory->count));
      held.push_back(memory);
    }
    auto finite = std::make_shared<bool>(true);
    return waiting_op(info.Env(), "allFinite", o, std::move(held), [=](Context& c) {
      DeviceBuffer flag(sizeof(int));
      RV_CUDA(cudaMemsetAsync(flag.get(), 0, sizeof(int), c.stream()));
      for (const auto& [data, count] : items) c.flag_non_finite(data, count, flag.as<int>());
      int host = 0;
      RV_CUDA(cudaMemcpyAsync(&host, flag.get(), sizeof(int), cudaMemcpyDeviceToHost, c.stream()));
      RV_CUDA(cudaStreamSynchronize(c.stream()));
      *finite = host == 0;
    }, [finite](Napi::Env env) -> Napi::Value { return Napi::Boolean::New(env, *finite); });
  });
}

// softmaxCrossEntropy({ logits, labels: Int32Array, dlogits, batch, classes, labelSmoothing }) -> Promise<number>
// (the mean loss; waits for the GPU).
Napi::Value SoftmaxCrossEntropy(const Napi::CallbackInfo& info) {
  return guarded(info, [&](const Napi::Object& o) {
    const int64_t n = positive(o, "batch"), k = positive(o, "classes");
    const double ls = get_number(o, "labelSmoothing", 0);
    RV_CHECK(ls >= 0 && ls <= 1, "ERR_ARG_VALUE", "labelSmoothing must be in [0, 1]");
    Napi::Value labels_value = o.Get("labels");
    RV_CHECK(labels_value.IsTypedArray() && labels_value.As<Napi::TypedArray>().TypedArrayType() == napi_int32_array, "ERR_ARG_TYPE",
             "Expected an Int32Array for labels");
    auto labels_array = labels_value.As<Napi::Int32Array>();
    RV_CHECK(static_cast<int64_t>(labels_array.ElementLength()) == n, "ERR_SHAPE", "labels must hold batch values");
    std::vector<int32_t> labels(labels_array.Data(), labels_array.Data() + n);
    for (int64_t r = 0; r < n; r++) {
      RV_CHECK(labels[r] >= 0 && labels[r] < k, "ERR_ARG_VALUE",
               "labels[" + std::to_string(r) + "] = " + std::to_string(labels[r]) + " is outside [0, " + std::to_string(k) + ")");
    }
    Operands b(o);
    const float* logits = b.get("logits", n * k);
    float* dlogits = b.get("dlogits", n * k);
    auto loss = std::make_shared<double>(0);
    return waiting_op(info.Env(), "softmaxCrossEntropy", o, b.held(), [=](Context& c) {
      DeviceBuffer device_labels(static_cast<size_t>(n) * sizeof(int32_t)), row_loss(static_cast<size_t>(n) * sizeof(double));
      RV_CUDA(cudaMemcpyAsync(device_labels.get(), labels.data(), device_labels.bytes(), cudaMemcpyHostToDevice, c.stream()));
      RV_CUDA(cuda::train::softmax_cross_entropy(logits, device_labels.as<int32_t>(), n, k, ls, dlogits, row_loss.as<double>(), c.stream()));
      std::vector<double> rows(static_cast<size_t>(n));
      RV_CUDA(cudaMemcpyAsync(rows.data(), row_loss.get(), row_loss.bytes(), cudaMemcpyDeviceToHost, c.stream()));
      RV_CUDA(cudaStreamSynchronize(c.stream()));  // also before the temporary buffers are freed
      double total = 0;
      for (double v : rows) total += v;  // in row order, as the CPU op sums
      *loss = total / static_cast<double>(n);
    }, [loss](Napi::Env env) -> Napi::Value { return Napi::Number::New(env, *loss); });
  });
}

// sgdStep({ tensors: [{ weight, grad, momentumBuffer?, weightDecay, first }], lr, momentum, nesterov }).
Napi::Value SgdStep(const Napi::CallbackInfo& info) {
  return guarded(info, [&](const Napi::Object& o) {
    const double lr = get_number(o, "lr", 0), momentum = get_number(o, "momentum", 0);
    const bool nesterov = get_bool(o, "nesterov");
    Napi::Value list = o.Get("tensors");
    RV_CHECK(list.IsArray(), "ERR_ARG_TYPE", "Expected an array for tensors");
    auto array = list.As<Napi::Array>();
    struct Item {
      float *w, *buf;
      const float* g;
      int64_t count;
      double wd;
      bool first;
    };
    std::vector<Item> items;
    std::vector<std::shared_ptr<DeviceMemory>> held;
    for (uint32_t i = 0; i < array.Length(); i++) {
      Napi::Value v = array.Get(i);
      RV_CHECK(v.IsObject(), "ERR_ARG_TYPE", "Expected an object for tensors[" + std::to_string(i) + "]");
      Napi::Object t = v.As<Napi::Object>();
      Napi::Value weight = t.Get("weight");
      RV_CHECK(weight.IsObject() && weight.As<Napi::Object>().InstanceOf(BufferWrap::constructor->Value()), "ERR_ARG_TYPE",
               "Expected a CUDA Buffer for tensors[" + std::to_string(i) + "].weight");
      const int64_t count = static_cast<int64_t>(BufferWrap::Unwrap(weight.As<Napi::Object>())->memory("weight")->count);
      Operands b(t);
      Item item{b.get("weight", count), b.optional("momentumBuffer", count), b.get("grad", count), count,
                get_number(t, "weightDecay", 0), get_bool(t, "first")};
      RV_CHECK(momentum == 0 || item.buf != nullptr, "ERR_ARG_VALUE",
               "tensors[" + std::to_string(i) + "] needs a momentumBuffer when momentum is not 0");
      items.push_back(item);
      for (auto& m : b.held()) held.push_back(m);
    }
    return enqueue_op(info.Env(), "sgdStep", std::move(held), [=](Context& c) {
      for (const Item& t : items) {
        RV_CUDA(cuda::train::sgd_step(t.w, t.g, momentum == 0 ? nullptr : t.buf, t.count, lr, momentum, nesterov, t.wd, t.first, c.stream()));
      }
    });
  });
}

// emaUpdate({ shadows: Buffer[], currents: Buffer[], decay }).
Napi::Value EmaUpdate(const Napi::CallbackInfo& info) {
  return guarded(info, [&](const Napi::Object& o) {
    const double decay = get_number(o, "decay", 0);
    RV_CHECK(decay >= 0 && decay <= 1, "ERR_ARG_VALUE", "decay must be in [0, 1]");
    Napi::Value shadows_value = o.Get("shadows"), currents_value = o.Get("currents");
    RV_CHECK(shadows_value.IsArray() && currents_value.IsArray(), "ERR_ARG_TYPE", "Expected arrays for shadows and currents");
    auto shadows = shadows_value.As<Napi::Array>(), currents = currents_value.As<Napi::Array>();
    RV_CHECK(shadows.Length() == currents.Length(), "ERR_SHAPE", "shadows and currents must have the same length");
    std::vector<std::tuple<float*, const float*, int64_t>> items;
    std::vector<std::shared_ptr<DeviceMemory>> held;
    for (uint32_t i = 0; i < shadows.Length(); i++) {
      Napi::Object pair = Napi::Object::New(info.Env());
      pair.Set("shadow", shadows.Get(i));
      pair.Set("current", currents.Get(i));
      Napi::Value s = shadows.Get(i);
      RV_CHECK(s.IsObject() && s.As<Napi::Object>().InstanceOf(BufferWrap::constructor->Value()), "ERR_ARG_TYPE",
               "Expected a CUDA Buffer for shadows[" + std::to_string(i) + "]");
      const int64_t count = static_cast<int64_t>(BufferWrap::Unwrap(s.As<Napi::Object>())->memory("shadow")->count);
      Operands b(pair);
      items.emplace_back(b.get("shadow", count), b.get("current", count), count);
      for (auto& m : b.held()) held.push_back(m);
    }
    return enqueue_op(info.Env(), "emaUpdate", std::move(held), [=](Context& c) {
      for (const auto& [shadow, current, count] : items) RV_CUDA(cuda::train::ema_update(shadow, current, count, decay, c.stream()));
    });
  });
}

// customL2({ blocks: [{ k3, k3Grad, k1, k1Grad, t3, t1, outChannels, perOut }], weightDecay }) -> Promise<number>
// (0.5 * weightDecay * the sum; waits for the GPU).
Napi::Value CustomL2(const Napi::CallbackInfo& info) {
  return guarded(info, [&](const Napi::Object& o) {
    const double wd = get_number(o, "weightDecay", 0);
    Napi::Value list = o.Get("blocks");
    RV_CHECK(list.IsArray(), "ERR_ARG_TYPE", "Expected an array for blocks");
    auto array = list.As<Napi::Array>();
    struct Block {
      const float *k3, *k1, *t3, *t1;
      float *k3_grad, *k1_grad;
      int64_t out, per_out;
    };
    std::vector<Block> blocks;
    std::vector<std::shared_ptr<DeviceMemory>> held;
    for (uint32_t i = 0; i < array.Length(); i++) {
      Napi::Value v = array.Get(i);
      RV_CHECK(v.IsObject(), "ERR_ARG_TYPE", "Expected an object for blocks[" + std::to_string(i) + "]");
      Napi::Object t = v.As<Napi::Object>();
      const int64_t out = positive(t, "outChannels"), per_out = positive(t, "perOut");
      Operands b(t);
      blocks.push_back({b.get("k3", out * per_out * 9), b.get("k1", out * per_out), b.get("t3", out), b.get("t1", out),
                        b.get("k3Grad", out * per_out * 9), b.get("k1Grad", out * per_out), out, per_out});
      for (auto& m : b.held()) held.push_back(m);
    }
    auto loss = std::make_shared<double>(0);
    return waiting_op(info.Env(), "customL2", o, std::move(held), [=](Context& c) {
      DeviceBuffer total(sizeof(double));
      RV_CUDA(cudaMemsetAsync(total.get(), 0, sizeof(double), c.stream()));
      for (const Block& b : blocks) {
        RV_CUDA(cuda::train::custom_l2(b.k3, b.k3_grad, b.k1, b.k1_grad, b.t3, b.t1, b.out, b.per_out, wd, total.as<double>(), c.stream()));
      }
      double host = 0;
      RV_CUDA(cudaMemcpyAsync(&host, total.get(), sizeof(double), cudaMemcpyDeviceToHost, c.stream()));
      RV_CUDA(cudaStreamSynchronize(c.stream()));
      *loss = 0.5 * wd * host;
    }, [loss](Napi::Env env) -> Napi::Value { return Napi::Number::New(env, *loss); });
  });
}

}  // namespace

void InitCudaTraining(Napi::Env env, Napi::Object exports) {
  exports.Set("Buffer", BufferWrap::Define(env));
  Napi::Object train = Napi::Object::New(env);
  train.Set("conv2d", Napi::Function::New(env, Conv2d));
  train.Set("conv2dBackward", Napi::Function::New(env, Conv2dBackward));
  train.Set("batchNormTrain", Napi::Function::New(env, BatchNormTrain));
  train.Set("batchNormBackward", Napi::Function::New(env, BatchNormBackward));
  train.Set("updateRunningStats", Napi::Function::New(env, UpdateRunningStats));
  train.Set("relu", Napi::Function::New(env, [](const Napi::CallbackInfo& i) { return Unary<cuda::train::relu>(i, "relu"); }));
  train.Set("reluBackward",
            Napi::Function::New(env, [](const Napi::CallbackInfo& i) { return UnaryBackward<cuda::train::relu_backward>(i, "reluBackward"); }));
  train.Set("sigmoid", Napi::Function::New(env, [](const Napi::CallbackInfo& i) { return Unary<cuda::train::sigmoid>(i, "sigmoid"); }));
  train.Set("sigmoidBackward", Napi::Function::New(env, [](const Napi::CallbackInfo& i) {
              return UnaryBackward<cuda::train::sigmoid_backward>(i, "sigmoidBackward");
            }));
  train.Set("add", Napi::Function::New(env, Add));
  train.Set("scale", Napi::Function::New(env, Scale));
  train.Set("allFinite", Napi::Function::New(env, AllFinite));
  train.Set("globalAvgPool", Napi::Function::New(env, GlobalAvgPool));
  train.Set("globalAvgPoolBackward", Napi::Function::New(env, GlobalAvgPoolBackward));
  train.Set("linear", Napi::Function::New(env, Linear));
  train.Set("linearBackward", Napi::Function::New(env, LinearBackward));
  train.Set("channelScale", Napi::Function::New(env, ChannelScale));
  train.Set("channelScaleBackward", Napi::Function::New(env, ChannelScaleBackward));
  train.Set("softmaxCrossEntropy", Napi::Function::New(env, SoftmaxCrossEntropy));
  train.Set("sgdStep", Napi::Function::New(env, SgdStep));
  train.Set("emaUpdate", Napi::Function::New(env, EmaUpdate));
  train.Set("customL2", Napi::Function::New(env, CustomL2));
  exports.Set("train", train);
}

}  // namespace repvgg::addon
