#include "kernels/cuda/cuda_status.h"

#include <cstring>

#include "absl/strings/str_cat.h"

namespace tessera::cuda {
namespace {

// "kernels/cuda/x.cc" rather than the build machine's absolute path.
absl::string_view ShortFile(const char* file) {
  absl::string_view f(file);
  const size_t at = f.rfind("kernels/");
  return at == absl::string_view::npos ? f : f.substr(at);
}

std::string Where(const char* expr, const char* file, int line) {
  return absl::StrCat(" (in ", expr, " at ", ShortFile(file), ":", line, ")");
}

}  // namespace

absl::Status CudaStatus(cudaError_t error, const char* expr, const char* file, int line,
                        absl::string_view context) {
  const std::string message = absl::StrCat(context, context.empty() ? "" : ": ", "CUDA ",
                                           cudaGetErrorName(error), ": ",
                                           cudaGetErrorString(error), Where(expr, file, line));
  switch (error) {
    case cudaErrorMemoryAllocation:
      return absl::ResourceExhaustedError(message);
    case cudaErrorNoDevice:
    case cudaErrorInsufficientDriver:
    case cudaErrorDevicesUnavailable:
      return absl::UnavailableError(message);
    default:
      return absl::InternalError(message);
  }
}

absl::Status CublasStatus(cublasStatus_t status, const char* expr, const char* file, int line,
                          absl::string_view context) {
  const std::string message = absl::StrCat(context, context.empty() ? "" : ": ", "cuBLAS ",
                                           cublasGetStatusName(status), ": ",
                                           cublasGetStatusString(status), Where(expr, file, line));
  switch (status) {
    case CUBLAS_STATUS_ALLOC_FAILED:
      return absl::ResourceExhaustedError(message);
    case CUBLAS_STATUS_NOT_SUPPORTED:
    case CUBLAS_STATUS_ARCH_MISMATCH:
      return absl::UnimplementedError(message);
    default:
      return absl::InternalError(message);
  }
}

std::string Describe(absl::string_view op,
                     std::initializer_list<std::pair<const char*, TensorView>> views) {
  std::string s(op);
  for (const auto& [name, view] : views) {
    if (view.empty()) continue;
    absl::StrAppend(&s, " ", name, "=", view.DebugString());
  }
  return s;
}

}  // namespace tessera::cuda
