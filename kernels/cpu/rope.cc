// Rotary position embedding, "rotate half" layout (transformers' apply_rotary_pos_emb).
// Angles are formed in F32 as position * inv_freq, as transformers does.
#include <cmath>
#include <vector>

#include "kernels/cpu/cpu_backend.h"

namespace tessera {

absl::Status CpuBackend::DoRope(const RopeArgs& a) {
  const int64_t n = a.x.dim(0), heads = a.x.dim(1), head_dim = a.x.dim(2), half = head_dim / 2;
  const float* inv_freq = a.inv_freq.as<const float>();
  const int32_t* positions = a.positions.as<const int32_t>();
#pragma omp parallel for schedule(static) if (n * heads * head_dim >= (1 << 16))
  for (int64_t t = 0; t < n; ++t) {
    std::vector<float> cos_t(half), sin_t(half);
    const float pos = static_cast<float>(positions[t]);
    for (int64_t i = 0; i < half; ++i) {
      const float angle = pos * inv_freq[i];
      cos_t[i] = std::cos(angle) * a.attention_scaling;
      sin_t[i] = std::sin(angle) * a.attention_scaling;
    }
    for (int64_t h = 0; h < heads; ++h) {
      float* x = a.x.as<float>() + (t * heads + h) * head_dim;
      for (int64_t i = 0; i < half; ++i) {
        const float x1 = x[i], x2 = x[i + half];
        x[i] = x1 * cos_t[i] - x2 * sin_t[i];
        x[i + half] = x2 * cos_t[i] + x1 * sin_t[i];
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace tessera
