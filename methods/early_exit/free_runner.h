// FreeRunner: generation steps with one early exit (shared/specs/early_exit.md §1.3, §6.1-6.5):
// FREE's shallow-deep decoding with synchronized parallel decoding, and the static baseline.
//
// One step over the generator's micro-batches:
//   1. Shallow pass: every row runs blocks 0..L_s-1 and leaves through the model's final norm and
//      LM head (a head after layer L_s - 1, on the stage that runs it: s*). The residual stream of
//      every row is saved on s*, in its sequence's pending stack.
//   2. On s*'s tensor-parallel group: the confidence of each sequence's row from the vocabulary-
//      parallel statistics (one all-gather), the decision c > tau (strictly; decode rows only:
//      a prompt always runs at full depth) and the shallow token; these reach every rank.
//   3. Deep pass, only for the sequences that go deep (their prompt, a decode row that did not
//      exit, or a stack at max_pending): their whole pending stack, positions D..t, resumes at
//      block L_s as one causal chunk (ForwardBatch::first_layer) and appends its K/V to the deep
//      layers, so every layer's cache stays what a full-depth model would hold. The last row's
//      logits give the token; with an adaptive threshold, every checked row's deep argmax is
//      compared with its shallow one (the calibration pairs).
// Nothing runs in the deep layers in a step where every sequence exits.
//
// Per sequence (slot) state, identical on every rank (it is derived from the words every rank
// receives): n (entries in the shallow layers), D (in the deep layers) and the pending rows
// D..n-1 with their confidence and shallow argmax; tau fixed when the sequence starts. Only s*
// holds the pending residual streams ([rows, hidden_size] F32 per slot, backend memory).
//
// STATIC: every decode row exits (no check), nothing is saved, and the deep layers only ever see
// prompts.
#ifndef TESSERA_METHODS_EARLY_EXIT_FREE_RUNNER_H_
#define TESSERA_METHODS_EARLY_EXIT_FREE_RUNNER_H_

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "configs/method_settings.pb.h"
#include "methods/early_exit/beta_mixture.h"
#include "runtime/forward_hooks.h"
#include "runtime/llama_model.h"
#include "runtime/step_engine.h"

namespace tessera {

struct FreeRunnerOptions {
  config::EarlyExitSettings settings;  // validated; exit_layer resolved (> 0)
  // All-gather each step's decisions over the tensor-parallel group and fail naming the step and
  // the ranks that differ (--check-rank-agreement).
  bool check_agreement = false;
  // Replay: the decision of every checked row, in order (1 exit, 0 deep), instead of c > tau;
  // the run fails when it needs more decisions than given. Empty: decide from the confidence.
  std::vector<uint8_t> forced_decisions;
  // Called on the shallow pass's embeddings (not owned; tests inject per-rank noise with it).
  InputHook* input_hook = nullptr;
};

class FreeRunner : public StepRunner {
 public:
  // `model` must outlive the runner and hold a head after layer exit_layer - 1.
  static absl::StatusOr<std::unique_ptr<FreeRunner>> Create(LlamaModel* model,
                                                            FreeRunnerOptions options);

  ~FreeRunner() override;

  absl::Status StartSequence(int32_t slot, uint64_t request_id) override;
  absl::StatusOr<std::vector<float>> Run(const std::vector<ForwardBatch>& micro_batches,
                                         KvCache& cache, const StepReduction& reduction) override;
  // Flushes (flush_at_end) and reports each sequence's counters.
  absl::StatusOr<std::vector<SequenceCounters>> EndSequences(const std::vector<int32_t>& slots,
                                                             KvCache& cache) override;

  // Runs the pending rows of `slots` through the deep layers (no token is emitted): afterwards
  // every layer of their caches holds every token. For tests and reused caches.
  absl::Status Flush(const std::vector<int32_t>& slots, KvCache& cache);

  // Every decision taken so far, in order (1 exit, 0 deep), on every rank.
  const std::vector<uint8_t>& decisions() const { return decisions_; }
  // The confidence behind each decision (as the shallow pass sent it: F32).
  const std::vector<float>& confidences() const { return confidences_; }
  double threshold() const { return tau_.Threshold(); }
  const BetaMixtureThreshold& calibration() const { return tau_; }

 private:
  struct PendingRow {
    int32_t token = 0;       // the row's input token
    bool checked = false;    // a decode row whose exit was checked (has a confidence)
    float confidence = 0;
    int32_t shallow_top1 = 0;
  };
  struct Slot {
    bool prefilled = false;  // its prompt has run: its next rows are decode rows
    int32_t deep_length = 0;  // D: tokens in the deep layers' cache
    std::vector<PendingRow> pending;  // positions D .. D + size - 1 (shallow layers only)
    double tau = 1.0;        // fixed when the sequence started
    SequenceCounters counters;
    double exits = 0, checks = 0, deep_passes = 0, deep_rows = 0, max_chunk = 0, flushes = 0;
  };
  // A sequence of one step: where its logit row is and what happens to it.
  struct StepRow {
    size_t micro_batch = 0;
    int32_t logit_index = 0;  // into the micro-batch's logit_rows
    int32_t slot = 0;
    bool decode = false, exits = false, deep = false;
    int32_t token = 0;        // the emitted token
  };

  FreeRunner(LlamaModel* model, FreeRunnerOptions options);
  // The shallow pass's hook: saves the rows' residual streams and ends the pass at L_s.
  class ExitHook;
  absl::Status SaveRows(const LayerContext& ctx);
  // The deep pass over the pending stacks of `rows` with deep set (all of them for a flush);
  // fills their tokens (emission rows) and calibration pairs.
  absl::Status DeepPass(std::vector<StepRow>& rows, const std::vector<ForwardBatch>& micro_batches,
                        KvCache& cache, const StepReduction* reduction, int32_t step);
  absl::Status CheckAgreement(int32_t step, const std::vector<StepRow>& rows);
  bool Static() const;

  LlamaModel* model_;
  FreeRunnerOptions options_;
  int64_t exit_layer_ = 0;  // L_s
  bool holds_exit_ = false;  // this rank runs layer L_s - 1 (s*)
  StepEngine engine_;
  std::unique_ptr<ExitHook> exit_hook_;
  std::vector<Slot> slots_;
  std::vector<Tensor> saved_;       // s* only: per slot, [capacity, hidden_size] residual streams
  std::vector<Tensor> deep_input_;  // s* only: per micro-batch, the deep pass's input rows
  BetaMixtureThreshold tau_;
  std::vector<uint8_t> decisions_;
  std::vector<float> confidences_;
  size_t replayed_ = 0;
  int32_t last_step_ = 0;
};

}  // namespace tessera

#endif  // TESSERA_METHODS_EARLY_EXIT_FREE_RUNNER_H_
