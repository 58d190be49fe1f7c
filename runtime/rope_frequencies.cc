#include "runtime/rope_frequencies.h"

#include <algorithm>
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

// transformers _compute_yarn_parameters (YaRN, arXiv:2309.00071 section 3): per dimension, a
// ramp between extrapolated (unscaled) and interpolated (divided by factor) frequencies over the
// band of dimensions whose wavelengths fall between beta_fast and beta_slow rotations of the
// original context; cos and sin are scaled by the attention factor (0.1 ln(factor) + 1). The
// float32 steps are float32 as in transformers; the correction range is double (Python floats).
RopeFrequencies YarnFrequencies(const ModelConfig& config) {
  const RopeScaling& rs = config.rope_scaling;
  const int64_t dim = config.head_dim, half = dim / 2;
  const double base = config.rope_theta;
  auto get_mscale = [](double scale, double mscale) {
    return scale <= 1 ? 1.0 : 0.1 * mscale * std::log(scale) + 1.0;
  };
  double attention_factor = rs.attention_factor;
  if (attention_factor == 0) {
    attention_factor =
        rs.mscale != 0 && rs.mscale_all_dim != 0
            ? get_mscale(rs.factor, rs.mscale) / get_mscale(rs.factor, rs.mscale_all_dim)
            : get_mscale(rs.factor, 1.0);
  }
  const double original = static_cast<double>(rs.original_max_position_embeddings);
  auto correction_dim = [&](double rotations) {
    return dim * std::log(original / (rotations * 2 * M_PI)) / (2 * std::log(base));
  };
  double low = correction_dim(rs.beta_fast), high = correction_dim(rs.beta_slow);
  if (rs.truncate) {
    low = std::floor(low);
    high = std::ceil(high);
  }
  low = std::max(low, 0.0);
  high = std::min(high, static_cast<double>(dim - 1));
  if (low == high) high += 0.001;  // transformers: prevents a division by zero
  RopeFrequencies out;
  out.inv_freq.resize(half);
  out.attention_scaling = static_cast<float>(attention_factor);
  const float lo = static_cast<float>(low), span = static_cast<float>(high) - lo;
  for (int64_t i = 0; i < half; ++i) {
    const float pos_freq =
        std::pow(static_cast<float>(base), static_cast<float>(2 * i) / static_cast<float>(dim));
    const float extrapolation = 1.0f / pos_freq;
    const float interpolation = 1.0f / (static_cast<float>(rs.factor) * pos_freq);
    const float ramp = std::clamp((static_cast<float>(i) - lo) / span, 0.0f, 1.0f);
    const float extrapolation_factor = 1.0f - ramp;
    out.inv_freq[i] =
        interpolation * (1 - extrapolation_factor) + extrapolation * extrapolation_factor;
  }
  return out;
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
    case RopeScaling::Type::kYarn:
      return YarnFrequencies(config);
  }
  return out;
}

}  // namespace tessera
