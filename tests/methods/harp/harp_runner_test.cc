// HarpRunner on one rank, through the Generator (shared/specs/harp.md §8 a, b):
// - theta above the largest possible entropy: the plain runtime's tokens, greedy and sampled;
// - beta = 1: the plain tokens although reframed passes run; delta = 0: no pass, plain tokens;
// - theta = 1 bit: some steps hesitate and change tokens (so the checks above can fail);
// - a request's tokens, decisions and counters do not depend on the batch it shares;
// - counters: every token checked, hesitations and recomputed tokens as the decisions say;
// - max_reframe_len: longer sequences hesitate but never reframe;
// - with beta = 0 the logits of a hesitating step equal an independent composition: one prefill
//   of the whole masked sequence on a fresh cache for EXACT (a fresh mask per step, through the
//   shared-storage scratch cache) and SHADOW_LAZY (the position-keyed mask, extended
//   incrementally); for KV_NOISE a masked copy of the cache and a masked token;
// - the guarded device backend takes the CPU's decisions and tokens;
// - KV_NOISE on a BF16 cache is refused naming the field.
#include <cmath>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "tests/methods/early_exit/free_harness.h"
#include "tests/methods/harp/harp_harness.h"
#include "tests/runtime/guarded_device_backend.h"
#include "tests/test_util.h"

namespace tessera {
namespace {

using testing::CodeRequests;
using testing::Counter;
using testing::GenerateWithHarp;
using testing::HarpRun;
using testing::HarpRunSpec;
using testing::HarpSettings;

constexpr int32_t kNewTokens = 16;

std::vector<std::vector<int32_t>> Tokens(const HarpRun& run) {
  std::vector<std::vector<int32_t>> out;
  for (const GenerationResult& r : run.results) out.push_back(r.token_ids);
  return out;
}

HarpRun Generate(const config::HarpSettings* settings, SamplingParams sampling = {},
                 int32_t max_batch = 4, Backend* backend = nullptr) {
  std::unique_ptr<Backend> cpu;
  if (backend == nullptr) {
    cpu = *MakeBackend(BackendKind::kCpu);
    backend = cpu.get();
  }
  HarpRunSpec spec;
  spec.settings = settings;
  spec.requests = CodeRequests(kNewTokens, sampling);
  spec.max_batch = max_batch;
  auto run = GenerateWithHarp(backend, nullptr, spec);
  EXPECT_TRUE(run.ok()) << run.status();
  return run.ok() ? *std::move(run) : HarpRun();
}

double Sum(const HarpRun& run, const char* name) {
  double total = 0;
  for (const GenerationResult& r : run.results) total += Counter(r, name);
  return total;
}

SamplingParams Nucleus() {
  SamplingParams s;
  s.temperature = 0.8f;
  s.top_p = 0.9f;
  s.seed = 3;
  return s;
}

TEST(HarpRunnerTest, ThetaAboveTheLargestEntropyIsThePlainRuntime) {
  const config::HarpSettings never = HarpSettings(13.0f, 0.2f, 0.5f);  // log2(4096) = 12 bits
  for (const SamplingParams& sampling : {SamplingParams{}, Nucleus()}) {
    SCOPED_TRACE(sampling.temperature > 0 ? "nucleus" : "greedy");
    const HarpRun plain = Generate(nullptr, sampling);
    const HarpRun harp = Generate(&never, sampling);
    EXPECT_EQ(Tokens(harp), Tokens(plain));
    ASSERT_EQ(harp.decisions.size(), 3u * kNewTokens);
    for (const HarpDecision& d : harp.decisions) {
      EXPECT_FALSE(d.hesitated);
      EXPECT_GE(d.entropy_bits, 0.0f);
      EXPECT_LE(d.entropy_bits, 12.0f + 1e-4f);
    }
    EXPECT_EQ(Sum(harp, "reframed_passes"), 0);
    EXPECT_EQ(Sum(harp, "checked_tokens"), 3 * kNewTokens);
  }
}

TEST(HarpRunnerTest, BetaOneAndDeltaZeroKeepThePlainTokens) {
  for (const SamplingParams& sampling : {SamplingParams{}, Nucleus()}) {
    SCOPED_TRACE(sampling.temperature > 0 ? "nucleus" : "greedy");
    const HarpRun plain = Generate(nullptr, sampling);
    const config::HarpSettings beta_one = HarpSettings(1.0f, 0.2f, 1.0f);
    const HarpRun a = Generate(&beta_one, sampling);
    EXPECT_EQ(Tokens(a), Tokens(plain));
    EXPECT_GT(Sum(a, "reframed_passes"), 0) << "the reframed pass must have run";
    const config::HarpSettings delta_zero = HarpSettings(1.0f, 0.0f, 0.5f);
    const HarpRun b = Generate(&delta_zero, sampling);
    EXPECT_EQ(Tokens(b), Tokens(plain));
    EXPECT_GT(Sum(b, "hesitations"), 0);
    EXPECT_EQ(Sum(b, "reframed_passes"), 0);
  }
}

TEST(HarpRunnerTest, HesitationsReframeAndChangeTokens) {
  const HarpRun plain = Generate(nullptr);
  const config::HarpSettings settings = HarpSettings(1.0f, 0.2f, 0.0f);
  const HarpRun harp = Generate(&settings);
  int hesitations = 0, plain_steps = 0;
  for (const HarpDecision& d : harp.decisions) {
    EXPECT_EQ(d.hesitated, d.entropy_bits > 1.0f);
    EXPECT_EQ(d.reframed, d.hesitated);
    (d.hesitated ? hesitations : plain_steps) += 1;
  }
  EXPECT_GT(hesitations, 0);
  EXPECT_GT(plain_steps, 0);
  EXPECT_NE(Tokens(harp), Tokens(plain));
  std::printf("theta 1 bit: %d of %zu steps hesitate\n", hesitations, harp.decisions.size());
}

TEST(HarpRunnerTest, CountersFollowTheDecisions) {
  const config::HarpSettings settings = HarpSettings(1.0f, 0.2f, 0.5f);
  const HarpRun harp = Generate(&settings);
  ASSERT_EQ(harp.results.size(), 3u);
  for (const GenerationResult& r : harp.results) {
    EXPECT_EQ(Counter(r, "checked_tokens"), kNewTokens);
    ASSERT_EQ(r.counters.series.at("entropy_bits").size(), static_cast<size_t>(kNewTokens));
    double hesitations = 0, bits = 0, recomputed = 0;
    for (size_t t = 0; t < r.token_ids.size(); ++t) {
      const double h = r.counters.series.at("entropy_bits")[t];
      bits += h;
      if (h > 1.0) {
        hesitations += 1;
        recomputed += r.prompt_tokens + t;  // the sequence's length when token t was chosen
      }
    }
    EXPECT_EQ(Counter(r, "hesitations"), hesitations);
    EXPECT_EQ(Counter(r, "reframed_passes"), hesitations);
    EXPECT_EQ(Counter(r, "tokens_recomputed"), recomputed);
    EXPECT_NEAR(Counter(r, "entropy_bits_sum"), bits, 1e-3);
    EXPECT_GE(Counter(r, "reframe_ms"), 0);
  }
}

TEST(HarpRunnerTest, ABatchDoesNotChangeARequest) {
  const config::HarpSettings settings = HarpSettings(1.0f, 0.2f, 0.5f);
  for (const SamplingParams& sampling : {SamplingParams{}, Nucleus()}) {
    SCOPED_TRACE(sampling.temperature > 0 ? "nucleus" : "greedy");
    const HarpRun together = Generate(&settings, sampling, 3);
    const HarpRun alone = Generate(&settings, sampling, 1);
    EXPECT_EQ(Tokens(together), Tokens(alone));
    for (size_t i = 0; i < together.results.size(); ++i) {
      for (const char* name : {"hesitations", "reframed_passes", "tokens_recomputed"}) {
        EXPECT_EQ(Counter(together.results[i], name), Counter(alone.results[i], name)) << name;
      }
      // The plain pass's logits change in the last bits with the batch's shape.
      const auto& a = together.results[i].counters.series.at("entropy_bits");
      const auto& b = alone.results[i].counters.series.at("entropy_bits");
      ASSERT_EQ(a.size(), b.size());
      for (size_t t = 0; t < a.size(); ++t) EXPECT_NEAR(a[t], b[t], 1e-4) << t;
    }
  }
}

TEST(HarpRunnerTest, LongSequencesNeverReframe) {
  const HarpRun plain = Generate(nullptr);
  config::HarpSettings settings = HarpSettings(1.0f, 0.2f, 0.0f);
  settings.set_max_reframe_len(3);  // every prompt is longer
  const HarpRun harp = Generate(&settings);
  EXPECT_EQ(Tokens(harp), Tokens(plain));
  EXPECT_GT(Sum(harp, "hesitations"), 0);
  EXPECT_EQ(Sum(harp, "skipped_long"), Sum(harp, "hesitations"));
  EXPECT_EQ(Sum(harp, "reframed_passes"), 0);
}

TEST(HarpRunnerTest, GuardedDeviceBackendTakesTheCpuDecisions) {
  const config::HarpSettings settings = HarpSettings(1.0f, 0.2f, 0.5f);
  const HarpRun cpu = Generate(&settings);
  testing::GuardedDeviceBackend device;
  const HarpRun guarded = Generate(&settings, {}, 4, &device);
  EXPECT_EQ(Tokens(guarded), Tokens(cpu));
  ASSERT_EQ(guarded.decisions.size(), cpu.decisions.size());
  for (size_t i = 0; i < cpu.decisions.size(); ++i) {
    EXPECT_EQ(guarded.decisions[i].hesitated, cpu.decisions[i].hesitated) << i;
    EXPECT_NEAR(guarded.decisions[i].entropy_bits, cpu.decisions[i].entropy_bits, 1e-4) << i;
  }
  EXPECT_GT(Sum(guarded, "reframed_passes"), 0);
}

// The last row's logits of one prefill of `tokens` (positions 0..) on a fresh cache, with the
// HARP mask of (seed, request, step word `step`) on the embeddings.
std::vector<float> MaskedPrefill(LlamaModel& model, const std::vector<int32_t>& tokens,
                                 uint64_t seed, uint64_t request, int32_t step, float delta) {
  auto cache = model.MakeCache(1, 256);
  EXPECT_TRUE(cache.ok());
  ForwardBatch batch;
  std::vector<std::array<uint32_t, 4>> words;
  for (size_t p = 0; p < tokens.size(); ++p) {
    batch.tokens.push_back(tokens[p]);
    batch.positions.push_back(static_cast<int32_t>(p));
    batch.slots.push_back(0);
    words.push_back(HarpMaskRowWords(HarpMaskKey(seed, request), static_cast<int32_t>(p), step));
  }
  batch.logit_rows = {static_cast<int32_t>(tokens.size()) - 1};
  ReframeInput input;
  input.SetRows(words, delta, nullptr);
  ForwardHooks hooks;
  hooks.input = &input;
  auto out = model.Forward(batch, **cache, hooks);
  EXPECT_TRUE(out.ok()) << out.status();
  std::vector<float> logits(out->logits.numel());
  EXPECT_OK(model.backend().CopyToHost(logits.data(), out->logits.data, out->logits.bytes()));
  return logits;
}

// KV_NOISE's logits at a decode step, composed independently: the sequence before the step
// prefilled into a fresh cache, every layer's K and V there masked with the documented words,
// then the step's token decoded with its masked embedding.
std::vector<float> KvNoiseByHand(LlamaModel& model, const std::vector<int32_t>& sequence,
                                 uint64_t seed, uint64_t request, float delta) {
  auto cache = model.MakeCache(1, 256);
  EXPECT_TRUE(cache.ok());
  const int32_t t = static_cast<int32_t>(sequence.size());
  ForwardBatch prefix;
  for (int32_t p = 0; p + 1 < t; ++p) {
    prefix.tokens.push_back(sequence[p]);
    prefix.positions.push_back(p);
    prefix.slots.push_back(0);
  }
  prefix.logit_rows = {t - 2};
  EXPECT_OK(model.Forward(prefix, **cache).status());
  const PhiloxKey key = HarpMaskKey(seed, request);
  Backend& backend = model.backend();
  std::vector<int32_t> words;
  for (int32_t p = 0; p + 1 < t; ++p) {
    const auto w = HarpMaskRowWords(key, p, t);
    words.insert(words.end(), w.begin(), w.end());
  }
  const TensorView word_view = TensorView::Of(words.data(), DType::kI32, {t - 1, 4});
  for (int64_t l = 0; l < (*cache)->layers(); ++l) {
    for (uint32_t which : {0u, 1u}) {
      const TensorView kv = which == 0 ? (*cache)->k(l) : (*cache)->v(l);
      const TensorView rows = kv.Reshaped({kv.dim(1), kv.dim(2) * kv.dim(3)}).Rows(0, t - 1);
      const uint32_t stream = (static_cast<uint32_t>(l) << 17) | (which << 16) | 0x4B56u;
      EXPECT_OK(backend.PhiloxDropout({rows, word_view, stream, delta}));
    }
  }
  ForwardBatch step;
  step.tokens = {sequence[t - 1]};
  step.positions = {t - 1};
  step.slots = {0};
  step.logit_rows = {0};
  ReframeInput input;
  input.SetRows({HarpMaskRowWords(key, t - 1, t)}, delta, nullptr);
  ForwardHooks hooks;
  hooks.input = &input;
  auto out = model.Forward(step, **cache, hooks);
  EXPECT_TRUE(out.ok()) << out.status();
  std::vector<float> logits(out->logits.numel());
  EXPECT_OK(backend.CopyToHost(logits.data(), out->logits.data, out->logits.bytes()));
  return logits;
}

TEST(HarpRunnerTest, ReframedLogitsEqualAnIndependentComposition) {
  using config::HarpSettings;
  for (auto mode : {HarpSettings::EXACT, HarpSettings::SHADOW_LAZY, HarpSettings::KV_NOISE}) {
    SCOPED_TRACE(HarpSettings::Mode_Name(mode));
    ASSERT_OK_AND_ASSIGN(auto backend, MakeBackend(BackendKind::kCpu));
    ASSERT_OK_AND_ASSIGN(auto model, testing::LoadTinyModel(backend.get(), nullptr, 0));
    ASSERT_OK_AND_ASSIGN(auto cache, model->MakeCache(2, 256));
    HarpRunnerOptions options;
    options.settings = testing::HarpSettings(1.0f, 0.2f, 0.0f);
    options.settings.set_mode(mode);
    options.settings.set_seed(21);
    ASSERT_OK_AND_ASSIGN(auto runner, HarpRunner::Create(model.get(), options));
    const auto prompts = testing::TinyPrompts();
    testing::DecodeOptions decode;
    decode.steps = 10;
    decode.record_logits = true;
    ASSERT_OK_AND_ASSIGN(testing::Decoded got,
                         testing::Decode(*model, *cache, *runner, nullptr,
                                         {prompts[0], prompts[2]}, decode));
    int checked = 0;
    double worst = 0;
    for (int step = 0; step < decode.steps; ++step) {
      for (size_t i = 0; i < 2; ++i) {
        if (!runner->decisions().at(step * 2 + i).reframed) continue;
        std::vector<int32_t> sequence = i == 0 ? prompts[0] : prompts[2];
        sequence.insert(sequence.end(), got.tokens[i].begin(), got.tokens[i].begin() + step);
        const int32_t t = static_cast<int32_t>(sequence.size());
        // KV_NOISE's prompt step has no cache before it: the whole prompt, as EXACT.
        const std::vector<float> want =
            mode == HarpSettings::KV_NOISE && step > 0
                ? KvNoiseByHand(*model, sequence, 21, i, 0.2f)
                : MaskedPrefill(*model, sequence, 21, i,
                                mode == HarpSettings::SHADOW_LAZY ? kShadowStep : t, 0.2f);
        worst = std::max(worst, testing::RelativeError(got.logits[i][step].data(), want.data(),
                                                       want.size()));
        ++checked;
      }
    }
    EXPECT_GT(checked, 3);
    EXPECT_LT(worst, 1e-5) << checked << " reframed steps";
    std::printf("%s: %d reframed steps, relative error %.2e against the composition\n",
                HarpSettings::Mode_Name(mode).c_str(), checked, worst);
  }
}

TEST(HarpRunnerTest, ShadowLazyRecomputesEachTokenOnce) {
  config::HarpSettings settings = HarpSettings(1.0f, 0.2f, 0.5f);
  settings.set_mode(config::HarpSettings::SHADOW_LAZY);
  const HarpRun shadow = Generate(&settings);
  for (const GenerationResult& r : shadow.results) {
    EXPECT_GT(Counter(r, "reframed_passes"), 0);
    // At most every token fed (prompt and all but the last generated) once.
    EXPECT_LE(Counter(r, "tokens_recomputed"), r.prompt_tokens + kNewTokens - 1);
  }
  settings.set_mode(config::HarpSettings::EXACT);
  const HarpRun exact = Generate(&settings);
  EXPECT_LT(Sum(shadow, "tokens_recomputed"), Sum(exact, "tokens_recomputed") / 4);
}

TEST(HarpRunnerTest, KvNoiseNeedsAnF32Cache) {
  ASSERT_OK_AND_ASSIGN(auto backend, MakeBackend(BackendKind::kCpu));
  ModelParallelism parallel;
  parallel.kv_dtype = DType::kBF16;
  ASSERT_OK_AND_ASSIGN(auto model,
                       LlamaModel::Load(testing::kTinyModel, backend.get(), parallel, {}));
  HarpRunnerOptions options;
  options.settings.set_mode(config::HarpSettings::KV_NOISE);
  const auto runner = HarpRunner::Create(model.get(), options);
  ASSERT_FALSE(runner.ok());
  EXPECT_EQ(runner.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(runner.status().message(),
              ::testing::HasSubstr("method.harp.mode: KV_NOISE masks a copy of the cached K/V "
                                   "and needs an F32 KV cache; this run's is BF16"));
}

}  // namespace
}  // namespace tessera
