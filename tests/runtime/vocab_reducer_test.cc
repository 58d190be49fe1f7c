// VocabReducer against a full-vocabulary computation in double precision, at tp 1, 2 and 4
// (ranks as threads): a vocabulary of 103 ids that no tp divides (so the last shard is short and
// its padding must not count), ties for the top-1 and the top-2 across shard boundaries, -inf
// entries and a whole shard of -inf. Every rank must get bitwise identical results. The same
// reductions run on the guarded device backend (device memory behind PROT_NONE) at tp 1.
#include "runtime/vocab_parallel.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <mutex>
#include <numeric>

#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "kernels/status_macros.h"
#include "tests/layouts/threaded_world.h"
#include "tests/runtime/guarded_device_backend.h"
#include "tests/test_util.h"

namespace tessera {
namespace {

constexpr int64_t kVocab = 103, kRows = 5;
constexpr float kInf = std::numeric_limits<float>::infinity();

std::vector<float> TestLogits() {
  std::vector<float> z = testing::RandomFloats(kRows * kVocab, 31, 4.0f);
  auto at = [&](int64_t r, int64_t id) -> float& { return z[r * kVocab + id]; };
  at(0, 10) = at(0, 60) = 40.0f;            // top-1 tie across shards: id 10 wins
  at(1, 70) = 40.0f;                         // top-2 tie: ids 20 and 95 share the second place
  at(1, 20) = at(1, 95) = 39.5f;
  for (int64_t id = 26; id < 52; ++id) at(2, id) = -kInf;  // shard 1 of 4 holds only -inf
  at(2, 0) = -kInf;
  at(3, 102) = 40.0f;                        // the maximum is the last id (short last shard)
  for (int64_t id = 0; id < kVocab; id += 3) at(4, id) = -kInf;
  return z;
}

struct Reference {
  double lse, entropy, gap;
  int32_t top1, top2;
};

Reference Reduce(const float* row) {
  Reference ref{};
  double m = -INFINITY;
  for (int64_t i = 0; i < kVocab; ++i) m = std::max(m, static_cast<double>(row[i]));
  double z = 0.0;
  for (int64_t i = 0; i < kVocab; ++i) z += std::exp(row[i] - m);
  ref.lse = m + std::log(z);
  for (int64_t i = 0; i < kVocab; ++i) {
    const double p = std::exp(row[i] - ref.lse);
    if (p > 0) ref.entropy -= p * std::log(p);
  }
  ref.top1 = 0;
  for (int64_t i = 1; i < kVocab; ++i) if (row[i] > row[ref.top1]) ref.top1 = i;
  ref.top2 = ref.top1 == 0 ? 1 : 0;
  for (int64_t i = 0; i < kVocab; ++i) {
    if (i != ref.top1 && row[i] > row[ref.top2]) ref.top2 = i;
  }
  ref.gap = std::exp(row[ref.top1] - ref.lse) - std::exp(row[ref.top2] - ref.lse);
  return ref;
}

ShardPlan VocabPlan(int tp, int rank) {
  ShardPlan plan;
  plan.tp_size = tp;
  plan.tp_rank = rank;
  plan.vocab_shard = (kVocab + tp - 1) / tp;
  plan.vocab_begin = rank * plan.vocab_shard;
  plan.vocab_rows = std::min(plan.vocab_shard, kVocab - plan.vocab_begin);
  return plan;
}

// What one rank computed, for comparison across ranks and with the reference.
struct Observed {
  std::vector<VocabRowStats> stats;
  std::vector<std::vector<VocabReducer::IdLogit>> top5, top_all;
  std::vector<TokenLogProb> logprobs;
  std::vector<float> full;
};

const std::vector<int32_t> kTargets = {60, 95, 30, 102, 1};

// This rank's shard of the test logits in `backend`'s memory, reduced.
absl::StatusOr<Observed> Observe(Backend& backend, Communicator* tp, const ShardPlan& plan) {
  const std::vector<float> z = TestLogits();
  std::vector<float> shard(kRows * plan.vocab_rows);
  for (int64_t r = 0; r < kRows; ++r) {
    std::memcpy(&shard[r * plan.vocab_rows], &z[r * kVocab + plan.vocab_begin],
                plan.vocab_rows * sizeof(float));
  }
  Tensor logits(&backend, DType::kF32);
  RETURN_IF_ERROR(logits.Resize({kRows, plan.vocab_rows}));
  RETURN_IF_ERROR(backend.CopyToDevice(logits.view().data, shard.data(), shard.size() * 4));
  VocabReducer reducer(&backend, tp, plan);
  Observed out;
  ASSIGN_OR_RETURN(out.stats, reducer.Stats(logits.view()));
  ASSIGN_OR_RETURN(out.logprobs, reducer.LogProbs(logits.view(), kTargets));
  ASSIGN_OR_RETURN(out.top5, reducer.TopK(logits.view(), 5));
  // The whole vocabulary: more than a shard, and a short last shard pads its candidates.
  ASSIGN_OR_RETURN(out.top_all, reducer.TopK(logits.view(), kVocab));
  if (reducer.TopK(logits.view(), kVocab + 1).ok()) {
    return absl::InternalError("TopK took k above the vocabulary");
  }
  Tensor full;
  RETURN_IF_ERROR(reducer.GatherFull(logits.view(), kVocab, &full));
  out.full.assign(full.data<float>(), full.data<float>() + full.numel());
  return out;
}

void ExpectMatchesReference(const Observed& got) {
  const std::vector<float> z = TestLogits();
  ASSERT_EQ(got.stats.size(), static_cast<size_t>(kRows));
  for (int64_t r = 0; r < kRows; ++r) {
    const Reference ref = Reduce(&z[r * kVocab]);
    const VocabRowStats& s = got.stats[r];
    EXPECT_EQ(s.top1, ref.top1) << "row " << r;
    EXPECT_EQ(s.top2, ref.top2) << "row " << r;
    EXPECT_NEAR(s.log_sum_exp, ref.lse, 1e-6 * std::abs(ref.lse)) << "row " << r;
    EXPECT_NEAR(s.entropy, ref.entropy, 1e-5) << "row " << r;
    EXPECT_NEAR(s.top2_gap(), ref.gap, 1e-6) << "row " << r;
    const double want_logprob = z[r * kVocab + kTargets[r]] - ref.lse;
    if (std::isinf(want_logprob)) {  // a target at -inf has log-probability -inf
      EXPECT_EQ(got.logprobs[r].logprob, want_logprob) << "row " << r;
    } else {
      EXPECT_NEAR(got.logprobs[r].logprob, want_logprob, 1e-5) << "row " << r;
    }
    EXPECT_EQ(got.logprobs[r].is_greedy, kTargets[r] == ref.top1) << "row " << r;
  }
  ASSERT_EQ(got.full.size(), z.size());
  for (size_t i = 0; i < z.size(); ++i) ASSERT_EQ(got.full[i], z[i]) << "element " << i;
  for (int64_t r = 0; r < kRows; ++r) {  // top 5: a stable sort of the whole row
    const float* row = &z[r * kVocab];
    std::vector<int32_t> order(kVocab);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return row[a] > row[b]; });
    for (int j = 0; j < 5; ++j) {
      EXPECT_EQ(got.top5[r][j].id, order[j]) << "row " << r << " rank " << j;
      EXPECT_EQ(got.top5[r][j].logit, row[order[j]]);
    }
    ASSERT_EQ(got.top_all[r].size(), static_cast<size_t>(kVocab));
    for (int j = 0; j < kVocab; ++j) {
      EXPECT_EQ(got.top_all[r][j].id, order[j]) << "row " << r << " rank " << j;
    }
  }
  EXPECT_EQ(got.stats[0].top1, 10);
  EXPECT_TRUE(got.logprobs[3].is_greedy);
}

class VocabReducerTest : public ::testing::TestWithParam<int> {};

TEST_P(VocabReducerTest, EqualsDoublePrecisionOnEveryRank) {
  const int tp = GetParam();
  std::vector<Observed> observed(tp);
  const std::vector<absl::Status> statuses = testing::RunThreadedWorld(
      {tp, 1, 1, 0}, [&](ProcessGroups& groups) -> absl::Status {
        ASSIGN_OR_RETURN(std::unique_ptr<Backend> backend, MakeBackend(BackendKind::kCpu));
        const int rank = groups.layout.tp_rank();
        ASSIGN_OR_RETURN(observed[rank],
                         Observe(*backend, groups.tp.get(), VocabPlan(tp, rank)));
        return absl::OkStatus();
      });
  for (const absl::Status& s : statuses) ASSERT_OK(s);
  ExpectMatchesReference(observed[0]);
  for (int r = 1; r < tp; ++r) {  // bitwise the same decisions and values on every rank
    for (int64_t row = 0; row < kRows; ++row) {
      const VocabRowStats &a = observed[0].stats[row], &b = observed[r].stats[row];
      EXPECT_EQ(std::memcmp(&a, &b, sizeof(a)), 0) << "rank " << r << " row " << row;
      EXPECT_EQ(observed[0].logprobs[row].logprob, observed[r].logprobs[row].logprob);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(TensorParallel, VocabReducerTest, ::testing::Values(1, 2, 4),
                         [](const auto& info) { return "tp" + std::to_string(info.param); });

TEST(VocabReducerDeviceTest, RunsOnDeviceMemory) {
  testing::GuardedDeviceBackend device;
  ASSERT_OK_AND_ASSIGN(Observed got, Observe(device, nullptr, VocabPlan(1, 0)));
  ExpectMatchesReference(got);
  // The statistics, the gathered logits and the (id, logit) pairs of the two TopK calls.
  EXPECT_LE(device.bytes_to_host(), (9 * kRows + kRows * kVocab + 2 * kRows * (5 + kVocab)) * 4 * 2)
      << "only the statistics, the gathered logits and the top-k may reach the host";
}

}  // namespace
}  // namespace tessera
