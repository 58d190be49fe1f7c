// Command-line flags of the `tessera` binary, shared by its subcommands.
//
// Flags are spelled with dashes on the command line (--max-new-tokens) as users expect;
// NormalizeFlagNames() maps them to the underscore names absl defines (--max_new_tokens).
#ifndef TESSERA_LAUNCHER_FLAGS_H_
#define TESSERA_LAUNCHER_FLAGS_H_

#include <string>
#include <vector>

#include "absl/flags/declare.h"
#include "absl/status/statusor.h"
#include "configs/run_config.pb.h"
#include "kernels/dtype.h"
#include "parallel/world_layout.h"

ABSL_DECLARE_FLAG(std::string, model);
ABSL_DECLARE_FLAG(std::string, backend);
ABSL_DECLARE_FLAG(std::string, prompt);
ABSL_DECLARE_FLAG(std::string, prompts);
ABSL_DECLARE_FLAG(std::string, output);
ABSL_DECLARE_FLAG(int32_t, max_new_tokens);
ABSL_DECLARE_FLAG(float, temperature);
ABSL_DECLARE_FLAG(int32_t, top_k);
ABSL_DECLARE_FLAG(float, top_p);
ABSL_DECLARE_FLAG(bool, top_p_before_temperature);
ABSL_DECLARE_FLAG(uint64_t, seed);
ABSL_DECLARE_FLAG(std::vector<std::string>, stop);
ABSL_DECLARE_FLAG(bool, ignore_eos);
ABSL_DECLARE_FLAG(int32_t, max_batch);
ABSL_DECLARE_FLAG(int32_t, max_seq_len);
ABSL_DECLARE_FLAG(int32_t, prompt_tokens);
ABSL_DECLARE_FLAG(int32_t, decode_tokens);
ABSL_DECLARE_FLAG(int32_t, batch);
ABSL_DECLARE_FLAG(int32_t, threads);
ABSL_DECLARE_FLAG(int32_t, tp);
ABSL_DECLARE_FLAG(int32_t, pp);
ABSL_DECLARE_FLAG(int32_t, dp);
ABSL_DECLARE_FLAG(std::vector<std::string>, stage_layers);
ABSL_DECLARE_FLAG(int32_t, micro_batches);
ABSL_DECLARE_FLAG(int32_t, comm_timeout_s);
ABSL_DECLARE_FLAG(std::string, config);
ABSL_DECLARE_FLAG(std::string, method);
ABSL_DECLARE_FLAG(std::string, output_dir);
ABSL_DECLARE_FLAG(int32_t, limit);
ABSL_DECLARE_FLAG(std::string, host);
ABSL_DECLARE_FLAG(int32_t, port);
ABSL_DECLARE_FLAG(int32_t, max_waiting_requests);
ABSL_DECLARE_FLAG(std::string, served_model_name);
ABSL_DECLARE_FLAG(std::string, chat_template);
ABSL_DECLARE_FLAG(bool, cuda_graphs);
ABSL_DECLARE_FLAG(bool, check_rank_agreement);
ABSL_DECLARE_FLAG(std::string, device_memory);
ABSL_DECLARE_FLAG(std::string, dtype);
ABSL_DECLARE_FLAG(std::string, kv_dtype);
ABSL_DECLARE_FLAG(double, memory_utilization);
ABSL_DECLARE_FLAG(std::string, workspace);
ABSL_DECLARE_FLAG(bool, json);
ABSL_DECLARE_FLAG(std::string, data);
ABSL_DECLARE_FLAG(double, calib_add_sigma);
ABSL_DECLARE_FLAG(bool, calib_tac);
ABSL_DECLARE_FLAG(double, calib_sample_frac);

namespace tessera {

// Rewrites "--max-new-tokens=4" to "--max_new_tokens=4" (flag names only, never values) and
// records which flags were given, for FlagWasGiven().
std::vector<std::string> NormalizeFlagNames(const std::vector<std::string>& args);
// The flags NormalizeFlagNames saw, underscore spelling, sorted.
std::vector<std::string> GivenFlagNames();

// Sets the flags that the command line did not give from a run config's model, layout, sampling,
// seed and max_batch fields (unset fields leave the flag defaults).
void ApplyRunConfigToFlags(const config::RunConfig& config);

// Refuses flag values that make no sense (a negative --max-seq-len, --max-new-tokens 0, ...),
// naming the flag as users spell it and its valid range.
absl::Status ValidateFlagValues();

// The KV-cache dtype of --kv-dtype (f32, bf16 or f16); InvalidArgument naming the flag.
absl::StatusOr<DType> KvDTypeFromFlags();

// --tp, --pp, --dp as a layout (rank unset).
WorldLayout LayoutFromFlags();
// --stage-layers as numbers; InvalidArgument naming the flag when one is not a number.
absl::StatusOr<std::vector<int64_t>> StageLayersFromFlags();

// Removes every `--name VALUE` / `--name=VALUE` from `args` and returns the values in order, for
// flags that may repeat with values containing commas (--set).
std::vector<std::string> TakeRepeatedFlag(std::vector<std::string>* args, const std::string& name);

// Whether --`name` (underscore spelling) appeared on the command line, even with an empty value.
bool FlagWasGiven(const std::string& name);

}  // namespace tessera

#endif  // TESSERA_LAUNCHER_FLAGS_H_
