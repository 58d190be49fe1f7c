#include "methods/homer/bias_calibration.h"

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "methods/homer/key_score_policy.h"

namespace tessera::homer {
std::vector<std::vector<int32_t>> CalibrationWindows(const std::vector<std::vector<int32_t>>& texts,
                                                     int32_t bos, int64_t length, int64_t limit) {
  std::vector<std::vector<int32_t>> windows;
  std::vector<int32_t> current = {bos};
  for (const std::vector<int32_t>& ids : texts) {
    for (int32_t id : ids) {
      current.push_back(id);
      if (static_cast<int64_t>(current.size()) < length) continue;
      windows.push_back(std::move(current));
      current = {bos};
      if (limit > 0 && static_cast<int64_t>(windows.size()) == limit) return windows;
    }
  }
  return windows;
}

absl::StatusOr<BiasTable> CalibrateBias(LlamaModel& model, const BiasCalibration& run) {
  if (run.total < 1) {
    return absl::InvalidArgumentError(
        "HOMER calibration has no sequence: give --data texts with at least max_chunk_len tokens");
  }
  const ShardPlan& plan = model.plan();
  const int64_t layers = model.config().num_hidden_layers;
  int64_t length = run.sequences.empty() ? 0 : static_cast<int64_t>(run.sequences[0].size());
  if (run.world != nullptr && run.world->size() > 1) {  // a replica without sequences still joins
    float longest = static_cast<float>(length);
    RETURN_IF_ERROR(run.world->AllReduce(TensorView::Of(&longest, DType::kF32, {1}), ReduceOp::kMax));
    length = static_cast<int64_t>(longest);
  }
  std::vector<double> sums(layers * length, 0.0);
  Tensor scores(&model.backend(), DType::kF32);
  RETURN_IF_ERROR(scores.Resize({std::max<int64_t>(plan.layers(), 1), length}));
  ASSIGN_OR_RETURN(auto cache, model.MakeCache(1, length));
  KeyScorePolicy policy(model.attention_policy(), plan.layer_begin, scores.view());
  for (const std::vector<int32_t>& sequence : run.sequences) {
    if (static_cast<int64_t>(sequence.size()) != length) {
      return absl::InvalidArgumentError(absl::StrCat("HOMER calibration: a sequence of ",
                                                     sequence.size(), " tokens, want ", length));
    }
    cache->ClearAll();
    ForwardBatch batch;
    batch.tokens = sequence;
    for (int64_t i = 0; i < length; ++i) batch.positions.push_back(static_cast<int32_t>(i));
    batch.slots.assign(length, 0);
    batch.logit_rows = {static_cast<int32_t>(length - 1)};
    ForwardHooks hooks;
    hooks.attention = &policy;
    RETURN_IF_ERROR(model.Forward(batch, *cache, hooks).status());
    if (plan.layers() == 0) continue;
    if (plan.tp_size > 1) {
      RETURN_IF_ERROR(model.parallel().tp->AllReduce(scores.view(), ReduceOp::kMax));
    }
    std::vector<float> host(plan.layers() * length);
    RETURN_IF_ERROR(model.backend().CopyToHost(host.data(), scores.view().data,
                                               host.size() * sizeof(float)));
    for (int64_t l = 0; l < plan.layers(); ++l) {
      for (int64_t j = 0; j < length; ++j) {
        sums[(plan.layer_begin + l) * length + (length - 1 - j)] += host[l * length + j];
      }
    }
    if (run.progress) run.progress(1);
  }
  BiasTable table;
  table.layers = layers;
  table.distances = length;
  table.samples = run.total;
  table.values.assign(sums.begin(), sums.end());
  int64_t copies = 1;  // how many ranks hold each layer's sums: the tensor-parallel group's
  if (run.world != nullptr && run.world->size() > 1) {
    RETURN_IF_ERROR(run.world->AllReduce(
        TensorView::Of(table.values.data(), DType::kF32, {layers * length}), ReduceOp::kSum));
    copies = plan.tp_size;
  }
  for (float& v : table.values) v /= static_cast<float>(copies * run.total);
  return table;
}

}  // namespace tessera::homer
