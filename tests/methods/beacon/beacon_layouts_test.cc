// Activation Beacon at every layout, ranks as threads, against one rank (shared/specs/beacon.md
// §7, §8.8), on the GQA fixture with the reference's beacon tensors (window 64, r = 4): beacon
// projections sharded like their base twins (tp 4 replicates the 2 KV heads), each stage keeping
// its own layers' memory. For a 300-token input (4 condensed windows and a partial one) the
// per-token log-probabilities are one rank's within 1e-4, every rank's cache holds the same
// memory and raw entries per layer, and greedy generation across a condensation gives one rank's
// tokens.
#include <cmath>

#include "gtest/gtest.h"
#include "kernels/status_macros.h"
#include "tests/layouts/threaded_world.h"
#include "tests/methods/beacon/beacon_harness.h"
#include "tests/test_util.h"

namespace tessera {
namespace {

struct RankOutcome {
  std::vector<double> logprob;
  std::vector<int32_t> generated;
  std::vector<int32_t> lengths;  // per local layer after the input
  int64_t layer_begin = 0;
  int32_t memory = 0, raw = 0;
};

const std::string& Checkpoint() {
  static const std::string* dir = [] {
    auto c = testing::BeaconCase("step");
    EXPECT_TRUE(c.ok()) << c.status();
    auto d = testing::MakeBeaconCheckpoint("layouts", testing::CaseKeys(*c));
    EXPECT_TRUE(d.ok()) << d.status();
    return new std::string(d.ok() ? *d : "");
  }();
  return *dir;
}

std::vector<int32_t> Input() {
  auto tokens = testing::FixtureValues<int32_t>(
      std::string(testing::kBeaconFixtures) + "/cases.safetensors", "step.tokens");
  EXPECT_TRUE(tokens.ok());
  return tokens.ok() ? *tokens : std::vector<int32_t>();
}

absl::StatusOr<RankOutcome> RunRank(ProcessGroups* groups) {
  ASSIGN_OR_RETURN(auto backend, MakeBackend(BackendKind::kCpu));
  ASSIGN_OR_RETURN(testing::BeaconModel m,
                   testing::LoadBeaconModel(backend.get(), Checkpoint(), {}, groups));
  ASSIGN_OR_RETURN(auto cache, m.model->MakeCache(1, 256));
  const std::vector<int32_t> tokens = Input();
  RankOutcome o;
  RETURN_IF_ERROR(m.runner->StartSequence(0, 0));
  ASSIGN_OR_RETURN(const testing::RowScores s, testing::ScoreRows(m, *cache, 0, tokens));
  o.logprob = s.logprob;
  for (int64_t l = 0; l < cache->layers(); ++l) o.lengths.push_back(cache->length(l, 0));
  o.layer_begin = m.model->plan().layer_begin;
  o.memory = m.runner->stream(0).memory;
  o.raw = m.runner->stream(0).raw;
  RETURN_IF_ERROR(m.runner->StartSequence(0, 1));
  cache->Clear(0);
  ASSIGN_OR_RETURN(o.generated,
                   testing::Greedy(m, *cache, 0,
                                   std::vector<int32_t>(tokens.begin(), tokens.begin() + 250), 12));
  return o;
}

const RankOutcome& OneRank() {
  static const RankOutcome* one = [] {
    auto r = RunRank(nullptr);
    EXPECT_TRUE(r.ok()) << r.status();
    return new RankOutcome(r.ok() ? *r : RankOutcome());
  }();
  return *one;
}

void ExpectLikeOneRank(const WorldLayout& layout) {
  const RankOutcome& one = OneRank();
  ASSERT_FALSE(one.logprob.empty());
  std::vector<RankOutcome> ranks(layout.world_size());
  const auto statuses = testing::RunThreadedWorld(
      layout,
      [&](ProcessGroups& g) -> absl::Status {
        ASSIGN_OR_RETURN(ranks[g.layout.rank], RunRank(&g));
        return absl::OkStatus();
      },
      absl::Seconds(120));
  for (size_t r = 0; r < statuses.size(); ++r) ASSERT_TRUE(statuses[r].ok()) << r << statuses[r];
  double worst = 0;
  for (size_t r = 0; r < ranks.size(); ++r) {
    SCOPED_TRACE(::testing::Message() << "rank " << r);
    const RankOutcome& o = ranks[r];
    EXPECT_EQ(o.memory, one.memory);
    EXPECT_EQ(o.raw, one.raw);
    for (size_t l = 0; l < o.lengths.size(); ++l) {
      EXPECT_EQ(o.lengths[l], one.lengths[o.layer_begin + l]) << "layer " << o.layer_begin + l;
    }
    ASSERT_EQ(o.logprob.size(), one.logprob.size());
    for (size_t i = 0; i + 1 < o.logprob.size(); ++i) {
      worst = std::max(worst, std::abs(o.logprob[i] - one.logprob[i]));
      ASSERT_NEAR(o.logprob[i], one.logprob[i], 1e-4) << "token " << i;
    }
    EXPECT_EQ(o.generated, one.generated);
  }
  std::printf("tp %d pp %d: max |log-prob - one rank's| %.3g\n", layout.tp, layout.pp, worst);
}

TEST(BeaconLayoutsTest, PipelineTwo) { ExpectLikeOneRank({1, 2, 1, 0}); }
TEST(BeaconLayoutsTest, TensorTwo) { ExpectLikeOneRank({2, 1, 1, 0}); }
TEST(BeaconLayoutsTest, TensorFour) { ExpectLikeOneRank({4, 1, 1, 0}); }
TEST(BeaconLayoutsTest, TensorTwoByPipelineTwo) { ExpectLikeOneRank({2, 2, 1, 0}); }

}  // namespace
}  // namespace tessera
