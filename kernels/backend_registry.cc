#include "kernels/backend.h"
#include "kernels/cpu/cpu_backend.h"

#if defined(TESSERA_WITH_CUDA)
#include "kernels/cuda/cuda_backend.h"
#endif

namespace tessera {

absl::StatusOr<std::unique_ptr<Backend>> MakeBackend(BackendKind kind, int local_rank) {
  switch (kind) {
    case BackendKind::kCpu:
      return std::unique_ptr<Backend>(std::make_unique<CpuBackend>());
    case BackendKind::kCuda: {
#if defined(TESSERA_WITH_CUDA)
      ASSIGN_OR_RETURN(std::unique_ptr<CudaBackend> cuda, CudaBackend::Create(local_rank));
      return std::unique_ptr<Backend>(std::move(cuda));
#else
      return absl::UnimplementedError(
          "this build has no CUDA backend (configured with TESSERA_CUDA=OFF, or the CUDA toolkit "
          "was not found); rebuild with -DTESSERA_CUDA=ON or use --backend=cpu");
#endif
    }
  }
  return absl::InvalidArgumentError("unknown backend kind");
}

}  // namespace tessera
