// `tessera eval`: an evaluation task over a dataset, configured by a RunConfig textproto with
// flag overrides, across any layout; rank 0 prints progress and the results table and writes
// the results files.
#ifndef TESSERA_LAUNCHER_EVAL_EVAL_COMMAND_H_
#define TESSERA_LAUNCHER_EVAL_EVAL_COMMAND_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "configs/run_config.pb.h"
#include "launcher/job.h"

namespace tessera {

// The run config: --config FILE (optional), then the flags that were given (--model, --tp,
// --pp, --dp, --backend, --output-dir, --limit, --seed, --max-batch), then --method FILE (which
// replaces the method section), then each `--set path=value` in order; validated, the method
// settings included.
absl::StatusOr<config::RunConfig> EvalConfigFromFlags(const std::vector<std::string>& sets);

// The layout the config asks for (defaults filled in).
WorldLayout LayoutOf(const config::RunConfig& config);

absl::Status RunEval(Job& job, const config::RunConfig& config);

}  // namespace tessera

#endif  // TESSERA_LAUNCHER_EVAL_EVAL_COMMAND_H_
