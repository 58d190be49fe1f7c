#include "runtime/model_options.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"

namespace tessera {

ExtraWeightSlice SliceOf(const ExtraWeight& w, const ModelConfig& c, const ShardPlan& plan) {
  using Shard = ExtraWeight::Shard;
  const int64_t rows = w.shape.empty() ? 0 : w.shape[0];
  const int64_t cols = w.shape.size() > 1 ? w.shape[1] : 0;
  // Heads and MLP units as fractions of the model's: a tensor whose dimension is a multiple of
  // the model's (per-head projections) is cut where the model's own weight is.
  auto part = [](int axis, int64_t dim, int64_t begin, int64_t count, int64_t total) {
    return ExtraWeightSlice{axis, dim * begin / total, dim * count / total};
  };
  switch (w.shard) {
    case Shard::kReplicated:
      return {0, 0, rows};
    case Shard::kHeadRows:
      return part(0, rows, plan.head_begin, plan.heads, c.num_attention_heads);
    case Shard::kKvHeadRows:  // replicated KV heads (tp > n_kv_heads) are cut the same way
      return part(0, rows, plan.kv_head_begin, plan.kv_heads, c.num_key_value_heads);
    case Shard::kHeadColumns:
      return part(1, cols, plan.head_begin, plan.heads, c.num_attention_heads);
    case Shard::kFfnRows:
      return part(0, rows, plan.ffn_begin, plan.ffn, c.intermediate_size);
    case Shard::kFfnColumns:
      return part(1, cols, plan.ffn_begin, plan.ffn, c.intermediate_size);
    case Shard::kVocabRows:
      return {0, plan.vocab_begin, plan.vocab_rows};
  }
  return {0, 0, rows};
}

std::vector<std::string> NamesOnStage(const ExtraWeight& w, const ShardPlan& plan) {
  if (w.name.find("{layer}") != std::string::npos) {
    std::vector<std::string> names;
    for (int64_t l = plan.layer_begin; l < plan.layer_end; ++l) {
      names.push_back(absl::StrReplaceAll(w.name, {{"{layer}", absl::StrCat(l)}}));
    }
    return names;
  }
  if (w.shard == ExtraWeight::Shard::kVocabRows && !plan.first_stage()) return {};
  return {w.name};
}

bool HeadOnStage(const ModelOptions& options, const ShardPlan& plan) {
  for (int64_t l : options.head_after_layers) {
    if (l >= plan.layer_begin && l < plan.layer_end) return true;
  }
  return false;
}

uint64_t ExtraWeightBytes(const ModelOptions& options, const ModelConfig& config,
                          const ShardPlan& plan, DType dtype) {
  uint64_t bytes = 0;
  for (const ExtraWeight& w : options.extra_weights) {
    const ExtraWeightSlice s = SliceOf(w, config, plan);
    const int64_t other = s.axis == 0 ? (w.shape.size() > 1 ? w.shape[1] : 1) : w.shape[0];
    bytes += NamesOnStage(w, plan).size() * static_cast<uint64_t>(s.count * other) *
             DTypeSize(dtype);
  }
  return bytes;
}

}  // namespace tessera
