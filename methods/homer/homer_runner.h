// HomerRunner: generation with HOMER prompts (shared/specs/homer.md §2). A sequence's first step
// (its whole prompt) runs as HomerPrefill over the prompt's prefix (prefix_len tokens), context
// and suffix (suffix_len tokens); the compact cache is copied into the sequence's slot and the
// next-token logits are those of the prompt's last token at the root. Later steps are plain
// decode steps over that cache at positions next_position + i (the generator's positions shifted
// by next_position - prompt length), so the first generated token sits at last_pos + 1. A prompt
// of at most min(max_chunk_len, target_len) tokens runs as one unpruned chunk, which equals the
// plain model.
//
// Per sequence counters: homer_chunks, homer_levels, homer_nodes, homer_cache_entries,
// homer_next_position, homer_tree_kv_bytes (the K/V the merge tree held at its peak on this
// rank: height + 2 slots of max_chunk_len entries).
#ifndef TESSERA_METHODS_HOMER_HOMER_RUNNER_H_
#define TESSERA_METHODS_HOMER_HOMER_RUNNER_H_

#include <map>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "configs/method_settings.pb.h"
#include "methods/homer/bias_table.h"
#include "methods/homer/homer_prefill.h"
#include "runtime/llama_model.h"
#include "runtime/step_engine.h"

namespace tessera::homer {

// The settings with their defaults resolved.
struct HomerConfig {
  ScheduleSettings schedule;
  int64_t prefix_len = 100;
  int64_t suffix_len = 100;
  // Decode positions must stay below this (max_position_embeddings for plain RoPE); 0: no
  // limit (a rope_scaling that runs past the window).
  int64_t position_limit = 0;
};
HomerConfig ResolveSettings(const config::HomerSettings& settings, const ModelConfig& model);

// The prefix and suffix lengths HOMER gives a prompt of `tokens` tokens.
std::pair<int64_t, int64_t> SplitPrompt(const HomerConfig& config, int64_t tokens);

class HomerRunner : public StepRunner {
 public:
  // `model` must outlive the runner; `bias` may be null (raw scores).
  HomerRunner(LlamaModel* model, HomerConfig config, std::unique_ptr<BiasTable> bias);

  absl::Status StartSequence(int32_t slot, uint64_t request_id) override;
  absl::StatusOr<std::vector<float>> Run(const std::vector<ForwardBatch>& micro_batches,
                                         KvCache& cache, const StepReduction& reduction) override;
  absl::StatusOr<std::vector<SequenceCounters>> EndSequences(const std::vector<int32_t>& slots,
                                                             KvCache& cache) override;
  int64_t PromptEntries(int64_t prompt_tokens) const override;

 private:
  struct SequenceState {
    bool prefilled = false;
    int32_t position_shift = 0;
    SequenceCounters counters;
  };
  // The prompt of `slot` (its rows of `batch`) through HOMER into `cache`; the logits' words.
  absl::StatusOr<std::vector<float>> Prefill(size_t micro_batch, const ForwardBatch& batch,
                                             int32_t logit_index, int32_t slot, KvCache& cache,
                                             const StepReduction& reduction);

  LlamaModel* model_;
  HomerConfig config_;
  std::unique_ptr<BiasTable> bias_;
  HomerPrefill prefill_;
  std::map<int32_t, SequenceState> sequences_;
};

}  // namespace tessera::homer

#endif  // TESSERA_METHODS_HOMER_HOMER_RUNNER_H_
