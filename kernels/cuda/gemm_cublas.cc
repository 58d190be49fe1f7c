// Gemm on the GPU: y[m, n] (+)= x[m, k] * w[n, k]^T, x and y F32, w F32 / F16 / BF16.
//
// Three paths, chosen from shapes and dtypes only (so a captured graph stays valid):
// - m <= kGemvMaxRows (decode): the hand-written GEMV of gemv.cu, every weight read once and
//   widened exactly to F32, F32 accumulation. Bound by weight bandwidth, like the CPU's GEMV.
// - F32 weights, larger m: cublasSgemm (CUBLAS_DEFAULT_MATH: true F32, no TF32).
// - F16 / BF16 weights, larger m (prefill): the activations are rounded to the weight dtype into
//   scratch (an m x k cast, small next to the weights) and cublasGemmEx multiplies
//   BF16 x BF16 (or F16 x F16) on tensor cores with CUBLAS_COMPUTE_32F: F32 accumulation and
//   F32 output, so accumulate (beta = 1) adds into the F32 residual without rounding it.
//   Widening the weights instead would move 3x their bytes per call and lose the tensor cores.
//   The price is the rounding of x: relative error about 2^-9 (BF16) / 2^-12 (F16) per
//   product, typically 2e-3 / 3e-4 on a dot product, inside the parity thresholds.
//   F16's range ends at 65504, and real models' activations exceed it: for F16 weights each row
//   of x is first divided by a power of two that brings it within 2^15 (1 for rows already
//   there, gemm_scaling.cu), the product goes to an F32 scratch and is multiplied back row by
//   row into y. Outliers stay finite as on the CPU, at the cost of one m x n pass.
//
// Row-major to cuBLAS's column-major: y^T (n x m, ld n) = W (w^T as stored, op T) * x^T (op N).
#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <climits>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_ops_util.h"
#include "kernels/cuda/cuda_status.h"
#include "kernels/cuda/launchers.h"

namespace tessera {

absl::Status CudaBackend::DoGemm(const GemmArgs& a) {
  RETURN_IF_ERROR(cuda::RequireDevice("Gemm", {{"x", a.x}, {"w", a.w}, {"y", a.y}}));
  const int64_t m = a.x.dim(0), k = a.x.dim(1), n = a.w.dim(0);
  if (m == 0 || n == 0) return absl::OkStatus();
  auto context = [&] {
    return absl::StrCat(cuda::Describe("Gemm", {{"x", a.x}, {"w", a.w}, {"y", a.y}}),
                        a.accumulate ? " accumulate" : "");
  };
  if (m > INT_MAX || n > INT_MAX || k > INT_MAX) {
    return absl::InvalidArgumentError(
        absl::StrCat(context(), ": dimensions beyond cuBLAS's 32-bit sizes"));
  }
  RETURN_IF_ERROR(Activate());
  float* y = a.y.as<float>();
  if (k == 0) {  // an empty sum
    if (!a.accumulate) {
      CUDA_RETURN_IF_ERROR(cudaMemsetAsync(y, 0, a.y.bytes(), stream_), context());
    }
    return absl::OkStatus();
  }
  const cuda::Storage storage = cuda::StorageOf(a.w.dtype);
  if (m <= cuda::kGemvMaxRows) {
    CUDA_RETURN_IF_ERROR(cuda::LaunchGemv(a.x.as<const float>(), a.w.data, storage, y, m, n, k,
                                          a.accumulate, stream_),
                         context());
    return absl::OkStatus();
  }
  const float alpha = 1.0f, beta = a.accumulate ? 1.0f : 0.0f;
  const int im = static_cast<int>(m), in = static_cast<int>(n), ik = static_cast<int>(k);
  if (a.w.dtype == DType::kF32) {
    CUBLAS_RETURN_IF_ERROR(cublasSgemm(cublas_, CUBLAS_OP_T, CUBLAS_OP_N, in, im, ik, &alpha,
                                       a.w.as<const float>(), ik, a.x.as<const float>(), ik,
                                       &beta, y, in),
                           context());
    return absl::OkStatus();
  }
  const bool f16 = a.w.dtype == DType::kF16;
  // F16: the rounded rows, then one F32 scale per row (aligned to 256 bytes).
  const size_t half_bytes = (static_cast<size_t>(m * k) * 2 + 255) / 256 * 256;
  ASSIGN_OR_RETURN(void* x_half,
                   ScratchBuffer(Scratch::kGemmInput, half_bytes + (f16 ? m * sizeof(float) : 0),
                                 "Gemm (activations in the weight dtype)"));
  const cudaDataType_t type = f16 ? CUDA_R_16F : CUDA_R_16BF;
  float* scales = nullptr;
  float* product = nullptr;  // F16: the unscaled product, multiplied into y afterwards
  if (f16) {
    scales = reinterpret_cast<float*>(static_cast<char*>(x_half) + half_bytes);
    ASSIGN_OR_RETURN(void* p, ScratchBuffer(Scratch::kGemmOutput,
                                            static_cast<size_t>(m * n) * sizeof(float),
                                            "Gemm (F16 product before the row scales)"));
    product = static_cast<float*>(p);
    CUDA_RETURN_IF_ERROR(
        cuda::LaunchCastRowsToF16Scaled(a.x.as<const float>(), m, k, x_half, scales, stream_),
        context());
  } else {
    CUDA_RETURN_IF_ERROR(
        cuda::LaunchCast(a.x.data, cuda::Storage::kF32, x_half, storage, m * k, stream_),
        context());
  }
  const float zero = 0.0f;
  CUBLAS_RETURN_IF_ERROR(cublasGemmEx(cublas_, CUBLAS_OP_T, CUBLAS_OP_N, in, im, ik, &alpha,
                                      a.w.data, type, ik, x_half, type, ik,
                                      f16 ? &zero : &beta, f16 ? product : y, CUDA_R_32F, in,
                                      CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                         context());
  if (f16) {
    CUDA_RETURN_IF_ERROR(
        cuda::LaunchScaleRows(product, scales, m, n, a.accumulate, y, stream_), context());
  }
  return absl::OkStatus();
}

}  // namespace tessera
