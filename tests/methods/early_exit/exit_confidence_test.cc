// The exit confidences from sharded logits, by hand:
// - spec 8.5: z = [3, 2, 0] gives Z = 1 + e^-1 + e^-3 = 1.4177, gap = (1 - e^-1) / Z = 0.4459 and
//   top-1 = 0, on one rank and split over 2 and 3 ranks (three more ids at -inf, so that the
//   second of two shards holds only -inf); max probability 1 / Z and 1 - H / ln 6 likewise;
// - a tie goes to the smaller id and has gap 0;
// - the JSD-contrastive confidence: against itself the head is flat (0); against a uniform
//   amateur the contrast gives back the expert (gap p(1) - p(2)).
#include <cmath>
#include <limits>
#include <mutex>

#include "gtest/gtest.h"
#include "kernels/status_macros.h"
#include "methods/early_exit/contrastive_confidence.h"
#include "methods/early_exit/exit_confidence.h"
#include "tests/layouts/threaded_world.h"
#include "tests/test_util.h"

namespace tessera {
namespace {

using config::EarlyExitSettings;

constexpr float kNone = -std::numeric_limits<float>::infinity();

// Rows of 6 logits, split over `tp` ranks as the LM head is: stats of each row on every rank.
std::vector<std::vector<VocabRowStats>> StatsAt(int tp, const std::vector<std::vector<float>>& rows) {
  std::mutex mu;
  std::vector<std::vector<VocabRowStats>> out(tp);
  const auto statuses = testing::RunThreadedWorld({tp, 1, 1, 0}, [&](ProcessGroups& g) {
    return [&]() -> absl::Status {
      constexpr int64_t kVocab = 6;
      ShardPlan plan;
      plan.tp_size = tp;
      plan.tp_rank = g.layout.tp_rank();
      plan.vocab_shard = (kVocab + tp - 1) / tp;
      plan.vocab_begin = plan.tp_rank * plan.vocab_shard;
      plan.vocab_rows = std::max<int64_t>(0, std::min(plan.vocab_shard, kVocab - plan.vocab_begin));
      ASSIGN_OR_RETURN(auto backend, MakeBackend(BackendKind::kCpu));
      Tensor logits(backend.get(), DType::kF32);
      const int64_t n = static_cast<int64_t>(rows.size());
      RETURN_IF_ERROR(logits.Resize({n, plan.vocab_rows}));
      for (int64_t r = 0; r < n; ++r) {
        for (int64_t i = 0; i < plan.vocab_rows; ++i) {
          logits.data<float>()[r * plan.vocab_rows + i] = rows[r][plan.vocab_begin + i];
        }
      }
      VocabReducer reducer(backend.get(), g.tp.get(), plan);
      ASSIGN_OR_RETURN(std::vector<VocabRowStats> stats, reducer.Stats(logits.view()));
      std::lock_guard<std::mutex> lock(mu);
      out[g.layout.rank] = stats;
      return absl::OkStatus();
    }();
  });
  for (const absl::Status& s : statuses) EXPECT_OK(s);
  return out;
}

TEST(ExitConfidenceTest, HandCaseAndTiesOnEveryLayout) {
  const double z = 1 + std::exp(-1.0) + std::exp(-3.0);
  EXPECT_NEAR(z, 1.4177, 1e-4);
  for (int tp : {1, 2, 3}) {
    SCOPED_TRACE(tp);
    const auto ranks = StatsAt(tp, {{3, 2, 0, kNone, kNone, kNone}, {1, 1, 0, kNone, kNone, kNone}});
    for (const std::vector<VocabRowStats>& stats : ranks) {
      ASSERT_EQ(stats.size(), 2u);
      const VocabRowStats& s = stats[0];
      EXPECT_EQ(s.top1, 0);
      EXPECT_EQ(s.top2, 1);
      EXPECT_NEAR(ExitConfidence(s, EarlyExitSettings::TOP2_GAP, 6), (1 - std::exp(-1.0)) / z, 1e-7);
      EXPECT_NEAR(ExitConfidence(s, EarlyExitSettings::TOP2_GAP, 6), 0.4459, 1e-4);
      EXPECT_NEAR(ExitConfidence(s, EarlyExitSettings::MAX_PROB, 6), 1 / z, 1e-7);
      double h = 0;
      for (double logit : {3.0, 2.0, 0.0}) {
        const double p = std::exp(logit - 3) / z;
        h -= p * std::log(p);
      }
      EXPECT_NEAR(ExitConfidence(s, EarlyExitSettings::ENTROPY, 6), 1 - h / std::log(6.0), 1e-7);
      const VocabRowStats& tie = stats[1];  // [1, 1, 0]: id 0 first, gap 0
      EXPECT_EQ(tie.top1, 0);
      EXPECT_EQ(tie.top2, 1);
      EXPECT_EQ(ExitConfidence(tie, EarlyExitSettings::TOP2_GAP, 6), 0.0);
    }
  }
}

TEST(ContrastiveConfidenceTest, HandCases) {
  const std::vector<double> expert = {0.5, 0.3, 0.15, 0.05};  // head: p >= 0.05, all four
  const std::vector<double> uniform = {0.25, 0.25, 0.25, 0.25};
  // Against itself: log-ratio 0 on the head, s = 1/4 everywhere, gap 0.
  ContrastiveResult self = JsdContrastiveConfidence(expert, 4, {&expert}, {2});
  EXPECT_NEAR(self.confidence, 0.0, 1e-12);
  // Against a uniform amateur: softmax(log p - log 1/4) = p, gap 0.5 - 0.3.
  ContrastiveResult flat = JsdContrastiveConfidence(expert, 4, {&uniform}, {2});
  EXPECT_NEAR(flat.confidence, 0.2, 1e-12);
  // The amateur with the larger JSD per layer of distance wins: the uniform one, even farther.
  ContrastiveResult both = JsdContrastiveConfidence(expert, 6, {&expert, &uniform}, {4, 2});
  EXPECT_EQ(both.amateur, 1);
  EXPECT_NEAR(both.confidence, 0.2, 1e-12);
  // Off the head the expert's probabilities stay: p = [0.9, 0.05, 0.05] keeps only id 0 on
  // the head (0.05 < 0.09), s = [1 * 1, 0.05, 0.05]... times sum p = 1 on the head, gap 0.95.
  const std::vector<double> peaked = {0.9, 0.05, 0.05}, amateur = {0.4, 0.3, 0.3};
  EXPECT_NEAR(JsdContrastiveConfidence(peaked, 4, {&amateur}, {2}).confidence, 0.95, 1e-12);
}

}  // namespace
}  // namespace tessera
