// The extension points of the forward pass (DESIGN.md, "Methods plug in, the model is not
// forked"). A method implements some of these interfaces (methods/<name>/) and hands them to the
// runtime in a ForwardHooks; the model calls them at fixed points and never names a method. Every
// default is a no-op, so a hook that is not set costs nothing and the plain forward is unchanged.
//
// Hooks return decisions; the runtime performs any communication. A decision that changes
// control flow (an exit, a different row set) must be computed from data that is identical on
// every rank of the tensor-parallel group (after an all-reduce, or from VocabReducer's gathered
// statistics); with ForwardHooks::check_agreement the runtime all-gathers each decision over the
// group and fails the step, on every rank, naming the ranks that differ. Under pipeline
// parallelism a decision reaches later stages in the stage header (StageMessage).
//
// Where each hook runs, for one Forward call on one stage:
//   first stage: embedding -> InputHook::OnEmbeddings
//   other stages: StageMessage received from the previous stage (LayerContext::message)
//   for each layer l of the stage: AttentionPolicy::Variant -> layer l -> LayerHook::AfterLayer
//   after the last layer (or an exit): the logits on the stage that holds a head
//   after the step's ops are enqueued: KvPolicy::AfterStep
// LogitsHook and StepPolicy act on the step engine (runtime/step_engine.h), one level up.
#ifndef TESSERA_RUNTIME_FORWARD_HOOKS_H_
#define TESSERA_RUNTIME_FORWARD_HOOKS_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/backend.h"
#include "parallel/stage_channel.h"
#include "runtime/kv_cache.h"
#include "runtime/shard_plan.h"
#include "runtime/vocab_parallel.h"

namespace tessera {

struct ForwardBatch;
class LlamaModel;

// What the forward pass is doing when a hook is called. Views are in the backend's memory and
// valid only during the call.
struct LayerContext {
  int64_t layer = -1;        // global layer index (-1: before layer 0, at the embeddings)
  int64_t local_layer = -1;  // index within this stage (the KvCache's layer index)
  const ShardPlan* plan = nullptr;
  const ForwardBatch* batch = nullptr;  // the rows still running (after any KeepRows)
  TensorView hidden;         // [rows, hidden_size] F32 residual stream, replicated over tp
  KvCache* cache = nullptr;
  Backend* backend = nullptr;
  LlamaModel* model = nullptr;  // for LlamaModel::HeadLogits and the reducers
  StageMessage* message = nullptr;  // the control word travelling with this micro-batch
};

// Before layer 0 on the first stage: may rewrite the embeddings in place (HARP's dropout).
class InputHook {
 public:
  virtual ~InputHook() = default;
  virtual absl::Status OnEmbeddings(const LayerContext& ctx) { return absl::OkStatus(); }
};

// Query rows whose keys are not their causal prefix (Activation Beacon's beacon rows): row
// rows[j] (a running row, increasing in j) sees its slot's entries [0, prefix_end[j]), the entries
// extra[extra_begin[j] .. extra_begin[j + 1]) (each >= prefix_end[j], increasing, below the
// row's own entry), and its own key rotated at its query position; nothing else. Entries are
// those of this step (the slot's length before the step plus the row's index among the slot's
// rows in the batch). The model computes these rows' attention as the merge (by log-sum-exp) of
// a prefix attention over the cache and an attention over a scratch cache holding the extra
// keys and the row's own; the plain attention's result for them is discarded.
struct RowKeys {
  std::vector<int32_t> rows;
  std::vector<int32_t> prefix_end;
  std::vector<int32_t> extra_begin;  // [rows + 1]
  std::vector<int32_t> extra;

  bool empty() const { return rows.empty(); }
};

// The attention variant of a layer (data passed to the attention op, never a callback), and the
// rows of the layer that see other keys than their causal prefix.
class AttentionPolicy {
 public:
  virtual ~AttentionPolicy() = default;
  virtual absl::StatusOr<AttentionVariant> Variant(const LayerContext& ctx) {
    return AttentionVariant{};
  }
  // Owned by the policy, valid during the layer; null or empty: every row is causal.
  virtual const RowKeys* KeyVisibility(const LayerContext& ctx) { return nullptr; }
};

// After a layer: go on, stop this pass here (an early exit: the logits come from the head of
// this layer's stage), or keep only some rows for the remaining layers (rows dropped or tokens
// merged; `keep_rows` indexes the current rows, strictly increasing). Dropped rows write no K/V
// in later layers.
struct LayerAction {
  enum class Kind : int32_t { kContinue = 0, kExit = 1, kKeepRows = 2 };
  Kind kind = Kind::kContinue;
  std::vector<int32_t> keep_rows;

  static LayerAction Continue() { return {}; }
  static LayerAction Exit() { return {Kind::kExit, {}}; }
  static LayerAction KeepRows(std::vector<int32_t> rows) {
    return {Kind::kKeepRows, std::move(rows)};
  }
};

class LayerHook {
 public:
  virtual ~LayerHook() = default;
  virtual absl::StatusOr<LayerAction> AfterLayer(const LayerContext& ctx) {
    return LayerAction::Continue();
  }
};

// After the step's layers: drop, condense or reorder cache entries (KvCache::Compact).
class KvPolicy {
 public:
  virtual ~KvPolicy() = default;
  virtual absl::Status AfterStep(const ForwardBatch& batch, KvCache& cache) {
    return absl::OkStatus();
  }
};

// The hooks of one Forward call; null members are not called.
struct ForwardHooks {
  InputHook* input = nullptr;
  AttentionPolicy* attention = nullptr;
  LayerHook* layer = nullptr;
  KvPolicy* kv = nullptr;
  // All-gather every control decision over the tensor-parallel group and fail (InternalError on
  // every rank, naming the step, layer and ranks) when they differ.
  bool check_agreement = false;

  bool any() const { return input || attention || layer || kv; }
};

}  // namespace tessera

#endif  // TESSERA_RUNTIME_FORWARD_HOOKS_H_
