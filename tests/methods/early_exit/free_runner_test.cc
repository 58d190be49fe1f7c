// FreeRunner on one rank, against the plain runtime on the embedded model:
// - threshold >= 1: tokens and logits bit-identical to the plain step engine, for every exit layer;
// - always exit: the decode tokens are the shallow head's; STATIC gives the same tokens;
// - KV exactness: after a flush every layer's K/V equals a full-depth prefill of the same tokens,
//   and the logits of every go-deep token equal a full forward of its prefix;
// - policy invariance: max_pending (with the decisions replayed) changes no token;
// - the runner inside the Generator: sampled generation at threshold 1 equals the plain one, and
//   the counters add up.
#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kernels/status_macros.h"
#include "runtime/generator.h"
#include "tests/methods/early_exit/free_harness.h"
#include "tests/test_util.h"

namespace tessera {
namespace {

using testing::Decode;
using testing::Decoded;
using testing::DecodeOptions;
using testing::FreeSettings;
using testing::LoadTinyModel;
using testing::TinyPrompts;

class FreeRunnerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_OK_AND_ASSIGN(backend_, MakeBackend(BackendKind::kCpu));
  }
  // Plain greedy decoding of the prompts (the reference of every test).
  Decoded Plain(const DecodeOptions& options) {
    auto model = LoadTinyModel(backend_.get(), nullptr, 0);
    EXPECT_TRUE(model.ok()) << model.status();
    auto cache = (*model)->MakeCache(3, 256);
    StepEngine engine(model->get());
    auto decoded = Decode(**model, **cache, engine, nullptr, TinyPrompts(), options);
    EXPECT_TRUE(decoded.ok()) << decoded.status();
    return *decoded;
  }
  std::unique_ptr<Backend> backend_;
};

TEST_F(FreeRunnerTest, ThresholdOneIsBitIdenticalToThePlainRuntime) {
  DecodeOptions options;
  options.record_logits = true;
  const Decoded plain = Plain(options);
  for (int exit_layer : {1, 2, 4, 6, 7}) {
    SCOPED_TRACE(absl::StrCat("exit_layer ", exit_layer));
    ASSERT_OK_AND_ASSIGN(auto model, LoadTinyModel(backend_.get(), nullptr, exit_layer));
    ASSERT_OK_AND_ASSIGN(auto cache, model->MakeCache(3, 256));
    ASSERT_OK_AND_ASSIGN(auto runner,
                         FreeRunner::Create(model.get(), {FreeSettings(exit_layer, 1.0f)}));
    ASSERT_OK_AND_ASSIGN(Decoded free,
                         Decode(*model, *cache, *runner, runner.get(), TinyPrompts(), options));
    EXPECT_EQ(free.tokens, plain.tokens);
    for (size_t i = 0; i < plain.logits.size(); ++i) {
      for (size_t s = 0; s < plain.logits[i].size(); ++s) {
        ASSERT_EQ(free.logits[i][s].size(), plain.logits[i][s].size());
        EXPECT_EQ(std::memcmp(free.logits[i][s].data(), plain.logits[i][s].data(),
                              plain.logits[i][s].size() * sizeof(float)),
                  0)
            << "prompt " << i << " step " << s;
      }
    }
    for (uint8_t d : runner->decisions()) EXPECT_EQ(d, 0);
    EXPECT_EQ(runner->decisions().size(), 3u * (options.steps - 1));
  }
}

TEST_F(FreeRunnerTest, AlwaysExitEmitsTheShallowHeadAndStaticAgrees) {
  DecodeOptions options;
  options.record_logits = true;
  ASSERT_OK_AND_ASSIGN(auto model, LoadTinyModel(backend_.get(), nullptr, 2));
  ASSERT_OK_AND_ASSIGN(auto cache, model->MakeCache(3, 256));
  ASSERT_OK_AND_ASSIGN(auto runner, FreeRunner::Create(model.get(), {FreeSettings(2, -1.0f)}));
  ASSERT_OK_AND_ASSIGN(Decoded free,
                       Decode(*model, *cache, *runner, runner.get(), TinyPrompts(), options));
  for (uint8_t d : runner->decisions()) EXPECT_EQ(d, 1);
  // The shallow layers' cache holds every fed token; the deep layers only the prompt.
  for (int64_t slot = 0; slot < 3; ++slot) {
    const int32_t fed =
        static_cast<int32_t>(TinyPrompts()[slot].size()) + options.steps - 1;
    EXPECT_EQ(cache->length(0, slot), fed);
    EXPECT_EQ(cache->length(2, slot), static_cast<int32_t>(TinyPrompts()[slot].size()));
  }
  // Every decode token is the argmax of the logits it came with: the head after 2 blocks.
  for (size_t i = 0; i < free.tokens.size(); ++i) {
    for (size_t s = 1; s < free.tokens[i].size(); ++s) {
      const auto& row = free.logits[i][s];
      const int32_t argmax =
          static_cast<int32_t>(std::max_element(row.begin(), row.end()) - row.begin());
      EXPECT_EQ(free.tokens[i][s], argmax);
    }
  }
  config::EarlyExitSettings static_settings;
  static_settings.set_policy(config::EarlyExitSettings::STATIC);
  static_settings.set_exit_layer(2);
  ASSERT_OK_AND_ASSIGN(auto static_runner, FreeRunner::Create(model.get(), {static_settings}));
  ASSERT_OK_AND_ASSIGN(auto cache2, model->MakeCache(3, 256));
  ASSERT_OK_AND_ASSIGN(Decoded fixed,
                       Decode(*model, *cache2, *static_runner, nullptr, TinyPrompts(), options));
  EXPECT_EQ(fixed.tokens, free.tokens);
  EXPECT_TRUE(static_runner->decisions().empty());
}

// Each slot's K/V rows [0, length) of every layer, as floats.
std::vector<float> SlotKv(const KvCache& cache, int64_t layer, int64_t slot, bool values) {
  const TensorView t = values ? cache.v(layer) : cache.k(layer);
  const int64_t row = t.dim(2) * t.dim(3);
  const float* base = t.as<float>() + slot * cache.max_seq() * row;
  return std::vector<float>(base, base + cache.length(layer, slot) * row);
}

TEST_F(FreeRunnerTest, KvCacheAfterAFlushEqualsAFullDepthPrefill) {
  DecodeOptions options;
  options.steps = 16;
  options.record_logits = true;
  options.flush = true;
  ASSERT_OK_AND_ASSIGN(auto model, LoadTinyModel(backend_.get(), nullptr, 2));
  ASSERT_OK_AND_ASSIGN(auto cache, model->MakeCache(3, 256));
  ASSERT_OK_AND_ASSIGN(auto runner, FreeRunner::Create(model.get(), {FreeSettings(2, 0.5f)}));
  ASSERT_OK_AND_ASSIGN(Decoded free,
                       Decode(*model, *cache, *runner, runner.get(), TinyPrompts(), options));
  int exits = 0, deep_after_exits = 0;
  for (size_t k = 0; k < runner->decisions().size(); ++k) {
    exits += runner->decisions()[k];
    if (k >= 3 && runner->decisions()[k] == 0 && runner->decisions()[k - 3] == 1) ++deep_after_exits;
  }
  ASSERT_GT(exits, 3) << "the test needs exits";
  ASSERT_GT(deep_after_exits, 0) << "the test needs a deep chunk carrying exited rows";

  // A full-depth prefill of each sequence's fed tokens (the prompt and every token but the last).
  ASSERT_OK_AND_ASSIGN(auto full, model->MakeCache(3, 256));
  for (int32_t slot = 0; slot < 3; ++slot) {
    std::vector<int32_t> tokens = TinyPrompts()[slot];
    tokens.insert(tokens.end(), free.tokens[slot].begin(), free.tokens[slot].end() - 1);
    ForwardBatch b;
    for (size_t p = 0; p < tokens.size(); ++p) {
      b.tokens.push_back(tokens[p]);
      b.positions.push_back(static_cast<int32_t>(p));
      b.slots.push_back(slot);
      // Every prefix's logits: the reference of each go-deep token.
      b.logit_rows.push_back(static_cast<int32_t>(p));
    }
    ASSERT_OK_AND_ASSIGN(ForwardOutput out, model->Forward(b, *full));
    const int64_t vocab = model->config().vocab_size;
    const size_t prompt = TinyPrompts()[slot].size();
    int compared = 0;
    for (size_t s = 0; s < free.tokens[slot].size(); ++s) {
      if (!free.deep[slot][s]) continue;
      const float* want = out.logits.as<float>() + (prompt - 1 + s) * vocab;
      EXPECT_LT(testing::RelativeError(free.logits[slot][s].data(), want, vocab), 1e-5)
          << "slot " << slot << " step " << s;
      ++compared;
    }
    EXPECT_GT(compared, 1);
    for (int64_t layer = 0; layer < cache->layers(); ++layer) {
      ASSERT_EQ(cache->length(layer, slot), static_cast<int32_t>(tokens.size())) << layer;
      for (bool values : {false, true}) {
        const std::vector<float> got = SlotKv(*cache, layer, slot, values);
        const std::vector<float> want = SlotKv(*full, layer, slot, values);
        EXPECT_LT(testing::RelativeError(got.data(), want.data(), want.size()), 1e-5)
            << "slot " << slot << " layer " << layer << (values ? " V" : " K");
      }
    }
  }
}

TEST_F(FreeRunnerTest, MaxPendingChangesNoTokenWithTheSameDecisions) {
  DecodeOptions options;
  options.steps = 16;
  options.flush = true;
  ASSERT_OK_AND_ASSIGN(auto model, LoadTinyModel(backend_.get(), nullptr, 2));
  ASSERT_OK_AND_ASSIGN(auto cache, model->MakeCache(3, 256));
  ASSERT_OK_AND_ASSIGN(auto runner, FreeRunner::Create(model.get(), {FreeSettings(2, 0.5f)}));
  ASSERT_OK_AND_ASSIGN(Decoded uncapped,
                       Decode(*model, *cache, *runner, runner.get(), TinyPrompts(), options));
  for (int cap : {1, 2, 3}) {
    SCOPED_TRACE(absl::StrCat("max_pending ", cap));
    FreeRunnerOptions capped{FreeSettings(2, 0.5f)};
    capped.settings.set_max_pending(cap);
    capped.forced_decisions = runner->decisions();
    ASSERT_OK_AND_ASSIGN(auto replay, FreeRunner::Create(model.get(), capped));
    ASSERT_OK_AND_ASSIGN(auto cache2, model->MakeCache(3, 256));
    ASSERT_OK_AND_ASSIGN(Decoded got,
                         Decode(*model, *cache2, *replay, replay.get(), TinyPrompts(), options));
    EXPECT_EQ(got.tokens, uncapped.tokens);
    EXPECT_EQ(replay->decisions(), runner->decisions());
    for (int64_t layer = 0; layer < cache->layers(); ++layer) {
      for (int32_t slot = 0; slot < 3; ++slot) {
        EXPECT_EQ(cache2->length(layer, slot), cache->length(layer, slot));
        const std::vector<float> a = SlotKv(*cache, layer, slot, false);
        const std::vector<float> b = SlotKv(*cache2, layer, slot, false);
        EXPECT_LT(testing::RelativeError(b.data(), a.data(), a.size()), 1e-5);
      }
    }
  }
}

TEST_F(FreeRunnerTest, ReplayRunsOutLoudly) {
  ASSERT_OK_AND_ASSIGN(auto model, LoadTinyModel(backend_.get(), nullptr, 2));
  ASSERT_OK_AND_ASSIGN(auto cache, model->MakeCache(3, 256));
  FreeRunnerOptions options{FreeSettings(2, 0.5f)};
  options.forced_decisions = {1, 0};
  ASSERT_OK_AND_ASSIGN(auto runner, FreeRunner::Create(model.get(), options));
  const auto decoded = Decode(*model, *cache, *runner, runner.get(), TinyPrompts(), {});
  EXPECT_EQ(decoded.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(decoded.status().message().find("replayed decisions ran out"), std::string::npos);
}

TEST_F(FreeRunnerTest, CreateChecksTheExitLayer) {
  // One stage holds the final norm and LM head already: no extra head is needed.
  ASSERT_OK_AND_ASSIGN(auto plain, LoadTinyModel(backend_.get(), nullptr, 0));
  EXPECT_OK(FreeRunner::Create(plain.get(), {FreeSettings(2, 0.9f)}).status());
  auto too_deep = FreeRunner::Create(plain.get(), {FreeSettings(8, 0.9f)});
  EXPECT_NE(too_deep.status().message().find("must be in [1, 7]"), std::string::npos)
      << too_deep.status();
}

// Through the Generator: a batch of requests of different lengths, sampled and greedy.
TEST_F(FreeRunnerTest, InsideTheGeneratorSampledTokensEqualThePlainOnesAtThresholdOne) {
  ASSERT_OK_AND_ASSIGN(auto model, LoadTinyModel(backend_.get(), nullptr, 4));
  std::vector<GenerationRequest> requests;
  for (const auto& prompt : TinyPrompts()) {
    GenerationRequest r;
    r.prompt_ids = prompt;
    r.max_new_tokens = 10;
    r.ignore_eos = true;
    r.sampling.temperature = 0.8f;
    r.sampling.top_k = 20;
    r.sampling.seed = 7;
    requests.push_back(r);
  }
  ASSERT_OK_AND_ASSIGN(auto plain, Generator(model.get(), nullptr, {.max_batch = 2})
                                       .Generate(requests));
  ASSERT_OK_AND_ASSIGN(auto runner, FreeRunner::Create(model.get(), {FreeSettings(4, 1.0f)}));
  ASSERT_OK_AND_ASSIGN(auto free, Generator(model.get(), nullptr,
                                            {.max_batch = 2, .runner = runner.get()})
                                      .Generate(requests));
  for (size_t i = 0; i < requests.size(); ++i) {
    EXPECT_EQ(free[i].token_ids, plain[i].token_ids) << i;
    const SequenceCounters& c = free[i].counters;
    EXPECT_EQ(c.token_layers, std::vector<int32_t>(10, 8));
    EXPECT_EQ(c.values.at("exit_checks"), 9);
    EXPECT_EQ(c.values.at("exits"), 0);
    EXPECT_EQ(c.values.at("deep_passes"), 9);
  }
  // At a low threshold some tokens exit; the counters say how many and the layers agree.
  ASSERT_OK_AND_ASSIGN(auto low, FreeRunner::Create(model.get(), {FreeSettings(4, 0.3f)}));
  ASSERT_OK_AND_ASSIGN(auto exited, Generator(model.get(), nullptr,
                                              {.max_batch = 3, .runner = low.get()})
                                        .Generate(requests));
  for (const GenerationResult& r : exited) {
    const SequenceCounters& c = r.counters;
    int shallow = 0;
    for (int32_t l : c.token_layers) shallow += l == 4;
    EXPECT_EQ(shallow, c.values.at("exits"));
    EXPECT_EQ(c.values.at("exits") + c.values.at("deep_passes"), 9);
  }
}

}  // namespace
}  // namespace tessera
