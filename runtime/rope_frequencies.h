// Rotary inverse frequencies for each rope_scaling type, as transformers computes them
// (modeling_rope_utils): default theta^(-2i/d); linear divides by factor; dynamic NTK grows theta
// once the sequence exceeds max_position_embeddings; llama3 rescales low frequencies by factor
// and smooths the band between low_freq_factor and high_freq_factor; yarn blends interpolated and
// extrapolated frequencies per dimension and scales cos/sin by an attention factor.
#ifndef TESSERA_RUNTIME_ROPE_FREQUENCIES_H_
#define TESSERA_RUNTIME_ROPE_FREQUENCIES_H_

#include <cstdint>
#include <vector>

#include "runtime/model_config.h"

namespace tessera {

struct RopeFrequencies {
  std::vector<float> inv_freq;  // [head_dim / 2]
  float attention_scaling = 1.0f;
};

// `seq_len` matters only for dynamic scaling: the length of the sequence being processed
// (transformers uses the largest position in the forward call plus one).
RopeFrequencies ComputeRopeFrequencies(const ModelConfig& config, int64_t seq_len);

// True when the frequencies depend on seq_len (dynamic NTK beyond max_position_embeddings).
bool RopeDependsOnLength(const ModelConfig& config);

}  // namespace tessera

#endif  // TESSERA_RUNTIME_ROPE_FREQUENCIES_H_
