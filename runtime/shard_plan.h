// ShardPlan: which slice of every weight this rank holds, for a model and a rank layout.
//
// Tensor parallel (Megatron): q/k/v and gate/up are ColumnParallel (split by output rows), o and
// down RowParallel (split by input columns, each followed by an all-reduce). Query heads are
// split evenly; KV heads are split when n_kv_heads % tp == 0 and replicated when tp is a multiple
// of n_kv_heads (rank r then holds KV head r / (tp / n_kv_heads), the one its query heads use).
// Embedding and LM head are vocabulary parallel: the vocabulary is padded to a multiple of tp and
// rank r holds rows [r * vocab_shard, (r + 1) * vocab_shard) of it (the last shard may be short).
// Pipeline parallel: stage s holds a contiguous range of layers, balanced by default.
#ifndef TESSERA_RUNTIME_SHARD_PLAN_H_
#define TESSERA_RUNTIME_SHARD_PLAN_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "parallel/world_layout.h"
#include "runtime/model_config.h"

namespace tessera {

struct ShardPlan {
  int tp_size = 1, tp_rank = 0, pp_size = 1, pp_rank = 0;
  int64_t layer_begin = 0, layer_end = 0;  // this stage's layers [begin, end)
  int64_t heads = 0, head_begin = 0;       // local query heads
  int64_t kv_heads = 0, kv_head_begin = 0; // local KV heads
  int64_t ffn = 0, ffn_begin = 0;          // local MLP hidden units
  int64_t vocab_shard = 0;                 // padded shard width (same on every rank)
  int64_t vocab_begin = 0, vocab_rows = 0; // rows of the real vocabulary held here

  bool first_stage() const { return pp_rank == 0; }
  bool last_stage() const { return pp_rank == pp_size - 1; }
  int64_t layers() const { return layer_end - layer_begin; }
};

// The plan for `layout`'s rank. `stage_layers`, if not empty, gives the number of layers of each
// stage (pp entries summing to num_hidden_layers); otherwise stages are balanced, earlier stages
// taking the remainder. A layout that cannot work is refused before any weight is read, with a
// message naming the constraint and the layouts that would work.
absl::StatusOr<ShardPlan> MakeShardPlan(const ModelConfig& config, const WorldLayout& layout,
                                        const std::vector<int64_t>& stage_layers = {});

// Layers per pipeline stage: `stage_layers` when given, else balanced (earlier stages take the
// remainder).
std::vector<int64_t> StageLayerCounts(const ModelConfig& config, int pp,
                                      const std::vector<int64_t>& stage_layers);
// The pipeline stage holding global layer `layer` under that split (the last stage for a layer
// past the model's).
int StageOfLayer(const ModelConfig& config, int pp, const std::vector<int64_t>& stage_layers,
                 int64_t layer);

// Tensor-parallel sizes in 1..max_tp that this model supports, e.g. "{1, 2, 4, 8}".
std::string SupportedTensorParallelSizes(const ModelConfig& config, int max_tp = 64);

}  // namespace tessera

#endif  // TESSERA_RUNTIME_SHARD_PLAN_H_
