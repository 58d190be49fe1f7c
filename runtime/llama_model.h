// LlamaModel: the Llama forward pass over a ragged batch of tokens.
//
// A ForwardBatch lays the tokens of several sequences end to end. Token i belongs to the
// sequence in cache slot slots[i] and is rotated at positions[i]. In every layer its K/V is
// appended after the slot's last cache entry (a slot's tokens in batch order), and it attends to
// the slot's entries up to and including its own: the whole sequence so far, or what a method
// kept of it (KvCache::Compact). Prefill (many tokens of one sequence), decode (one token per
// sequence) and mixtures of both are the same call. A new sequence starts in an empty slot
// (KvCache::Clear).
//
//   LlamaModel::Load(dir, backend) -> model
//   auto cache = model->MakeCache(n_slots, max_seq);
//   model->Forward({tokens, positions, slots, logit_rows}, *cache, &logits);  // [rows, vocab]
//
// Methods plug in through ForwardHooks (runtime/forward_hooks.h): the layer loop calls them at
// fixed points, passing a LayerContext (global layer, plan, the rows still running, hidden
// states, cache, backend); a hook may end the pass early (an exit: the logits then come from the
// head of that layer's stage) or keep a subset of the rows for the remaining layers. Stages
// learn of both from the stage header.
//
// Sharded: with a ModelParallelism, the model holds this rank's ShardPlan slices. Tensor-parallel
// ranks all-reduce after the vocabulary-parallel embedding and after each RowParallel projection
// (o, down); a pipeline stage receives its input from the previous stage and sends its output to
// the next; the last stage returns its vocabulary shard of the logits. Every rank of a replica
// makes the same Forward calls with the same batch.
//
// Not thread-safe: scratch buffers are reused across calls.
#ifndef TESSERA_RUNTIME_LLAMA_MODEL_H_
#define TESSERA_RUNTIME_LLAMA_MODEL_H_

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/backend.h"
#include "kernels/status_macros.h"
#include "runtime/decode_graphs.h"
#include "runtime/kv_cache.h"
#include "runtime/llama_weights.h"
#include "runtime/model_config.h"
#include "parallel/communicator.h"
#include "parallel/stage_channel.h"
#include "parallel/world_layout.h"
#include "runtime/forward_hooks.h"
#include "runtime/model_options.h"
#include "runtime/safetensors.h"
#include "runtime/shard_plan.h"
#include "runtime/tensor.h"
#include "runtime/vocab_parallel.h"

namespace tessera {

struct ForwardBatch {
  std::vector<int32_t> tokens;      // [n] token ids
  std::vector<int32_t> positions;   // [n] position within its sequence
  std::vector<int32_t> slots;       // [n] KV cache slot of its sequence
  std::vector<int32_t> logit_rows;  // indices into [0, n) whose logits are wanted, in output order
  int32_t step = 0;         // checked across pipeline stages
  int32_t micro_batch = 0;  // checked across pipeline stages
  // false: a pass whose K/V is not kept (a second, scratch pass over rows already in the cache):
  // it appends after each slot's entries as usual, and every slot is cut back to its length from
  // before the pass when the pass ends.
  bool persist_kv = true;
  // A pass that resumes at global layer `first_layer` (> 0) from the residual stream entering it,
  // `input` [n, hidden_size] F32 in the backend's memory, given on the stage that ran layer
  // first_layer - 1 (ignored elsewhere): FREE's deep pass over states saved at its exit. Stages
  // before that one do nothing; layers before first_layer read and write no K/V. 0: from the
  // embeddings.
  int64_t first_layer = 0;
  TensorView input;
  // Each layer only writes the K/V of its rows, from its own input norm applied to the
  // residual stream, which passes through unchanged (no attention, MLP or tensor-parallel
  // communication) and no logits are made: CALM's state propagation after an exit, with
  // first_layer the exit and `input` the exited state.
  bool kv_only = false;
  // > 0: the pass ends after global layer last_layer - 1 (> first_layer - 1): the stage that ran
  // that layer returns the residual stream leaving it (ForwardOutput::hidden) and makes no
  // logits; later stages do nothing, and layers from last_layer on read and write no K/V. With
  // first_layer, a pass over a layer range: HOMER's tree nodes. 0: to the last layer.
  int64_t last_layer = 0;
  // [n] or empty (= positions): the position at which each row's key is rotated, written to the
  // cache and recorded there, where it differs from the query's (a beacon row's key moves to its
  // memory position while its query condenses at its production position). The row's own key in
  // attention is the cache's; RowKeys rows see their own key at the query position instead.
  // Refused with a rope_scaling whose frequencies depend on the length (dynamic).
  std::vector<int32_t> key_positions;
};

// What one Forward call produced on this rank.
struct ForwardOutput {
  // [rows, plan().vocab_rows] F32 in the backend's memory, this rank's vocabulary shard of the
  // logits of the batch's logit_rows that are still running (all of them unless a hook kept a
  // subset; `logit_rows` then says which), on the stage that produced them: the last stage, or
  // the stage where the pass exited. Empty elsewhere. Valid until the next Forward.
  TensorView logits;
  std::vector<int32_t> logit_rows;  // indices into batch.logit_rows, one per row of `logits`
  int64_t exit_layer = -1;  // the global layer after which a hook ended the pass; -1: none
  StageMessage message;     // the control word as it left (or reached) this stage
  // With ForwardBatch::last_layer, on the stage that ran layer last_layer - 1: the residual
  // stream leaving it, [rows still running, hidden_size] F32 in the backend's memory, valid until
  // the next Forward. Empty elsewhere.
  TensorView hidden;
};

// How the model is split across ranks. The communicators are not owned and may be null when
// their group has one rank.
struct ModelParallelism {
  WorldLayout layout;                 // tp, pp and this rank
  Communicator* tp = nullptr;         // this rank's tensor-parallel group
  Communicator* pp = nullptr;         // this rank's pipeline group
  std::vector<int64_t> stage_layers;  // layers per stage; empty: balanced
  // Element type of this rank's KV cache (MakeCache, AcquireCache): F32 (default), F16 or BF16.
  // Not a split, but a per-rank choice made at load, carried here so that every loader passes it.
  DType kv_dtype = DType::kF32;
};

class LlamaModel {
 public:
  // Reads DIR/config.json and maps the safetensors weights. `backend` must outlive the model.
  // The layout is checked against the config (MakeShardPlan) before any weight is read.
  static absl::StatusOr<std::unique_ptr<LlamaModel>> Load(const std::string& model_dir,
                                                          Backend* backend,
                                                          const ModelParallelism& parallel = {},
                                                          const ModelOptions& options = {});

  const ModelConfig& config() const { return config_; }
  const ShardPlan& plan() const { return plan_; }
  const ModelParallelism& parallel() const { return parallel_; }
  Backend& backend() const { return *backend_; }
  const LlamaWeights& weights() const { return weights_; }
  size_t weight_bytes() const { return weights_.bytes; }

  // Reductions over the logits Forward leaves on the backend (greedy choice, log-probabilities,
  // confidence statistics, gathered logits for sampling), over this rank's tensor-parallel
  // group. Its device scratch lives as long as the model.
  VocabReducer& vocab() { return *vocab_; }

  // Decode steps (one token per sequence) on a single rank replay CUDA graphs, one per batch
  // size and cache (see runtime/decode_graphs.h). FailedPrecondition unless the backend is CUDA.
  absl::Status EnableDecodeGraphs(bool enable);

  // A KV cache for this rank's layers and KV heads, in the backend's memory, of
  // parallel().kv_dtype.
  absl::StatusOr<std::unique_ptr<KvCache>> MakeCache(int64_t n_slots, int64_t max_seq) const;
  // The same with one layer's storage shared by every layer (KvCache::CreateLayerScratch): for a
  // pass over whole sequences that keeps no K/V.
  absl::StatusOr<std::unique_ptr<KvCache>> MakeLayerScratchCache(int64_t n_slots,
                                                                 int64_t max_seq) const;

  // The model's own KV cache, with at least `n_slots` slots of at least `max_seq` positions:
  // kept between calls and reallocated (exactly as asked) only when a request does not fit, so
  // that repeated Generate / Loglikelihood calls allocate no device memory and captured decode
  // graphs stay valid. Every slot is empty on return. Valid until the next AcquireCache; one user
  // at a time.
  absl::StatusOr<KvCache*> AcquireCache(int64_t n_slots, int64_t max_seq);

  // Runs the batch through this stage's layers, appending its K/V to `cache` (OutOfRange when a
  // slot's entries would exceed the cache's capacity). On the last stage,
  // writes the logits of batch.logit_rows for this rank's vocabulary shard into `logits` as F32
  // [logit_rows.size(), plan().vocab_shard] in host memory (columns past the vocabulary are
  // -inf); other stages
  // leave `logits` untouched. With one rank the shard is the whole vocabulary.
  absl::Status Forward(const ForwardBatch& batch, KvCache& cache, Tensor* logits);
  // The same with hooks, leaving the logits in the backend's memory (see ForwardOutput; for
  // VocabReducer). Steps with hooks never replay CUDA graphs.
  absl::StatusOr<ForwardOutput> Forward(const ForwardBatch& batch, KvCache& cache,
                                        const ForwardHooks& hooks = {});

  // The attention variant of every pass whose hooks bring no AttentionPolicy of their own (a
  // method that changes attention everywhere: Top-theta, Top-k), for generation, scoring and
  // benchmarks alike. Not owned; null: plain attention. Such passes never replay CUDA graphs.
  void SetAttentionPolicy(AttentionPolicy* policy) { attention_policy_ = policy; }
  AttentionPolicy* attention_policy() const { return attention_policy_; }

  // Whether this stage holds a head (the last stage, or one asked for in ModelOptions).
  bool has_head() const { return !weights_.lm_head.empty(); }
  // The final norm and this rank's LM head shard applied to `hidden` [rows, hidden_size] F32
  // (backend memory, e.g. LayerContext::hidden or a subset of its rows): [rows, plan().vocab_rows]
  // F32 in the backend's memory, valid until the next HeadLogits or Forward. For hooks.
  absl::StatusOr<TensorView> HeadLogits(TensorView hidden);

 private:
  LlamaModel() = default;
  absl::Status CheckBatch(const ForwardBatch& batch, const KvCache& cache) const;
  // Appends the batch's tokens to their slots in the layers [from, layers) of `cache` (each
  // (layer, slot) first cut back to its length before this step) and fills entries_host_ with
  // each token's entry (uniform_entries_: one row [n] for all layers, else [layers, n]).
  absl::Status ReserveEntries(const ForwardBatch& batch, KvCache& cache, int64_t from);
  // Resizes every activation to `rows` token rows, and the LM head's input and output to
  // `logit_rows` rows (which may exceed the tokens: a row's logits asked for twice); no
  // reallocation when shrinking.
  absl::Status ResizeActivations(int64_t rows, int64_t logit_rows);
  // The activation buffers, listed once.
  std::vector<std::pair<Tensor*, int64_t>> Activations();  // each with its row width
  absl::Status UploadBatch(const ForwardBatch& batch);
  absl::Status UploadWeights();
  // `host` into `device` (resized to its length).
  template <typename T>
  absl::Status Upload(const std::vector<T>& host, Tensor* device) {
    RETURN_IF_ERROR(device->Resize({static_cast<int64_t>(host.size())}));
    return backend_->CopyToDevice(device->view().data, host.data(), host.size() * sizeof(T));
  }
  // Rotates q (skipped when empty) and k at the batch's positions.
  absl::Status ApplyRope(const ForwardBatch& batch, TensorView q, TensorView k);
  absl::Status Layer(const LayerWeights& w, const LayerContext& ctx, const AttentionVariant& variant,
                     const RowKeys* row_keys);
  // Extension rows (ModelOptions::extension; runtime/llama_model_extension.cc). Resolves each
  // layer's extension projections from weights_.extra and checks them against the options.
  absl::Status ResolveExtension();
  // The extension rows of the uploaded batch, and the device index maps for merging them.
  absl::Status UploadExtensionRows(const ForwardBatch& batch);
  // Replaces the embeddings of the extension rows (after any tp all-reduce).
  absl::Status EmbedExtensionRows();
  // The extension rows of `in` [n, width] into ext_in_ (once per projection input), then out's
  // extension rows become those rows x w^T (w empty: nothing to do).
  absl::Status GatherExtensionRows(TensorView in);
  absl::Status ProjectExtensionRows(TensorView w, TensorView out);
  // target [n, width] = rows of [target ; rows] (rows: [m, width]) picked by `map` ([n] I32):
  // row i of target becomes row map[i] of the concatenation.
  absl::Status MergeRows(TensorView target, TensorView rows, TensorView map);
  // The attention of `row_keys`' rows (see RowKeys) into their rows of `attn`.
  absl::Status AttendRowKeys(const RowKeys& row_keys, const LayerContext& ctx, TensorView q,
                             TensorView k, TensorView v, TensorView attn, float scale);
  absl::Status CheckRowKeys(const RowKeys& row_keys, int64_t layer) const;
  // Rotates k_alt_ (the projected, unrotated keys) at the batch's key positions.
  absl::Status RotateKeysAtKeyPositions(TensorView k_alt);
  // Runs the after-layer hook and checks that the tp group agrees on its decision.
  absl::StatusOr<LayerAction> AfterLayer(const ForwardHooks& hooks, const LayerContext& ctx);
  // Keeps the running rows `keep` (indices into the running rows): gathers the hidden states,
  // narrows the batch and re-reserves cache entries for the layers from local layer `from`.
  absl::Status KeepRows(const std::vector<int32_t>& keep, int64_t from, KvCache& cache);
  // Narrows running_ to the running rows `keep` (host bookkeeping only) and re-reserves the
  // cache entries of the layers from `from`; sizes and uploads the batch's buffers.
  absl::Status NarrowTo(const std::vector<int32_t>& keep, int64_t from, KvCache& cache);
  // Ends the pass after local layer `local_layer`: the head's logits (this stage must hold a
  // head) and an empty message with kExited to the later stages.
  absl::Status ExitAt(int64_t local_layer, KvCache& cache, StageMessage& message,
                      ForwardOutput* out);
  // A later stage's input: the header, an exit (forwarded on), a row subset, the activations.
  absl::Status ReceiveFromPreviousStage(const ForwardBatch& batch, KvCache& cache,
                                        StageMessage* message, bool* exited);
  // out = x * w^T summed over the tensor-parallel group (RowParallel), then added to the residual.
  absl::Status RowParallelResidual(TensorView x, TensorView w, TensorView ext_w = TensorView());
  absl::Status LmHead(const ForwardBatch& batch, TensorView hidden, TensorView rows, Tensor* out);
  absl::Status CopyLogits(const ForwardBatch& batch, Tensor* logits);
  // Resizes activations (first to `rows_capacity` rows, when > 0) and uploads the index arrays.
  absl::Status Prepare(const ForwardBatch& batch, int64_t rows_capacity);
  // Enqueues the whole step on the backend (no synchronisation on a single rank).
  absl::Status Enqueue(const ForwardBatch& batch, KvCache& cache, const ForwardHooks& hooks,
                       ForwardOutput* out);
  bool GraphEligible(const ForwardBatch& batch) const;
  // The pipeline stage that ran layer batch.first_layer - 1 (holds a resumed pass's input).
  int InputStage(const ForwardBatch& batch) const { return StageOf(batch.first_layer - 1); }
  // The pipeline stage holding global layer `layer` (the last one past the model's layers).
  int StageOf(int64_t layer) const;
  // This stage's local layers the batch runs: [first, end).
  int64_t LocalEnd(const ForwardBatch& batch) const;
  // A resumed pass on the stage holding its input: the input into x_, then either this stage's
  // layers from first_layer on, or (first_layer on the next stage) a send to the next stage.
  absl::Status Resume(const ForwardBatch& batch, int64_t* first_local, bool* sent);

  ModelConfig config_;
  ModelParallelism parallel_;
  ShardPlan plan_;
  std::unique_ptr<Checkpoint> checkpoint_;
  LlamaWeights weights_;
  Backend* backend_ = nullptr;
  AttentionPolicy* attention_policy_ = nullptr;
  std::vector<Tensor> device_weights_;  // weight copies on a device backend
  std::unique_ptr<DecodeGraphs> graphs_;  // null: every step runs eagerly
  std::unique_ptr<KvCache> pooled_cache_;  // AcquireCache's
  std::unique_ptr<VocabReducer> vocab_;
  std::vector<const void*> graph_buffers_;  // the activation buffers the graphs captured
  float attention_scaling_ = 1.0f;
  ModelOptions options_;
  // The Forward in progress: the rows still running (the call's batch, or active_ once a hook
  // kept a subset: active_rows_ are then their indices in the batch and logit_map_ the indices
  // of their logit rows in batch.logit_rows), whether logits were made on this stage, and each
  // (local layer, slot)'s cache length before the step.
  const ForwardBatch* running_ = nullptr;
  ForwardBatch active_;
  std::vector<int32_t> active_rows_, logit_map_;
  bool subset_ = false, produced_logits_ = false;
  std::map<std::pair<int64_t, int32_t>, int32_t> base_lengths_;
  Tensor exit_normed_, exit_head_;  // HeadLogits' scratch and output
  Tensor keep_rows_;                // KeepRows' row indices
  // Backend memory, resized per call: residual x, normed h, q/k/v, attention output, MLP
  // gate/up, the rows for the LM head, a RowParallel partial sum, the LM head output, the rotary
  // frequencies, and the batch's token ids, positions, slots, logit rows and cache entries.
  Tensor x_, h_, q_, k_, v_, attn_, gate_, up_, selected_, partial_, head_, inv_freq_;
  Tensor tokens_, positions_, slots_, rows_, entries_;
  std::vector<int32_t> entries_host_;  // the cache entry of each token, see ReserveEntries
  // Extension rows of the uploaded batch: their indices (host and device), the merge map
  // [n] (row i -> i, or n + its index among them), each row's embedding row, and scratch.
  std::vector<int32_t> ext_rows_host_;
  Tensor ext_rows_, ext_map_, ext_ids_, ext_in_, ext_cat_;
  TensorView ext_embed_;  // [count, hidden] or empty (fallback token)
  // Key positions (ForwardBatch::key_positions) and the unrotated keys.
  Tensor key_positions_, k_alt_;
  // AttendRowKeys' scratch: the rows, their prefix entries, slots, scratch entries, gather
  // indices, the gathered q/k/v rows, the scratch cache, the two partial results and the merge.
  struct RowKeyBuffers {
    Tensor rows, prefix_entries, prefix_slots, own_slots, own_entries, gather, lse_map, attn_map;
    Tensor q, k, v, k_cache, v_cache, out_a, lse_a, out_b, lse_b, lse_cat, out_cat;
  };
  std::unique_ptr<RowKeyBuffers> row_key_buffers_;
  bool uniform_entries_ = true;
};

}  // namespace tessera

#endif  // TESSERA_RUNTIME_LLAMA_MODEL_H_
