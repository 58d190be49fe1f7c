// ContextLimit: the longest sequence (prompt plus generated tokens, or a scored window) Tessera
// runs for a model, and the one place that decides whether a context may go past the
// checkpoint's max_position_embeddings.
//
// The rule, given the user's request N (--max-seq-len / model.max_seq_len; 0: none):
//   N == 0                            max_position_embeddings (the checkpoint's own context).
//   0 < N <= max_position_embeddings  N.
//   N > max_position_embeddings       N when config.json's rope_scaling runs past the trained
//                                     length: "dynamic" (NTK: the rotary base grows with the
//                                     length, as transformers recomputes it), "linear", "llama3"
//                                     and "yarn" (fixed interpolated frequencies). Refused
//                                     (InvalidArgument naming rope_scaling) without a
//                                     rope_scaling: plain RoPE was not trained past it.
// transformers itself checks no length: it runs any rope type past max_position_embeddings,
// plain RoPE included, where quality collapses. Tessera asks for the request explicitly and
// refuses plain RoPE; to run a plain-RoPE checkpoint longer, add a rope_scaling (e.g.
// {"rope_type": "dynamic", "factor": 2.0}) to its config.json, which transformers reads the same
// way. Other rope types (longrope, ...) are refused when config.json is parsed.
#ifndef TESSERA_RUNTIME_CONTEXT_LIMIT_H_
#define TESSERA_RUNTIME_CONTEXT_LIMIT_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "runtime/model_config.h"

namespace tessera {

// The rope_scaling type as config.json spells it: "dynamic", "linear", "llama3", "yarn"; "null"
// for none.
const char* RopeScalingName(RopeScaling::Type type);

// True when `config`'s rope scaling runs contexts past max_position_embeddings.
bool RopeExtendsContext(const ModelConfig& config);

// The context limit for `requested_max_seq_len` (0: no request), by the rule above. Errors:
// InvalidArgument for a negative request, or one past max_position_embeddings that the rope
// scaling cannot serve.
absl::StatusOr<int64_t> ContextLimit(const ModelConfig& config, int64_t requested_max_seq_len);

// What to change when a sequence of `needed` tokens does not fit in the limit ContextLimit gave
// for `requested_max_seq_len`, to append to an error message: "; rope_scaling \"dynamic\" runs
// longer contexts: set --max-seq-len to at least 48 (model.max_seq_len in a run config)" when
// the scaling allows more, or why it does not ("; config.json has no rope_scaling, so ...").
std::string ContextLimitHint(const ModelConfig& config, int64_t requested_max_seq_len,
                             int64_t needed);

}  // namespace tessera

#endif  // TESSERA_RUNTIME_CONTEXT_LIMIT_H_
