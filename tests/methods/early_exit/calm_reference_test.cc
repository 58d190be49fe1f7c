// CALM against the reference on transformers (tools/reference/early_exit_calm.py, fixture
// tests/fixtures/early_exit/calm_reference.json): checks after 2, 4 and 6 blocks, state
// propagation of the exited tokens' K/V, the full vocabulary at four thresholds and the fixed,
// decaying and adaptive reductions, and the JSD-contrastive confidence. The six prompts decoded together give the reference's
// tokens, every check's decision and confidence (1e-5), on one rank and at tp 2.
#include <fstream>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kernels/status_macros.h"
#include "methods/early_exit/calm_runner.h"
#include "nlohmann/json.hpp"
#include "tests/layouts/threaded_world.h"
#include "tests/methods/early_exit/free_harness.h"
#include "tests/test_util.h"

namespace tessera {
namespace {

using config::EarlyExitSettings;
using nlohmann::json;

struct Setting {
  EarlyExitSettings settings;
  std::vector<json> runs;  // one per prompt
};

std::vector<Setting> ReadSettings() {
  std::ifstream in("tests/fixtures/early_exit/calm_reference.json");
  const json fixture = json::parse(in);
  std::vector<Setting> out;
  std::string last;
  for (const json& run : fixture["runs"]) {
    const json& s = run["settings"];
    const std::string key = s.dump();
    if (key != last) {
      EarlyExitSettings e;
      e.set_policy(EarlyExitSettings::CALM);
      e.set_threshold(s["tau_f32"].get<float>());
      for (int c : s["check_layers"]) e.add_check_layers(c);
      EarlyExitSettings::VocabReduction reduction;
      EXPECT_TRUE(EarlyExitSettings::VocabReduction_Parse(s["vocab_reduction"], &reduction));
      e.set_vocab_reduction(reduction);
      if (!s["vocab_k"].is_null()) e.set_vocab_k(s["vocab_k"]);
      if (s.contains("confidence")) {
        EarlyExitSettings::Confidence confidence;
        EXPECT_TRUE(EarlyExitSettings::Confidence_Parse(s["confidence"], &confidence));
        e.set_confidence(confidence);
      }
      out.push_back({e, {}});
      last = key;
    }
    out.back().runs.push_back(run);
  }
  return out;
}

absl::Status CheckSetting(const Setting& s, ProcessGroups* groups) {
  ASSIGN_OR_RETURN(auto backend, MakeBackend(BackendKind::kCpu));
  ModelParallelism parallel;
  if (groups != nullptr) parallel = {groups->layout, groups->tp.get(), groups->pp.get()};
  ModelOptions options;
  for (int32_t c : s.settings.check_layers()) options.head_after_layers.push_back(c - 1);
  ASSIGN_OR_RETURN(auto model, LlamaModel::Load(testing::kTinyModel, backend.get(), parallel,
                                                options));
  const size_t n = s.runs.size();
  ASSIGN_OR_RETURN(auto cache, model->MakeCache(n, 128));
  CalmRunnerOptions runner_options{s.settings};
  runner_options.check_agreement = true;
  ASSIGN_OR_RETURN(auto runner, CalmRunner::Create(model.get(), runner_options));
  std::vector<std::vector<int32_t>> prompts;
  for (const json& run : s.runs) prompts.push_back(run["prompt_ids"].get<std::vector<int32_t>>());
  testing::DecodeOptions decode;
  decode.steps = static_cast<int>(s.runs[0]["generated_ids"].size());
  ASSIGN_OR_RETURN(testing::Decoded got,
                   testing::Decode(*model, *cache, *runner, nullptr, prompts, decode));
  // The runner's order: step by step, check by check, prompt by prompt.
  std::vector<std::pair<bool, double>> want;
  for (int step = 1; step < decode.steps; ++step) {
    for (size_t k = 0; k < s.settings.check_layers_size(); ++k) {
      for (size_t i = 0; i < n; ++i) {
        const json& checks = s.runs[i]["tokens"][step]["checks"];
        if (k < checks.size()) {
          want.push_back({checks[k]["exited"].get<bool>(), checks[k]["confidence"].get<double>()});
        }
      }
    }
  }
  for (size_t i = 0; i < n; ++i) {
    if (got.tokens[i] != s.runs[i]["generated_ids"].get<std::vector<int32_t>>()) {
      return absl::InternalError(absl::StrCat("prompt ", i, ": tokens differ from the reference"));
    }
  }
  if (runner->decisions().size() != want.size()) {
    return absl::InternalError(absl::StrCat(runner->decisions().size(), " checks, the reference ",
                                            "made ", want.size()));
  }
  for (size_t k = 0; k < want.size(); ++k) {
    if ((runner->decisions()[k] != 0) != want[k].first ||
        std::abs(runner->confidences()[k] - want[k].second) > 1e-5) {
      return absl::InternalError(absl::StrCat("check ", k, ": decision ",
                                              int(runner->decisions()[k]), " confidence ",
                                              runner->confidences()[k], ", reference ",
                                              want[k].first, " ", want[k].second));
    }
  }
  return absl::OkStatus();
}

TEST(CalmReferenceTest, EverySettingMatchesTheReferenceOnOneRankAndAtTp2) {
  const std::vector<Setting> settings = ReadSettings();
  ASSERT_GE(settings.size(), 8u);
  for (const Setting& s : settings) {
    SCOPED_TRACE(s.settings.ShortDebugString());
    EXPECT_OK(CheckSetting(s, nullptr));
    const auto statuses = testing::RunThreadedWorld(
        {2, 1, 1, 0}, [&](ProcessGroups& groups) { return CheckSetting(s, &groups); });
    for (const absl::Status& st : statuses) EXPECT_OK(st);
  }
}

}  // namespace
}  // namespace tessera
