// The async plumbing both addons share: running native work off the event loop and settling its Promise, either
// on the libuv thread pool (queue) or on a thread of our own that settles through a thread-safe function
// (queue_posted), plus the options-object check every entry point starts with. Not for: what the work does.
#pragma once

#include <napi.h>

#include <functional>
#include <memory>
#include <string>
#include <utility>

#include "../core/check.h"

namespace repvgg::addon {

using Work = std::function<void()>;
using ResultFn = std::function<Napi::Value(Napi::Env)>;

// Runs `work` off the event loop; resolves with result(env) or rejects with the native error's message.
class TaskWorker : public Napi::AsyncWorker {
 public:
  TaskWorker(Napi::Env env, Work work, Napi::Object keep_alive, ResultFn result)
      : Napi::AsyncWorker(env, "repvgg:task"),
        deferred_(Napi::Promise::Deferred::New(env)),
        work_(std::move(work)),
        result_(std::move(result)) {
    keep_alive_ = Napi::Persistent(keep_alive);
  }
  Napi::Promise promise() { return deferred_.Promise(); }

 protected:
  void Execute() override {
    try {
      work_();
    } catch (const std::exception& e) {
      SetError(e.what());
    }
  }
  void OnOK() override { deferred_.Resolve(result_ ? result_(Env()) : Env().Undefined()); }
  void OnError(const Napi::Error& e) override { deferred_.Reject(Napi::Error::New(Env(), e.Message()).Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  Work work_;
  ResultFn result_;
  Napi::ObjectReference keep_alive_;  // the options object, so its typed arrays outlive the work
};

// Queues work on the thread pool and returns its Promise (the worker deletes itself when done).
inline Napi::Value queue(Napi::Env env, Work work, Napi::Object keep_alive, ResultFn result = nullptr) {
  auto* worker = new TaskWorker(env, std::move(work), keep_alive, std::move(result));
  Napi::Promise promise = worker->promise();
  worker->Queue();
  return promise;
}

// Hands a task to another thread's queue and returns at once (e.g. cpu::post_to_compute_thread).
using PostFn = void (*)(std::function<void()>);

// One queue_posted call: created and settled on the JS thread, its work outcome written by the worker thread.
struct PostedTask {
  Napi::Promise::Deferred deferred;
  Work work;
  ResultFn result;
  Napi::ObjectReference keep_alive;  // the options object, so its typed arrays outlive the work
  std::string error;                 // the native error's message ("CODE: text"); meaningful when failed
  bool failed = false;
};

// On the JS thread once the work has finished: resolves with result(env) or rejects with the native error.
inline void settle_posted(Napi::Env env, Napi::Function, PostedTask* task, void*) {
  if (env == nullptr) return;  // the environment is shutting down: nothing left to settle
  Napi::HandleScope scope(env);
  try {
    if (task->failed) {
      task->deferred.Reject(Napi::Error::New(env, task->error).Value());
    } else {
      task->deferred.Resolve(task->result ? task->result(env) : env.Undefined());
    }
  } catch (const Napi::Error& e) {
    task->deferred.Reject(e.Value());
  } catch (const std::exception& e) {
    task->deferred.Reject(Napi::Error::New(env, e.what()).Value());
  }
  task->keep_alive.Reset();
}

using SettleFn = Napi::TypedThreadSafeFunction<PostedTask, void, settle_posted>;

// Runs work on the thread that `post` feeds, without occupying a libuv thread while it waits there, and returns
// its Promise. The worker thread records the outcome and hands it to the JS thread through a thread-safe function
// made for this call alone: it keeps the event loop alive only until the Promise settles.
inline Napi::Value queue_posted(Napi::Env env, PostFn post, Work work, Napi::Object keep_alive, ResultFn result = nullptr) {
  auto owned = std::unique_ptr<PostedTask>(
      new PostedTask{Napi::Promise::Deferred::New(env), std::move(work), std::move(result), Napi::Persistent(keep_alive), {}, false});
  Napi::Promise promise = owned->deferred.Promise();
  // Unlimited queue (0) and one releasing thread; from here the finalizer, run on the JS thread after the last
  // release, owns the task.
  SettleFn settle = SettleFn::New(env, "repvgg:task", 0, 1, owned.get(), [](Napi::Env, void*, PostedTask* done) { delete done; });
  PostedTask* task = owned.release();
  try {
    post([task, settle] {
      try {
        task->work();
      } catch (const std::exception& e) {
        task->error = e.what();
        task->failed = true;
      } catch (...) {
        task->error = "ERR_BACKEND: native work threw a non-standard exception";
        task->failed = true;
      }
      settle.NonBlockingCall();  // cannot report queue-full with an unlimited queue; fails only at shutdown
      settle.Release();
    });
  } catch (...) {
    settle.Release();  // nothing was queued: let the finalizer free the task
    throw;
  }
  return promise;
}

inline Napi::Object options_arg(const Napi::CallbackInfo& info) {
  RV_CHECK(info.Length() >= 1 && info[0].IsObject(), "ERR_ARG_TYPE", "Expected an options object");
  return info[0].As<Napi::Object>();
}

}  // namespace repvgg::addon
