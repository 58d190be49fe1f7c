// A method's extra weights and heads on earlier stages: the loader takes each rank's slice by the
// declared rule, and tessera's memory plan counts exactly the bytes the loader holds. Declared as
// extra weights under their own names, the model's own q/o/down projections and embedding must
// come back as the very slices the model loads for them, at every rank of tp2 x pp2.
#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "runtime/llama_weights.h"
#include "runtime/memory_plan.h"
#include "tests/test_util.h"

namespace tessera {
namespace {

constexpr char kModel[] = "tests/fixtures/models/llama2_mha";  // hidden 32, ffn 160, vocab 32000

bool SameBytes(const TensorView& a, const TensorView& b) {
  return a.bytes() == b.bytes() && std::memcmp(a.data, b.data, a.bytes()) == 0;
}

ModelOptions Extras() {
  using Shard = ExtraWeight::Shard;
  ModelOptions o;
  o.extra_weights = {
      {"model.layers.{layer}.self_attn.q_proj.weight", {32, 32}, Shard::kHeadRows},
      {"model.layers.{layer}.self_attn.o_proj.weight", {32, 32}, Shard::kHeadColumns},
      {"model.layers.{layer}.mlp.down_proj.weight", {32, 160}, Shard::kFfnColumns},
      {"model.embed_tokens.weight", {32000, 32}, Shard::kVocabRows},
      {"model.layers.{layer}.self_attn.beacon_q_proj.weight", {32, 32}, Shard::kHeadRows, true},
  };
  return o;
}

class ExtraWeightsTest : public ::testing::TestWithParam<int> {};  // rank of tp2 x pp2

TEST_P(ExtraWeightsTest, SlicesAreTheModelsOwnAndThePlanCountsThem) {
  ASSERT_OK_AND_ASSIGN(ModelConfig config, LoadModelConfig(kModel));
  ASSERT_OK_AND_ASSIGN(auto ckpt, Checkpoint::Open(kModel));
  WorldLayout layout{2, 2, 1, GetParam()};
  ASSERT_OK_AND_ASSIGN(ShardPlan plan, MakeShardPlan(config, layout));
  ModelOptions options = Extras();
  options.head_after_layers = {0};  // a head on stage 0 as well
  ASSERT_OK_AND_ASSIGN(LlamaWeights plain, LoadLlamaWeights(*ckpt, config, plan));
  ASSERT_OK_AND_ASSIGN(LlamaWeights with, LoadLlamaWeights(*ckpt, config, plan, options));
  for (int64_t l = plan.layer_begin; l < plan.layer_end; ++l) {
    const LayerWeights& own = with.layers[l - plan.layer_begin];
    const std::string p = absl::StrCat("model.layers.", l, ".");
    EXPECT_TRUE(SameBytes(with.extra.at(p + "self_attn.q_proj.weight"), own.wq)) << l;
    EXPECT_TRUE(SameBytes(with.extra.at(p + "self_attn.o_proj.weight"), own.wo)) << l;
    EXPECT_TRUE(SameBytes(with.extra.at(p + "mlp.down_proj.weight"), own.w_down)) << l;
    EXPECT_EQ(with.extra.count(p + "self_attn.beacon_q_proj.weight"), 0u);  // optional, absent
  }
  EXPECT_EQ(with.extra.count("model.embed_tokens.weight"), plan.first_stage() ? 1u : 0u);
  if (plan.first_stage()) {
    EXPECT_TRUE(SameBytes(with.extra.at("model.embed_tokens.weight"), with.embed));
    EXPECT_FALSE(with.lm_head.empty()) << "stage 0 holds layer 0: it loads a head";
  }

  MemoryPlanOptions plan_options;
  plan_options.weight_dtype = DType::kF32;
  plan_options.device_memory_bytes = 1 * kGiB;
  plan_options.workspace_bytes = 0;
  ASSERT_OK_AND_ASSIGN(MemoryPlan before, MakeMemoryPlan(config, layout, plan_options));
  plan_options.model = options;
  // The plan reads no weights, so it counts an optional tensor as present; this checkpoint has
  // none of the optional one.
  plan_options.model.extra_weights.pop_back();
  ASSERT_OK_AND_ASSIGN(MemoryPlan after, MakeMemoryPlan(config, layout, plan_options));
  const int index = plan.pp_rank * 2 + plan.tp_rank;
  EXPECT_EQ(after.ranks[index].weight_bytes - before.ranks[index].weight_bytes,
            with.bytes - plain.bytes)
      << "the plan and the loader disagree on the method's bytes";
}

INSTANTIATE_TEST_SUITE_P(Tp2Pp2, ExtraWeightsTest, ::testing::Values(0, 1, 2, 3));

TEST(ExtraWeightsErrorsTest, MissingOrMisshapenTensorsNameThem) {
  ASSERT_OK_AND_ASSIGN(ModelConfig config, LoadModelConfig(kModel));
  ASSERT_OK_AND_ASSIGN(auto ckpt, Checkpoint::Open(kModel));
  ASSERT_OK_AND_ASSIGN(ShardPlan plan, MakeShardPlan(config, WorldLayout{}));
  ModelOptions missing;
  missing.extra_weights = {{"model.layers.{layer}.beacon_k_proj.weight", {32, 32}}};
  const auto a = LoadLlamaWeights(*ckpt, config, plan, missing);
  EXPECT_FALSE(a.ok());
  EXPECT_TRUE(absl::StrContains(a.status().message(), "model.layers.0.beacon_k_proj.weight"))
      << a.status();
  ModelOptions misshapen;
  misshapen.extra_weights = {{"model.norm.weight", {33}}};
  const auto b = LoadLlamaWeights(*ckpt, config, plan, misshapen);
  EXPECT_FALSE(b.ok());
  EXPECT_TRUE(absl::StrContains(b.status().message(), "model.norm.weight")) << b.status();
}

}  // namespace
}  // namespace tessera
