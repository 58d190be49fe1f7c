#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/device_info.h"

namespace tessera::cuda {

absl::StatusOr<int> VisibleDeviceCount() {
  int count = 0;
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    return absl::UnavailableError(
        absl::StrCat("cudaGetDeviceCount failed: ", cudaGetErrorString(err)));
  }
  // Touch cuBLAS so the link against it is real.
  int version = 0;
  cublasGetProperty(MAJOR_VERSION, &version);
  return count;
}

}  // namespace tessera::cuda
