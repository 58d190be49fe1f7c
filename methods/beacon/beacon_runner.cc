#include "methods/beacon/beacon_runner.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"

namespace tessera::beacon {

absl::Status BeaconPassHooks::AfterStep(const ForwardBatch& batch, KvCache& cache) {
  for (const Condensed& c : condensed) RETURN_IF_ERROR(cache.Compact(c.slot, c.keep));
  return absl::OkStatus();
}

BeaconRunner::BeaconRunner(LlamaModel* model, BeaconConfig config, int64_t position_limit)
    : model_(model), config_(std::move(config)), position_limit_(position_limit) {}

absl::Status BeaconRunner::StartSequence(int32_t slot, uint64_t request_id) {
  streams_[slot] = StreamState{};  // reset: a new request starts with no memory
  return absl::OkStatus();
}

int64_t BeaconRunner::PromptEntries(int64_t prompt_tokens) const {
  const int32_t ratio = ChooseRatio(config_, prompt_tokens);
  const int64_t memory = MemoryAfter(config_, ratio, prompt_tokens).first;
  return memory + config_.window + BeaconsPerWindow(config_, ratio);
}

absl::StatusOr<std::vector<float>> BeaconRunner::RunMicroBatch(size_t index,
                                                               const ForwardBatch& batch,
                                                               KvCache& cache,
                                                               const StepReduction& reduction) {
  const int32_t beacon_token = static_cast<int32_t>(model_->config().vocab_size);
  const size_t width = reduction.words_per_row;
  // Each slot's rows in batch order, the slots in order of appearance, and the logit indices
  // asking for each row.
  std::vector<int32_t> order;
  std::map<int32_t, std::vector<int32_t>> rows_of;
  for (size_t i = 0; i < batch.tokens.size(); ++i) {
    std::vector<int32_t>& rows = rows_of[batch.slots[i]];
    if (rows.empty()) order.push_back(batch.slots[i]);
    rows.push_back(static_cast<int32_t>(i));
  }
  std::map<int32_t, std::vector<int32_t>> logits_of_row;
  for (size_t r = 0; r < batch.logit_rows.size(); ++r) {
    logits_of_row[batch.logit_rows[r]].push_back(static_cast<int32_t>(r));
  }
  std::map<int32_t, std::vector<WindowStep>> plans;
  size_t passes = 0;
  for (int32_t slot : order) {
    StreamState& s = streams_[slot];
    const int64_t count = static_cast<int64_t>(rows_of[slot].size());
    ASSIGN_OR_RETURN(plans[slot], PlanSteps(config_, s, count, s.tokens + count, position_limit_));
    passes = std::max(passes, plans[slot].size());
  }
  std::vector<float> words(batch.logit_rows.size() * width, 0.0f);
  std::map<int32_t, size_t> cursor;  // each slot's rows fed so far
  for (size_t j = 0; j < passes; ++j) {
    ForwardBatch pass;
    pass.step = batch.step;
    pass.micro_batch = batch.micro_batch;
    pass_.row_keys = RowKeys{};
    pass_.row_keys.extra_begin = {0};
    pass_.condensed.clear();
    std::vector<int32_t> caller_logit;  // the batch's logit index of each of the pass's
    for (int32_t slot : order) {
      if (j >= plans[slot].size()) continue;
      const WindowStep& step = plans[slot][j];
      const std::vector<int32_t>& rows = rows_of[slot];
      const int32_t base = static_cast<int32_t>(pass.tokens.size());
      for (int32_t t = 0; t < step.ordinal; ++t) {
        const int32_t row = rows[cursor[slot] + t];
        pass.tokens.push_back(batch.tokens[row]);
        for (int32_t r : logits_of_row[row]) {
          pass.logit_rows.push_back(base + t);
          caller_logit.push_back(r);
        }
      }
      for (int32_t i = 0; i < step.beacons; ++i) {
        pass.tokens.push_back(beacon_token);
        RowKeys& rk = pass_.row_keys;
        rk.rows.push_back(base + step.ordinal + i);
        rk.prefix_end.push_back(step.prefix_end[i]);
        rk.extra.insert(rk.extra.end(), step.extra[i].begin(), step.extra[i].end());
        rk.extra_begin.push_back(static_cast<int32_t>(rk.extra.size()));
      }
      pass.positions.insert(pass.positions.end(), step.positions.begin(), step.positions.end());
      pass.key_positions.insert(pass.key_positions.end(), step.key_positions.begin(),
                                step.key_positions.end());
      pass.slots.insert(pass.slots.end(), step.ordinal + step.beacons, slot);
      if (step.beacons > 0) pass_.condensed.push_back({slot, step.keep});
      cursor[slot] += step.ordinal;
    }
    // A pass without a condensation is a plain one (and may replay a decode graph).
    const bool condenses = !pass_.condensed.empty();
    if (!condenses) pass.key_positions.clear();
    ASSIGN_OR_RETURN(ForwardOutput out,
                     model_->Forward(pass, cache, condenses ? pass_.hooks() : ForwardHooks{}));
    if (out.logits.empty()) continue;
    for (int32_t& r : out.logit_rows) r = caller_logit[r];
    ASSIGN_OR_RETURN(const std::vector<float> got, reduction.reduce(index, batch, out));
    for (size_t k = 0; k < out.logit_rows.size() && (k + 1) * width <= got.size(); ++k) {
      std::copy(got.begin() + k * width, got.begin() + (k + 1) * width,
                words.begin() + out.logit_rows[k] * width);
    }
  }
  return words;
}

absl::StatusOr<std::vector<float>> BeaconRunner::Run(const std::vector<ForwardBatch>& micro_batches,
                                                     KvCache& cache,
                                                     const StepReduction& reduction) {
  std::vector<float> words;
  for (size_t g = 0; g < micro_batches.size(); ++g) {
    ASSIGN_OR_RETURN(const std::vector<float> part,
                     RunMicroBatch(g, micro_batches[g], cache, reduction));
    words.insert(words.end(), part.begin(), part.end());
  }
  const ShardPlan& plan = model_->plan();
  if (plan.pp_size > 1) {  // the last stage's words reach every stage
    RETURN_IF_ERROR(model_->parallel().pp->Broadcast(
        TensorView::Of(words.data(), DType::kF32, {static_cast<int64_t>(words.size())}),
        plan.pp_size - 1));
  }
  return words;
}

absl::StatusOr<std::vector<SequenceCounters>> BeaconRunner::EndSequences(
    const std::vector<int32_t>& slots, KvCache& cache) {
  std::vector<SequenceCounters> out;
  for (int32_t slot : slots) {
    const StreamState& s = streams_[slot];
    SequenceCounters c;
    c.values["beacon_ratio"] = s.ratio;
    c.values["beacon_windows"] = static_cast<double>(s.windows);
    c.values["beacon_rows"] = static_cast<double>(s.beacon_rows);
    c.values["beacon_memory_entries"] = s.memory;
    c.values["beacon_raw_entries"] = s.raw;
    out.push_back(std::move(c));
    streams_.erase(slot);
  }
  return out;
}

}  // namespace tessera::beacon
