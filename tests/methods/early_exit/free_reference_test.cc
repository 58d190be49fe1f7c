// FREE and STATIC against the reference on transformers (tools/reference/early_exit.py, fixture
// tests/fixtures/early_exit/free_reference.json): for every recorded setting (exit after 2 or 4
// blocks, thresholds 1, 0.95, 0.9, 0.8, 0.6 and -1; STATIC after 2), the six prompts decoded
// together give the reference's tokens, exit decisions and confidences, on one rank and at tp 2;
// and the shallow head's logits of an always-exiting run equal transformers' truncated model.
#include <fstream>
#include <map>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kernels/status_macros.h"
#include "nlohmann/json.hpp"
#include "runtime/safetensors.h"
#include "tests/golden/golden_fixture.h"
#include "tests/layouts/threaded_world.h"
#include "tests/methods/early_exit/free_harness.h"
#include "tests/test_util.h"

namespace tessera {
namespace {

using nlohmann::json;
using testing::Decode;
using testing::Decoded;
using testing::DecodeOptions;
using testing::LoadTinyModel;

constexpr char kFixture[] = "tests/fixtures/early_exit/free_reference.json";

struct Setting {
  std::string policy;
  int exit_layer = 0;
  float tau = 0;
  std::vector<json> runs;  // one per prompt, in prompt order
};

std::vector<Setting> ReadSettings() {
  std::ifstream in(kFixture);
  const json fixture = json::parse(in);
  std::vector<Setting> settings;
  for (const json& run : fixture["runs"]) {
    const std::string policy = run["policy"];
    const int exit_layer = run["exit_layer"];
    const float tau = run["tau_f32"].get<float>();
    if (settings.empty() || settings.back().policy != policy ||
        settings.back().exit_layer != exit_layer || settings.back().tau != tau) {
      settings.push_back({policy, exit_layer, tau, {}});
    }
    settings.back().runs.push_back(run);
  }
  return settings;
}

config::EarlyExitSettings SettingsOf(const Setting& s) {
  config::EarlyExitSettings e = testing::FreeSettings(s.exit_layer, s.tau);
  if (s.policy == "STATIC") {
    e.clear_threshold();
    e.set_policy(config::EarlyExitSettings::STATIC);
  }
  return e;
}

// Decodes the setting's prompts together on this rank; checks tokens, decisions, confidences.
absl::Status CheckSetting(const Setting& s, ProcessGroups* groups) {
  ASSIGN_OR_RETURN(auto backend, MakeBackend(BackendKind::kCpu));
  ASSIGN_OR_RETURN(auto model, LoadTinyModel(backend.get(), groups, s.exit_layer));
  const size_t n = s.runs.size();
  ASSIGN_OR_RETURN(auto cache, model->MakeCache(n, 128));
  ASSIGN_OR_RETURN(auto runner, FreeRunner::Create(model.get(), {SettingsOf(s)}));
  std::vector<std::vector<int32_t>> prompts;
  for (const json& run : s.runs) prompts.push_back(run["prompt_ids"].get<std::vector<int32_t>>());
  DecodeOptions options;
  options.steps = static_cast<int>(s.runs[0]["generated_ids"].size());
  const bool is_static = s.policy == "STATIC";
  ASSIGN_OR_RETURN(Decoded got, Decode(*model, *cache, *runner, is_static ? nullptr : runner.get(),
                                       prompts, options));
  for (size_t i = 0; i < n; ++i) {
    const json& run = s.runs[i];
    const std::string where = absl::StrCat("prompt ", i, ": ");
    if (got.tokens[i] != run["generated_ids"].get<std::vector<int32_t>>()) {
      return absl::InternalError(where + "tokens differ from the reference");
    }
    if (is_static) continue;
    for (int step = 1; step < options.steps; ++step) {
      const size_t k = (step - 1) * n + i;  // decisions of a step, in prompt order
      const bool exited = runner->decisions().at(k) != 0;
      if (exited != run["exited"][step].get<bool>()) {
        return absl::InternalError(absl::StrCat(where, "step ", step, ": exit decision differs"));
      }
      const double want = run["confidence"][step].get<double>();
      if (std::abs(runner->confidences().at(k) - want) > 1e-5) {
        return absl::InternalError(absl::StrCat(where, "step ", step, ": confidence ",
                                                runner->confidences()[k], ", reference ", want));
      }
    }
  }
  return absl::OkStatus();
}

TEST(FreeReferenceTest, EverySettingMatchesTheReferenceOnOneRankAndAtTp2) {
  const std::vector<Setting> settings = ReadSettings();
  ASSERT_EQ(settings.size(), 13u);
  for (const Setting& s : settings) {
    SCOPED_TRACE(absl::StrCat(s.policy, " exit_layer ", s.exit_layer, " tau ", s.tau));
    EXPECT_OK(CheckSetting(s, nullptr));
    const auto statuses = testing::RunThreadedWorld(
        {2, 1, 1, 0}, [&](ProcessGroups& groups) { return CheckSetting(s, &groups); });
    for (const absl::Status& st : statuses) EXPECT_OK(st);
  }
}

TEST(FreeReferenceTest, ShallowLogitsEqualTheTruncatedModel) {
  ASSERT_OK_AND_ASSIGN(auto fixture,
                       SafetensorsFile::Open("tests/fixtures/early_exit/static_logits.safetensors"));
  const std::vector<int32_t> prompt = testing::ReadIds(*fixture, "prompt_ids");
  ASSERT_OK_AND_ASSIGN(auto backend, MakeBackend(BackendKind::kCpu));
  ASSERT_OK_AND_ASSIGN(auto model, LoadTinyModel(backend.get(), nullptr, 2));
  ASSERT_OK_AND_ASSIGN(auto cache, model->MakeCache(1, 64));
  ASSERT_OK_AND_ASSIGN(auto runner, FreeRunner::Create(model.get(), {testing::FreeSettings(2, -1)}));
  DecodeOptions options;
  options.steps = 24;
  options.record_logits = true;
  ASSERT_OK_AND_ASSIGN(Decoded got, Decode(*model, *cache, *runner, runner.get(), {prompt}, options));
  EXPECT_EQ(got.tokens[0], testing::ReadIds(*fixture, "generated_ids"));
  const float* first = reinterpret_cast<const float*>(fixture->tensors().at("first.logits").data);
  const float* shallow =
      reinterpret_cast<const float*>(fixture->tensors().at("static.logits").data);
  const int64_t vocab = model->config().vocab_size;
  double worst = testing::RelativeError(got.logits[0][0].data(), first, vocab);
  for (int step = 1; step < 24; ++step) {
    worst = std::max(worst, testing::RelativeError(got.logits[0][step].data(),
                                                   shallow + (step - 1) * vocab, vocab));
  }
  EXPECT_LT(worst, 1e-5);
  std::printf("shallow and first logits vs transformers: worst relative error %.2e\n", worst);
}

}  // namespace
}  // namespace tessera
