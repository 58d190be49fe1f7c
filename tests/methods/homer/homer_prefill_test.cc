// HOMER's prefill on the embedded model against the plain runtime (shared/specs/homer.md §8.1-8.5):
// - a context that fits one chunk gives the plain model's cache and logits bit for bit, and its
//   generation through HomerRunner is the plain generator's;
// - keep-all: the prune is the identity, every token stays, in prompt order;
// - W = L with keep-all: the cache is the independent per-chunk caches laid end to end, the
//   prefix the first chunk's and the suffix the tree-order mean of every chunk's;
// - with pruning: every layer holds T' = C - (E mod 2) entries (n >= 4, T = C), affix rows are
//   never pruned, the context keeps its order, positions stay local to the chunks, and the next
//   position is P + e + S;
// - HomerRunner's decode steps run at next_position + i over the compact cache (checked step by
//   step against the prefill's cache and logits).
#include <algorithm>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/status_macros.h"
#include "methods/homer/homer_runner.h"
#include "runtime/generator.h"
#include "tests/methods/homer/homer_harness.h"
#include "tests/test_util.h"

namespace tessera {
namespace {

using homer::HomerPrefill;
using homer::PrefillOptions;
using homer::PrefillResult;
using testing::CacheRows;
using testing::RandomPrompt;
using testing::RowRange;
using testing::ToHost;

struct Fixture {
  std::unique_ptr<Backend> backend;
  std::unique_ptr<LlamaModel> model;
  homer::BiasTable bias;
};

Fixture Load() {
  Fixture f;
  f.backend = *MakeBackend(BackendKind::kCpu);
  auto model = testing::LoadHomerModel(f.backend.get(), nullptr);
  EXPECT_TRUE(model.ok()) << model.status();
  if (model.ok()) f.model = std::move(*model);
  f.bias = testing::RampBias(8, 4096);
  return f;
}

PrefillOptions Options(const Fixture& f, int64_t chunk, int64_t target, int64_t warmup) {
  PrefillOptions o;
  o.schedule = {chunk, target, warmup, 8};
  o.bias = &f.bias;
  return o;
}

// The plain prefill of `tokens` at `positions` into slot 0 of a fresh cache; the last row's
// logits.
struct Plain {
  std::unique_ptr<KvCache> cache;
  std::vector<float> logits;
};
Plain PlainPrefill(LlamaModel& model, const std::vector<int32_t>& tokens,
                   std::vector<int32_t> positions = {}) {
  if (positions.empty()) {
    for (size_t i = 0; i < tokens.size(); ++i) positions.push_back(static_cast<int32_t>(i));
  }
  Plain p;
  p.cache = *model.MakeCache(1, static_cast<int64_t>(tokens.size()) + 8);
  ForwardBatch b;
  b.tokens = tokens;
  b.positions = positions;
  b.slots.assign(tokens.size(), 0);
  b.logit_rows = {static_cast<int32_t>(tokens.size()) - 1};
  Tensor logits;
  EXPECT_OK(model.Forward(b, *p.cache, &logits));
  p.logits.assign(logits.data<float>(), logits.data<float>() + logits.numel());
  return p;
}

int32_t ArgMax(const std::vector<float>& v) {
  return static_cast<int32_t>(std::max_element(v.begin(), v.end()) - v.begin());
}

TEST(HomerPrefillTest, OneChunkEqualsThePlainModelBitForBit) {
  Fixture f = Load();
  ASSERT_NE(f.model, nullptr);
  const std::vector<int32_t> prompt = RandomPrompt(200, 3);
  HomerPrefill prefill(f.model.get(), Options(f, 256, 256, 2));
  ASSERT_OK_AND_ASSIGN(const PrefillResult r, prefill.Run(prompt, 10, 10));
  EXPECT_EQ(r.schedule.chunks, 1);
  EXPECT_EQ(r.next_position, 200);
  ASSERT_OK_AND_ASSIGN(const std::vector<float> logits, ToHost(*f.backend, r.logits));
  const Plain plain = PlainPrefill(*f.model, prompt);
  EXPECT_EQ(logits, plain.logits);
  for (int64_t l = 0; l < 8; ++l) {
    for (bool keys : {true, false}) {
      ASSERT_OK_AND_ASSIGN(auto mine, CacheRows(prefill.tree_cache(), *f.backend, l, r.slot, keys));
      ASSERT_OK_AND_ASSIGN(auto theirs, CacheRows(*plain.cache, *f.backend, l, 0, keys));
      EXPECT_EQ(mine, theirs) << "layer " << l << (keys ? " K" : " V");
    }
  }
}

TEST(HomerPrefillTest, GenerationOfAShortPromptIsThePlainGenerators) {
  Fixture f = Load();
  ASSERT_NE(f.model, nullptr);
  std::vector<GenerationRequest> requests(2);
  requests[0].prompt_ids = RandomPrompt(150, 5);
  requests[1].prompt_ids = RandomPrompt(90, 6);
  for (auto& r : requests) {
    r.max_new_tokens = 8;
    r.ignore_eos = true;
  }
  Generator plain(f.model.get(), nullptr);
  ASSERT_OK_AND_ASSIGN(auto expected, plain.Generate(requests));
  config::HomerSettings s;
  s.set_max_chunk_len(256);
  s.set_target_len(256);
  s.set_layers_warmup(2);
  homer::HomerRunner runner(f.model.get(), homer::ResolveSettings(s, f.model->config()),
                            std::make_unique<homer::BiasTable>(f.bias));
  GeneratorOptions options;
  options.runner = &runner;
  Generator with_homer(f.model.get(), nullptr, options);
  ASSERT_OK_AND_ASSIGN(auto got, with_homer.Generate(requests));
  for (size_t i = 0; i < requests.size(); ++i) {
    EXPECT_EQ(got[i].token_ids, expected[i].token_ids) << i;
    EXPECT_EQ(got[i].counters.values.at("homer_chunks"), 1);
  }
}

TEST(HomerPrefillTest, KeepAllIsTheIdentityPrune) {
  Fixture f = Load();
  ASSERT_NE(f.model, nullptr);
  const std::vector<int32_t> prompt = RandomPrompt(900, 7);
  PrefillOptions o = Options(f, 256, 256, 2);
  o.keep_all = true;
  HomerPrefill prefill(f.model.get(), o);
  ASSERT_OK_AND_ASSIGN(const PrefillResult r, prefill.Run(prompt, 16, 16));
  EXPECT_EQ(r.schedule.chunks, 4);
  ASSERT_EQ(r.source.size(), 900u);
  for (int32_t i = 0; i < 900; ++i) EXPECT_EQ(r.source[i], i);
  for (int64_t l = 0; l < 8; ++l) EXPECT_EQ(prefill.tree_cache().length(l, r.slot), 900);
}

TEST(HomerPrefillTest, NoMergeLayersGiveTheIndependentChunkCaches) {
  Fixture f = Load();
  ASSERT_NE(f.model, nullptr);
  const int64_t P = 16, S = 16;
  const std::vector<int32_t> prompt = RandomPrompt(600, 9);
  PrefillOptions o = Options(f, 256, 256, 8);
  o.schedule.allow_empty_levels = true;
  o.keep_all = true;
  HomerPrefill prefill(f.model.get(), o);
  ASSERT_OK_AND_ASSIGN(const PrefillResult r, prefill.Run(prompt, P, S));
  const homer::Schedule& s = r.schedule;
  ASSERT_EQ(s.chunks, 4);
  const int64_t width = f.model->plan().kv_heads * f.model->config().head_dim;
  for (int64_t l = 0; l < 8; ++l) {
    for (bool keys : {true, false}) {
      ASSERT_OK_AND_ASSIGN(auto got, CacheRows(prefill.tree_cache(), *f.backend, l, r.slot, keys));
      std::vector<std::vector<float>> suffixes;
      int64_t row = P;
      for (int64_t c = 0; c < s.chunks; ++c) {
        std::vector<int32_t> tokens(prompt.begin(), prompt.begin() + P), positions;
        for (int64_t i = 0; i < P; ++i) positions.push_back(static_cast<int32_t>(i));
        for (int64_t i = s.ChunkBegin(c); i < s.ChunkEnd(c); ++i) {
          tokens.push_back(prompt[P + i]);
          positions.push_back(static_cast<int32_t>(P + i - s.ChunkBegin(c)));
        }
        for (int64_t j = 0; j < S; ++j) {
          tokens.push_back(prompt[prompt.size() - S + j]);
          positions.push_back(static_cast<int32_t>(P + s.slice + j));
        }
        const Plain chunk = PlainPrefill(*f.model, tokens, positions);
        ASSERT_OK_AND_ASSIGN(auto rows, CacheRows(*chunk.cache, *f.backend, l, 0, keys));
        const int64_t len = static_cast<int64_t>(tokens.size());
        if (c == 0) EXPECT_EQ(RowRange(got, width, 0, P), RowRange(rows, width, 0, P));
        EXPECT_EQ(RowRange(got, width, row, row + len - P - S), RowRange(rows, width, P, len - S))
            << "layer " << l << " chunk " << c;
        row += len - P - S;
        suffixes.push_back(RowRange(rows, width, len - S, len));
      }
      // The suffix: pairwise means up the tree, in tree order.
      while (suffixes.size() > 1) {
        std::vector<std::vector<float>> up;
        for (size_t i = 0; i < suffixes.size(); i += 2) {
          std::vector<float> m(suffixes[i].size());
          for (size_t e = 0; e < m.size(); ++e) m[e] = (suffixes[i + 1][e] + suffixes[i][e]) * 0.5f;
          up.push_back(m);
        }
        suffixes = up;
      }
      EXPECT_EQ(RowRange(got, width, row, row + S), suffixes[0]) << "layer " << l;
    }
  }
}

void CheckStructure(const Fixture& f, int64_t P, int64_t S) {
  const std::vector<int32_t> prompt = RandomPrompt(1000, 11);
  HomerPrefill prefill(f.model.get(), Options(f, 128, 128, 2));
  ASSERT_OK_AND_ASSIGN(const PrefillResult r, prefill.Run(prompt, P, S));
  const homer::Schedule& s = r.schedule;
  EXPECT_EQ(s.chunks, 16);
  const int64_t expected = 128 - (s.budget % 2);
  ASSERT_EQ(static_cast<int64_t>(r.source.size()), expected);
  for (int64_t l = 0; l < 8; ++l) {
    EXPECT_EQ(prefill.tree_cache().length(l, r.slot), expected) << l;
    EXPECT_THAT(prefill.tree_cache().positions(l, r.slot), ::testing::ElementsAreArray(r.positions));
  }
  for (int64_t i = 0; i < P; ++i) {
    EXPECT_EQ(r.source[i], i);
    EXPECT_EQ(r.positions[i], i);
  }
  for (int64_t j = 0; j < S; ++j) {
    EXPECT_EQ(r.source[expected - S + j], 1000 - S + j);
    EXPECT_EQ(r.positions[expected - S + j], P + s.slice + j);
  }
  for (int64_t i = P; i < expected - S; ++i) {
    EXPECT_GT(r.source[i], r.source[i - 1]) << "context order";
    EXPECT_GE(r.positions[i], P);
    EXPECT_LT(r.positions[i], P + s.slice);
    // A context token's position is its offset in its chunk.
    const int64_t context = r.source[i] - P;
    EXPECT_EQ(r.positions[i], P + context % s.slice);
  }
  EXPECT_EQ(r.next_position, P + s.slice + S);
  EXPECT_EQ(r.nodes, 2 * s.chunks - 1);
  ASSERT_OK_AND_ASSIGN(const std::vector<float> logits, ToHost(*f.backend, r.logits));
  for (float v : logits) ASSERT_TRUE(std::isfinite(v));
}

TEST(HomerPrefillTest, PrunedCacheHasTheStatedShape) {
  Fixture f = Load();
  ASSERT_NE(f.model, nullptr);
  CheckStructure(f, 8, 8);  // E = 112: T' = C
  CheckStructure(f, 8, 7);  // E = 113: T' = C - 1
}

TEST(HomerPrefillTest, RunnerDecodesFromTheCompactCacheAtTheNextPosition) {
  Fixture f = Load();
  ASSERT_NE(f.model, nullptr);
  config::HomerSettings s;
  s.set_max_chunk_len(128);
  s.set_target_len(128);
  s.set_layers_warmup(2);
  s.set_prefix_len(8);
  s.set_suffix_len(8);
  const homer::HomerConfig config = homer::ResolveSettings(s, f.model->config());
  GenerationRequest request;
  request.prompt_ids = RandomPrompt(1000, 13);  // past the model's 1024-token window with 8 new
  request.max_new_tokens = 30;
  request.ignore_eos = true;
  homer::HomerRunner runner(f.model.get(), config, std::make_unique<homer::BiasTable>(f.bias));
  GeneratorOptions options;
  options.runner = &runner;
  Generator generator(f.model.get(), nullptr, options);
  ASSERT_OK_AND_ASSIGN(auto got, generator.Generate({request}));
  ASSERT_EQ(got[0].token_ids.size(), 30u);
  EXPECT_EQ(got[0].counters.values.at("homer_cache_entries"), 128);

  // The same by hand: the prefill, its cache in a slot, greedy steps at next_position + i.
  HomerPrefill prefill(f.model.get(), Options(f, 128, 128, 2));
  ASSERT_OK_AND_ASSIGN(const PrefillResult r, prefill.Run(request.prompt_ids, 8, 8));
  EXPECT_EQ(got[0].counters.values.at("homer_next_position"), r.next_position);
  ASSERT_OK_AND_ASSIGN(std::vector<float> logits, ToHost(*f.backend, r.logits));
  ASSERT_OK_AND_ASSIGN(auto cache, f.model->MakeCache(1, 200));
  ASSERT_OK(prefill.CopyInto(r, *cache, 0));
  std::vector<int32_t> tokens = {ArgMax(logits)};
  for (int32_t i = 0; i < 29; ++i) {
    ForwardBatch b;
    b.tokens = {tokens.back()};
    b.positions = {static_cast<int32_t>(r.next_position) + i};
    b.slots = {0};
    b.logit_rows = {0};
    Tensor host;
    ASSERT_OK(f.model->Forward(b, *cache, &host));
    tokens.push_back(ArgMax(std::vector<float>(host.data<float>(), host.data<float>() + host.numel())));
  }
  EXPECT_EQ(got[0].token_ids, tokens);
  // The first decode step attends to the 128 compact entries plus itself.
  EXPECT_EQ(cache->length(0, 0), 128 + 29);
}

TEST(HomerPrefillTest, BadPromptsAndSettingsAreRefused) {
  Fixture f = Load();
  ASSERT_NE(f.model, nullptr);
  HomerPrefill prefill(f.model.get(), Options(f, 128, 128, 2));
  const std::vector<int32_t> prompt = RandomPrompt(1000, 1);
  EXPECT_THAT(std::string(prefill.Run(prompt, 8, 0).status().message()),
              ::testing::HasSubstr("suffix of at least 1 token"));
  EXPECT_THAT(std::string(prefill.Run(prompt, 100, 27).status().message()),
              ::testing::HasSubstr("raise max_chunk_len or shorten prefix_len / suffix_len"));
  EXPECT_THAT(std::string(prefill.Run(prompt, 800, 300).status().message()),
              ::testing::HasSubstr("has no prefix of 800 and suffix of 300 tokens"));
  // Generation past the plain-RoPE window: the cache of 200 entries has room for 300 tokens, the
  // positions after 762 do not.
  config::HomerSettings s;
  s.set_max_chunk_len(1000);
  s.set_target_len(200);
  s.set_layers_warmup(2);
  s.set_prefix_len(8);
  s.set_suffix_len(8);
  homer::HomerRunner runner(f.model.get(), homer::ResolveSettings(s, f.model->config()),
                            std::make_unique<homer::BiasTable>(f.bias));
  GeneratorOptions options;
  options.runner = &runner;
  Generator generator(f.model.get(), nullptr, options);
  GenerationRequest request;
  request.prompt_ids = RandomPrompt(3000, 4);  // next position 8 + 746 + 8 = 762
  request.max_new_tokens = 300;
  request.ignore_eos = true;
  EXPECT_THAT(std::string(generator.Generate({request}).status().message()),
              ::testing::HasSubstr("past the model's 1024-token window"));
  // 64 chunks of 112 need 6 levels; W = 6 leaves 2 layers.
  HomerPrefill deep(f.model.get(), Options(f, 128, 128, 6));
  EXPECT_THAT(std::string(deep.Run(RandomPrompt(7000, 2), 8, 8).status().message()),
              ::testing::HasSubstr("lower layers_warmup"));
}

}  // namespace
}  // namespace tessera
