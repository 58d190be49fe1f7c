#include "runtime/shard_plan.h"

#include <numeric>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace tessera {
namespace {

// Empty when tp works for the model, else the reason.
std::string TensorParallelProblem(const ModelConfig& c, int tp) {
  if (c.num_attention_heads % tp != 0) {
    return absl::StrCat("num_attention_heads=", c.num_attention_heads, " is not divisible by tp=", tp);
  }
  if (c.num_key_value_heads % tp != 0 && tp % c.num_key_value_heads != 0) {
    return absl::StrCat("num_key_value_heads=", c.num_key_value_heads,
                        " can be neither split nor replicated across tp=", tp,
                        " (tp must divide it or be a multiple of it)");
  }
  if (c.intermediate_size % tp != 0) {
    return absl::StrCat("intermediate_size=", c.intermediate_size, " is not divisible by tp=", tp);
  }
  return "";
}

}  // namespace

std::string SupportedTensorParallelSizes(const ModelConfig& config, int max_tp) {
  std::vector<int> ok;
  for (int tp = 1; tp <= max_tp; ++tp) {
    if (TensorParallelProblem(config, tp).empty()) ok.push_back(tp);
  }
  return absl::StrCat("{", absl::StrJoin(ok, ", "), "}");
}

std::vector<int64_t> StageLayerCounts(const ModelConfig& c, int pp,
                                      const std::vector<int64_t>& stage_layers) {
  if (!stage_layers.empty()) return stage_layers;
  std::vector<int64_t> counts;
  for (int s = 0; s < pp; ++s) {
    counts.push_back(c.num_hidden_layers / pp + (s < c.num_hidden_layers % pp ? 1 : 0));
  }
  return counts;
}

absl::StatusOr<ShardPlan> MakeShardPlan(const ModelConfig& c, const WorldLayout& layout,
                                        const std::vector<int64_t>& stage_layers) {
  ShardPlan p;
  p.tp_size = layout.tp;
  p.tp_rank = layout.tp_rank();
  p.pp_size = layout.pp;
  p.pp_rank = layout.pp_rank();
  const int tp = layout.tp, pp = layout.pp;
  if (const std::string problem = TensorParallelProblem(c, tp); !problem.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        problem, "; use tp in ", SupportedTensorParallelSizes(c, std::max(8, tp)),
        " and add pipeline stages (--pp) or replicas (--dp) for the other ranks"));
  }
  if (pp > c.num_hidden_layers) {
    return absl::InvalidArgumentError(absl::StrCat(
        "pp=", pp, " stages but the model has only num_hidden_layers=", c.num_hidden_layers,
        "; use pp <= ", c.num_hidden_layers));
  }
  const std::vector<int64_t> counts = StageLayerCounts(c, pp, stage_layers);
  if (static_cast<int>(counts.size()) != pp ||
      std::accumulate(counts.begin(), counts.end(), int64_t{0}) != c.num_hidden_layers ||
      *std::min_element(counts.begin(), counts.end()) < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--stage-layers must give ", pp, " positive layer counts summing to num_hidden_layers=",
        c.num_hidden_layers, ", got {", absl::StrJoin(counts, ", "), "}"));
  }
  for (int s = 0; s < p.pp_rank; ++s) p.layer_begin += counts[s];
  p.layer_end = p.layer_begin + counts[p.pp_rank];

  p.heads = c.num_attention_heads / tp;
  p.head_begin = p.tp_rank * p.heads;
  if (c.num_key_value_heads % tp == 0) {
    p.kv_heads = c.num_key_value_heads / tp;
    p.kv_head_begin = p.tp_rank * p.kv_heads;
  } else {  // replicated: tp is a multiple of n_kv_heads
    p.kv_heads = 1;
    p.kv_head_begin = p.tp_rank / (tp / c.num_key_value_heads);
  }
  p.ffn = c.intermediate_size / tp;
  p.ffn_begin = p.tp_rank * p.ffn;
  p.vocab_shard = (c.vocab_size + tp - 1) / tp;
  p.vocab_begin = std::min<int64_t>(c.vocab_size, p.tp_rank * p.vocab_shard);
  p.vocab_rows = std::min<int64_t>(c.vocab_size, p.vocab_begin + p.vocab_shard) - p.vocab_begin;
  return p;
}

int StageOfLayer(const ModelConfig& config, int pp, const std::vector<int64_t>& stage_layers,
                 int64_t layer) {
  const std::vector<int64_t> counts = StageLayerCounts(config, pp, stage_layers);
  int64_t end = 0;
  for (size_t s = 0; s < counts.size(); ++s) {
    end += counts[s];
    if (layer < end) return static_cast<int>(s);
  }
  return pp - 1;
}

}  // namespace tessera
