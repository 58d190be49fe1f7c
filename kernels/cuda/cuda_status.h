// CUDA and cuBLAS errors as absl::Status, with the op, its shapes and the failing call.
//
//   CUDA_RETURN_IF_ERROR(LaunchRmsNorm(...), Describe("RmsNorm", {{"in", a.in}}));
//   CUBLAS_RETURN_IF_ERROR(cublasGemmEx(...), Describe("Gemm", {{"x", a.x}, {"w", a.w}}));
//
// The context expression is evaluated only when the call failed, so describing shapes costs
// nothing on the fast path. The message reads
//   "Gemm x=[33, 4096] F32 w=[11008, 4096] BF16: cuBLAS CUBLAS_STATUS_NOT_SUPPORTED (...)
//    in cublasGemmEx(...) at kernels/cuda/gemm_cublas.cc:120".
// Codes: allocation failures are ResourceExhausted, a missing device or driver Unavailable,
// an unsupported cuBLAS configuration Unimplemented, everything else Internal.
// Internal to kernels/cuda; includes the CUDA headers.
#ifndef TESSERA_KERNELS_CUDA_CUDA_STATUS_H_
#define TESSERA_KERNELS_CUDA_CUDA_STATUS_H_

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <initializer_list>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "kernels/tensor_view.h"

namespace tessera::cuda {

absl::Status CudaStatus(cudaError_t error, const char* expr, const char* file, int line,
                        absl::string_view context);
absl::Status CublasStatus(cublasStatus_t status, const char* expr, const char* file, int line,
                          absl::string_view context);

// "Gemm x=[33, 4096] F32 w=[11008, 4096] BF16", for the context of an error.
std::string Describe(absl::string_view op,
                     std::initializer_list<std::pair<const char*, TensorView>> views);

}  // namespace tessera::cuda

#define CUDA_RETURN_IF_ERROR(expr, context)                                               \
  do {                                                                                    \
    const cudaError_t _tessera_cuda_error = (expr);                                       \
    if (_tessera_cuda_error != cudaSuccess) {                                             \
      return ::tessera::cuda::CudaStatus(_tessera_cuda_error, #expr, __FILE__, __LINE__, \
                                         (context));                                      \
    }                                                                                     \
  } while (0)

#define CUBLAS_RETURN_IF_ERROR(expr, context)                                                  \
  do {                                                                                         \
    const cublasStatus_t _tessera_cublas_status = (expr);                                      \
    if (_tessera_cublas_status != CUBLAS_STATUS_SUCCESS) {                                     \
      return ::tessera::cuda::CublasStatus(_tessera_cublas_status, #expr, __FILE__, __LINE__, \
                                           (context));                                         \
    }                                                                                          \
  } while (0)

#endif  // TESSERA_KERNELS_CUDA_CUDA_STATUS_H_
