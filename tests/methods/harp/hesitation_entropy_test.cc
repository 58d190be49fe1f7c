// The entropy behind HARP's hesitation (shared/specs/harp.md §8 d), in bits, as HarpRunner takes
// it from VocabReducer::Stats, at tp 1, 2 and 4 (ranks as threads) on a 32000-token vocabulary:
// uniform logits (log2 32000 = 14.9658 bits), one-hot logits (0), random logits and a row with
// -inf entries (no NaN), each against the reference's formula -sum p log2(p + 1e-15) in double
// within 1e-5 bits, and the same bits on every rank.
#include <cmath>
#include <cstring>
#include <random>

#include "gtest/gtest.h"
#include "kernels/status_macros.h"
#include "runtime/vocab_parallel.h"
#include "tests/layouts/threaded_world.h"
#include "tests/test_util.h"

namespace tessera {
namespace {

constexpr int64_t kVocab = 32000, kRows = 4;

std::vector<float> Logits() {
  std::vector<float> z(kRows * kVocab, 0.0f);  // row 0: uniform
  z[1 * kVocab + 123] = 200.0f;                 // row 1: one-hot (the rest underflow to 0)
  std::mt19937 rng(9);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  for (int64_t v = 0; v < kVocab; ++v) {
    z[2 * kVocab + v] = normal(rng);
    z[3 * kVocab + v] = v % 5 == 0 ? -INFINITY : normal(rng);  // row 3: -inf entries
  }
  return z;
}

double ReferenceBits(const float* row) {
  double max = -INFINITY, total = 0, h = 0;
  for (int64_t v = 0; v < kVocab; ++v) max = std::max(max, static_cast<double>(row[v]));
  for (int64_t v = 0; v < kVocab; ++v) total += std::exp(row[v] - max);
  for (int64_t v = 0; v < kVocab; ++v) {
    const double p = std::exp(row[v] - max) / total;
    h -= p * std::log2(p + 1e-15);
  }
  return h;
}

TEST(HesitationEntropyTest, BitsMatchTheReferenceAtEveryTensorParallelSize) {
  const std::vector<float> z = Logits();
  std::vector<double> want(kRows);
  for (int64_t r = 0; r < kRows; ++r) want[r] = ReferenceBits(&z[r * kVocab]);
  EXPECT_NEAR(want[0], std::log2(32000.0), 1e-9);
  EXPECT_LT(want[1], 1e-9);
  for (int tp : {1, 2, 4}) {
    SCOPED_TRACE(tp);
    std::vector<std::vector<double>> got(tp);
    const auto statuses = testing::RunThreadedWorld({tp, 1, 1, 0}, [&](ProcessGroups& groups) {
      return [&]() -> absl::Status {
        ShardPlan plan;
        plan.tp_size = tp;
        plan.tp_rank = groups.layout.tp_rank();
        plan.vocab_shard = kVocab / tp;
        plan.vocab_begin = plan.tp_rank * plan.vocab_shard;
        plan.vocab_rows = plan.vocab_shard;
        ASSIGN_OR_RETURN(auto backend, MakeBackend(BackendKind::kCpu));
        std::vector<float> shard(kRows * plan.vocab_rows);
        for (int64_t r = 0; r < kRows; ++r) {
          std::memcpy(&shard[r * plan.vocab_rows], &z[r * kVocab + plan.vocab_begin],
                      plan.vocab_rows * sizeof(float));
        }
        Tensor logits(backend.get(), DType::kF32);
        RETURN_IF_ERROR(logits.Resize({kRows, plan.vocab_rows}));
        RETURN_IF_ERROR(backend->CopyToDevice(logits.view().data, shard.data(), shard.size() * 4));
        VocabReducer reducer(backend.get(), groups.tp.get(), plan);
        ASSIGN_OR_RETURN(const auto stats, reducer.Stats(logits.view()));
        for (const VocabRowStats& s : stats) {
          got[plan.tp_rank].push_back(s.entropy / std::log(2.0));
        }
        return absl::OkStatus();
      }();
    });
    for (const absl::Status& s : statuses) ASSERT_OK(s);
    for (int64_t r = 0; r < kRows; ++r) {
      EXPECT_FALSE(std::isnan(got[0][r])) << "row " << r;
      EXPECT_NEAR(got[0][r], want[r], 1e-5) << "row " << r;
      for (int rank = 1; rank < tp; ++rank) {
        EXPECT_EQ(std::memcmp(&got[0][r], &got[rank][r], sizeof(double)), 0) << "rank " << rank;
      }
    }
  }
}

}  // namespace
}  // namespace tessera
