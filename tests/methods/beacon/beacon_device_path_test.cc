// Activation Beacon on the guarded device backend (tests/runtime/guarded_device_backend.h: CPU
// math behind memory the host cannot touch) gives the CPU backend's per-token log-probabilities
// and generated tokens, bit for bit: the beacon embedding and projections (uploaded extra
// weights), the row merges, the moved keys, the RowKeys scratch cache and merge, and the
// compaction all go through backend ops and copies. Generation runs through the Generator.
#include "gtest/gtest.h"
#include "kernels/status_macros.h"
#include "runtime/generator.h"
#include "tests/methods/beacon/beacon_harness.h"
#include "tests/runtime/guarded_device_backend.h"
#include "tests/test_util.h"

namespace tessera {
namespace {

struct Outcome {
  std::vector<double> logprob;
  std::vector<int32_t> tokens;
  double windows = 0;
};

absl::StatusOr<Outcome> RunOn(Backend* backend, const std::string& dir) {
  ASSIGN_OR_RETURN(testing::BeaconModel m, testing::LoadBeaconModel(backend, dir));
  ASSIGN_OR_RETURN(const auto tokens,
                   testing::FixtureValues<int32_t>(
                       std::string(testing::kBeaconFixtures) + "/cases.safetensors", "step.tokens"));
  ASSIGN_OR_RETURN(auto cache, m.model->MakeCache(1, 256));
  RETURN_IF_ERROR(m.runner->StartSequence(0, 0));
  ASSIGN_OR_RETURN(const testing::RowScores s, testing::ScoreRows(m, *cache, 0, tokens));
  Outcome out;
  out.logprob = s.logprob;
  GeneratorOptions options;
  options.runner = m.runner;
  Generator generator(m.model.get(), nullptr, options);
  GenerationRequest request;
  request.prompt_ids.assign(tokens.begin(), tokens.begin() + 250);
  request.max_new_tokens = 12;
  request.ignore_eos = true;
  ASSIGN_OR_RETURN(auto results, generator.Generate({request}));
  out.tokens = results[0].token_ids;
  out.windows = results[0].counters.values["beacon_windows"];
  return out;
}

TEST(BeaconDevicePathTest, GivesTheCpuBackendsLogProbsAndTokens) {
  ASSERT_OK_AND_ASSIGN(const nlohmann::json c, testing::BeaconCase("step"));
  ASSERT_OK_AND_ASSIGN(const std::string dir,
                       testing::MakeBeaconCheckpoint("device", testing::CaseKeys(c)));
  ASSERT_OK_AND_ASSIGN(auto cpu, MakeBackend(BackendKind::kCpu));
  testing::GuardedDeviceBackend device;
  ASSERT_OK_AND_ASSIGN(const Outcome want, RunOn(cpu.get(), dir));
  ASSERT_OK_AND_ASSIGN(const Outcome got, RunOn(&device, dir));
  EXPECT_EQ(got.logprob, want.logprob);
  EXPECT_EQ(got.tokens, want.tokens);
  EXPECT_EQ(want.windows, 4);  // 250 prompt tokens + 12: a condensation during decode
  // The reference's greedy tokens (tools/reference/beacon.py), through the Generator.
  ASSERT_OK_AND_ASSIGN(const auto generated,
                       testing::FixtureValues<int32_t>(
                           std::string(testing::kBeaconFixtures) + "/cases.safetensors",
                           "step.generated"));
  EXPECT_EQ(want.tokens, generated);
}

}  // namespace
}  // namespace tessera
