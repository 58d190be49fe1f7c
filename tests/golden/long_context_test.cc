// Contexts past max_position_embeddings against Hugging Face transformers: the fixtures of
// tools/make_long_context_fixtures.py are one tiny random Llama with max_position_embeddings = 16
// under each rope_scaling type that extends the context (dynamic NTK, linear, llama3, yarn with
// its attention factor on cos and sin). prompt0
// has 40 tokens; prompt1 has 12 and its 8 greedy tokens cross position 16. With max_seq_len set
// past the limit, Tessera's logits must match transformers' and its greedy tokens (decoded over
// the KV cache, as transformers' `generate` does; dynamic NTK recomputes the frequencies from the
// length at every step) must be identical; without it the 40-token prompt is refused.
#include <cmath>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "runtime/generator.h"
#include "runtime/llama_model.h"
#include "runtime/safetensors.h"
#include "runtime/scorer.h"
#include "tests/golden/golden_fixture.h"
#include "tests/test_util.h"

namespace tessera {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

// Relative L2 error of the logits (F32 weights, F32 compute on both sides). Measured on the CPU
// backend: at most 1.2e-6 over the three types and both prompts.
constexpr double kTolerance = 1e-5;
constexpr int kPrompts = 2;
constexpr int kGreedySteps = 8;
constexpr int32_t kMaxSeqLen = 48;  // prompt0's 40 tokens + 8 new ones

using LongContextParam = std::tuple<std::string, BackendKind>;  // rope_scaling type, backend

class LongContextTest : public ::testing::TestWithParam<LongContextParam> {
 protected:
  void SetUp() override {
    auto backend = MakeBackend(std::get<1>(GetParam()));
    if (!backend.ok() && std::get<1>(GetParam()) == BackendKind::kCuda) {
      GTEST_SKIP() << "no CUDA backend: " << backend.status().message();
    }
    ASSERT_OK(backend.status());
    backend_ = *std::move(backend);
    const std::string dir = "tests/fixtures/long_context/" + scaling();
    ASSERT_OK_AND_ASSIGN(model_, LlamaModel::Load(dir, backend_.get()));
    ASSERT_OK_AND_ASSIGN(golden_, SafetensorsFile::Open(dir + "/golden.safetensors"));
    ASSERT_EQ(model_->config().max_position_embeddings, 16);
  }
  const std::string& scaling() const { return std::get<0>(GetParam()); }
  std::vector<int32_t> Ids(int p, const char* what) const {
    return testing::ReadIds(*golden_, absl::StrCat("prompt", p, ".", what));
  }
  GenerationRequest Request(int p) const {
    GenerationRequest r;
    r.prompt_ids = Ids(p, "input_ids");
    r.max_new_tokens = kGreedySteps;
    r.ignore_eos = true;
    return r;
  }

  std::unique_ptr<Backend> backend_;
  std::unique_ptr<LlamaModel> model_;
  std::unique_ptr<SafetensorsFile> golden_;
};

TEST_P(LongContextTest, LogitsPastTheContextMatchTransformers) {
  const int64_t vocab = model_->config().vocab_size;
  for (int p = 0; p < kPrompts; ++p) {
    const std::vector<int32_t> ids = Ids(p, "input_ids");
    const TensorEntry& ref = golden_->tensors().at(absl::StrCat("prompt", p, ".logits"));
    ASSERT_EQ(ref.shape, (std::vector<int64_t>{static_cast<int64_t>(ids.size()), vocab}));
    ASSERT_OK_AND_ASSIGN(auto cache, model_->MakeCache(1, static_cast<int64_t>(ids.size())));
    Tensor logits;
    ASSERT_OK(model_->Forward(testing::AllPositions(ids), *cache, &logits));
    const double err = testing::RelativeError(
        logits.data<float>(), reinterpret_cast<const float*>(ref.data), ids.size() * vocab);
    EXPECT_LT(err, kTolerance) << "prompt " << p << " (" << ids.size() << " tokens)";
    RecordProperty(absl::StrCat("rel_err_prompt", p), absl::StrCat(err));
  }
}

// Alone and in one batch: each sequence's rotary frequencies follow its own length.
TEST_P(LongContextTest, GreedyPastTheContextMatchesTransformers) {
  Generator generator(model_.get(), nullptr, {.max_seq_len = kMaxSeqLen});
  ASSERT_OK_AND_ASSIGN(auto batched, generator.Generate({Request(0), Request(1)}));
  for (int p = 0; p < kPrompts; ++p) {
    const std::vector<int32_t> expected = Ids(p, "greedy");
    ASSERT_OK_AND_ASSIGN(auto alone, generator.Generate({Request(p)}));
    EXPECT_EQ(alone[0].token_ids, expected) << "prompt " << p << " alone";
    EXPECT_EQ(batched[p].token_ids, expected) << "prompt " << p << " in a batch";
    EXPECT_EQ(batched[p].finish_reason, FinishReason::kLength);
  }
}

// Without --max-seq-len the checkpoint's own context holds: the 40-token prompt is refused with
// a message naming the limit and the flag, and the 12-token one stops at position 16 after the
// same first tokens as transformers (positions below 16 use the unscaled dynamic frequencies).
TEST_P(LongContextTest, WithoutMaxSeqLenTheContextIsMaxPositionEmbeddings) {
  Generator generator(model_.get(), nullptr);
  const absl::Status refused = generator.Generate({Request(0)}).status();
  EXPECT_EQ(refused.code(), absl::StatusCode::kInvalidArgument);
  for (std::string part : {std::string("40 tokens"), std::string("max_position_embeddings) is 16"),
                           std::string("--max-seq-len"), "rope_scaling \"" + scaling() + "\""}) {
    EXPECT_THAT(std::string(refused.message()), HasSubstr(part));
  }
  ASSERT_OK_AND_ASSIGN(auto short_prompt, generator.Generate({Request(1)}));
  const std::vector<int32_t> expected = Ids(1, "greedy");
  // 12 prompt tokens fill positions 0..11; new tokens are fed at 12..15, so 5 come out.
  EXPECT_EQ(short_prompt[0].token_ids,
            std::vector<int32_t>(expected.begin(), expected.begin() + 5));
  EXPECT_EQ(short_prompt[0].finish_reason, FinishReason::kLength);
}

// Loglikelihood of prompt0's last 20 tokens given its first 20, against log-softmax of
// transformers' logits. The scorer feeds 39 tokens, the golden forward 40: equal frequencies for
// linear, llama3 and yarn only (dynamic NTK's depend on the length), so dynamic checks the refusal.
TEST_P(LongContextTest, ScorerPastTheContext) {
  const std::vector<int32_t> ids = Ids(0, "input_ids");
  const LoglikelihoodRequest request{std::vector<int32_t>(ids.begin(), ids.begin() + 20),
                                     std::vector<int32_t>(ids.begin() + 20, ids.end())};
  Scorer plain(model_.get());
  const absl::Status refused = plain.Loglikelihood({request}).status();
  EXPECT_EQ(refused.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(refused.message()),
              AllOf(HasSubstr("39 tokens"), HasSubstr("max_position_embeddings"),
                    HasSubstr("--max-seq-len")));
  if (scaling() == "dynamic") return;

  Scorer scorer(model_.get(), 16, 2048, /*max_seq_len=*/40);
  ASSERT_OK_AND_ASSIGN(auto results, scorer.Loglikelihood({request}));
  const int64_t vocab = model_->config().vocab_size;
  const float* ref = reinterpret_cast<const float*>(golden_->tensors().at("prompt0.logits").data);
  ASSERT_EQ(results[0].token_logprobs.size(), 20u);
  double max_diff = 0;
  for (int t = 20; t < 40; ++t) {
    const float* row = ref + (t - 1) * vocab;  // the logits that predict token t
    double max = row[0], sum = 0;
    for (int64_t v = 0; v < vocab; ++v) max = std::max<double>(max, row[v]);
    for (int64_t v = 0; v < vocab; ++v) sum += std::exp(row[v] - max);
    const double expected = row[ids[t]] - max - std::log(sum);
    max_diff = std::max(max_diff, std::abs(results[0].token_logprobs[t - 20] - expected));
  }
  // Absolute, per token, in nats; measured at most 4.3e-6 on the CPU backend.
  EXPECT_LT(max_diff, 1e-4);
  RecordProperty("max_abs_logprob_diff", absl::StrCat(max_diff));
}

INSTANTIATE_TEST_SUITE_P(RopeScaling, LongContextTest,
                         ::testing::Combine(
                             ::testing::Values("dynamic", "linear", "llama3", "yarn"),
                             ::testing::Values(BackendKind::kCpu, BackendKind::kCuda)),
                         [](const ::testing::TestParamInfo<LongContextParam>& info) {
                           return std::get<0>(info.param) +
                                  (std::get<1>(info.param) == BackendKind::kCuda ? "_cuda"
                                                                                 : "_cpu");
                         });

}  // namespace
}  // namespace tessera
