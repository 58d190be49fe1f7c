// KeyScores on the CPU: one pass over the slot's keys, each key's dot product with every query
// head of its group, accumulated in F32 in head_dim order.
#include <algorithm>
#include <cmath>

#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/simd.h"

namespace tessera {

absl::Status CpuBackend::DoKeyScores(const KeyScoresArgs& a) {
  const int64_t count = a.out.dim(0), heads = a.q.dim(0), head_dim = a.q.dim(1);
  const int64_t max_seq = a.k_cache.dim(1), kv_heads = a.k_cache.dim(2);
  const int64_t group = heads / kv_heads;
  const float* q = a.q.as<const float>();
  float* out = a.out.as<float>();
  const int64_t slot_base = static_cast<int64_t>(a.slot) * max_seq * kv_heads * head_dim;
#pragma omp parallel for schedule(static) if (count * heads * head_dim >= (1 << 18))
  for (int64_t j = 0; j < count; ++j) {
    float best = -INFINITY;
    for (int64_t h = 0; h < heads; ++h) {
      const int64_t key = slot_base + (j * kv_heads + h / group) * head_dim;
      float dot = 0.0f;
      for (int64_t d = 0; d < head_dim; ++d) {
        dot += q[h * head_dim + d] * cpu::LoadScalar(a.k_cache.data, a.k_cache.dtype, key + d);
      }
      best = std::max(best, dot * a.scale);
    }
    out[j] = best;
  }
  return absl::OkStatus();
}

}  // namespace tessera
