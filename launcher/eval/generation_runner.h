// Runs generation requests for a task in chunks of max_batch, reporting progress per chunk and
// counting tokens, on every rank of a replica alike.
#ifndef TESSERA_LAUNCHER_EVAL_GENERATION_RUNNER_H_
#define TESSERA_LAUNCHER_EVAL_GENERATION_RUNNER_H_

#include <vector>

#include "absl/status/statusor.h"
#include "launcher/eval/eval_task.h"
#include "runtime/generator.h"

namespace tessera {

// `requests[k]` belongs to sample indices[k]; its sampling randomness is keyed by that index.
absl::StatusOr<std::vector<GenerationResult>> GenerateForTask(
    std::vector<GenerationRequest> requests, const std::vector<size_t>& indices, EvalContext& ctx);

// The request defaults of the run's sampling section.
GenerationRequest RequestFromSampling(const config::RunConfig& c, int32_t default_max_new_tokens);

}  // namespace tessera

#endif  // TESSERA_LAUNCHER_EVAL_GENERATION_RUNNER_H_
