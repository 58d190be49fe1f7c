// Activation Beacon against the Python reference on transformers (tools/reference/beacon.py,
// fixtures in tests/fixtures/beacon): on the 70B-shaped GQA fixture (16:2 heads, 4 layers) with
// the reference's beacon tensors, for step-expansion (attend_previous, r = 4), segmentation
// (no attend_previous, r = 8) and full-coverage (r = 16), window 64:
// - the per-token NLL of a 200-300-token input (3-4 condensed windows and a partial one, the
//   reference harness's protocol) within 1e-4 of the reference's, every token;
// - the memory and raw entries after it are the reference's, in every layer;
// - greedy generation after a prompt, one token per step across a condensation, gives the
//   reference's tokens;
// and on the shipped beacon-trained embedded model (models/tessera-code-tiny-beacon, bf16
// weights computed in F32) the per-token NLL of 4096 and 8192 tokens of code (4x and 8x its
// window, the ratios adapt-256 chooses) within 1e-4 of the reference's.
#include <cmath>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kernels/status_macros.h"
#include "tests/methods/beacon/beacon_harness.h"
#include "tests/test_util.h"

namespace tessera {
namespace {

using testing::BeaconCase;
using testing::FixtureValues;

class BeaconReferenceTest : public ::testing::TestWithParam<const char*> {};

TEST_P(BeaconReferenceTest, NllMemoryAndGreedyTokensMatchTheReference) {
  const std::string name = GetParam();
  ASSERT_OK_AND_ASSIGN(const nlohmann::json c, BeaconCase(name));
  ASSERT_OK_AND_ASSIGN(const std::string dir,
                       testing::MakeBeaconCheckpoint(name, testing::CaseKeys(c)));
  ASSERT_OK_AND_ASSIGN(auto backend, MakeBackend(BackendKind::kCpu));
  ASSERT_OK_AND_ASSIGN(testing::BeaconModel m, testing::LoadBeaconModel(backend.get(), dir));
  const std::string cases = absl::StrCat(testing::kBeaconFixtures, "/cases.safetensors");
  ASSERT_OK_AND_ASSIGN(const auto tokens, FixtureValues<int32_t>(cases, name + ".tokens"));
  ASSERT_OK_AND_ASSIGN(const auto nll, FixtureValues<float>(cases, name + ".nll"));
  ASSERT_OK_AND_ASSIGN(const auto generated, FixtureValues<int32_t>(cases, name + ".generated"));
  ASSERT_OK_AND_ASSIGN(auto cache, m.model->MakeCache(1, m.runner->PromptEntries(tokens.size())));

  ASSERT_OK(m.runner->StartSequence(0, 0));
  ASSERT_OK_AND_ASSIGN(const testing::RowScores s, testing::ScoreRows(m, *cache, 0, tokens));
  double worst = 0;
  for (size_t i = 0; i + 1 < tokens.size(); ++i) {
    worst = std::max(worst, std::abs(-s.logprob[i] - nll[i]));
    ASSERT_NEAR(-s.logprob[i], nll[i], 1e-4) << "token " << i;
  }
  std::printf("%s: %zu tokens, max |NLL - reference| %.3g\n", name.c_str(), tokens.size(), worst);
  const int32_t memory = c["memory"], raw = c["raw"];
  EXPECT_EQ(m.runner->stream(0).memory, memory);
  EXPECT_EQ(m.runner->stream(0).raw, raw);
  for (int64_t l = 0; l < cache->layers(); ++l) {
    ASSERT_EQ(cache->length(l, 0), memory + raw) << "layer " << l;
    for (int32_t j = 0; j < memory + raw; ++j) {
      ASSERT_EQ(cache->positions(l, 0)[j], j) << "compressed coordinates, layer " << l;
    }
  }

  const int prompt = c["prompt"];
  ASSERT_OK(m.runner->StartSequence(0, 1));  // reset
  cache->Clear(0);
  ASSERT_OK_AND_ASSIGN(
      const std::vector<int32_t> mine,
      testing::Greedy(m, *cache, 0, std::vector<int32_t>(tokens.begin(), tokens.begin() + prompt),
                      static_cast<int>(generated.size())));
  EXPECT_EQ(mine, generated);
}

INSTANTIATE_TEST_SUITE_P(Masks, BeaconReferenceTest,
                         ::testing::Values("step", "segment", "full"));

TEST(BeaconTrainedModelTest, NllMatchesTheReferenceAtFourAndEightTimesTheWindow) {
  ASSERT_OK_AND_ASSIGN(auto backend, MakeBackend(BackendKind::kCpu));
  ASSERT_OK_AND_ASSIGN(testing::BeaconModel m,
                       testing::LoadBeaconModel(backend.get(), "models/tessera-code-tiny-beacon"));
  const std::string file = absl::StrCat(testing::kBeaconFixtures, "/trained.safetensors");
  for (int length : {4096, 8192}) {
    const std::string name = absl::StrCat("trained_", length);
    ASSERT_OK_AND_ASSIGN(const auto tokens, FixtureValues<int32_t>(file, name + ".tokens"));
    ASSERT_OK_AND_ASSIGN(const auto nll, FixtureValues<float>(file, name + ".nll"));
    ASSERT_OK_AND_ASSIGN(auto cache, m.model->MakeCache(1, m.runner->PromptEntries(length)));
    ASSERT_OK(m.runner->StartSequence(0, 0));
    ASSERT_OK_AND_ASSIGN(const testing::RowScores s, testing::ScoreRows(m, *cache, 0, tokens));
    double worst = 0, mean = 0;
    for (size_t i = 0; i + 1 < tokens.size(); ++i) {
      worst = std::max(worst, std::abs(-s.logprob[i] - nll[i]));
      mean += nll[i] / (tokens.size() - 1);
      ASSERT_NEAR(-s.logprob[i], nll[i], 1e-4) << length << " token " << i;
    }
    std::printf("trained model, %d tokens (ratio %d): mean NLL %.4f, max |diff| %.3g\n", length,
                m.runner->stream(0).ratio, mean, worst);
  }
}

}  // namespace
}  // namespace tessera
