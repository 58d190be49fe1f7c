// Test harness for Activation Beacon: a checkpoint assembled from the 70B-shaped GQA fixture
// (tests/fixtures/models/llama70b_gqa) and the reference's beacon tensors
// (tests/fixtures/beacon/beacon.safetensors, tools/reference/beacon.py) in a fresh directory,
// with the beacon_* keys of one reference case in its config.json; the method loaded on it; and
// the runner driven directly (a prompt's per-token NLL, greedy continuation).
#ifndef TESSERA_TESTS_METHODS_BEACON_BEACON_HARNESS_H_
#define TESSERA_TESTS_METHODS_BEACON_BEACON_HARNESS_H_

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "methods/beacon/beacon_method.h"
#include "nlohmann/json.hpp"
#include "parallel/process_groups.h"
#include "runtime/llama_model.h"

namespace tessera::testing {

inline constexpr char kBeaconFixtures[] = "tests/fixtures/beacon";
inline constexpr char kBeaconBaseModel[] = "tests/fixtures/models/llama70b_gqa";

// The reference's cases (MANIFEST.json "cases"), by name.
absl::StatusOr<nlohmann::json> BeaconCase(const std::string& name);

// A checkpoint directory (under the test's temporary directory, named `tag`) of the base model's
// tensors and the beacon tensors, with config.json's beacon_* keys set from `beacon_keys`
// (beacon_window, beacon_ratio, ...). `with_beacon_tensors` false: the base model only;
// `beacon_file` non-empty: that safetensors file instead of the reference's beacon tensors.
absl::StatusOr<std::string> MakeBeaconCheckpoint(const std::string& tag,
                                                 const nlohmann::json& beacon_keys,
                                                 bool with_beacon_tensors = true,
                                                 const std::string& beacon_file = "");
// A safetensors file of zero F32 tensors of the given shapes.
absl::Status WriteZeroTensors(const std::string& path,
                              const std::map<std::string, std::vector<int64_t>>& shapes);
// config.json beacon_* keys of a reference case.
nlohmann::json CaseKeys(const nlohmann::json& reference_case);

struct BeaconModel {
  std::unique_ptr<Method> method;
  std::unique_ptr<LlamaModel> model;
  beacon::BeaconRunner* runner = nullptr;
};
// The method configured on `dir`'s config.json with `settings`, the model loaded with its
// requirements on this rank's shard of `groups` (null: one rank), attached.
absl::StatusOr<BeaconModel> LoadBeaconModel(Backend* backend, const std::string& dir,
                                            const config::BeaconSettings& settings = {},
                                            ProcessGroups* groups = nullptr);

// One Run of `tokens` (continuing the slot's stream) with every row's logits: the
// log-probability of the next token (the last row: of `next`, when >= 0) and each row's argmax,
// on every rank.
struct RowScores {
  std::vector<double> logprob;
  std::vector<int32_t> argmax;
};
absl::StatusOr<RowScores> ScoreRows(BeaconModel& m, KvCache& cache, int32_t slot,
                                    const std::vector<int32_t>& tokens, int32_t next = -1);

// Greedy continuation: the prompt in one Run, then one token per Run, `new_tokens` tokens.
absl::StatusOr<std::vector<int32_t>> Greedy(BeaconModel& m, KvCache& cache, int32_t slot,
                                            const std::vector<int32_t>& prompt, int new_tokens);

// The values of a tensor of a safetensors file.
template <typename T>
absl::StatusOr<std::vector<T>> FixtureValues(const std::string& file, const std::string& name);

}  // namespace tessera::testing

#endif  // TESSERA_TESTS_METHODS_BEACON_BEACON_HARNESS_H_
