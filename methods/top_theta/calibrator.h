// Top-theta calibration (shared/specs/top_theta.md §2, §7.3): an AttentionPolicy that runs the
// model dense (or, with `tac`, with each eligible row's exact top-k) and records, for the rows
// RowSampler chose, each head's (k+1)-th largest score (pre-softmax) or probability
// (post-softmax) into per-(layer, head, n) statistics, and with `missing_mass` the mass outside
// the row's top k (Top-k's offline SDC term). Each rank records its own layers and heads, with
// no communication; Merge() combines every rank's (and replica's) statistics and Finalize()
// turns them into the bins of th.txt and sdc.txt:
//   theta = mean + add_sigma * std (population), missing mass = mean.
//
//   Calibrator cal(options, &sampler, model.plan(), &model.backend());
//   model.SetAttentionPolicy(&cal);
//   for each pass: cal.SetRequests({{slot, request index}, ...}); model.Forward(...);
//   ASSIGN_OR_RETURN(auto stats, MergeStats(world, cal.LocalStats()));
//   ASSIGN_OR_RETURN(CalibrationResult r, Finalize(stats, options));
#ifndef TESSERA_METHODS_TOP_THETA_CALIBRATOR_H_
#define TESSERA_METHODS_TOP_THETA_CALIBRATOR_H_

#include <cstdint>
#include <map>
#include <tuple>
#include <vector>

#include "absl/status/statusor.h"
#include "methods/top_theta/row_sampler.h"
#include "methods/top_theta/threshold_file.h"
#include "parallel/communicator.h"
#include "runtime/forward_hooks.h"
#include "runtime/tensor.h"

namespace tessera::top_theta {

struct CalibrationOptions {
  AttentionVariant::Placement placement = AttentionVariant::Placement::kPreSoftmax;
  std::vector<int32_t> layer_k;  // k of every global layer; 0: not calibrated (dense)
  double add_sigma = 0.0;        // c in mean + c * std
  bool tac = false;              // top-k on the eligible rows while calibrating
  bool missing_mass = false;     // also record the mass outside the top k (sdc.txt)
};

// Statistics of one bin: Welford's count, mean and sum of squared deviations of the row
// thresholds, and the sum of the rows' missing masses.
struct BinStats {
  int64_t count = 0;
  double mean = 0.0, m2 = 0.0, mass_sum = 0.0;
  void Add(double threshold, double mass);
  void Merge(const BinStats& other);  // Chan et al.'s parallel combination
};
using BinKey = std::tuple<int32_t, int32_t, int32_t>;  // global layer, head, n
using CalibrationStats = std::map<BinKey, BinStats>;

class Calibrator : public AttentionPolicy {
 public:
  Calibrator(CalibrationOptions options, const RowSampler* sampler, const ShardPlan& plan,
             Backend* backend);
  // The global request index in each slot of the next pass (slots not listed are not recorded).
  void SetRequests(std::map<int32_t, int64_t> slot_requests) {
    slot_requests_ = std::move(slot_requests);
  }
  absl::StatusOr<AttentionVariant> Variant(const LayerContext& ctx) override;
  absl::Status Flush();
  // This rank's statistics (after Flush).
  const CalibrationStats& LocalStats() const { return stats_; }

 private:
  struct Pending {
    bool set = false;
    std::vector<int32_t> slots, n;
    Tensor thresholds, mass;  // [rows, heads] F32
  };
  absl::Status Fold(int64_t layer);

  CalibrationOptions options_;
  const RowSampler* sampler_;
  ShardPlan plan_;
  Backend* backend_;
  std::map<int32_t, int64_t> slot_requests_;
  std::vector<Pending> pending_;
  CalibrationStats stats_;
};

// Every rank's statistics on every rank, merged bin by bin in world-rank order (replicas'
// samples of one bin combine; tensor- and pipeline-parallel ranks hold disjoint bins).
absl::StatusOr<CalibrationStats> MergeStats(Communicator* world, const CalibrationStats& local);

struct CalibrationResult {
  std::vector<CalibratedBin> thresholds, missing_mass;  // sorted by (layer, head, n)
};
// Fails for a calibrated layer without any recorded bin (every sample too short), naming it.
absl::StatusOr<CalibrationResult> Finalize(const CalibrationStats& stats,
                                           const CalibrationOptions& options);

}  // namespace tessera::top_theta

#endif  // TESSERA_METHODS_TOP_THETA_CALIBRATOR_H_
