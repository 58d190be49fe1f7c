// HOMER's prefill at every layout, ranks as threads, against one rank (shared/specs/homer.md
// §6.2-6.3, §6.6, §8.7-8.8), on a 1000-token prompt cut into 16 chunks (4 merge levels):
// - pp 2: the keep-lists, positions, the K/V of every layer of each stage and the logits are
//   one rank's, bit for bit;
// - tp 2 and 4, tp2 x pp2: the scores are MAX-reduced over the heads of every rank, so every rank
//   of a layout keeps the same rows; against one rank the keep-sets agree (Jaccard >= 0.99) and
//   the logits of the prompt's last token are within 1e-3 of one rank's;
// - greedy generation through HomerRunner gives one rank's tokens at every layout.
#include <algorithm>
#include <mutex>
#include <set>

#include "gtest/gtest.h"
#include "kernels/status_macros.h"
#include "methods/homer/homer_runner.h"
#include "runtime/generator.h"
#include "tests/layouts/threaded_world.h"
#include "tests/methods/homer/homer_harness.h"
#include "tests/test_util.h"

namespace tessera {
namespace {

using testing::CacheRows;
using testing::ToHost;

constexpr int64_t kPrefix = 8, kSuffix = 8;

struct RankOutcome {
  std::vector<int32_t> source, positions;
  std::vector<float> logits;              // this rank's vocabulary shard (last stage)
  int64_t vocab_begin = 0;
  std::vector<std::vector<float>> keys;   // [local layer] K rows of the compact cache
  int64_t layer_begin = 0, kv_heads = 0, tp_rank = 0;
  std::vector<int32_t> generated;
};

homer::PrefillOptions Options(const homer::BiasTable* bias) {
  homer::PrefillOptions o;
  o.schedule = {128, 128, 2, 8};
  o.bias = bias;
  return o;
}

absl::StatusOr<RankOutcome> RunRank(ProcessGroups* groups) {
  ASSIGN_OR_RETURN(auto backend, MakeBackend(BackendKind::kCpu));
  ASSIGN_OR_RETURN(auto model, testing::LoadHomerModel(backend.get(), groups));
  const homer::BiasTable bias = testing::RampBias(8, 4096);
  const std::vector<int32_t> prompt = testing::RandomPrompt(1000, 21);
  homer::HomerPrefill prefill(model.get(), Options(&bias));
  ASSIGN_OR_RETURN(const homer::PrefillResult r, prefill.Run(prompt, kPrefix, kSuffix));
  RankOutcome out;
  out.source = r.source;
  out.positions = r.positions;
  const ShardPlan& plan = model->plan();
  if (!r.logits.empty()) {
    ASSIGN_OR_RETURN(out.logits, ToHost(*backend, r.logits));
  }
  out.vocab_begin = plan.vocab_begin;
  out.layer_begin = plan.layer_begin;
  out.kv_heads = plan.kv_heads;
  out.tp_rank = plan.tp_rank;
  for (int64_t l = 0; l < plan.layers(); ++l) {
    ASSIGN_OR_RETURN(auto rows, CacheRows(prefill.tree_cache(), *backend, l, r.slot, true));
    out.keys.push_back(std::move(rows));
  }
  config::HomerSettings s;
  s.set_max_chunk_len(128);
  s.set_target_len(128);
  s.set_layers_warmup(2);
  s.set_prefix_len(kPrefix);
  s.set_suffix_len(kSuffix);
  homer::HomerRunner runner(model.get(), homer::ResolveSettings(s, model->config()),
                            std::make_unique<homer::BiasTable>(bias));
  GeneratorOptions options;
  options.runner = &runner;
  Generator generator(model.get(), nullptr, options);
  std::vector<GenerationRequest> requests(2);
  requests[0].prompt_ids = prompt;
  requests[1].prompt_ids = testing::RandomPrompt(700, 22);
  for (auto& q : requests) {
    q.max_new_tokens = 10;
    q.ignore_eos = true;
  }
  ASSIGN_OR_RETURN(auto results, generator.Generate(requests));
  for (const auto& res : results) {
    out.generated.insert(out.generated.end(), res.token_ids.begin(), res.token_ids.end());
  }
  return out;
}

const RankOutcome& OneRank() {
  static const RankOutcome* reference = [] {
    auto r = RunRank(nullptr);
    EXPECT_TRUE(r.ok()) << r.status();
    return new RankOutcome(r.ok() ? *r : RankOutcome());
  }();
  return *reference;
}

double Jaccard(const std::vector<int32_t>& a, const std::vector<int32_t>& b) {
  std::set<int32_t> sa(a.begin(), a.end()), sb(b.begin(), b.end()), both;
  std::set_intersection(sa.begin(), sa.end(), sb.begin(), sb.end(),
                        std::inserter(both, both.begin()));
  return static_cast<double>(both.size()) / (sa.size() + sb.size() - both.size());
}

std::vector<RankOutcome> RunLayout(WorldLayout layout) {
  std::vector<RankOutcome> outcomes(layout.world_size());
  auto statuses = testing::RunThreadedWorld(
      layout,
      [&](ProcessGroups& g) -> absl::Status {
        ASSIGN_OR_RETURN(outcomes[g.layout.rank], RunRank(&g));
        return absl::OkStatus();
      },
      absl::Seconds(120));
  for (size_t r = 0; r < statuses.size(); ++r) EXPECT_TRUE(statuses[r].ok()) << r << statuses[r];
  return outcomes;
}

void ExpectLikeOneRank(const WorldLayout& layout, bool bitwise) {
  const RankOutcome& one = OneRank();
  ASSERT_FALSE(one.source.empty());
  const std::vector<RankOutcome> ranks = RunLayout(layout);
  for (size_t r = 0; r < ranks.size(); ++r) {
    SCOPED_TRACE(::testing::Message() << "rank " << r);
    const RankOutcome& o = ranks[r];
    EXPECT_EQ(o.source, ranks[0].source) << "the ranks of one layout keep the same rows";
    EXPECT_EQ(o.generated, one.generated);
    if (bitwise) {
      EXPECT_EQ(o.source, one.source);
      EXPECT_EQ(o.positions, one.positions);
      for (size_t l = 0; l < o.keys.size(); ++l) {
        EXPECT_EQ(o.keys[l], one.keys[o.layer_begin + l]) << "layer " << o.layer_begin + l;
      }
    } else {
      EXPECT_GE(Jaccard(o.source, one.source), 0.99);
    }
    for (size_t v = 0; v < o.logits.size(); ++v) {
      const float want = one.logits[o.vocab_begin + v];
      if (bitwise) {
        ASSERT_EQ(o.logits[v], want) << v;
      } else {
        ASSERT_NEAR(o.logits[v], want, 1e-3) << v;
      }
    }
  }
}

TEST(HomerLayoutsTest, PipelineTwoIsOneRankBitForBit) { ExpectLikeOneRank({1, 2, 1, 0}, true); }
TEST(HomerLayoutsTest, TensorTwo) { ExpectLikeOneRank({2, 1, 1, 0}, false); }
TEST(HomerLayoutsTest, TensorFour) { ExpectLikeOneRank({4, 1, 1, 0}, false); }
TEST(HomerLayoutsTest, TensorTwoByPipelineTwo) { ExpectLikeOneRank({2, 2, 1, 0}, false); }

}  // namespace
}  // namespace tessera
