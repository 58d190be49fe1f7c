// HomerPrefill: HOMER's hierarchical prefill of one prompt (shared/specs/homer.md §1.8) on every
// rank of a model replica, through the runtime's layer-range passes (ForwardBatch::first_layer /
// last_layer), never a fork of the model.
//
//   leaves: prefix ‖ context slice ‖ suffix, positions local to each chunk (§1.2)
//   node(level k): its children, merged at the input of layer a_{k-1} (hidden states and the K/V
//       of layers < a_{k-1}: the left child's prefix, both contexts, the two suffixes averaged),
//       then layers [a_{k-1}, a_k) in one pass (attention causal by index over the node's rows)
//   after a node's last layer: the scores of its last row (Backend::KeyScores, MAX all-reduced
//       over the tensor-parallel group), the keep-list (token_selection.h) and its application to
//       the hidden rows and to the K/V of every layer the node holds (propagative refinement)
// The tree is walked depth first, so at most h + 1 nodes hold K/V at once (a pending left child
// per level and the working node), in a tree cache of h + 2 slots of max_chunk_len entries.
//
// Pipeline parallel: a node's pass starts on the stage holding layer a_{k-1} (whose previous
// stage keeps the children's hidden rows) and ends on the stage of its last layer, which
// decides the keep-list and broadcasts it over the pipeline group; each stage compacts its own
// layers. Every rank of the replica makes the same calls with the same prompt.
//
// Not thread-safe; one prompt at a time.
#ifndef TESSERA_METHODS_HOMER_HOMER_PREFILL_H_
#define TESSERA_METHODS_HOMER_HOMER_PREFILL_H_

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "methods/homer/bias_table.h"
#include "methods/homer/homer_schedule.h"
#include "runtime/llama_model.h"

namespace tessera::homer {

struct PrefillOptions {
  ScheduleSettings schedule;  // `layers` is set from the model
  const BiasTable* bias = nullptr;  // not owned; null: raw scores (sig = raw logit)
  // Tests (spec §8.2-8.3): no node is pruned; with allow_empty_levels a schedule with lpc = 0 is
  // allowed (ScheduleSettings::allow_empty_levels), so W = L gives independent chunks
  // concatenated at the end.
  bool keep_all = false;
};

struct PrefillResult {
  Schedule schedule;
  // The compact cache: slot `slot` of tree_cache(), the same entries in every layer of this
  // stage, each at its original position.
  int32_t slot = 0;
  std::vector<int32_t> positions;  // of the kept entries, in cache order
  std::vector<int32_t> source;     // index in the prompt of each kept entry
  int64_t next_position = 0;       // the first generated token's position
  // On the last stage: this rank's vocabulary shard of the logits of the prompt's last token,
  // [1, vocab_rows] F32 in the backend's memory, valid until the model's next Forward.
  TensorView logits;
  int64_t nodes = 0;  // tree nodes run
};

class HomerPrefill {
 public:
  // `model` must outlive the prefill.
  HomerPrefill(LlamaModel* model, PrefillOptions options);

  // The prompt `tokens` = prefix (first `prefix` tokens) ‖ context ‖ suffix (last `suffix`).
  // Errors (InvalidArgument) name the setting to change (homer_schedule.h).
  absl::StatusOr<PrefillResult> Run(const std::vector<int32_t>& tokens, int64_t prefix,
                                    int64_t suffix);

  // The cache the tree ran in (valid until the next Run).
  KvCache& tree_cache() { return *cache_; }
  // Copies the compact cache of `result` into slot `slot` of `dst` (a cache of the model's
  // shape), every layer of this stage.
  absl::Status CopyInto(const PrefillResult& result, KvCache& dst, int32_t slot);

 private:
  struct Node;
  absl::StatusOr<Node> Build(int64_t level, int64_t first_leaf, int64_t target);
  absl::StatusOr<Node> MakeLeaf(int64_t index);
  // Runs the node's layers and prunes it to `target` rows after its last layer.
  absl::Status RunNode(Node& node, int64_t level, int64_t target, bool root);
  absl::StatusOr<Node> Merge(Node left, Node right, int64_t level);
  absl::Status Prune(Node& node, const std::vector<int32_t>& keep, int64_t end_layer, bool root);
  // The keep-list of a node after layer end_layer - 1, the same on every rank.
  absl::StatusOr<std::vector<int32_t>> DecideKeep(const Node& node, int64_t end_layer,
                                                  int64_t target);
  int StageOf(int64_t layer) const;
  bool HoldsOutput(int64_t end_layer) const { return StageOf(end_layer - 1) == pp_rank(); }
  int pp_rank() const { return model_->plan().pp_rank; }
  absl::StatusOr<int32_t> TakeSlot();
  absl::Status EnsureCache(int64_t slots, int64_t capacity);

  LlamaModel* model_;
  PrefillOptions options_;
  Schedule schedule_;
  const std::vector<int32_t>* tokens_ = nullptr;
  std::unique_ptr<KvCache> cache_;
  std::vector<int32_t> free_slots_;
  Tensor scores_, keep_device_;
  int64_t nodes_ = 0;
  PrefillResult* result_ = nullptr;
};

}  // namespace tessera::homer

#endif  // TESSERA_METHODS_HOMER_HOMER_PREFILL_H_
