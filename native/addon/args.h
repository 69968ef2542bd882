// Reading the options objects that the TypeScript layer passes across the native boundary. Shapes were checked
// in TypeScript already; these helpers still refuse wrong types with an ERR_ARG_TYPE error instead of crashing.
#pragma once

#include <napi.h>

#include <cstdint>
#include <string>
#include <vector>

#include "../core/check.h"

namespace repvgg::addon {

struct F32View {
  float* data = nullptr;
  size_t length = 0;
};

inline Napi::Value get_field(const Napi::Object& obj, const char* name) {
  return obj.Get(name);
}

// A value that must be a Float32Array (an option field or an array element), named in the error.
inline F32View as_f32(const Napi::Value& v, const std::string& name) {
  RV_CHECK(v.IsTypedArray() && v.As<Napi::TypedArray>().TypedArrayType() == napi_float32_array, "ERR_ARG_TYPE",
           "Expected a Float32Array for " + name);
  auto array = v.As<Napi::Float32Array>();
  return {array.Data(), array.ElementLength()};
}

inline F32View get_f32(const Napi::Object& obj, const char* name) { return as_f32(get_field(obj, name), name); }

// A typed-array option of element type T, named in the error; what: its type with the article ("an Int32Array").
template <class T>
Napi::TypedArrayOf<T> get_typed_array(const Napi::Object& obj, const char* name, napi_typedarray_type type, const char* what) {
  Napi::Value v = get_field(obj, name);
  RV_CHECK(v.IsTypedArray() && v.As<Napi::TypedArray>().TypedArrayType() == type, "ERR_ARG_TYPE",
           std::string("Expected ") + what + " for " + name);
  return v.As<Napi::TypedArrayOf<T>>();
}

// The first value of a Float64Array option into which an op writes one double result (a loss).
inline double* get_f64_result(const Napi::Object& obj, const char* name) {
  Napi::Value v = get_field(obj, name);
  RV_CHECK(v.IsTypedArray() && v.As<Napi::TypedArray>().TypedArrayType() == napi_float64_array, "ERR_ARG_TYPE",
           std::string("Expected a Float64Array for ") + name);
  auto array = v.As<Napi::Float64Array>();
  RV_CHECK(array.ElementLength() >= 1, "ERR_SHAPE", std::string(name) + " must hold one value");
  return array.Data();
}

// An optional Float32Array: missing/undefined/null gives an empty view.
inline F32View get_optional_f32(const Napi::Object& obj, const char* name) {
  Napi::Value v = get_field(obj, name);
  if (v.IsUndefined() || v.IsNull()) return {};
  return get_f32(obj, name);
}

inline std::vector<float> copy_f32(const Napi::Object& obj, const char* name) {
  F32View view = get_f32(obj, name);
  return std::vector<float>(view.data, view.data + view.length);
}

inline std::vector<float> copy_optional_f32(const Napi::Object& obj, const char* name) {
  F32View view = get_optional_f32(obj, name);
  return std::vector<float>(view.data, view.data + view.length);
}

inline int64_t get_int(const Napi::Object& obj, const char* name) {
  Napi::Value v = get_field(obj, name);
  RV_CHECK(v.IsNumber(), "ERR_ARG_TYPE", std::string("Expected a number for ") + name);
  return v.As<Napi::Number>().Int64Value();
}

inline double get_number(const Napi::Object& obj, const char* name, double fallback) {
  Napi::Value v = get_field(obj, name);
  if (v.IsUndefined()) return fallback;
  RV_CHECK(v.IsNumber(), "ERR_ARG_TYPE", std::string("Expected a number for ") + name);
  return v.As<Napi::Number>().DoubleValue();
}

inline bool get_bool(const Napi::Object& obj, const char* name) {
  Napi::Value v = get_field(obj, name);
  return v.IsBoolean() && v.As<Napi::Boolean>().Value();
}

inline std::string get_string(const Napi::Object& obj, const char* name, const std::string& fallback) {
  Napi::Value v = get_field(obj, name);
  if (v.IsUndefined()) return fallback;
  RV_CHECK(v.IsString(), "ERR_ARG_TYPE", std::string("Expected a string for ") + name);
  return v.As<Napi::String>().Utf8Value();
}

// Checks that a view holds at least `needed` floats (the caller's buffer for an op's operand).
inline void require_length(const F32View& view, int64_t needed, const char* name) {
  RV_CHECK(static_cast<int64_t>(view.length) >= needed, "ERR_SHAPE",
           std::string(name) + " holds " + std::to_string(view.length) + " values but the op needs " + std::to_string(needed));
}

}  // namespace repvgg::addon
