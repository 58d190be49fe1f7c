#include "methods/top_theta/row_sampler.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <utility>

#include "absl/strings/str_cat.h"
#include "kernels/philox.h"

namespace tessera::top_theta {

absl::StatusOr<RowSampler> RowSampler::Plan(const std::vector<int32_t>& layer_k, double fraction,
                                            uint64_t seed, const std::vector<int64_t>& lengths) {
  if (!(fraction > 0.0 && fraction <= 1.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("the calibration sample fraction must be in (0, 1], got ", fraction));
  }
  RowSampler s;
  s.rows_.assign(layer_k.size(), std::vector<std::vector<int32_t>>(lengths.size()));
  for (size_t l = 0; l < layer_k.size(); ++l) {
    const int32_t k = layer_k[l];
    if (k <= 0) continue;
    std::map<int32_t, int64_t> counts;  // c[n] of the rows recorded so far
    int64_t max_count = 0;
    for (size_t r = 0; r < lengths.size(); ++r) {
      std::vector<int32_t>& rows = s.rows_[l][r];
      const int64_t eligible = std::max<int64_t>(0, lengths[r] - k);
      if (eligible == 0) continue;
      if (fraction >= 1.0) {
        for (int64_t n = k + 1; n <= lengths[r]; ++n) rows.push_back(static_cast<int32_t>(n));
      } else {
        const int64_t draws = (eligible + 1) / 2;  // ceil(0.5 * eligible)
        std::vector<std::pair<double, int32_t>> keys;
        keys.reserve(eligible);
        for (int64_t n = k + 1; n <= lengths[r]; ++n) {
          auto it = counts.find(static_cast<int32_t>(n));
          const double weight =
              static_cast<double>(max_count + 1 - (it == counts.end() ? 0 : it->second));
          const PhiloxCounter bits =
              Philox4x32({static_cast<uint32_t>(r), static_cast<uint32_t>(r >> 32),
                          static_cast<uint32_t>(n), static_cast<uint32_t>(l) | 0x5A000000u},
                         {static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32)});
          // u in (0, 1): 53 random bits, never 0.
          const uint64_t word = (static_cast<uint64_t>(bits[0]) << 21) ^ (bits[1] >> 11);
          const double u =
              (static_cast<double>(word & ((1ull << 53) - 1)) + 0.5) / 9007199254740992.0;
          keys.emplace_back(std::log(u) / weight, static_cast<int32_t>(n));
        }
        std::partial_sort(keys.begin(), keys.begin() + draws, keys.end(),
                          [](const auto& a, const auto& b) {
                            return a.first != b.first ? a.first > b.first : a.second < b.second;
                          });
        for (int64_t d = 0; d < draws; ++d) rows.push_back(keys[d].second);
        std::sort(rows.begin(), rows.end());
      }
      for (int32_t n : rows) max_count = std::max(max_count, ++counts[n]);
    }
  }
  return s;
}

}  // namespace tessera::top_theta
