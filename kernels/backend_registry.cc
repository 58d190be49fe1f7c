#include "kernels/backend.h"
#include "kernels/cpu/cpu_backend.h"

namespace tessera {

absl::StatusOr<std::unique_ptr<Backend>> MakeBackend(BackendKind kind) {
  switch (kind) {
    case BackendKind::kCpu:
      return std::unique_ptr<Backend>(std::make_unique<CpuBackend>());
    case BackendKind::kCuda:
      return absl::UnimplementedError(
          "the CUDA backend's ops are not implemented yet; use the CPU backend (--backend=cpu)");
  }
  return absl::InvalidArgumentError("unknown backend kind");
}

}  // namespace tessera
