// Embedding gather with vocabulary-shard masking.
#include <cstring>

#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/simd.h"

namespace tessera {

absl::Status CpuBackend::DoEmbedding(const EmbeddingArgs& a) {
  const int64_t n = a.ids.dim(0), rows = a.table.dim(0), dim = a.table.dim(1);
  const int32_t* ids = a.ids.as<const int32_t>();
  const size_t row_bytes = a.table.row_bytes();
  for (int64_t i = 0; i < n; ++i) {
    float* out = a.out.as<float>() + i * dim;
    const int64_t local = static_cast<int64_t>(ids[i]) - a.vocab_start;
    if (local < 0 || local >= rows) {
      std::memset(out, 0, dim * sizeof(float));
      continue;
    }
    cpu::ConvertRowToF32(a.table.as<const char>() + local * row_bytes, a.table.dtype, dim, out);
  }
  return absl::OkStatus();
}

}  // namespace tessera
