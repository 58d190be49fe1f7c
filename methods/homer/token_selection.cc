#include "methods/homer/token_selection.h"

#include <algorithm>
#include <numeric>

#include "absl/strings/str_cat.h"

namespace tessera::homer {

absl::StatusOr<std::vector<int32_t>> SelectKeep(absl::Span<const float> raw,
                                                absl::Span<const int32_t> positions,
                                                absl::Span<const uint8_t> prunable,
                                                const BiasTable* bias, int64_t layer,
                                                int64_t target) {
  const int64_t rows = static_cast<int64_t>(raw.size());
  if (positions.size() != raw.size() || prunable.size() != raw.size() || rows == 0) {
    return absl::InvalidArgumentError("SelectKeep: raw, positions and prunable differ in length");
  }
  const int32_t last = positions.back();
  std::vector<int32_t> candidates;
  std::vector<float> sig(rows);
  for (int64_t j = 0; j < rows; ++j) {
    if (!prunable[j]) continue;
    const int64_t distance = last - positions[j];
    if (bias != nullptr && (distance < 0 || distance >= bias->distances)) {
      return absl::OutOfRangeError(absl::StrCat(
          "HOMER: a key at distance ", distance, " from the query is outside the bias table's ",
          bias->distances, " distances"));
    }
    sig[j] = raw[j] - (bias != nullptr ? bias->at(layer, distance) : 0.0f);
    candidates.push_back(static_cast<int32_t>(j));
  }
  const int64_t drop = std::min<int64_t>(std::max<int64_t>(0, rows - target),
                                         static_cast<int64_t>(candidates.size()));
  // The `drop` smallest (sig, index) pairs; a NaN score sorts first (dropped first).
  auto less = [&](int32_t a, int32_t b) {
    const bool na = sig[a] != sig[a], nb = sig[b] != sig[b];
    if (na != nb) return na;
    if (!na && sig[a] != sig[b]) return sig[a] < sig[b];
    return a < b;
  };
  std::nth_element(candidates.begin(), candidates.begin() + drop, candidates.end(), less);
  std::vector<uint8_t> dropped(rows, 0);
  for (int64_t i = 0; i < drop; ++i) dropped[candidates[i]] = 1;
  std::vector<int32_t> keep;
  keep.reserve(rows - drop);
  for (int64_t j = 0; j < rows; ++j) {
    if (!dropped[j]) keep.push_back(static_cast<int32_t>(j));
  }
  return keep;
}

}  // namespace tessera::homer
