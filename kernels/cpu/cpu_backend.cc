#include "kernels/cpu/cpu_backend.h"

#include <cblas.h>
#include <omp.h>

#include <cstdlib>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace tessera {

CpuBackend::CpuBackend() { openblas_set_num_threads(1); }

void CpuBackend::SetThreads(int n) { omp_set_num_threads(n); }

int CpuBackend::threads() { return omp_get_max_threads(); }

absl::StatusOr<void*> CpuBackend::Allocate(size_t bytes) {
  const size_t rounded = (bytes + 63) / 64 * 64;
  void* p = std::aligned_alloc(64, rounded == 0 ? 64 : rounded);
  if (p == nullptr) {
    return absl::ResourceExhaustedError(absl::StrCat("cannot allocate ", bytes, " bytes of host memory"));
  }
  std::memset(p, 0, rounded);
  return p;
}

void CpuBackend::Free(void* pointer) { std::free(pointer); }

absl::Status CpuBackend::CopyToDevice(void* device_dst, const void* host_src, size_t bytes) {
  if (bytes > 0) std::memcpy(device_dst, host_src, bytes);
  return absl::OkStatus();
}

absl::Status CpuBackend::CopyToHost(void* host_dst, const void* device_src, size_t bytes) {
  if (bytes > 0) std::memcpy(host_dst, device_src, bytes);
  return absl::OkStatus();
}

absl::Status CpuBackend::CopyWithinDevice(void* device_dst, const void* device_src,
                                          size_t bytes) {
  if (bytes > 0) std::memcpy(device_dst, device_src, bytes);
  return absl::OkStatus();
}

}  // namespace tessera
