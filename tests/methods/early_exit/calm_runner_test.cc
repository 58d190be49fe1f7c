// CalmRunner on the embedded model:
// - threshold 1: tokens and logits bit-identical to the plain runtime (checks at 2, 4, 6 and at
//   every block);
// - after exits, every layer's cache holds every fed token (the exited ones by state propagation);
// - a vocabulary reduction keeping every row (vocab_k = V) equals the full vocabulary, and with
//   the same decisions a reduced check is at least as confident as the full one;
// - every layout (tp 2, tp 4, pp 2 with checks on both stages, tp2 x pp2) decides and emits as one
//   rank, with and without vocabulary reduction (the global top-k at tp 4 is tp 1's).
#include <cstring>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kernels/status_macros.h"
#include "methods/early_exit/calm_runner.h"
#include "tests/layouts/threaded_world.h"
#include "tests/methods/early_exit/free_harness.h"
#include "tests/test_util.h"

namespace tessera {
namespace {

using config::EarlyExitSettings;
using testing::Decode;
using testing::Decoded;
using testing::DecodeOptions;
using testing::TinyPrompts;

EarlyExitSettings Calm(float tau, std::vector<int32_t> checks = {2, 4, 6},
                       EarlyExitSettings::VocabReduction reduction = EarlyExitSettings::VOCAB_FULL,
                       int32_t vocab_k = 0) {
  EarlyExitSettings s;
  s.set_policy(EarlyExitSettings::CALM);
  s.set_threshold(tau);
  *s.mutable_check_layers() = {checks.begin(), checks.end()};
  s.set_vocab_reduction(reduction);
  if (vocab_k > 0) s.set_vocab_k(vocab_k);
  return s;
}

// A model with heads after every check.
absl::StatusOr<std::unique_ptr<LlamaModel>> LoadForChecks(Backend* backend, ProcessGroups* groups,
                                                          const EarlyExitSettings& s) {
  ModelParallelism parallel;
  if (groups != nullptr) parallel = {groups->layout, groups->tp.get(), groups->pp.get()};
  ModelOptions options;
  for (int32_t c : s.check_layers()) options.head_after_layers.push_back(c - 1);
  return LlamaModel::Load(testing::kTinyModel, backend, parallel, options);
}

struct Result {
  Decoded decoded;
  std::vector<uint8_t> decisions;
  std::vector<float> confidences;
};

absl::StatusOr<Result> RunCalm(ProcessGroups* groups, CalmRunnerOptions options,
                               DecodeOptions decode) {
  ASSIGN_OR_RETURN(auto backend, MakeBackend(BackendKind::kCpu));
  ASSIGN_OR_RETURN(auto model, LoadForChecks(backend.get(), groups, options.settings));
  ASSIGN_OR_RETURN(auto cache, model->MakeCache(3, 256));
  ASSIGN_OR_RETURN(auto runner, CalmRunner::Create(model.get(), std::move(options)));
  Result r;
  ASSIGN_OR_RETURN(r.decoded, Decode(*model, *cache, *runner, nullptr, TinyPrompts(), decode));
  r.decisions = runner->decisions();
  r.confidences = runner->confidences();
  for (int64_t l = 0; l < cache->layers(); ++l) {
    for (int32_t slot = 0; slot < 3; ++slot) {
      const int32_t fed = static_cast<int32_t>(TinyPrompts()[slot].size()) + decode.steps - 1;
      if (cache->length(l, slot) != fed) {
        return absl::InternalError(absl::StrCat("layer ", l, " slot ", slot, " holds ",
                                                cache->length(l, slot), " entries, want ", fed));
      }
    }
  }
  return r;
}

TEST(CalmRunnerTest, ThresholdOneIsBitIdenticalToThePlainRuntime) {
  DecodeOptions decode;
  decode.record_logits = true;
  ASSERT_OK_AND_ASSIGN(auto backend, MakeBackend(BackendKind::kCpu));
  ASSERT_OK_AND_ASSIGN(auto plain_model, testing::LoadTinyModel(backend.get(), nullptr, 0));
  ASSERT_OK_AND_ASSIGN(auto cache, plain_model->MakeCache(3, 256));
  StepEngine engine(plain_model.get());
  ASSERT_OK_AND_ASSIGN(Decoded plain,
                       Decode(*plain_model, *cache, engine, nullptr, TinyPrompts(), decode));
  for (const std::vector<int32_t>& checks :
       {std::vector<int32_t>{2, 4, 6}, std::vector<int32_t>{1, 2, 3, 4, 5, 6, 7}}) {
    ASSERT_OK_AND_ASSIGN(Result r, RunCalm(nullptr, {Calm(1.0f, checks)}, decode));
    EXPECT_EQ(r.decoded.tokens, plain.tokens);
    for (size_t i = 0; i < plain.logits.size(); ++i) {
      for (size_t s = 0; s < plain.logits[i].size(); ++s) {
        EXPECT_EQ(std::memcmp(r.decoded.logits[i][s].data(), plain.logits[i][s].data(),
                              plain.logits[i][s].size() * sizeof(float)),
                  0);
      }
    }
    EXPECT_EQ(r.decisions.size(), 3u * (decode.steps - 1) * checks.size());
  }
}

TEST(CalmRunnerTest, ExitedTokensFillEveryLayer) {
  DecodeOptions decode;
  decode.steps = 16;
  ASSERT_OK_AND_ASSIGN(Result r, RunCalm(nullptr, {Calm(0.5f)}, decode));  // checks the caches
  int exits = 0;
  for (uint8_t d : r.decisions) exits += d;
  EXPECT_GT(exits, 5);
}

TEST(CalmRunnerTest, KeepingTheWholeVocabularyEqualsTheFullVocabulary) {
  DecodeOptions decode;
  decode.steps = 16;
  ASSERT_OK_AND_ASSIGN(Result full, RunCalm(nullptr, {Calm(0.5f)}, decode));
  ASSERT_OK_AND_ASSIGN(
      Result all_rows,
      RunCalm(nullptr, {Calm(0.5f, {2, 4, 6}, EarlyExitSettings::VOCAB_FIXED, 4096)}, decode));
  EXPECT_EQ(all_rows.decoded.tokens, full.decoded.tokens);
  EXPECT_EQ(all_rows.decisions, full.decisions);
  ASSERT_EQ(all_rows.confidences.size(), full.confidences.size());
  double worst = 0;
  for (size_t i = 0; i < full.confidences.size(); ++i) {
    worst = std::max(worst, std::abs(double(all_rows.confidences[i]) - full.confidences[i]));
  }
  EXPECT_LT(worst, 1e-6);
  std::printf("vocab_k = V vs the full vocabulary: largest confidence difference %.2e\n", worst);
}

TEST(CalmRunnerTest, AReducedCheckIsAtLeastAsConfidentWithTheSameDecisions) {
  DecodeOptions decode;
  decode.steps = 16;
  ASSERT_OK_AND_ASSIGN(Result full, RunCalm(nullptr, {Calm(0.5f)}, decode));
  CalmRunnerOptions reduced{Calm(0.5f, {2, 4, 6}, EarlyExitSettings::VOCAB_FIXED, 256)};
  reduced.forced_decisions = full.decisions;
  ASSERT_OK_AND_ASSIGN(Result r, RunCalm(nullptr, reduced, decode));
  EXPECT_EQ(r.decoded.tokens.size(), full.decoded.tokens.size());
  ASSERT_EQ(r.confidences.size(), full.confidences.size());
  int higher = 0;
  for (size_t i = 0; i < full.confidences.size(); ++i) {
    EXPECT_GE(r.confidences[i], full.confidences[i] - 1e-6) << "check " << i;
    higher += r.confidences[i] > full.confidences[i] + 1e-6;
  }
  EXPECT_GT(higher, 0) << "no reduced check was more confident";
}

TEST(CalmRunnerTest, EveryLayoutDecidesAndEmitsAsOneRank) {
  struct Layout {
    int tp, pp;
  };
  DecodeOptions decode;
  decode.steps = 12;
  for (const EarlyExitSettings& s :
       {Calm(0.5f), Calm(0.5f, {2, 4, 6}, EarlyExitSettings::VOCAB_FIXED, 256),
        Calm(0.5f, {2, 4, 6}, EarlyExitSettings::VOCAB_ADAPTIVE),
        Calm(0.5f, {2, 4, 6}, EarlyExitSettings::VOCAB_DECAYING)}) {
    SCOPED_TRACE(EarlyExitSettings::VocabReduction_Name(s.vocab_reduction()));
    ASSERT_OK_AND_ASSIGN(Result want, RunCalm(nullptr, {s}, decode));
    for (Layout layout : {Layout{2, 1}, Layout{4, 1}, Layout{1, 2}, Layout{2, 2}}) {
      SCOPED_TRACE(absl::StrCat("tp ", layout.tp, " pp ", layout.pp));
      std::mutex mu;
      std::vector<Result> got(layout.tp * layout.pp);
      const auto statuses = testing::RunThreadedWorld(
          {layout.tp, layout.pp, 1, 0}, [&](ProcessGroups& groups) -> absl::Status {
            CalmRunnerOptions options{s};
            options.check_agreement = true;
            DecodeOptions d = decode;
            d.micro_batches = layout.pp;
            ASSIGN_OR_RETURN(Result r, RunCalm(&groups, options, d));
            std::lock_guard<std::mutex> lock(mu);
            got[groups.layout.rank] = std::move(r);
            return absl::OkStatus();
          });
      for (size_t rank = 0; rank < statuses.size(); ++rank) {
        ASSERT_OK(statuses[rank]);
        EXPECT_EQ(got[rank].decoded.tokens, want.decoded.tokens) << "rank " << rank;
        EXPECT_EQ(got[rank].decisions, want.decisions) << "rank " << rank;
      }
    }
  }
}

}  // namespace
}  // namespace tessera
