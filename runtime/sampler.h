// Token sampling: greedy, temperature, top-k, top-p, keyed randomness.
//
// The random draw for (seed, request, step) is Philox4x32-10 with key = seed and counter =
// (request as two 32-bit words, step as two 32-bit words): the same request gets the same tokens whatever batch it runs in and
// whatever the parallel layout.
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
  uint64_t seed = 0;
};

// Checks ranges: temperature >= 0, top_k >= 0, 0 < top_p <= 1.
absl::Status ValidateSamplingParams(const SamplingParams& params);

// Picks the next token from one row of logits.
//
// With temperature > 0: logits / temperature, keep the top_k largest (if set), softmax, keep the
// smallest set of most probable tokens whose mass reaches top_p (if < 1), renormalise, and invert
// the CDF (tokens in descending probability, ties by id) at u = Philox(request, step).
int32_t SampleToken(absl::Span<const float> logits, const SamplingParams& params,
                    uint64_t request_id, uint64_t step);

}  // namespace tessera

#endif  // TESSERA_RUNTIME_SAMPLER_H_
