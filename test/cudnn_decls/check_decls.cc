// Compile-time proof that native/cuda/cudnn_api.h (our own declarations of the cuDNN subset we dlopen) matches
// the real cudnn.h: every enum value, every enum and struct size and field offset, and every function's
// signature. It only has to compile: bench/device/check_cudnn_decls.sh builds it with -fsyntax-only against
// whatever cudnn.h the machine has (a pip wheel's nvidia/cudnn/include on the GPU machine).
// Not for: run-time checks (the loader verifies that every symbol resolves when it dlopens the library).
#include <cudnn.h>

#include <cstddef>
#include <type_traits>

#include "../../native/cuda/cudnn_api.h"

namespace ours = repvgg::cudnn_api;

// Real<T>::type rewrites a type written with our declarations into the same type written with cudnn.h's:
// our opaque structs and enums map to theirs, pointers, const and function pointers map element-wise, and
// every other type (int, size_t, void, cudaStream_t) stays as it is.
template <typename T>
struct Real {
  using type = T;
};
template <typename T>
struct Real<T*> {
  using type = typename Real<T>::type*;
};
template <typename T>
struct Real<const T> {
  using type = const typename Real<T>::type;
};
template <typename R, typename... A>
struct Real<R (*)(A...)> {
  using type = typename Real<R>::type (*)(typename Real<A>::type...);
};
#define RV_MAP(T)             \
  template <>                 \
  struct Real<ours::T> {      \
    using type = ::T;         \
  };
RV_MAP(cudnnContext)
RV_MAP(cudnnTensorStruct)
RV_MAP(cudnnFilterStruct)
RV_MAP(cudnnConvolutionStruct)
RV_MAP(cudnnActivationStruct)
RV_MAP(cudnnStatus_t)
RV_MAP(cudnnDataType_t)
RV_MAP(cudnnTensorFormat_t)
RV_MAP(cudnnMathType_t)
RV_MAP(cudnnNanPropagation_t)
RV_MAP(cudnnDeterminism_t)
RV_MAP(cudnnConvolutionMode_t)
RV_MAP(cudnnActivationMode_t)
RV_MAP(cudnnConvolutionFwdAlgo_t)
RV_MAP(cudnnConvolutionFwdAlgoPerf_t)
RV_MAP(cudnnConvolutionBwdDataAlgo_t)
RV_MAP(cudnnConvolutionBwdFilterAlgo_t)
RV_MAP(cudnnConvolutionBwdDataAlgoPerf_t)
RV_MAP(cudnnConvolutionBwdFilterAlgoPerf_t)
#undef RV_MAP

// The handle and descriptor typedefs are the same pointer types once mapped.
static_assert(std::is_same<Real<ours::cudnnHandle_t>::type, ::cudnnHandle_t>::value, "cudnnHandle_t");
static_assert(std::is_same<Real<ours::cudnnTensorDescriptor_t>::type, ::cudnnTensorDescriptor_t>::value, "cudnnTensorDescriptor_t");
static_assert(std::is_same<Real<ours::cudnnFilterDescriptor_t>::type, ::cudnnFilterDescriptor_t>::value, "cudnnFilterDescriptor_t");
static_assert(std::is_same<Real<ours::cudnnConvolutionDescriptor_t>::type, ::cudnnConvolutionDescriptor_t>::value,
              "cudnnConvolutionDescriptor_t");
static_assert(std::is_same<Real<ours::cudnnActivationDescriptor_t>::type, ::cudnnActivationDescriptor_t>::value,
              "cudnnActivationDescriptor_t");

// Enum sizes (what crosses the ABI) and every enumerator we declare.
#define RV_SAME_SIZE(T) static_assert(sizeof(ours::T) == sizeof(::T), "size of " #T " differs from cudnn.h");
RV_SAME_SIZE(cudnnStatus_t)
RV_SAME_SIZE(cudnnDataType_t)
RV_SAME_SIZE(cudnnTensorFormat_t)
RV_SAME_SIZE(cudnnMathType_t)
RV_SAME_SIZE(cudnnNanPropagation_t)
RV_SAME_SIZE(cudnnDeterminism_t)
RV_SAME_SIZE(cudnnConvolutionMode_t)
RV_SAME_SIZE(cudnnActivationMode_t)
RV_SAME_SIZE(cudnnConvolutionFwdAlgo_t)
RV_SAME_SIZE(cudnnConvolutionFwdAlgoPerf_t)
RV_SAME_SIZE(cudnnConvolutionBwdDataAlgo_t)
RV_SAME_SIZE(cudnnConvolutionBwdFilterAlgo_t)
RV_SAME_SIZE(cudnnConvolutionBwdDataAlgoPerf_t)
RV_SAME_SIZE(cudnnConvolutionBwdFilterAlgoPerf_t)
#undef RV_SAME_SIZE

#define RV_SAME_VALUE(name) \
  static_assert(static_cast<long long>(ours::name) == static_cast<long long>(::name), "value of " #name " differs from cudnn.h");
RV_SAME_VALUE(CUDNN_STATUS_SUCCESS)
RV_SAME_VALUE(CUDNN_DATA_FLOAT)
RV_SAME_VALUE(CUDNN_DATA_HALF)
RV_SAME_VALUE(CUDNN_DATA_BFLOAT16)
RV_SAME_VALUE(CUDNN_TENSOR_NCHW)
RV_SAME_VALUE(CUDNN_TENSOR_NHWC)
RV_SAME_VALUE(CUDNN_DEFAULT_MATH)
RV_SAME_VALUE(CUDNN_TENSOR_OP_MATH)
RV_SAME_VALUE(CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION)
RV_SAME_VALUE(CUDNN_FMA_MATH)
RV_SAME_VALUE(CUDNN_NOT_PROPAGATE_NAN)
RV_SAME_VALUE(CUDNN_PROPAGATE_NAN)
RV_SAME_VALUE(CUDNN_NON_DETERMINISTIC)
RV_SAME_VALUE(CUDNN_DETERMINISTIC)
RV_SAME_VALUE(CUDNN_CONVOLUTION)
RV_SAME_VALUE(CUDNN_CROSS_CORRELATION)
RV_SAME_VALUE(CUDNN_ACTIVATION_SIGMOID)
RV_SAME_VALUE(CUDNN_ACTIVATION_RELU)
RV_SAME_VALUE(CUDNN_ACTIVATION_IDENTITY)
RV_SAME_VALUE(CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM)
RV_SAME_VALUE(CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM)
RV_SAME_VALUE(CUDNN_CONVOLUTION_FWD_ALGO_GEMM)
RV_SAME_VALUE(CUDNN_CONVOLUTION_FWD_ALGO_DIRECT)
RV_SAME_VALUE(CUDNN_CONVOLUTION_FWD_ALGO_FFT)
RV_SAME_VALUE(CUDNN_CONVOLUTION_FWD_ALGO_FFT_TILING)
RV_SAME_VALUE(CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD)
RV_SAME_VALUE(CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD_NONFUSED)
RV_SAME_VALUE(CUDNN_CONVOLUTION_FWD_ALGO_COUNT)
RV_SAME_VALUE(CUDNN_CONVOLUTION_BWD_DATA_ALGO_0)
RV_SAME_VALUE(CUDNN_CONVOLUTION_BWD_DATA_ALGO_1)
RV_SAME_VALUE(CUDNN_CONVOLUTION_BWD_DATA_ALGO_FFT)
RV_SAME_VALUE(CUDNN_CONVOLUTION_BWD_DATA_ALGO_FFT_TILING)
RV_SAME_VALUE(CUDNN_CONVOLUTION_BWD_DATA_ALGO_WINOGRAD)
RV_SAME_VALUE(CUDNN_CONVOLUTION_BWD_DATA_ALGO_WINOGRAD_NONFUSED)
RV_SAME_VALUE(CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT)
RV_SAME_VALUE(CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0)
RV_SAME_VALUE(CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1)
RV_SAME_VALUE(CUDNN_CONVOLUTION_BWD_FILTER_ALGO_FFT)
RV_SAME_VALUE(CUDNN_CONVOLUTION_BWD_FILTER_ALGO_3)
RV_SAME_VALUE(CUDNN_CONVOLUTION_BWD_FILTER_ALGO_WINOGRAD)
RV_SAME_VALUE(CUDNN_CONVOLUTION_BWD_FILTER_ALGO_WINOGRAD_NONFUSED)
RV_SAME_VALUE(CUDNN_CONVOLUTION_BWD_FILTER_ALGO_FFT_TILING)
RV_SAME_VALUE(CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT)
#undef RV_SAME_VALUE

// The perf structs that the cudnnFind calls fill: same layout field by field.
#define RV_SAME_FIELD(S, field)                                                                   \
  static_assert(offsetof(ours::S, field) == offsetof(::S, field), "offset of " #S "::" #field);   \
  static_assert(std::is_same<Real<decltype(ours::S::field)>::type, decltype(::S::field)>::value, \
                "type of " #S "::" #field);
#define RV_SAME_PERF_FIELDS(S) \
  RV_SAME_FIELD(S, algo)       \
  RV_SAME_FIELD(S, status)     \
  RV_SAME_FIELD(S, time)       \
  RV_SAME_FIELD(S, memory)     \
  RV_SAME_FIELD(S, determinism) \
  RV_SAME_FIELD(S, mathType)   \
  RV_SAME_FIELD(S, reserved)
RV_SAME_PERF_FIELDS(cudnnConvolutionFwdAlgoPerf_t)
RV_SAME_PERF_FIELDS(cudnnConvolutionBwdDataAlgoPerf_t)
RV_SAME_PERF_FIELDS(cudnnConvolutionBwdFilterAlgoPerf_t)
#undef RV_SAME_PERF_FIELDS
#undef RV_SAME_FIELD

// Every function the loader resolves: our pointer type, mapped, is exactly the type of &function in cudnn.h.
#define RV_SAME_SIGNATURE(name)                                                                          \
  static_assert(std::is_same<Real<ours::PFN_##name>::type, decltype(&::name)>::value,                   \
                "signature of " #name " differs from cudnn.h (see PFN_" #name " in cudnn_api.h)");
REPVGG_CUDNN_FUNCTIONS(RV_SAME_SIGNATURE)
#undef RV_SAME_SIGNATURE

// Something to compile into when the check is built as an object rather than with -fsyntax-only.
int repvgg_cudnn_declarations_match() { return CUDNN_MAJOR; }
