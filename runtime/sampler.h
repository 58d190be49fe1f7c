// Token sampling: greedy, temperature, top-k, top-p, keyed randomness.
//
// Sampling uses the Gumbel-max trick: the token is the argmax over the kept tokens of
// logit / temperature + g, where g = -log(-log(u)) and u is a uniform number drawn for
// (seed, request, step, token id) from Philox4x32-10 (key = seed, counter = (request, step,
// token id / 4), word token id % 4). This samples exactly from the softmax, and because every
// token's noise is fixed by its id, the choice changes with the logits only when two tokens are
// within rounding of each other after the noise: the same request gets the same tokens whatever
// batch, thread count or parallel layout computes its logits.
#ifndef TESSERA_RUNTIME_SAMPLER_H_
#define TESSERA_RUNTIME_SAMPLER_H_

#include <cstdint>

#include "absl/status/status.h"
#include "absl/types/span.h"

namespace tessera {

struct SamplingParams {
  float temperature = 0.0f;  // 0: greedy (argmax, lowest id on ties)
  int32_t top_k = 0;         // 0: no top-k cut
  float top_p = 1.0f;        // 1: no nucleus cut
  // The nucleus cut from softmax(logits) instead of softmax(logits / temperature), keeping each
  // token whose more probable tokens hold at most top_p (HARP's reference order); the draw is
  // still from the tempered softmax over the kept tokens.
  bool top_p_before_temperature = false;
  uint64_t seed = 0;
};

// Checks ranges: temperature >= 0, top_k >= 0, 0 < top_p <= 1.
absl::Status ValidateSamplingParams(const SamplingParams& params);

// Picks the next token from one row of logits.
//
// With temperature > 0: logits / temperature, keep the top_k largest (if set), then the smallest
// set of most probable tokens whose mass reaches top_p (if < 1; see top_p_before_temperature),
// and draw from the softmax over the kept tokens by Gumbel-max (above).
int32_t SampleToken(absl::Span<const float> logits, const SamplingParams& params,
                    uint64_t request_id, uint64_t step);

}  // namespace tessera

#endif  // TESSERA_RUNTIME_SAMPLER_H_
