// HARP (mode EXACT) against the reference on transformers (tools/reference/harp.py, fixtures in
// tests/fixtures/harp/): the reference runs every step without a KV cache on the whole sequence,
// batch 1, with masks from its own Philox in Python; here the five prompts decode together, the
// plain pass on the KV cache. For the four recorded settings (theta 1 or 2 bits, delta 0.2 or
// 0.1, beta 0.5 or 0, seed 7 or 11): the same hesitation steps and tokens, entropies within
// 1e-5 bits, and for setting A the final (mixed) logits within 1e-4; on one rank and at tp 2.
#include <fstream>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kernels/status_macros.h"
#include "nlohmann/json.hpp"
#include "runtime/safetensors.h"
#include "tests/layouts/threaded_world.h"
#include "tests/methods/early_exit/free_harness.h"
#include "tests/methods/harp/harp_harness.h"
#include "tests/test_util.h"

namespace tessera {
namespace {

using nlohmann::json;
using testing::Decode;
using testing::Decoded;
using testing::DecodeOptions;
using testing::LoadTinyModel;

constexpr char kReference[] = "tests/fixtures/harp/harp_reference.json";
constexpr char kLogits[] = "tests/fixtures/harp/harp_logits.safetensors";
constexpr double kEntropyTolerance = 1e-5;  // bits
constexpr double kLogitTolerance = 1e-4;

json ReadReference() {
  std::ifstream in(kReference);
  return json::parse(in);
}

struct Worst {
  double entropy = 0, logit = 0;
};

// Decodes every prompt of `fixture` with setting `name` on this rank (one rank when `groups` is
// null) and compares with the recorded runs.
absl::Status CheckSetting(const json& fixture, const json& setting, ProcessGroups* groups,
                          Worst* worst) {
  const std::string name = setting["name"];
  ASSIGN_OR_RETURN(auto backend, MakeBackend(BackendKind::kCpu));
  ASSIGN_OR_RETURN(auto model, LoadTinyModel(backend.get(), groups, 0));
  ASSIGN_OR_RETURN(auto cache, model->MakeCache(fixture["prompts"].size(), 256));
  HarpRunnerOptions options;
  options.settings = testing::HarpSettings(setting["theta_bits"].get<float>(),
                                           setting["delta"].get<float>(),
                                           setting["beta_vanilla"].get<float>());
  options.settings.set_seed(setting["seed"].get<uint64_t>());
  options.check_agreement = groups != nullptr;
  ASSIGN_OR_RETURN(auto runner, HarpRunner::Create(model.get(), options));
  std::vector<std::vector<int32_t>> prompts;
  for (const json& p : fixture["prompts"]) prompts.push_back(p["ids"].get<std::vector<int32_t>>());
  DecodeOptions decode;
  decode.steps = fixture["new_tokens"];
  decode.record_logits = name == "A";
  ASSIGN_OR_RETURN(Decoded got, Decode(*model, *cache, *runner, nullptr, prompts, decode));

  std::unique_ptr<SafetensorsFile> logits;
  if (decode.record_logits) {
    ASSIGN_OR_RETURN(logits, SafetensorsFile::Open(kLogits));
  }
  const size_t n = prompts.size();
  const int64_t vocab = model->config().vocab_size;
  for (const json& run : fixture["runs"]) {
    if (run["setting"] != name) continue;
    const size_t p = run["prompt"];
    const std::string where = absl::StrCat("setting ", name, " prompt ", p, ": ");
    if (got.tokens[p] != run["tokens"].get<std::vector<int32_t>>()) {
      return absl::InternalError(where + "tokens differ from the reference");
    }
    for (int step = 0; step < decode.steps; ++step) {
      const HarpDecision& d = runner->decisions().at(step * n + p);
      if (d.hesitated != run["hesitated"][step].get<bool>()) {
        return absl::InternalError(absl::StrCat(where, "step ", step, " hesitates here: ",
                                                d.hesitated, ", in the reference: ",
                                                run["hesitated"][step].get<bool>()));
      }
      worst->entropy = std::max(
          worst->entropy, std::abs(d.entropy_bits - run["entropy_bits"][step].get<double>()));
    }
    const std::string key = absl::StrCat("A.p", p, ".mixed");
    if (logits == nullptr || !logits->tensors().count(key) || got.logits[p].empty()) continue;
    const float* want = reinterpret_cast<const float*>(logits->tensors().at(key).data);
    for (int step = 0; step < decode.steps; ++step) {
      for (int64_t v = 0; v < vocab; ++v) {
        worst->logit = std::max(worst->logit, std::abs(static_cast<double>(got.logits[p][step][v]) -
                                                       want[step * vocab + v]));
      }
    }
  }
  if (worst->entropy > kEntropyTolerance || worst->logit > kLogitTolerance) {
    return absl::InternalError(absl::StrCat("setting ", name, ": entropy off by ", worst->entropy,
                                            " bits, logits by ", worst->logit));
  }
  return absl::OkStatus();
}

TEST(HarpReferenceTest, OneRankFollowsTheReference) {
  const json fixture = ReadReference();
  ASSERT_EQ(fixture["settings"].size(), 4u);
  for (const json& setting : fixture["settings"]) {
    Worst worst;
    EXPECT_OK(CheckSetting(fixture, setting, nullptr, &worst));
    std::printf("setting %s: entropy within %.2e bits, mixed logits within %.2e\n",
                setting["name"].get<std::string>().c_str(), worst.entropy, worst.logit);
  }
}

TEST(HarpReferenceTest, TensorParallelFollowsTheReference) {
  const json fixture = ReadReference();
  for (const json& setting : fixture["settings"]) {
    SCOPED_TRACE(setting["name"].get<std::string>());
    const auto statuses = testing::RunThreadedWorld({2, 1, 1, 0}, [&](ProcessGroups& groups) {
      Worst worst;
      return CheckSetting(fixture, setting, &groups, &worst);
    });
    for (const absl::Status& s : statuses) EXPECT_OK(s);
  }
}

}  // namespace
}  // namespace tessera
