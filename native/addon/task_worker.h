// The async plumbing both addons share: an AsyncWorker that runs native work off the event loop and settles a
// Promise, plus the options-object check every entry point starts with.
#pragma once

#include <napi.h>

#include <functional>

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

inline Napi::Object options_arg(const Napi::CallbackInfo& info) {
  RV_CHECK(info.Length() >= 1 && info[0].IsObject(), "ERR_ARG_TYPE", "Expected an options object");
  return info[0].As<Napi::Object>();
}

}  // namespace repvgg::addon
