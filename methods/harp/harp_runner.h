// HarpRunner: generation steps with hesitation-aware reframing (shared/specs/harp.md): mode
// EXACT, the reference's semantics with the plain pass on the KV cache, and the experimental
// modes SHADOW_LAZY and KV_NOISE.
//
// One step over the generator's micro-batches:
//   1. Plain pass of every micro-batch (KV cache as usual). On the last stage, the logits are
//      copied and the entropy of every logit row, in bits, comes from VocabReducer::Stats (one
//      all-gather over the tensor-parallel group, reduced in double on the host): the same bits
//      on every rank of the group. A row hesitates iff H > theta_bits (strictly), its sequence is
//      at most max_reframe_len tokens long (0: no limit) and delta > 0.
//   2. REFRAME: the hesitation flags (and entropies) go from the last stage to every stage of
//      the pipeline (one broadcast), so every rank makes the same next calls.
//   3. Reframed pass, only when some row hesitates, over the hesitating sequences only: each
//      whole sequence x[0..T-1] (prompt and generated tokens, positions 0..T-1) as a prefill
//      into a scratch cache whose layers share one layer's storage (nothing is written to the
//      real cache; one layer's K/V for T tokens at a time). On the first stage the input
//      embeddings get the dropout mask of (seed, request, t = T) (reframe_mask.h); the stage
//      header carries the REFRAME tag, which later stages check.
//   4. On the last stage, each hesitating row's logits become l + (1 - beta) (l_r - l)
//      (Backend::Lerp: exactly l where the two agree; beta weighs the plain side), then the
//      generator's reduction (greedy or sampling, its own random stream) runs on them and its
//      words reach every stage, as in StepEngine.
// SHADOW_LAZY (experimental, not the reference): a second KV cache of the same shape as the real
// one holds the reframed view of each sequence, with masks keyed by (seed, request, position)
// only (kShadowStep): the same mask at every hesitation instead of a fresh one. A hesitation
// extends it by the tokens since the sequence's last one (their prefill, persisted in the
// shadow cache), so a sequence costs at most one extra forward per token in all, and twice the
// KV memory.
// KV_NOISE (experimental, not the reference): the step's tokens run again with masked
// embeddings over a masked copy of their sequence's cached K/V (kv_noise.h): about one decode
// step per hesitation. Needs an F32 KV cache.
// theta = +inf never hesitates: the logits and tokens are the plain runtime's, bit for bit.
// delta = 0 skips the reframed pass (its input would be the plain one): the plain tokens.
//
// Per sequence (slot): the tokens fed so far (all ranks), the request id, and counters:
// checked_tokens, hesitations, reframed_passes, tokens_recomputed, reframe_ms (this rank's time
// in reframed passes, shared among the sequences of each pass), skipped_long, and with
// record_entropy the entropy in bits of every generated token.
#ifndef TESSERA_METHODS_HARP_HARP_RUNNER_H_
#define TESSERA_METHODS_HARP_HARP_RUNNER_H_

#include <map>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "configs/method_settings.pb.h"
#include "methods/harp/kv_noise.h"
#include "methods/harp/reframe_mask.h"
#include "runtime/llama_model.h"
#include "runtime/step_engine.h"

namespace tessera {

struct HarpRunnerOptions {
  // Validated (launcher/methods/harp_settings.cc).
  config::HarpSettings settings;
  // All-gather each step's hesitation decisions over the tensor-parallel group and fail naming
  // the step and the ranks that differ (--check-rank-agreement).
  bool check_agreement = false;
  // Tests (not owned): called on the plain passes' embeddings (per-rank noise), and on the
  // reframed pass's embeddings once masked (mask dumps).
  InputHook* plain_input = nullptr;
  InputHook* masked_input = nullptr;
};

// One logit row's check, as every rank of the replica sees it.
struct HarpDecision {
  int32_t step = 0;
  int32_t slot = 0;
  float entropy_bits = 0.0f;
  bool hesitated = false;  // H > theta
  bool reframed = false;   // a reframed pass ran for it (hesitated, delta > 0, within the guard)
};

class HarpRunner : public StepRunner {
 public:
  // `model` must outlive the runner.
  static absl::StatusOr<std::unique_ptr<HarpRunner>> Create(LlamaModel* model,
                                                            HarpRunnerOptions options);

  absl::Status StartSequence(int32_t slot, uint64_t request_id) override;
  absl::StatusOr<std::vector<float>> Run(const std::vector<ForwardBatch>& micro_batches,
                                         KvCache& cache, const StepReduction& reduction) override;
  absl::StatusOr<std::vector<SequenceCounters>> EndSequences(const std::vector<int32_t>& slots,
                                                             KvCache& cache) override;

  // Every check so far, in order (all ranks).
  const std::vector<HarpDecision>& decisions() const { return decisions_; }
  double theta_bits() const { return theta_bits_; }

 private:
  struct Sequence {
    uint64_t request_id = 0;
    std::vector<int32_t> tokens;  // every token fed so far, in position order
    int32_t shadow_length = 0;    // SHADOW_LAZY: tokens in the shadow cache
    int32_t step_tokens = 0;      // tokens fed in the current step
    SequenceCounters counters;
  };
  // A hesitating logit row: micro-batch, row within its logits, slot, sequence length T.
  struct Reframe {
    size_t micro_batch;
    int64_t row;
    int32_t slot;
    int32_t length;
  };

  HarpRunner(LlamaModel* model, HarpRunnerOptions options);
  // Appends the batch's tokens to their sequences (positions must continue them).
  absl::Status Record(const ForwardBatch& batch);
  // The plain pass of `batch`; on the logits' rank a copy of its logits in plain_[g] and one
  // (entropy bits, reframe?) pair per logit row in `checks`.
  absl::Status PlainPass(size_t g, const ForwardBatch& batch, KvCache& cache,
                         std::vector<float>* checks);
  // The reframed pass over `reframes`; mixes its logits into plain_ on the logits' rank.
  absl::Status ReframedPass(int32_t step, const std::vector<Reframe>& reframes,
                            const KvCache& real);
  // Its batch and cache: the whole sequences into the scratch cache (EXACT), the tokens since
  // each sequence's last hesitation into the shadow cache (SHADOW_LAZY), or this step's tokens
  // into the scratch cache over a masked copy of `real`'s earlier entries (KV_NOISE).
  absl::StatusOr<KvCache*> ReframedBatch(int32_t step, const std::vector<Reframe>& reframes,
                                         const KvCache& real, ForwardBatch* batch);
  // SHADOW_LAZY: a shadow cache of the shape of `cache` (every sequence's view restarts when it
  // is made anew).
  absl::Status EnsureShadow(const KvCache& cache);

  LlamaModel* model_;
  HarpRunnerOptions options_;
  double theta_bits_;
  float delta_, beta_;
  std::map<int32_t, Sequence> sequences_;  // by slot
  std::vector<Tensor> plain_;              // per micro-batch: its logits, then the mixed ones
  std::unique_ptr<KvCache> scratch_;       // EXACT's reframed pass's cache (shared storage)
  std::unique_ptr<KvCache> shadow_;        // SHADOW_LAZY's cache of the reframed views
  ReframeInput input_;
  KvNoiseAttention kv_noise_;
  ReframeTagCheck tag_check_;
  std::vector<HarpDecision> decisions_;
};

}  // namespace tessera

#endif  // TESSERA_METHODS_HARP_HARP_RUNNER_H_
