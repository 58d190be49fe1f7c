// Test harness for HOMER: the embedded model, synthetic prompts, a bias table, and host copies of
// KV cache rows and logits.
#ifndef TESSERA_TESTS_METHODS_HOMER_HOMER_HARNESS_H_
#define TESSERA_TESTS_METHODS_HOMER_HOMER_HARNESS_H_

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "methods/homer/bias_table.h"
#include "methods/homer/homer_prefill.h"
#include "parallel/process_groups.h"
#include "runtime/llama_model.h"

namespace tessera::testing {

inline constexpr char kHomerModel[] = "models/tessera-code-tiny";

// The embedded model (8 layers, 8 query and 2 KV heads) on this rank's shard of `groups`
// (null: one rank).
absl::StatusOr<std::unique_ptr<LlamaModel>> LoadHomerModel(Backend* backend,
                                                           ProcessGroups* groups);

// BOS, then `length - 1` pseudo-random ids in [3, 4096) from `seed`.
std::vector<int32_t> RandomPrompt(int64_t length, uint32_t seed);

// A bias table [layers, distances] that grows with the distance (as RoPE's recency bias does).
homer::BiasTable RampBias(int64_t layers, int64_t distances);

// Keys (or values) of entries [0, length) of (layer, slot), [length, kv_heads * head_dim] F32.
absl::StatusOr<std::vector<float>> CacheRows(const KvCache& cache, Backend& backend,
                                             int64_t layer, int64_t slot, bool keys);
// Rows [begin, end) of CacheRows.
std::vector<float> RowRange(const std::vector<float>& rows, int64_t width, int64_t begin,
                            int64_t end);

// A device view's floats on the host.
absl::StatusOr<std::vector<float>> ToHost(Backend& backend, TensorView view);

}  // namespace tessera::testing

#endif  // TESSERA_TESTS_METHODS_HOMER_HOMER_HARNESS_H_
