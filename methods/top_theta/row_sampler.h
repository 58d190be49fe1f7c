// Which prefill rows Top-theta calibration records (shared/specs/top_theta.md §2.2, §7.3).
//
// For layer l with k_l > 0, a request of T tokens has the eligible rows n = k_l + 1 .. T. With
// sample fraction f = 1 every eligible row is recorded; with 0 < f < 1, ceil(0.5 * eligible)
// rows are drawn without replacement (the reference's hard-coded 0.5: f only switches sampling
// on), row n weighted by (max over bins of c[n']) + 1 - c[n], where c counts the rows recorded so
// far per bin, so that lengths seen less often are favoured. The draw is weighted sampling
// without replacement by exponential keys (the m largest u^(1/w), u uniform from Philox keyed by
// (seed, layer, request, n)), which has the distribution of sequential weighted draws.
//
// The plan depends only on the requests' lengths in their global order, never on the layout:
// every rank computes the whole plan, and a replica records the requests it runs. Every head of
// a layer records the same rows.
#ifndef TESSERA_METHODS_TOP_THETA_ROW_SAMPLER_H_
#define TESSERA_METHODS_TOP_THETA_ROW_SAMPLER_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"

namespace tessera::top_theta {

class RowSampler {
 public:
  // layer_k: k of every global layer (0: not calibrated); 0 < fraction <= 1.
  static absl::StatusOr<RowSampler> Plan(const std::vector<int32_t>& layer_k, double fraction,
                                         uint64_t seed, const std::vector<int64_t>& lengths);
  // The sorted row lengths n recorded for (global layer, request index).
  const std::vector<int32_t>& Rows(int64_t layer, int64_t request) const {
    return rows_[layer][request];
  }

 private:
  std::vector<std::vector<std::vector<int32_t>>> rows_;  // [layer][request] -> n
};

}  // namespace tessera::top_theta

#endif  // TESSERA_METHODS_TOP_THETA_ROW_SAMPLER_H_
