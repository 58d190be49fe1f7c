#include "runtime/rope_frequencies.h"

#include <cmath>

namespace tessera {
namespace {

// transformers: 1 / base ** (arange(0, dim, 2).float() / dim), in float32.
std::vector<float> DefaultInvFreq(double base, int64_t dim) {
  std::vector<float> inv(dim / 2);
  for (int64_t i = 0; i < dim / 2; ++i) {
    const float exponent = static_cast<float>(2 * i) / static_cast<float>(dim);
    inv[i] = 1.0f / std::pow(static_cast<float>(base), exponent);
  }
  return inv;
}

}  // namespace

bool RopeDependsOnLength(const ModelConfig& config) {
  return config.rope_scaling.type == RopeScaling::Type::kDynamic;
}

RopeFrequencies ComputeRopeFrequencies(const ModelConfig& config, int64_t seq_len) {
  const RopeScaling& rs = config.rope_scaling;
  const int64_t dim = config.head_dim;
  RopeFrequencies out;
  switch (rs.type) {
    case RopeScaling::Type::kNone:
      out.inv_freq = DefaultInvFreq(config.rope_theta, dim);
      break;
    case RopeScaling::Type::kLinear:
      out.inv_freq = DefaultInvFreq(config.rope_theta, dim);
      for (float& f : out.inv_freq) f = static_cast<float>(f / rs.factor);
      break;
    case RopeScaling::Type::kDynamic: {
      // Reference: transformers _compute_dynamic_ntk_parameters.
      double base = config.rope_theta;
      const double max_pos = static_cast<double>(config.max_position_embeddings);
      if (seq_len > config.max_position_embeddings) {
        base *= std::pow(rs.factor * seq_len / max_pos - (rs.factor - 1),
                         static_cast<double>(dim) / (dim - 2));
      }
      out.inv_freq = DefaultInvFreq(base, dim);
      break;
    }
    case RopeScaling::Type::kLlama3: {
      // Reference: transformers _compute_llama3_parameters.
      out.inv_freq = DefaultInvFreq(config.rope_theta, dim);
      const double old_len = static_cast<double>(rs.original_max_position_embeddings);
      const double low_wavelen = old_len / rs.low_freq_factor;
      const double high_wavelen = old_len / rs.high_freq_factor;
      for (float& f : out.inv_freq) {
        const double wavelen = 2 * M_PI / f;
        if (wavelen > low_wavelen) {
          f = static_cast<float>(f / rs.factor);
        } else if (wavelen >= high_wavelen) {
          const double smooth =
              (old_len / wavelen - rs.low_freq_factor) / (rs.high_freq_factor - rs.low_freq_factor);
          f = static_cast<float>((1 - smooth) * f / rs.factor + smooth * f);
        }
      }
      break;
    }
  }
  return out;
}

}  // namespace tessera
