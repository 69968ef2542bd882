// Our own declarations of exactly the cuDNN subset the CUDA backend calls, so that building needs no cuDNN
// header: opaque handle/descriptor types, the enums we pass (numeric values as in cudnn.h, identical in cuDNN
// 8.x and 9.x for this subset) and one function-pointer type per function, filled by dlsym in cudnn_loader.cc.
// Not for: calling cuDNN directly (use the table that cudnn_loader.h hands out). test/cudnn_decls/check_decls.cc
// compiles this header next to the real cudnn.h and static_asserts that every value and signature matches.
//
// Sources of the values: cudnn_ops_infer.h / cudnn_cnn_infer.h of cuDNN 8.2 and cudnn_graph.h / cudnn_ops.h /
// cudnn_cnn.h of cuDNN 9.6 (the legacy API): same values and signatures for everything below. cudnnStatus_t is
// the exception: cuDNN 9 renumbered the errors (8.x: BAD_PARAM = 3, 9.x: BAD_PARAM = 2000), so we only rely on
// SUCCESS = 0 and print the library's own cudnnGetErrorString() for anything else.
#pragma once

#include <cuda_runtime_api.h>  // cudaStream_t

#include <cstddef>

namespace repvgg::cudnn_api {

// Opaque types: only pointers to them cross the boundary.
struct cudnnContext;
struct cudnnTensorStruct;
struct cudnnFilterStruct;
struct cudnnConvolutionStruct;
struct cudnnActivationStruct;
using cudnnHandle_t = cudnnContext*;
using cudnnTensorDescriptor_t = cudnnTensorStruct*;
using cudnnFilterDescriptor_t = cudnnFilterStruct*;
using cudnnConvolutionDescriptor_t = cudnnConvolutionStruct*;
using cudnnActivationDescriptor_t = cudnnActivationStruct*;

// Every enum is 4 bytes in the C header (C enums are int-sized); a fixed underlying type keeps ours 4 bytes and
// lets any value the library returns (e.g. cuDNN 9's status 3000) be represented without undefined behaviour.
enum cudnnStatus_t : int { CUDNN_STATUS_SUCCESS = 0 };

enum cudnnDataType_t : int { CUDNN_DATA_FLOAT = 0, CUDNN_DATA_HALF = 2, CUDNN_DATA_BFLOAT16 = 9 };

enum cudnnTensorFormat_t : int { CUDNN_TENSOR_NCHW = 0, CUDNN_TENSOR_NHWC = 1 };

enum cudnnMathType_t : int {
  CUDNN_DEFAULT_MATH = 0,
  CUDNN_TENSOR_OP_MATH = 1,
  CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION = 2,
  CUDNN_FMA_MATH = 3,  // since 8.0: plain FMA kernels only, i.e. no TF32 on Ampere and later
};

enum cudnnNanPropagation_t : int { CUDNN_NOT_PROPAGATE_NAN = 0, CUDNN_PROPAGATE_NAN = 1 };

enum cudnnDeterminism_t : int { CUDNN_NON_DETERMINISTIC = 0, CUDNN_DETERMINISTIC = 1 };

enum cudnnConvolutionMode_t : int { CUDNN_CONVOLUTION = 0, CUDNN_CROSS_CORRELATION = 1 };

enum cudnnActivationMode_t : int {
  CUDNN_ACTIVATION_SIGMOID = 0,
  CUDNN_ACTIVATION_RELU = 1,
  CUDNN_ACTIVATION_IDENTITY = 5,  // only with CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM in the fused op
};

enum cudnnConvolutionFwdAlgo_t : int {
  CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM = 0,
  CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM = 1,
  CUDNN_CONVOLUTION_FWD_ALGO_GEMM = 2,
  CUDNN_CONVOLUTION_FWD_ALGO_DIRECT = 3,
  CUDNN_CONVOLUTION_FWD_ALGO_FFT = 4,
  CUDNN_CONVOLUTION_FWD_ALGO_FFT_TILING = 5,
  CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD = 6,
  CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD_NONFUSED = 7,
  CUDNN_CONVOLUTION_FWD_ALGO_COUNT = 8,
};

// Training (convolution gradients): the algorithms are only named for the report and counted for Find's arrays.
enum cudnnConvolutionBwdDataAlgo_t : int {
  CUDNN_CONVOLUTION_BWD_DATA_ALGO_0 = 0,
  CUDNN_CONVOLUTION_BWD_DATA_ALGO_1 = 1,
  CUDNN_CONVOLUTION_BWD_DATA_ALGO_FFT = 2,
  CUDNN_CONVOLUTION_BWD_DATA_ALGO_FFT_TILING = 3,
  CUDNN_CONVOLUTION_BWD_DATA_ALGO_WINOGRAD = 4,
  CUDNN_CONVOLUTION_BWD_DATA_ALGO_WINOGRAD_NONFUSED = 5,
  CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT = 6,
};
enum cudnnConvolutionBwdFilterAlgo_t : int {
  CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0 = 0,
  CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1 = 1,
  CUDNN_CONVOLUTION_BWD_FILTER_ALGO_FFT = 2,
  CUDNN_CONVOLUTION_BWD_FILTER_ALGO_3 = 3,
  CUDNN_CONVOLUTION_BWD_FILTER_ALGO_WINOGRAD = 4,
  CUDNN_CONVOLUTION_BWD_FILTER_ALGO_WINOGRAD_NONFUSED = 5,
  CUDNN_CONVOLUTION_BWD_FILTER_ALGO_FFT_TILING = 6,
  CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT = 7,
};
// What the three cudnnFind*Ex searches fill: one layout for all, by algorithm enum (cudnnConvolution{Fwd,BwdData,
// BwdFilter}AlgoPerf_t in cudnn_cnn_infer.h / cudnn_cnn_train.h of 8.x and cudnn_cnn.h of 9.x).
template <typename Algo>
struct cudnnConvolutionAlgoPerf {
  Algo algo;
  cudnnStatus_t status;
  float time;     // milliseconds
  size_t memory;  // workspace bytes
  cudnnDeterminism_t determinism;
  cudnnMathType_t mathType;
  int reserved[3];
};
using cudnnConvolutionFwdAlgoPerf_t = cudnnConvolutionAlgoPerf<cudnnConvolutionFwdAlgo_t>;
using cudnnConvolutionBwdDataAlgoPerf_t = cudnnConvolutionAlgoPerf<cudnnConvolutionBwdDataAlgo_t>;
using cudnnConvolutionBwdFilterAlgoPerf_t = cudnnConvolutionAlgoPerf<cudnnConvolutionBwdFilterAlgo_t>;

// ---- Function types, one per function we dlsym (the X-macro below lists them for the loader and the check) ----
using PFN_cudnnGetVersion = size_t (*)();
using PFN_cudnnGetErrorString = const char* (*)(cudnnStatus_t status);
using PFN_cudnnCreate = cudnnStatus_t (*)(cudnnHandle_t* handle);
using PFN_cudnnDestroy = cudnnStatus_t (*)(cudnnHandle_t handle);
using PFN_cudnnSetStream = cudnnStatus_t (*)(cudnnHandle_t handle, cudaStream_t streamId);

using PFN_cudnnCreateTensorDescriptor = cudnnStatus_t (*)(cudnnTensorDescriptor_t* tensorDesc);
using PFN_cudnnDestroyTensorDescriptor = cudnnStatus_t (*)(cudnnTensorDescriptor_t tensorDesc);
using PFN_cudnnSetTensor4dDescriptor = cudnnStatus_t (*)(cudnnTensorDescriptor_t tensorDesc, cudnnTensorFormat_t format,
                                                         cudnnDataType_t dataType, int n, int c, int h, int w);

using PFN_cudnnCreateFilterDescriptor = cudnnStatus_t (*)(cudnnFilterDescriptor_t* filterDesc);
using PFN_cudnnDestroyFilterDescriptor = cudnnStatus_t (*)(cudnnFilterDescriptor_t filterDesc);
// Note the argument order: data type before format (the tensor version has format first).
using PFN_cudnnSetFilter4dDescriptor = cudnnStatus_t (*)(cudnnFilterDescriptor_t filterDesc, cudnnDataType_t dataType,
                                                         cudnnTensorFormat_t format, int k, int c, int h, int w);

using PFN_cudnnCreateConvolutionDescriptor = cudnnStatus_t (*)(cudnnConvolutionDescriptor_t* convDesc);
using PFN_cudnnDestroyConvolutionDescriptor = cudnnStatus_t (*)(cudnnConvolutionDescriptor_t convDesc);
using PFN_cudnnSetConvolution2dDescriptor = cudnnStatus_t (*)(cudnnConvolutionDescriptor_t convDesc, int pad_h, int pad_w, int u,
                                                              int v, int dilation_h, int dilation_w, cudnnConvolutionMode_t mode,
                                                              cudnnDataType_t computeType);
using PFN_cudnnSetConvolutionGroupCount = cudnnStatus_t (*)(cudnnConvolutionDescriptor_t convDesc, int groupCount);
using PFN_cudnnSetConvolutionMathType = cudnnStatus_t (*)(cudnnConvolutionDescriptor_t convDesc, cudnnMathType_t mathType);
using PFN_cudnnGetConvolution2dForwardOutputDim = cudnnStatus_t (*)(const cudnnConvolutionDescriptor_t convDesc,
                                                                    const cudnnTensorDescriptor_t inputTensorDesc,
                                                                    const cudnnFilterDescriptor_t filterDesc, int* n, int* c,
                                                                    int* h, int* w);

using PFN_cudnnCreateActivationDescriptor = cudnnStatus_t (*)(cudnnActivationDescriptor_t* activationDesc);
using PFN_cudnnDestroyActivationDescriptor = cudnnStatus_t (*)(cudnnActivationDescriptor_t activationDesc);
using PFN_cudnnSetActivationDescriptor = cudnnStatus_t (*)(cudnnActivationDescriptor_t activationDesc, cudnnActivationMode_t mode,
                                                           cudnnNanPropagation_t reluNanOpt, double coef);

using PFN_cudnnFindConvolutionForwardAlgorithmEx = cudnnStatus_t (*)(
    cudnnHandle_t handle, const cudnnTensorDescriptor_t xDesc, const void* x, const cudnnFilterDescriptor_t wDesc, const void* w,
    const cudnnConvolutionDescriptor_t convDesc, const cudnnTensorDescriptor_t yDesc, void* y, const int requestedAlgoCount,
    int* returnedAlgoCount, cudnnConvolutionFwdAlgoPerf_t* perfResults, void* workSpace, size_t workSpaceSizeInBytes);
using PFN_cudnnGetConvolutionForwardWorkspaceSize = cudnnStatus_t (*)(cudnnHandle_t handle, const cudnnTensorDescriptor_t xDesc,
                                                                      const cudnnFilterDescriptor_t wDesc,
                                                                      const cudnnConvolutionDescriptor_t convDesc,
                                                                      const cudnnTensorDescriptor_t yDesc,
                                                                      cudnnConvolutionFwdAlgo_t algo, size_t* sizeInBytes);
// y = alpha * conv(x) + beta * y
using PFN_cudnnConvolutionForward = cudnnStatus_t (*)(cudnnHandle_t handle, const void* alpha, const cudnnTensorDescriptor_t xDesc,
                                                      const void* x, const cudnnFilterDescriptor_t wDesc, const void* w,
                                                      const cudnnConvolutionDescriptor_t convDesc, cudnnConvolutionFwdAlgo_t algo,
                                                      void* workSpace, size_t workSpaceSizeInBytes, const void* beta,
                                                      const cudnnTensorDescriptor_t yDesc, void* y);
// y = act(alpha1 * conv(x) + alpha2 * z + bias)
using PFN_cudnnConvolutionBiasActivationForward = cudnnStatus_t (*)(
    cudnnHandle_t handle, const void* alpha1, const cudnnTensorDescriptor_t xDesc, const void* x, const cudnnFilterDescriptor_t wDesc,
    const void* w, const cudnnConvolutionDescriptor_t convDesc, cudnnConvolutionFwdAlgo_t algo, void* workSpace,
    size_t workSpaceSizeInBytes, const void* alpha2, const cudnnTensorDescriptor_t zDesc, const void* z,
    const cudnnTensorDescriptor_t biasDesc, const void* bias, const cudnnActivationDescriptor_t activationDesc,
    const cudnnTensorDescriptor_t yDesc, void* y);

// ---- Convolution gradients (training) ----
using PFN_cudnnFindConvolutionBackwardDataAlgorithmEx = cudnnStatus_t (*)(
    cudnnHandle_t handle, const cudnnFilterDescriptor_t wDesc, const void* w, const cudnnTensorDescriptor_t dyDesc, const void* dy,
    const cudnnConvolutionDescriptor_t convDesc, const cudnnTensorDescriptor_t dxDesc, void* dx, const int requestedAlgoCount,
    int* returnedAlgoCount, cudnnConvolutionBwdDataAlgoPerf_t* perfResults, void* workSpace, size_t workSpaceSizeInBytes);
using PFN_cudnnGetConvolutionBackwardDataWorkspaceSize = cudnnStatus_t (*)(cudnnHandle_t handle, const cudnnFilterDescriptor_t wDesc,
                                                                           const cudnnTensorDescriptor_t dyDesc,
                                                                           const cudnnConvolutionDescriptor_t convDesc,
                                                                           const cudnnTensorDescriptor_t dxDesc,
                                                                           cudnnConvolutionBwdDataAlgo_t algo, size_t* sizeInBytes);
// dx = alpha * conv_transpose(dy, w) + beta * dx
using PFN_cudnnConvolutionBackwardData = cudnnStatus_t (*)(cudnnHandle_t handle, const void* alpha, const cudnnFilterDescriptor_t wDesc,
                                                           const void* w, const cudnnTensorDescriptor_t dyDesc, const void* dy,
                                                           const cudnnConvolutionDescriptor_t convDesc, cudnnConvolutionBwdDataAlgo_t algo,
                                                           void* workSpace, size_t workSpaceSizeInBytes, const void* beta,
                                                           const cudnnTensorDescriptor_t dxDesc, void* dx);
using PFN_cudnnFindConvolutionBackwardFilterAlgorithmEx = cudnnStatus_t (*)(
    cudnnHandle_t handle, const cudnnTensorDescriptor_t xDesc, const void* x, const cudnnTensorDescriptor_t dyDesc, const void* y,
    const cudnnConvolutionDescriptor_t convDesc, const cudnnFilterDescriptor_t dwDesc, void* dw, const int requestedAlgoCount,
    int* returnedAlgoCount, cudnnConvolutionBwdFilterAlgoPerf_t* perfResults, void* workSpace, size_t workSpaceSizeInBytes);
using PFN_cudnnGetConvolutionBackwardFilterWorkspaceSize = cudnnStatus_t (*)(cudnnHandle_t handle, const cudnnTensorDescriptor_t xDesc,
                                                                             const cudnnTensorDescriptor_t dyDesc,
                                                                             const cudnnConvolutionDescriptor_t convDesc,
                                                                             const cudnnFilterDescriptor_t gradDesc,
                                                                             cudnnConvolutionBwdFilterAlgo_t algo, size_t* sizeInBytes);
// dw = alpha * correlation(x, dy) + beta * dw
using PFN_cudnnConvolutionBackwardFilter = cudnnStatus_t (*)(cudnnHandle_t handle, const void* alpha, const cudnnTensorDescriptor_t xDesc,
                                                             const void* x, const cudnnTensorDescriptor_t dyDesc, const void* dy,
                                                             const cudnnConvolutionDescriptor_t convDesc,
                                                             cudnnConvolutionBwdFilterAlgo_t algo, void* workSpace,
                                                             size_t workSpaceSizeInBytes, const void* beta,
                                                             const cudnnFilterDescriptor_t dwDesc, void* dw);
}  // namespace repvgg::cudnn_api

// X(name) for every function above, in the order the loader resolves them. Adding a function means: its PFN_
// type above, a line here, and nothing else (the loader, the table and the declarations check follow).
#define REPVGG_CUDNN_FUNCTIONS(X)              \
  X(cudnnGetVersion)                           \
  X(cudnnGetErrorString)                       \
  X(cudnnCreate)                               \
  X(cudnnDestroy)                              \
  X(cudnnSetStream)                            \
  X(cudnnCreateTensorDescriptor)               \
  X(cudnnDestroyTensorDescriptor)              \
  X(cudnnSetTensor4dDescriptor)                \
  X(cudnnCreateFilterDescriptor)               \
  X(cudnnDestroyFilterDescriptor)              \
  X(cudnnSetFilter4dDescriptor)                \
  X(cudnnCreateConvolutionDescriptor)          \
  X(cudnnDestroyConvolutionDescriptor)         \
  X(cudnnSetConvolution2dDescriptor)           \
  X(cudnnSetConvolutionGroupCount)             \
  X(cudnnSetConvolutionMathType)               \
  X(cudnnGetConvolution2dForwardOutputDim)     \
  X(cudnnCreateActivationDescriptor)           \
  X(cudnnDestroyActivationDescriptor)          \
  X(cudnnSetActivationDescriptor)              \
  X(cudnnFindConvolutionForwardAlgorithmEx)    \
  X(cudnnGetConvolutionForwardWorkspaceSize)   \
  X(cudnnConvolutionForward)                   \
  X(cudnnConvolutionBiasActivationForward)     \
  X(cudnnFindConvolutionBackwardDataAlgorithmEx) \
  X(cudnnGetConvolutionBackwardDataWorkspaceSize) \
  X(cudnnConvolutionBackwardData)              \
  X(cudnnFindConvolutionBackwardFilterAlgorithmEx) \
  X(cudnnGetConvolutionBackwardFilterWorkspaceSize) \
  X(cudnnConvolutionBackwardFilter)
