// BeaconRunner's invariants on the GQA fixture with the reference's beacon tensors (window 64,
// r = 4; shared/specs/beacon.md §8): a short input is the plain model bit for bit and the W-th
// token within float rounding; chunk invariance; reset; determinism; per-request memory in a
// batch of several requests; beacon rows never have logits; the loader refuses missing or
// misshapen beacon tensors the config names, and without beacon keys takes the reference's
// initialisation (beacon rows projected by the base weights).
#include <cmath>
#include <filesystem>
#include <fstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/status_macros.h"
#include "tests/methods/beacon/beacon_harness.h"
#include "tests/test_util.h"

namespace tessera {
namespace {

using testing::BeaconModel;
using testing::RowScores;

std::vector<int32_t> Tokens(int64_t n, uint32_t seed) {
  std::vector<int32_t> t;
  uint32_t x = seed;
  for (int64_t i = 0; i < n; ++i) {
    x = x * 1664525u + 1013904223u;
    t.push_back(static_cast<int32_t>(3 + (x >> 8) % 509));
  }
  return t;
}

class BeaconRunnerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_OK_AND_ASSIGN(const nlohmann::json c, testing::BeaconCase("step"));
    ASSERT_OK_AND_ASSIGN(dir_, testing::MakeBeaconCheckpoint("runner", testing::CaseKeys(c)));
    ASSERT_OK_AND_ASSIGN(backend_, MakeBackend(BackendKind::kCpu));
    ASSERT_OK_AND_ASSIGN(m_, testing::LoadBeaconModel(backend_.get(), dir_));
    ASSERT_OK_AND_ASSIGN(cache_, m_.model->MakeCache(3, 256));
  }
  absl::StatusOr<RowScores> Fresh(const std::vector<int32_t>& tokens, int32_t slot = 0) {
    RETURN_IF_ERROR(m_.runner->StartSequence(slot, 0));
    cache_->Clear(slot);
    return testing::ScoreRows(m_, *cache_, slot, tokens);
  }

  std::string dir_;
  std::unique_ptr<Backend> backend_;
  BeaconModel m_;
  std::unique_ptr<KvCache> cache_;
};

TEST_F(BeaconRunnerTest, ShortInputIsThePlainModel) {
  ASSERT_OK_AND_ASSIGN(auto plain, LlamaModel::Load(dir_, backend_.get()));
  const std::vector<int32_t> tokens = Tokens(64, 3);
  ASSERT_OK_AND_ASSIGN(auto plain_cache, plain->MakeCache(1, 64));
  ForwardBatch b;
  b.tokens = tokens;
  for (int32_t i = 0; i < 64; ++i) {
    b.positions.push_back(i);
    b.slots.push_back(0);
    b.logit_rows.push_back(i);
  }
  ASSERT_OK_AND_ASSIGN(const ForwardOutput out, plain->Forward(b, *plain_cache));
  std::vector<int32_t> targets(tokens.begin() + 1, tokens.end());
  targets.push_back(0);
  ASSERT_OK_AND_ASSIGN(const auto want, plain->vocab().LogProbs(out.logits, targets));
  // 63 tokens: no condensation, the plain pass bit for bit.
  ASSERT_OK_AND_ASSIGN(RowScores s, Fresh(std::vector<int32_t>(tokens.begin(), tokens.end() - 1)));
  for (int i = 0; i < 62; ++i) ASSERT_EQ(s.logprob[i], static_cast<float>(want[i].logprob)) << i;
  // The 64th token condenses the window in the same pass; its own logits are the plain model's.
  ASSERT_OK_AND_ASSIGN(s, Fresh(tokens));
  for (int i = 0; i < 63; ++i) ASSERT_NEAR(s.logprob[i], want[i].logprob, 5e-5) << i;
  EXPECT_EQ(m_.runner->stream(0).memory, 16);
}

TEST_F(BeaconRunnerTest, ChunksResetAndDeterminism) {
  const std::vector<int32_t> tokens = Tokens(200, 5);
  ASSERT_OK_AND_ASSIGN(const RowScores whole, Fresh(tokens));
  ASSERT_OK_AND_ASSIGN(const RowScores again, Fresh(tokens));
  EXPECT_EQ(whole.logprob, again.logprob) << "the same input twice is bit-identical";
  // In chunks of 37, 64 and 99 tokens: window boundaries are absolute.
  ASSERT_OK(m_.runner->StartSequence(0, 0));
  cache_->Clear(0);
  std::vector<double> chunked;
  for (auto [begin, end] : {std::pair{0, 37}, {37, 101}, {101, 200}}) {
    ASSERT_OK_AND_ASSIGN(const RowScores part,
                         testing::ScoreRows(m_, *cache_, 0,
                                            std::vector<int32_t>(tokens.begin() + begin,
                                                                 tokens.begin() + end),
                                            end < 200 ? tokens[end] : -1));
    chunked.insert(chunked.end(), part.logprob.begin(), part.logprob.end());
  }
  for (size_t i = 0; i + 1 < tokens.size(); ++i) ASSERT_NEAR(chunked[i], whole.logprob[i], 5e-5) << i;
  EXPECT_EQ(m_.runner->stream(0).memory, 3 * 16);
  EXPECT_EQ(m_.runner->stream(0).raw, 200 - 192);
  // Without a reset a second input continues the first one's memory.
  const std::vector<int32_t> b = Tokens(100, 9);
  ASSERT_OK_AND_ASSIGN(const RowScores continued, testing::ScoreRows(m_, *cache_, 0, b));
  EXPECT_EQ(m_.runner->stream(0).memory, 4 * 16);
  EXPECT_EQ(m_.runner->stream(0).tokens, 300);
  // After a reset it is a fresh instance's.
  ASSERT_OK_AND_ASSIGN(const RowScores reset, Fresh(b));
  EXPECT_EQ(m_.runner->stream(0).memory, 16);
  EXPECT_EQ(m_.runner->stream(0).tokens, 100);
  ASSERT_OK_AND_ASSIGN(testing::BeaconModel other, testing::LoadBeaconModel(backend_.get(), dir_));
  ASSERT_OK_AND_ASSIGN(auto other_cache, other.model->MakeCache(1, 256));
  ASSERT_OK(other.runner->StartSequence(0, 0));
  ASSERT_OK_AND_ASSIGN(const RowScores fresh, testing::ScoreRows(other, *other_cache, 0, b));
  EXPECT_EQ(reset.logprob, fresh.logprob);
  EXPECT_NE(continued.logprob, fresh.logprob);
}

TEST_F(BeaconRunnerTest, RequestsInOneBatchKeepTheirOwnMemory) {
  const std::vector<std::vector<int32_t>> prompts = {Tokens(150, 1), Tokens(70, 2), Tokens(30, 4)};
  std::vector<RowScores> alone;
  for (const auto& p : prompts) {
    ASSERT_OK_AND_ASSIGN(RowScores s, Fresh(p));
    alone.push_back(s);
  }
  ForwardBatch batch;
  std::vector<int32_t> next;
  for (int32_t slot = 0; slot < 3; ++slot) {
    ASSERT_OK(m_.runner->StartSequence(slot, slot));
    cache_->Clear(slot);
    for (size_t i = 0; i < prompts[slot].size(); ++i) {
      batch.tokens.push_back(prompts[slot][i]);
      batch.positions.push_back(static_cast<int32_t>(i));
      batch.slots.push_back(slot);
    }
  }
  // Each request's last row: its greedy next token.
  for (int32_t slot = 0, end = 0; slot < 3; ++slot) {
    end += static_cast<int32_t>(prompts[slot].size());
    batch.logit_rows.push_back(end - 1);
  }
  StepReduction argmax;
  argmax.reduce = [&](size_t, const ForwardBatch&,
                      const ForwardOutput& out) -> absl::StatusOr<std::vector<float>> {
    ASSIGN_OR_RETURN(const auto ids, m_.model->vocab().ArgMax(out.logits));
    return std::vector<float>(ids.begin(), ids.end());
  };
  ASSERT_OK_AND_ASSIGN(const std::vector<float> words, m_.runner->Run({batch}, *cache_, argmax));
  for (int32_t slot = 0; slot < 3; ++slot) {
    EXPECT_EQ(static_cast<int32_t>(words[slot]), alone[slot].argmax.back()) << slot;
    const int64_t n = static_cast<int64_t>(prompts[slot].size());
    EXPECT_EQ(m_.runner->stream(slot).memory, n / 64 * 16);
    for (int64_t l = 0; l < cache_->layers(); ++l) {
      EXPECT_EQ(cache_->length(l, slot), n / 64 * 16 + n % 64) << slot;
    }
  }
}

TEST_F(BeaconRunnerTest, BeaconRowsHaveNoLogits) {
  ForwardBatch b;
  b.tokens = {5, static_cast<int32_t>(m_.model->config().vocab_size)};
  b.positions = {0, 1};
  b.slots = {0, 0};
  b.logit_rows = {1};
  cache_->Clear(0);
  auto out = m_.model->Forward(b, *cache_);
  ASSERT_FALSE(out.ok());
  EXPECT_THAT(std::string(out.status().message()), ::testing::HasSubstr("extension token"));
  b.tokens[1] += 1;  // past the one beacon token
  b.logit_rows = {0};
  out = m_.model->Forward(b, *cache_);
  ASSERT_FALSE(out.ok());
  EXPECT_THAT(std::string(out.status().message()), ::testing::HasSubstr("outside the vocabulary"));
}

TEST(BeaconLoadTest, MissingOrMisshapenTensorsTheConfigNamesAreRefused) {
  ASSERT_OK_AND_ASSIGN(const nlohmann::json c, testing::BeaconCase("step"));
  ASSERT_OK_AND_ASSIGN(auto backend, MakeBackend(BackendKind::kCpu));
  ASSERT_OK_AND_ASSIGN(const std::string missing, testing::MakeBeaconCheckpoint(
                                                      "missing", testing::CaseKeys(c), false));
  auto m = testing::LoadBeaconModel(backend.get(), missing);
  ASSERT_FALSE(m.ok());
  EXPECT_THAT(std::string(m.status().message()), ::testing::HasSubstr("beacon_q_proj"));
  // A beacon projection of the wrong shape: the loader names it and the shape it expects.
  const std::string bad = ::testing::TempDir() + "/bad_beacon.safetensors";
  ASSERT_OK(testing::WriteZeroTensors(
      bad, {{"model.layers.0.self_attn.beacon_q_proj.weight", {8, 128}}}));
  ASSERT_OK_AND_ASSIGN(const std::string shaped, testing::MakeBeaconCheckpoint(
                                                     "shape", testing::CaseKeys(c), true, bad));
  m = testing::LoadBeaconModel(backend.get(), shaped);
  ASSERT_FALSE(m.ok());
  EXPECT_THAT(std::string(m.status().message()),
              ::testing::HasSubstr("model.layers.0.self_attn.beacon_q_proj.weight"));
  EXPECT_THAT(std::string(m.status().message()), ::testing::HasSubstr("128"));
  // Without beacon keys the tensors are optional: beacon rows use the base projections and the
  // EOS embedding (the reference's initialisation), which differs from the trained tensors.
  ASSERT_OK_AND_ASSIGN(const std::string bare, testing::MakeBeaconCheckpoint(
                                                   "bare", nlohmann::json::object(), false));
  config::BeaconSettings s;
  s.set_window(64);
  s.add_ratios(4);
  ASSERT_OK_AND_ASSIGN(testing::BeaconModel base, testing::LoadBeaconModel(backend.get(), bare, s));
  ASSERT_OK_AND_ASSIGN(const std::string full,
                       testing::MakeBeaconCheckpoint("trained", testing::CaseKeys(c)));
  ASSERT_OK_AND_ASSIGN(testing::BeaconModel trained, testing::LoadBeaconModel(backend.get(), full));
  const std::vector<int32_t> tokens = Tokens(100, 7);
  ASSERT_OK_AND_ASSIGN(auto cache_a, base.model->MakeCache(1, 256));
  ASSERT_OK_AND_ASSIGN(auto cache_b, trained.model->MakeCache(1, 256));
  ASSERT_OK(base.runner->StartSequence(0, 0));
  ASSERT_OK(trained.runner->StartSequence(0, 0));
  ASSERT_OK_AND_ASSIGN(const RowScores a, testing::ScoreRows(base, *cache_a, 0, tokens));
  ASSERT_OK_AND_ASSIGN(const RowScores b, testing::ScoreRows(trained, *cache_b, 0, tokens));
  for (int i = 0; i < 63; ++i) EXPECT_EQ(a.logprob[i], b.logprob[i]) << "before the first window";
  double differ = 0;
  for (int i = 64; i < 99; ++i) differ = std::max(differ, std::abs(a.logprob[i] - b.logprob[i]));
  EXPECT_GT(differ, 1e-3) << "after it, the beacon tensors matter";
}

}  // namespace
}  // namespace tessera
