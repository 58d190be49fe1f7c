// MemoryPlan: per-rank weight bytes and KV-cache capacity of a model on a cluster layout, from
// config.json alone (no weights are read), for `tessera plan`.
//
// For every (pp_rank, tp_rank) position of one replica, from the ShardPlan's slices:
//   weights  = first stage: embedding [vocab_shard, hidden]
//            + per layer of the stage: 2 RMSNorm [hidden] (replicated), q [heads*head_dim, hidden],
//              k and v [kv_heads*head_dim, hidden] (a replicated KV head counts on every rank),
//              o [hidden, heads*head_dim], gate and up [ffn, hidden], down [hidden, ffn]
//            + last stage: final norm [hidden] and LM head [vocab_shard, hidden] (with tied
//              embeddings and pp == 1 the head is the embedding, counted once; with pp > 1 the
//              last stage holds its own copy); likewise any stage holding a layer after which a
//              method applies a head (ModelOptions::head_after_layers)
//            + a method's extra weights, this rank's slices (ModelOptions::extra_weights; an
//              optional one is counted as present: the plan reads no weights)
//     all in the weight dtype. vocab_shard is the padded shard width (vocabulary rounded up to a
//     multiple of tp), the shape a GPU backend allocates on every rank; the CPU backend maps only
//     the real rows, so its resident bytes can be smaller by padding x hidden x dtype.
//   KV bytes per token = stage layers x local kv_heads x head_dim x 2 (K and V) x KV dtype size
//   usable             = floor(device_memory x utilisation)
//   KV space           = usable - weights - workspace   (negative: the weights do not fit)
//   KV capacity tokens = floor(KV space / KV bytes per token)
// Every rank of a replica holds a slice of every cached token, so the replica can cache as many
// tokens as its tightest rank; sequences of the full context = capacity / max_context.
#ifndef TESSERA_RUNTIME_MEMORY_PLAN_H_
#define TESSERA_RUNTIME_MEMORY_PLAN_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/dtype.h"
#include "parallel/world_layout.h"
#include "runtime/model_config.h"
#include "runtime/model_options.h"

namespace tessera {

inline constexpr uint64_t kGiB = uint64_t{1} << 30;

struct MemoryPlanOptions {
  DType weight_dtype = DType::kBF16;
  DType kv_dtype = DType::kF32;  // as the runtime's default (ModelParallelism::kv_dtype)
  uint64_t device_memory_bytes = 0;     // per device (GPU); must be > 0
  double memory_utilization = 0.90;     // fraction of device memory Tessera may use, in (0, 1]
  uint64_t workspace_bytes = 2 * kGiB;  // activations, communication buffers, allocator slack
  // Tokens per sequence; 0: the config's max_position_embeddings. Past it only with a rope_scaling
  // that extends the context (ContextLimit, runtime/context_limit.h).
  int64_t max_context = 0;
  std::vector<int64_t> stage_layers;  // as MakeShardPlan; empty: balanced stages
  ModelOptions model;  // a method's heads on earlier stages and extra weights, as the loader's
};

enum class PlanVerdict {
  kFits,               // weights fit and at least one max-context sequence fits
  kContextDoesNotFit,  // weights fit, but the KV space holds less than one max-context sequence
  kWeightsDoNotFit,    // weights + workspace exceed the usable memory
};

// "fits", "context_does_not_fit", "does_not_fit" (the JSON spelling).
const char* PlanVerdictName(PlanVerdict verdict);

struct RankMemory {
  int pp_rank = 0, tp_rank = 0;
  int64_t layer_begin = 0, layer_end = 0;  // this stage's layers [begin, end)
  int64_t heads = 0, kv_heads = 0, ffn = 0;
  int64_t vocab_shard = 0;         // padded rows of the embedding / LM head shard
  int64_t vocab_padding_rows = 0;  // of which beyond the real vocabulary
  // Weight bytes by part; weight_bytes is their sum.
  uint64_t embedding_bytes = 0, layer_bytes = 0, final_norm_bytes = 0, lm_head_bytes = 0;
  uint64_t method_bytes = 0;  // a method's extra weights (ModelOptions::extra_weights)
  uint64_t weight_bytes = 0;
  uint64_t kv_bytes_per_token = 0;
  int64_t kv_space_bytes = 0;      // usable - weights - workspace; negative when short
  int64_t kv_capacity_tokens = 0;  // >= 0
  int64_t max_context_sequences = 0;
  PlanVerdict verdict = PlanVerdict::kFits;

  // Same numbers (a table may print such ranks as one row).
  bool SameNumbers(const RankMemory& o) const;
};

struct MemoryPlan {
  WorldLayout layout;
  MemoryPlanOptions options;
  int64_t max_context = 0;
  uint64_t usable_bytes = 0;      // floor(device_memory x utilisation)
  uint64_t model_parameters = 0;  // whole model, unsharded, unpadded
  std::vector<RankMemory> ranks;  // one replica: index pp_rank * tp + tp_rank
  // The replica: its tightest rank.
  int64_t kv_capacity_tokens = 0;
  int64_t max_context_sequences = 0;
  PlanVerdict verdict = PlanVerdict::kFits;

  // One line, e.g. "fits: max context of 4096 tokens fits 345 sequences per replica".
  std::string Summary() const;
};

// The plan for every position of one replica of `layout` (its dp is kept for totals). An
// impossible layout returns MakeShardPlan's error (which names the valid tp sizes); bad options
// return InvalidArgument naming the option.
absl::StatusOr<MemoryPlan> MakeMemoryPlan(const ModelConfig& config, const WorldLayout& layout,
                                          const MemoryPlanOptions& options);

// Parses a memory size: a number with a unit, binary (KiB, MiB, GiB, TiB) or decimal (B, KB, MB,
// GB, TB), case-insensitive, optional space: "80GiB", "80GB", "81920MiB", "1.5 TiB". A bare
// number is bytes. Single-letter units ("80G") are refused as ambiguous.
absl::StatusOr<uint64_t> ParseByteSize(const std::string& text);

// Parses a floating-point dtype: bf16 / bfloat16, f16 / fp16 / float16 / half, f32 / fp32 /
// float32 / float (case-insensitive).
absl::StatusOr<DType> ParseFloatDType(const std::string& name);

// "bf16", "f16", "f32".
const char* ShortDTypeName(DType dtype);

}  // namespace tessera

#endif  // TESSERA_RUNTIME_MEMORY_PLAN_H_
