// Error reporting shared by every native backend: a typed exception whose message the TypeScript layer parses
// into a RepvggError subclass ("CODE: message"). Never exit() or abort() inside the addon: throw these instead.
#pragma once

#include <stdexcept>
#include <string>

namespace repvgg {

// code is one of the stable codes of lib/errors.ts (ERR_SHAPE, ERR_ARG_VALUE, ERR_BACKEND, ERR_DISPOSED ...).
class NativeError : public std::runtime_error {
 public:
  NativeError(const std::string& code, const std::string& message) : std::runtime_error(code + ": " + message) {}
};

}  // namespace repvgg

#define RV_STRINGIFY2(x) #x
#define RV_STRINGIFY(x) RV_STRINGIFY2(x)

// Throws NativeError(code, msg) when cond is false. msg may be any std::string expression.
#define RV_CHECK(cond, code, msg)                        \
  do {                                                   \
    if (!(cond)) throw ::repvgg::NativeError(code, msg); \
  } while (0)
