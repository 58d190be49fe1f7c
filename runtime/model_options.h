// What a method needs loaded beyond the plain model: heads after some layers (an early exit) and
// tensors of its own in the checkpoint (activation beacon's projections), each sliced across
// tensor-parallel ranks like one of the model's own weights. The loader (LoadLlamaWeights), the
// device upload and the memory planner (tessera plan) all read the same description, so what is
// planned is what is loaded.
#ifndef TESSERA_RUNTIME_MODEL_OPTIONS_H_
#define TESSERA_RUNTIME_MODEL_OPTIONS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "kernels/dtype.h"
#include "runtime/model_config.h"
#include "runtime/shard_plan.h"

namespace tessera {

struct ExtraWeight {
  // How a rank's slice is taken, named after the model weight sliced the same way.
  enum class Shard {
    kReplicated,   // whole on every rank
    kHeadRows,     // rows by query heads (like q_proj: [heads * head_dim, ...])
    kKvHeadRows,   // rows by KV heads (like k_proj / v_proj)
    kHeadColumns,  // columns by query heads (like o_proj: [..., heads * head_dim])
    kFfnRows,      // rows by MLP units (like gate_proj / up_proj)
    kFfnColumns,   // columns by MLP units (like down_proj)
    kVocabRows,    // rows by vocabulary shard (like embed_tokens)
  };
  // Checkpoint name; "{layer}" stands for the layer index of a per-layer tensor, which the
  // stages holding that layer load. Other tensors: kVocabRows on the first stage, the rest on
  // every stage.
  std::string name;
  std::vector<int64_t> shape;  // the full (unsharded) shape in the checkpoint, rank 1 or 2
  Shard shard = Shard::kReplicated;
  bool optional = false;  // absent from the checkpoint: not loaded (the method has a default)
};

// Extension tokens: ids [vocab_size, vocab_size + count) that a ForwardBatch may carry beside the
// vocabulary (Activation Beacon's beacon tokens). Such a row embeds as row (id - vocab_size) of
// the extra weight `embedding` ([count, hidden_size], kReplicated), or as the embedding of
// `fallback_token` when that weight is not loaded; in every layer it projects q, k, v and o with
// the per-layer extra weights `q`, `k`, `v`, `o` ("{layer}" names, sliced like the layer's own
// q/k/v/o_proj), or with the layer's own weight where one is not loaded; the norms and the MLP
// are the layer's. An extension row has no logits. Every name must be one of extra_weights.
struct ExtensionTokens {
  int64_t count = 0;  // 0: none
  std::string embedding;
  int32_t fallback_token = 0;
  std::string q, k, v, o;
};

struct ModelOptions {
  // Global layers after which a head (final norm + LM head) may be applied: the stages holding
  // them load a copy of the head (an early exit's shallow head, LayerContext users of HeadLogits).
  std::vector<int64_t> head_after_layers;
  std::vector<ExtraWeight> extra_weights;
  ExtensionTokens extension;
};

// A rank's slice of an extra weight: rows (axis 0) or columns (axis 1) [begin, begin + count).
struct ExtraWeightSlice {
  int axis = 0;
  int64_t begin = 0, count = 0;
};
ExtraWeightSlice SliceOf(const ExtraWeight& weight, const ModelConfig& config,
                         const ShardPlan& plan);

// The checkpoint names of `weight` that the stage of `plan` loads (one per layer of the stage
// for a per-layer tensor).
std::vector<std::string> NamesOnStage(const ExtraWeight& weight, const ShardPlan& plan);

// Whether the stage of `plan` loads a head beyond the last stage's.
bool HeadOnStage(const ModelOptions& options, const ShardPlan& plan);

// Bytes of this rank's slices of every extra weight, in `dtype`.
uint64_t ExtraWeightBytes(const ModelOptions& options, const ModelConfig& config,
                          const ShardPlan& plan, DType dtype);

}  // namespace tessera

#endif  // TESSERA_RUNTIME_MODEL_OPTIONS_H_
