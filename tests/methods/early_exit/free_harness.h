// Test harness for the early-exit runner: greedy decoding of a few prompts together, one cache
// slot each, through any StepRunner (FreeRunner, or the plain StepEngine for the baseline), with
// the logits behind every emitted token recorded on the ranks that hold them.
#ifndef TESSERA_TESTS_METHODS_EARLY_EXIT_FREE_HARNESS_H_
#define TESSERA_TESTS_METHODS_EARLY_EXIT_FREE_HARNESS_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "configs/method_settings.pb.h"
#include "methods/early_exit/free_runner.h"
#include "parallel/process_groups.h"
#include "runtime/llama_model.h"

namespace tessera::testing {

inline constexpr char kTinyModel[] = "models/tessera-code-tiny";

struct Decoded {
  std::vector<std::vector<int32_t>> tokens;  // [prompt][step]
  // [prompt][step][vocab]: the full logits that gave each token (empty where this rank held no
  // logits, or when not recorded).
  std::vector<std::vector<std::vector<float>>> logits;
  // The step at which each token was produced went deep (or was a prompt): logits from layer L.
  std::vector<std::vector<bool>> deep;
};

struct DecodeOptions {
  int steps = 12;           // tokens per prompt
  int micro_batches = 1;    // the prompts split into this many micro-batches per step
  bool record_logits = false;
  bool flush = false;       // FreeRunner::Flush every slot at the end
};

// Greedy decoding of `prompts` (slot i holds prompt i) with `runner`; `free` is the same runner
// when it is a FreeRunner (for its flush and decisions), else null.
absl::StatusOr<Decoded> Decode(LlamaModel& model, KvCache& cache, StepRunner& runner,
                               FreeRunner* free, const std::vector<std::vector<int32_t>>& prompts,
                               const DecodeOptions& options);

// The embedded model on this rank's shard of `groups` (null: one rank), with a head after
// exit_layer - 1 when exit_layer > 0.
absl::StatusOr<std::unique_ptr<LlamaModel>> LoadTinyModel(Backend* backend, ProcessGroups* groups,
                                                          int exit_layer);

// FREE settings: exit after `exit_layer` blocks at threshold `tau`.
config::EarlyExitSettings FreeSettings(int exit_layer, float tau);

// Three code prompts of different lengths, encoded with the model's tokenizer (BOS first).
std::vector<std::vector<int32_t>> TinyPrompts();

}  // namespace tessera::testing

#endif  // TESSERA_TESTS_METHODS_EARLY_EXIT_FREE_HARNESS_H_
