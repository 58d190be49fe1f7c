// CalmRunner: the CALM baseline of early exit (shared/specs/early_exit.md §2, §3, §6.6), with
// the vocabulary-reduced confidence of the fork (§3.2) and its fixes.
//
// One step over the generator's micro-batches, with checks after c_1 < ... < c_m blocks:
//   segment k = 1..m: the rows still running run blocks c_{k-1}..c_k - 1 (the first from the
//     embeddings, later ones resuming from the states the previous segment saved) and leave
//     through the final norm and LM head after block c_k - 1 (a head on the stage running it);
//     on that stage's tensor-parallel group each decode row's confidence is computed from the
//     vocabulary-parallel statistics and the row exits iff c > threshold. An exited row emits
//     the head's token; its remaining blocks only write K and V computed from the exited state
//     (state propagation: a pass with ForwardBatch::kv_only, no attention, MLP or tp traffic).
//   last segment: the rows still running run blocks c_m..L-1 and the final head.
// Prompts run every segment and never exit. Unlike FREE the propagated K/V are not the full
// model's: CALM's approximation.
//
// Vocabulary reduction: at a step's first check each decode row also takes the global top K0
// of its logits (one all-gather), ordered by logit. A later check computes the LM head only for
// the first k of them that lie in this rank's shard (a gathered-row GEMV), the other logits -inf,
// so the statistics renormalise over the kept rows and the argmax is a vocabulary id. k is K0
// (VOCAB_FIXED), k(i) of the fork's schedule at the check after i blocks (VOCAB_DECAYING) or
// floor(V (1 - 0.9 c_prev)) capped at K0 (VOCAB_ADAPTIVE), always the most likely first (the
// fork kept the lowest ids).
//
// Confidence JSD_CONTRASTIVE (research mode, one pipeline stage): contrastive_confidence.h.
#ifndef TESSERA_METHODS_EARLY_EXIT_CALM_RUNNER_H_
#define TESSERA_METHODS_EARLY_EXIT_CALM_RUNNER_H_

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "configs/method_settings.pb.h"
#include "runtime/forward_hooks.h"
#include "runtime/llama_model.h"
#include "runtime/step_engine.h"

namespace tessera {

struct CalmRunnerOptions {
  config::EarlyExitSettings settings;  // validated; check_layers resolved (increasing, < L)
  bool check_agreement = false;        // --check-rank-agreement
  // Replay: every check's decision in order (1 exit, 0 go on), instead of c > threshold.
  std::vector<uint8_t> forced_decisions;
};

// The fork's rows at the check after `blocks` of `layers` blocks:
// max(250, floor(35000 / (1 + (35000 - 250) / 250 * blocks / layers))), at most `vocab`.
int64_t ForkVocabSchedule(int64_t blocks, int64_t layers, int64_t vocab);

class CalmRunner : public StepRunner {
 public:
  // `model` must outlive the runner and hold a head after each check layer - 1.
  static absl::StatusOr<std::unique_ptr<CalmRunner>> Create(LlamaModel* model,
                                                            CalmRunnerOptions options);
  ~CalmRunner() override;

  absl::Status StartSequence(int32_t slot, uint64_t request_id) override;
  absl::StatusOr<std::vector<float>> Run(const std::vector<ForwardBatch>& micro_batches,
                                         KvCache& cache, const StepReduction& reduction) override;
  absl::StatusOr<std::vector<SequenceCounters>> EndSequences(const std::vector<int32_t>& slots,
                                                             KvCache& cache) override;

  // Every check so far, in order (per step: check by check, sequence by sequence): 1 exit.
  const std::vector<uint8_t>& decisions() const { return decisions_; }
  const std::vector<float>& confidences() const { return confidences_; }

 private:
  struct Seq;
  struct SlotCounters {
    SequenceCounters counters;
    double checks = 0, exits = 0, check_rows = 0, filled_layers = 0;
  };
  class SaveHook;

  CalmRunner(LlamaModel* model, CalmRunnerOptions options);
  // The confidence statistics of the check after `blocks` blocks for the rows of `out`
  // (vocabulary-reduced after the step's first check); fills each decode row's kept ids at the
  // first check.
  absl::StatusOr<std::vector<VocabRowStats>> CheckStats(int64_t blocks, size_t first_check,
                                                        const ForwardOutput& out,
                                                        const std::vector<Seq*>& seqs);
  // JSD_CONTRASTIVE: each row's confidence against its earlier checks of this step (whose
  // probabilities it records); `can_exit` false where there is none yet.
  absl::StatusOr<std::vector<double>> ContrastiveConfidences(int64_t blocks,
                                                             const ForwardOutput& out,
                                                             const std::vector<Seq*>& seqs,
                                                             std::vector<bool>* can_exit);
  // Rows a vocabulary reduction keeps at the first check (0 without one).
  int64_t KeptRows() const;
  // Vocabulary rows the check number `check` (after `blocks` blocks) computes for `q`, from its
  // kept ids and the previous check's confidence.
  int64_t RowsAtCheck(const Seq& q, int64_t blocks, size_t check) const;
  absl::StatusOr<TensorView> ReducedLogits(const std::vector<Seq*>& seqs,
                                           const std::vector<int64_t>& keep);
  // Rows of `seqs` (each seq's rows from `offset` in `from`) into `to`, in order.
  absl::Status GatherSaved(const std::vector<Seq*>& seqs, bool from_previous, Tensor& to);
  absl::Status CheckAgreement(int32_t step, const std::vector<Seq>& seqs);

  LlamaModel* model_;
  CalmRunnerOptions options_;
  std::vector<int64_t> checks_;  // block counts, increasing
  std::vector<bool> holds_check_;  // this rank runs block checks_[k] - 1
  StepEngine engine_;
  std::unique_ptr<SaveHook> save_hook_;
  std::vector<SlotCounters> slots_;
  std::vector<char> prefilled_;
  std::vector<Tensor> saved_, previous_;  // per micro-batch: the residual rows of a segment
  Tensor input_, normed_, gathered_, reduced_, scattered_, ids_;
  Tensor full_logits_;  // JSD_CONTRASTIVE: the gathered logits (host)
  std::vector<uint8_t> decisions_;
  std::vector<float> confidences_;
  size_t replayed_ = 0;
};

}  // namespace tessera

#endif  // TESSERA_METHODS_EARLY_EXIT_CALM_RUNNER_H_
