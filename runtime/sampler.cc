#include "runtime/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/philox.h"

namespace tessera {

absl::Status ValidateSamplingParams(const SamplingParams& p) {
  if (!(p.temperature >= 0.0f) || std::isinf(p.temperature)) {
    return absl::InvalidArgumentError(
        absl::StrCat("temperature must be a finite number >= 0, got ", p.temperature));
  }
  if (p.top_k < 0) return absl::InvalidArgumentError(absl::StrCat("top_k must be >= 0, got ", p.top_k));
  if (!(p.top_p > 0.0f && p.top_p <= 1.0f)) {
    return absl::InvalidArgumentError(absl::StrCat("top_p must be in (0, 1], got ", p.top_p));
  }
  return absl::OkStatus();
}

int32_t SampleToken(absl::Span<const float> logits, const SamplingParams& p, uint64_t request_id,
                    uint64_t step) {
  const int32_t v = static_cast<int32_t>(logits.size());
  if (p.temperature == 0.0f) {
    return static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
  }
  std::vector<int32_t> order(v);
  std::iota(order.begin(), order.end(), 0);
  auto by_logit = [&](int32_t a, int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  };
  int32_t keep = v;
  if (p.top_k > 0 && p.top_k < v) {
    keep = p.top_k;
    std::partial_sort(order.begin(), order.begin() + keep, order.end(), by_logit);
  } else {
    std::sort(order.begin(), order.end(), by_logit);
  }
  // Softmax over the kept tokens, in descending order, for the nucleus cut.
  const float cut_temperature = p.top_p_before_temperature ? 1.0f : p.temperature;
  std::vector<double> probs(keep);
  const double max_logit = logits[order[0]] / cut_temperature;
  double total = 0.0;
  for (int32_t i = 0; i < keep; ++i) {
    probs[i] = std::exp(logits[order[i]] / cut_temperature - max_logit);
    total += probs[i];
  }
  if (p.top_p < 1.0f) {
    double mass = 0.0;
    int32_t cut = keep;
    for (int32_t i = 0; i < keep; ++i) {
      mass += probs[i] / total;
      // The reference keeps a token while the mass before it is at most top_p.
      if (p.top_p_before_temperature ? mass > p.top_p : mass >= p.top_p) {
        cut = i + 1;
        break;
      }
    }
    keep = cut;
  }
  // Gumbel-max over the kept tokens.
  const PhiloxKey key = {static_cast<uint32_t>(p.seed), static_cast<uint32_t>(p.seed >> 32)};
  int32_t best = order[0];
  double best_score = -INFINITY;
  for (int32_t i = 0; i < keep; ++i) {
    const int32_t id = order[i];
    const PhiloxCounter counter = {static_cast<uint32_t>(request_id), static_cast<uint32_t>(step),
                                   static_cast<uint32_t>(id / 4),
                                   static_cast<uint32_t>(request_id >> 32)};
    const uint32_t bits = Philox4x32(counter, key)[id % 4];
    const double u = (static_cast<double>(bits) + 0.5) * 0x1.0p-32;  // in (0, 1)
    const double score = logits[id] / p.temperature - std::log(-std::log(u));
    if (score > best_score || (score == best_score && id < best)) {
      best_score = score;
      best = id;
    }
  }
  return best;
}

}  // namespace tessera
