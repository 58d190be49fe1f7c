// Loading, overriding and validating a RunConfig (configs/run_config.proto).
//
//   ASSIGN_OR_RETURN(config::RunConfig c, LoadRunConfig("configs/runs/ppl.textproto"));
//   RETURN_IF_ERROR(SetField(&c, "task.perplexity.stride=128"));
//   RETURN_IF_ERROR(ValidateRunConfig(c));
//
// Errors name the file and line (text-format syntax, unknown fields) or the field path
// ("task.perplexity.stride: must be > 0").
#ifndef TESSERA_LAUNCHER_EVAL_RUN_CONFIG_H_
#define TESSERA_LAUNCHER_EVAL_RUN_CONFIG_H_

#include <string>

#include "absl/status/statusor.h"
#include "configs/run_config.pb.h"
#include "kernels/dtype.h"

namespace tessera {

// Parses a .textproto file; unknown fields, malformed values and removed (reserved) fields such
// as the old `methods` map are errors naming file:line:col.
absl::StatusOr<config::RunConfig> LoadRunConfig(const std::string& path);

// Sets one field from "path=value", e.g. "layout.tp=2", "task.passkey.context_lengths=256,512"
// (repeated fields take comma-separated values and replace the list), "model.path=models/x",
// "method.sparse_attention.kind=TOP_K" (enums by name). Sub-messages are created as needed
// (setting task.perplexity.stride selects that task kind; method.homer.max_chunk_len turns HOMER
// on). Repeated messages and maps cannot be set.
absl::Status SetField(config::RunConfig* config, const std::string& assignment);

// Semantic checks with the field path in every message, the method section included
// (ValidateMethodSettings); fills no defaults.
absl::Status ValidateRunConfig(const config::RunConfig& config);

// The checks of ValidateRunConfig that do not concern the task or model.path: model.backend,
// model.max_seq_len, layout, max_batch and sampling (what generate and bench take from a config).
absl::Status ValidateRunSettings(const config::RunConfig& config);

// The KV-cache dtype of model.kv_dtype (empty: F32); InvalidArgument naming model.kv_dtype.
absl::StatusOr<DType> KvDTypeOf(const config::ModelSpec& model);

// The config as protobuf text, for results files.
std::string RunConfigText(const config::RunConfig& config);

}  // namespace tessera

#endif  // TESSERA_LAUNCHER_EVAL_RUN_CONFIG_H_
