#include "methods/top_theta/calibration_run.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"

namespace tessera::top_theta {
namespace {

// Restores the model's attention policy when calibration ends, however it ends.
class PolicySwap {
 public:
  PolicySwap(LlamaModel& model, AttentionPolicy* policy)
      : model_(model), saved_(model.attention_policy()) {
    model.SetAttentionPolicy(policy);
  }
  ~PolicySwap() { model_.SetAttentionPolicy(saved_); }

 private:
  LlamaModel& model_;
  AttentionPolicy* saved_;
};

}  // namespace

absl::StatusOr<CalibrationOutcome> RunCalibration(LlamaModel& model,
                                                  const std::vector<std::vector<int32_t>>& requests,
                                                  const CalibrationRun& run) {
  std::vector<int64_t> lengths;
  int64_t longest = 1;
  for (const auto& r : requests) {
    if (r.empty()) return absl::InvalidArgumentError("calibration: a request has no tokens");
    lengths.push_back(static_cast<int64_t>(r.size()));
    longest = std::max(longest, lengths.back());
  }
  ASSIGN_OR_RETURN(const RowSampler sampler,
                   RowSampler::Plan(run.options.layer_k, run.sample_fraction, run.seed, lengths));
  Calibrator calibrator(run.options, &sampler, model.plan(), &model.backend());
  const int32_t slots = std::max(1, run.max_batch);
  ASSIGN_OR_RETURN(KvCache * cache, model.AcquireCache(slots, longest));
  {
    PolicySwap swap(model, &calibrator);
    std::vector<size_t> mine;
    for (size_t r = run.replica; r < requests.size(); r += std::max(1, run.replicas)) {
      mine.push_back(r);
    }
    int32_t step = 0;
    for (size_t next = 0; next < mine.size();) {
      ForwardBatch batch;
      batch.step = step++;
      std::map<int32_t, int64_t> slot_requests;
      int32_t slot = 0;
      while (next < mine.size() && slot < slots) {
        const std::vector<int32_t>& tokens = requests[mine[next]];
        if (slot > 0 &&
            static_cast<int64_t>(batch.tokens.size() + tokens.size()) > run.max_tokens_per_pass) {
          break;
        }
        cache->Clear(slot);
        for (size_t j = 0; j < tokens.size(); ++j) {
          batch.tokens.push_back(tokens[j]);
          batch.positions.push_back(static_cast<int32_t>(j));
          batch.slots.push_back(slot);
        }
        batch.logit_rows.push_back(static_cast<int32_t>(batch.tokens.size()) - 1);
        slot_requests[slot] = static_cast<int64_t>(mine[next]);
        ++slot;
        ++next;
      }
      calibrator.SetRequests(std::move(slot_requests));
      RETURN_IF_ERROR(model.Forward(batch, *cache).status());
      RETURN_IF_ERROR(calibrator.Flush());
      if (run.progress) run.progress(slot);
    }
  }
  ASSIGN_OR_RETURN(const CalibrationStats merged, MergeStats(run.world, calibrator.LocalStats()));
  CalibrationOutcome out;
  for (const auto& [key, s] : merged) out.recorded_rows += s.count;
  ASSIGN_OR_RETURN(out.result, Finalize(merged, run.options));
  return out;
}

}  // namespace tessera::top_theta
