// The layout-equivalence check shared by the threaded gtest suite and the mpirun driver: run on
// every rank of a world, it loads this rank's shard of a golden fixture model, computes the
// logits of the recorded prompts and 32 greedy tokens per prompt (batched, micro-batched), and
// compares them with the single-rank run of the same model (logits, relative 1e-5) and with the
// greedy tokens transformers recorded. Returns an error describing the first mismatch.
#ifndef TESSERA_TESTS_LAYOUTS_LAYOUT_CHECK_H_
#define TESSERA_TESTS_LAYOUTS_LAYOUT_CHECK_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "parallel/process_groups.h"

namespace tessera::testing {

// What the golden file of a fixture holds and how to run it.
struct LayoutCheckOptions {
  int prompts = 3;          // prompt{i}.input_ids / prompt{i}.greedy for i < prompts
  int new_tokens = 32;      // greedy tokens per prompt
  int32_t max_seq_len = 0;  // GeneratorOptions::max_seq_len (past max_position_embeddings: the
                            // long-context fixtures)
};

// `model_dir` holds config.json, the weights and golden.safetensors.
absl::Status CheckLayout(const std::string& model_dir, ProcessGroups& groups,
                         const LayoutCheckOptions& options = {});

}  // namespace tessera::testing

#endif  // TESSERA_TESTS_LAYOUTS_LAYOUT_CHECK_H_
