#include "kernels/cuda/cuda_probes.h"

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <functional>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/cuda_status.h"
#include "kernels/cuda/launchers.h"
#include "kernels/status_macros.h"

namespace tessera::cuda {
namespace {

// Owns what a probe allocates, freed on every return path.
struct ProbeResources {
  cudaStream_t stream = nullptr;
  cudaEvent_t start = nullptr, stop = nullptr;
  cublasHandle_t cublas = nullptr;
  void* buffers[4] = {};
  ~ProbeResources() {
    if (stream != nullptr) cudaStreamSynchronize(stream);
    for (void* b : buffers) cudaFree(b);
    if (cublas != nullptr) cublasDestroy(cublas);
    if (start != nullptr) cudaEventDestroy(start);
    if (stop != nullptr) cudaEventDestroy(stop);
    if (stream != nullptr) cudaStreamDestroy(stream);
    cudaGetLastError();
  }
  absl::Status Init(absl::string_view probe) {
    CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), probe);
    CUDA_RETURN_IF_ERROR(cudaEventCreate(&start), probe);
    CUDA_RETURN_IF_ERROR(cudaEventCreate(&stop), probe);
    return absl::OkStatus();
  }
  // Best seconds of `repeats` timed runs of `enqueue`, after one untimed warm-up.
  absl::StatusOr<double> BestSeconds(absl::string_view probe, int repeats,
                                     const std::function<absl::Status()>& enqueue) {
    RETURN_IF_ERROR(enqueue());
    double best = 1e30;
    for (int r = 0; r < std::max(1, repeats); ++r) {
      CUDA_RETURN_IF_ERROR(cudaEventRecord(start, stream), probe);
      RETURN_IF_ERROR(enqueue());
      CUDA_RETURN_IF_ERROR(cudaEventRecord(stop, stream), probe);
      CUDA_RETURN_IF_ERROR(cudaEventSynchronize(stop), probe);
      float ms = 0.0f;
      CUDA_RETURN_IF_ERROR(cudaEventElapsedTime(&ms, start, stop), probe);
      best = std::min(best, ms / 1e3);
    }
    return best;
  }
};

}  // namespace

absl::StatusOr<double> MeasureDeviceReadBandwidth(size_t bytes, int repeats) {
  const absl::string_view probe = "device read-bandwidth probe";
  ProbeResources res;
  RETURN_IF_ERROR(res.Init(probe));
  const int64_t count = static_cast<int64_t>(bytes / 16 * 4);  // floats, a multiple of 4
  CUDA_RETURN_IF_ERROR(cudaMalloc(&res.buffers[0], count * sizeof(float)),
                       absl::StrCat(probe, ": ", bytes, " bytes"));
  CUDA_RETURN_IF_ERROR(cudaMalloc(&res.buffers[1], sizeof(float)), probe);
  CUDA_RETURN_IF_ERROR(cudaMemsetAsync(res.buffers[0], 0, count * sizeof(float), res.stream),
                       probe);
  int device = 0, sms = 0;
  CUDA_RETURN_IF_ERROR(cudaGetDevice(&device), probe);
  CUDA_RETURN_IF_ERROR(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device),
                       probe);
  ASSIGN_OR_RETURN(const double seconds, res.BestSeconds(probe, repeats, [&]() -> absl::Status {
    CUDA_RETURN_IF_ERROR(LaunchReadProbe(static_cast<const float*>(res.buffers[0]), count,
                                         static_cast<float*>(res.buffers[1]), sms, res.stream),
                         probe);
    return absl::OkStatus();
  }));
  return count * sizeof(float) / seconds;
}

absl::StatusOr<double> MeasureGemmFlops(int64_t m, int64_t n, int64_t k, DType weight_dtype,
                                        int repeats) {
  const std::string probe = absl::StrCat("cuBLAS GEMM probe m=", m, " n=", n, " k=", k, " ",
                                         DTypeName(weight_dtype));
  if (weight_dtype != DType::kF32 && weight_dtype != DType::kF16 &&
      weight_dtype != DType::kBF16) {
    return absl::InvalidArgumentError(absl::StrCat(probe, ": weights must be F32, F16 or BF16"));
  }
  ProbeResources res;
  RETURN_IF_ERROR(res.Init(probe));
  CUBLAS_RETURN_IF_ERROR(cublasCreate(&res.cublas), probe);
  CUBLAS_RETURN_IF_ERROR(cublasSetStream(res.cublas, res.stream), probe);
  const size_t elem = DTypeSize(weight_dtype);
  CUDA_RETURN_IF_ERROR(cudaMalloc(&res.buffers[0], m * k * elem), probe);
  CUDA_RETURN_IF_ERROR(cudaMalloc(&res.buffers[1], n * k * elem), probe);
  CUDA_RETURN_IF_ERROR(cudaMalloc(&res.buffers[2], m * n * sizeof(float)), probe);
  CUDA_RETURN_IF_ERROR(cudaMemsetAsync(res.buffers[0], 0x3c, m * k * elem, res.stream), probe);
  CUDA_RETURN_IF_ERROR(cudaMemsetAsync(res.buffers[1], 0x3c, n * k * elem, res.stream), probe);
  const float alpha = 1.0f, beta = 0.0f;
  const int im = static_cast<int>(m), in = static_cast<int>(n), ik = static_cast<int>(k);
  ASSIGN_OR_RETURN(const double seconds, res.BestSeconds(probe, repeats, [&]() -> absl::Status {
    if (weight_dtype == DType::kF32) {
      CUBLAS_RETURN_IF_ERROR(
          cublasSgemm(res.cublas, CUBLAS_OP_T, CUBLAS_OP_N, in, im, ik, &alpha,
                      static_cast<const float*>(res.buffers[1]), ik,
                      static_cast<const float*>(res.buffers[0]), ik, &beta,
                      static_cast<float*>(res.buffers[2]), in),
          probe);
    } else {
      const cudaDataType_t type = weight_dtype == DType::kBF16 ? CUDA_R_16BF : CUDA_R_16F;
      CUBLAS_RETURN_IF_ERROR(
          cublasGemmEx(res.cublas, CUBLAS_OP_T, CUBLAS_OP_N, in, im, ik, &alpha, res.buffers[1],
                       type, ik, res.buffers[0], type, ik, &beta, res.buffers[2], CUDA_R_32F, in,
                       CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
          probe);
    }
    return absl::OkStatus();
  }));
  return 2.0 * m * n * k / seconds;
}

}  // namespace tessera::cuda
