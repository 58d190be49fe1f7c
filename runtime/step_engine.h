// StepEngine: one step of a model replica, shared by generation and scoring.
//
// A step is a list of micro-batches (ForwardBatch). Each runs through this rank's stage
// (LlamaModel::Forward), in order, so that pipeline stages work on different micro-batches at
// once. On the rank that holds a micro-batch's logits (the last stage, or the stage where a hook
// ended the pass) a StepReduction turns them into a few words per logit row (a token id, a
// log-probability); the words reach the last stage and are broadcast from it over the pipeline
// group, so every rank of the replica returns the same words. The full logits never leave the
// device (VocabReducer).
//
// A StepPolicy extends the step: several passes over a micro-batch, fixed before the first runs,
// each with its own rows and hooks (a second scratch pass over the same rows), whose logits it
// combines before the reduction. Passes after the first should not persist K/V
// (ForwardBatch::persist_kv = false). A method whose later passes depend on the first pass's
// logits, or run on other rows or another cache, is a StepRunner instead (FREE's deep pass,
// HARP's reframed pass: methods/harp/harp_runner.h).
//
//   StepEngine engine(model);
//   ASSIGN_OR_RETURN(std::vector<float> words, engine.Run(micro_batches, *cache, reduction));
#ifndef TESSERA_RUNTIME_STEP_ENGINE_H_
#define TESSERA_RUNTIME_STEP_ENGINE_H_

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/llama_model.h"

namespace tessera {

// What the logits of one micro-batch become: `words_per_row` floats per logit row (ids below
// 2^24 are exact in a float), computed by `reduce` on the rank holding the logits (a collective
// over its tensor-parallel group is allowed: all ranks of that group call it).
struct StepReduction {
  int words_per_row = 1;
  std::function<absl::StatusOr<std::vector<float>>(size_t micro_batch, const ForwardBatch& batch,
                                                   const ForwardOutput& output)>
      reduce;
};

class StepPolicy {
 public:
  virtual ~StepPolicy() = default;
  // Passes over `batch` (>= 1).
  virtual int Passes(const ForwardBatch& batch) { return 1; }
  // The rows of pass `pass` (> 0); they must ask for as many logit rows as the batch does.
  virtual ForwardBatch PassBatch(const ForwardBatch& batch, int pass) { return batch; }
  // The hooks of pass `pass`.
  virtual ForwardHooks PassHooks(int pass) { return {}; }
  // The logits of every pass (this rank's vocabulary shard, [rows, vocab_rows] each, backend
  // memory) into `out` of the same shape, with the backend's ops. Default: the first pass's.
  virtual absl::Status Combine(Backend& backend, const std::vector<TensorView>& passes,
                               TensorView out) {
    return backend.CopyWithinDevice(out.data, passes[0].data, out.bytes());
  }
};

// What a runner reports of one sequence once it ends (SequenceCounters are method-defined).
struct SequenceCounters {
  std::vector<int32_t> token_layers;  // layers run to produce each generated token, in order
  std::map<std::string, double> values;  // named totals ("deep_passes", "exit_checks", ...)
  // Named per-token values, one per generated token when present ("entropy_bits").
  std::map<std::string, std::vector<double>> series;
};

// Runs the steps of a generation: the plain StepEngine, or a method that splits each step into
// passes of its own (FREE: a shallow pass, a decision, a deep pass over pending tokens). The
// generator tells it when a sequence takes a cache slot and when it ends. Every rank of the
// replica makes the same calls.
class StepRunner {
 public:
  virtual ~StepRunner() = default;
  // Slot `slot` (emptied) now holds a new sequence; its first step is its prompt. `request_id`
  // keys the sequence's randomness (GenerationRequest::id, or its index in the call), so that a
  // method's random draws do not depend on the slot or the batch.
  virtual absl::Status StartSequence(int32_t slot, uint64_t request_id) {
    return absl::OkStatus();
  }
  // One step: every micro-batch's rows; returns on every rank the reduction's words of every
  // logit row of every micro-batch, in order (as StepEngine::Run). The reduction may be called
  // with a ForwardOutput whose logit_rows are a subset of the batch's, in any order.
  virtual absl::StatusOr<std::vector<float>> Run(const std::vector<ForwardBatch>& micro_batches,
                                                 KvCache& cache,
                                                 const StepReduction& reduction) = 0;
  // The KV cache entries a prompt of `prompt_tokens` leaves in its slot once prefilled: fewer
  // for a method that compresses prompts (HOMER), which then also keeps the positions inside the
  // model's window itself. The generator sizes the cache and checks lengths with it.
  virtual int64_t PromptEntries(int64_t prompt_tokens) const { return prompt_tokens; }
  // Whether a text of any length runs as one prompt, its cache growing slower than the text
  // (Activation Beacon's memory): perplexity then scores each text as one stream through Run,
  // every row's logits asked for, instead of windows of the model's context.
  virtual bool StreamsLongInputs() const { return false; }
  // The sequences in `slots` ended (all ranks, same order); their counters.
  virtual absl::StatusOr<std::vector<SequenceCounters>> EndSequences(
      const std::vector<int32_t>& slots, KvCache& cache) {
    return std::vector<SequenceCounters>(slots.size());
  }
};

class StepEngine : public StepRunner {
 public:
  // `model` (and `policy`, when given) must outlive the engine.
  explicit StepEngine(LlamaModel* model, StepPolicy* policy = nullptr);

  // Runs `micro_batches` and returns, on every rank of the replica, the words of every logit row
  // of every micro-batch in order.
  absl::StatusOr<std::vector<float>> Run(const std::vector<ForwardBatch>& micro_batches,
                                         KvCache& cache, const StepReduction& reduction) override;
  // The same with the hooks `hooks` for every micro-batch (instead of the policy's first pass).
  absl::StatusOr<std::vector<float>> Run(const std::vector<ForwardBatch>& micro_batches,
                                         KvCache& cache, const StepReduction& reduction,
                                         const ForwardHooks& hooks);

 private:
  // One micro-batch through the policy's passes; the combined output on the logits' rank.
  absl::StatusOr<ForwardOutput> RunPasses(const ForwardBatch& batch, KvCache& cache,
                                          const ForwardHooks* hooks);
  int StageOfLayer(int64_t layer) const;
  absl::StatusOr<std::vector<float>> Run(const std::vector<ForwardBatch>& micro_batches,
                                         KvCache& cache, const StepReduction& reduction,
                                         const ForwardHooks* hooks);

  LlamaModel* model_;
  StepPolicy* policy_;
  std::vector<Tensor> pass_logits_;  // copies of the earlier passes' logits
  Tensor combined_;
};

}  // namespace tessera

#endif  // TESSERA_RUNTIME_STEP_ENGINE_H_
