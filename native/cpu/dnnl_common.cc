// Shared oneDNN engine/stream and helpers of the CPU backend (see dnnl_common.h).
#include "dnnl_common.h"

#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <xmmintrin.h>

#include <cerrno>
#include <cstring>

#include <condition_variable>
#include <cstdio>
#include <deque>
#include <future>
#include <memory>
#include <mutex>
#include <thread>

namespace repvgg::cpu {

dnnl::engine& engine() {
  static dnnl::engine eng(dnnl::engine::kind::cpu, 0);
  return eng;
}

dnnl::stream& stream() {
  static dnnl::stream strm(engine());
  return strm;
}

namespace {

// Denormal floats make x86 FMA units take microcode assists (tens of times slower per instruction); with random
// weights, Winograd transforms produced enough of them to cost A0 about 15% of its throughput. Flush-to-zero and
// denormals-are-zero change results only below 1.2e-38. MXCSR is per thread, so it is set on the compute thread
// and on every thread of its OpenMP team (libgomp reuses that team for all later parallel regions of this thread).
void flush_denormals_in_team() {
  constexpr unsigned kFlushToZero = 0x8000, kDenormalsAreZero = 0x0040;
  _mm_setcsr(_mm_getcsr() | kFlushToZero | kDenormalsAreZero);
#pragma omp parallel
  { _mm_setcsr(_mm_getcsr() | kFlushToZero | kDenormalsAreZero); }
}

// A FIFO of tasks served by one long-lived thread.
class ComputeThread {
 public:
  ComputeThread() : thread_([this] { serve(); }) {}
  ~ComputeThread() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    ready_.notify_one();
    thread_.join();
  }
  void run(const std::function<void()>& fn) {
    if (std::this_thread::get_id() == thread_.get_id()) return fn();
    auto task = std::make_shared<std::packaged_task<void()>>(fn);
    std::future<void> done = task->get_future();
    post([task] { (*task)(); });
    done.get();  // rethrows the task's exception here
  }
  void post(std::function<void()> fn) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      tasks_.push_back(std::move(fn));
    }
    ready_.notify_one();
  }

 private:
  void serve() {
    flush_denormals_in_team();
    for (;;) {
      std::function<void()> task;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        ready_.wait(lock, [this] { return stopping_ || !tasks_.empty(); });
        if (tasks_.empty()) return;
        task = std::move(tasks_.front());
        tasks_.pop_front();
      }
      // run()'s packaged tasks keep their exceptions; this catches what a posted task failed to report, since an
      // exception leaving this thread would terminate the process.
      try {
        task();
      } catch (const std::exception& e) {
        std::fprintf(stderr, "repvgg: a compute-thread task threw: %s\n", e.what());
      } catch (...) {
        std::fprintf(stderr, "repvgg: a compute-thread task threw a non-standard exception\n");
      }
    }
  }

  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<std::function<void()>> tasks_;
  bool stopping_ = false;
  std::thread thread_;  // declared last: starts after the members it uses exist
};

ComputeThread& compute_thread() {
  static ComputeThread compute;
  return compute;
}

}  // namespace

void on_compute_thread(const std::function<void()>& fn) { compute_thread().run(fn); }

void post_to_compute_thread(std::function<void()> fn) { compute_thread().post(std::move(fn)); }

void set_compute_nice(int nice) {
  int first_errno = 0;
  on_compute_thread([&] {
    // On Linux the nice value is per thread: PRIO_PROCESS with a thread id changes that thread alone.
    auto renice_this_thread = [nice]() -> int {
      const auto tid = static_cast<id_t>(syscall(SYS_gettid));
      return setpriority(PRIO_PROCESS, tid, nice) == 0 ? 0 : errno;
    };
    first_errno = renice_this_thread();
#pragma omp parallel
    {
      const int error = renice_this_thread();
      if (error != 0) {
#pragma omp critical
        if (first_errno == 0) first_errno = error;
      }
    }
  });
  if (first_errno != 0) {
    throw NativeError("ERR_BACKEND", "Setting the compute threads' nice value to " + std::to_string(nice) +
                                         " failed: " + std::strerror(first_errno));
  }
}

dnnl::memory::desc plain_f32(const dims& shape) {
  switch (shape.size()) {
    case 1: return {shape, dt::f32, tag::a};
    case 2: return {shape, dt::f32, tag::ab};
    case 4: return {shape, dt::f32, tag::abcd};
    case 5: return {shape, dt::f32, tag::abcde};
    default: throw NativeError("ERR_SHAPE", "unsupported rank " + std::to_string(shape.size()));
  }
}

std::string effective_isa() {
  switch (dnnl::get_effective_cpu_isa()) {
    case dnnl::cpu_isa::sse41: return "sse41";
    case dnnl::cpu_isa::avx: return "avx";
    case dnnl::cpu_isa::avx2: return "avx2";
    case dnnl::cpu_isa::avx2_vnni: return "avx2_vnni";
    case dnnl::cpu_isa::avx512_core: return "avx512_core";
    case dnnl::cpu_isa::avx512_core_vnni: return "avx512_core_vnni";
    case dnnl::cpu_isa::avx512_core_bf16: return "avx512_core_bf16";
    case dnnl::cpu_isa::avx512_core_amx: return "avx512_core_amx";
    default: return "other";
  }
}

bool isa_includes(dnnl::cpu_isa isa) {
  const auto want = static_cast<unsigned>(isa);
  return (static_cast<unsigned>(dnnl::get_effective_cpu_isa()) & want) == want;
}

bool has_native_bf16() {
  auto isa = dnnl::get_effective_cpu_isa();
  return isa == dnnl::cpu_isa::avx512_core_bf16 || isa == dnnl::cpu_isa::avx512_core_amx;
}

bool supports_bf16_convolutions() {
  static const bool supported = [] {
    try {
      const dims src{1, 16, 8, 8}, wei{16, 16, 3, 3}, bias{16}, strides{1, 1}, padding{1, 1};
      dnnl::convolution_forward::desc desc(dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct,
                                           dnnl::memory::desc(src, dt::bf16, tag::nhwc), dnnl::memory::desc(wei, dt::bf16, tag::any),
                                           dnnl::memory::desc(bias, dt::f32, tag::a), dnnl::memory::desc(src, dt::bf16, tag::nhwc),
                                           strides, padding, padding);
      dnnl::post_ops relu;
      relu.append_eltwise(1.0f, dnnl::algorithm::eltwise_relu, 0.0f, 0.0f);
      dnnl::primitive_attr attr;
      attr.set_post_ops(relu);
      dnnl::convolution_forward::primitive_desc pd(desc, attr, engine());
      return true;
    } catch (const dnnl::error&) {
      return false;
    }
  }();
  return supported;
}

bool has_int8_vnni() { return isa_includes(dnnl::cpu_isa::avx512_core_vnni) || isa_includes(dnnl::cpu_isa::avx2_vnni); }

std::string dnnl_version() {
  const dnnl_version_t* v = ::dnnl_version();
  return std::to_string(v->major) + "." + std::to_string(v->minor) + "." + std::to_string(v->patch);
}

}  // namespace repvgg::cpu
