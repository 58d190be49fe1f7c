// Helpers of the CUDA backend's op glue (cuda_ops.cc, gemm_cublas.cc). Internal to kernels/cuda.
#ifndef TESSERA_KERNELS_CUDA_CUDA_OPS_UTIL_H_
#define TESSERA_KERNELS_CUDA_CUDA_OPS_UTIL_H_

#include <initializer_list>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "kernels/cuda/launchers.h"
#include "kernels/tensor_view.h"

namespace tessera::cuda {

// The launchers' storage type of a (validated) F32 / F16 / BF16 view.
inline Storage StorageOf(DType t) {
  switch (t) {
    case DType::kF16:
      return Storage::kF16;
    case DType::kBF16:
      return Storage::kBF16;
    default:
      return Storage::kF32;
  }
}

// InvalidArgument when a present view is host memory: a kernel would fault on it, and a
// device fault ends the CUDA context, so it is caught here.
inline absl::Status RequireDevice(absl::string_view op,
                                  std::initializer_list<std::pair<const char*, TensorView>> views) {
  for (const auto& [name, view] : views) {
    if (view.empty() || view.device == Device::kCuda) continue;
    return absl::InvalidArgumentError(absl::StrCat(
        op, ": ", name, " ", view.DebugString(),
        " is host memory; the CUDA backend's ops take device memory (Backend::Allocate and "
        "CopyToDevice)"));
  }
  return absl::OkStatus();
}

}  // namespace tessera::cuda

#endif  // TESSERA_KERNELS_CUDA_CUDA_OPS_UTIL_H_
