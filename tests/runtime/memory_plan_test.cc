// MemoryPlan against closed-form expectations written out from the config numbers, and the
// published configs in configs/models/ (tests run from the repository root).
#include "runtime/memory_plan.h"

#include <cstdint>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/model_config.h"

namespace tessera {
namespace {

using ::testing::HasSubstr;

ModelConfig Load(const std::string& name) {
  auto c = LoadModelConfig("configs/models/" + name);
  EXPECT_TRUE(c.ok()) << c.status();
  return c.ok() ? *c : ModelConfig{};
}

MemoryPlanOptions Options80GiB() {
  MemoryPlanOptions o;
  o.weight_dtype = DType::kBF16;
  o.kv_dtype = DType::kBF16;
  o.device_memory_bytes = 80 * kGiB;
  o.memory_utilization = 0.90;
  o.workspace_bytes = 2 * kGiB;
  return o;
}

WorldLayout Layout(int tp, int pp) { return WorldLayout{tp, pp, 1, 0}; }

// --- configs/models: every published config loads and has the §3.2 numbers -------------------

struct Published {
  const char* dir;
  int64_t hidden, layers, heads, kv_heads, ffn, vocab, max_pos;
  double rope_theta;
  bool llama3_rope;
  const char* torch_dtype;
};

TEST(ModelConfigsTest, PublishedConfigsLoadWithTheirNumbers) {
  const Published kModels[] = {
      {"llama-2-7b", 4096, 32, 32, 32, 11008, 32000, 4096, 1e4, false, "float16"},
      {"llama-2-13b", 5120, 40, 40, 40, 13824, 32000, 4096, 1e4, false, "float16"},
      {"llama-2-70b", 8192, 80, 64, 8, 28672, 32000, 4096, 1e4, false, "float16"},
      {"codellama-7b", 4096, 32, 32, 32, 11008, 32016, 16384, 1e6, false, "bfloat16"},
      {"codellama-34b", 8192, 48, 64, 8, 22016, 32000, 16384, 1e6, false, "bfloat16"},
      {"llama-3.1-8b", 4096, 32, 32, 8, 14336, 128256, 131072, 5e5, true, "bfloat16"},
      {"llama-3.1-70b", 8192, 80, 64, 8, 28672, 128256, 131072, 5e5, true, "bfloat16"},
  };
  for (const Published& m : kModels) {
    SCOPED_TRACE(m.dir);
    const ModelConfig c = Load(m.dir);
    EXPECT_EQ(c.hidden_size, m.hidden);
    EXPECT_EQ(c.num_hidden_layers, m.layers);
    EXPECT_EQ(c.num_attention_heads, m.heads);
    EXPECT_EQ(c.num_key_value_heads, m.kv_heads);
    EXPECT_EQ(c.head_dim, 128);
    EXPECT_EQ(c.intermediate_size, m.ffn);
    EXPECT_EQ(c.vocab_size, m.vocab);
    EXPECT_EQ(c.max_position_embeddings, m.max_pos);
    EXPECT_DOUBLE_EQ(c.rope_theta, m.rope_theta);
    EXPECT_EQ(c.rope_scaling.type == RopeScaling::Type::kLlama3, m.llama3_rope);
    EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-5);
    EXPECT_FALSE(c.tie_word_embeddings);
    EXPECT_EQ(c.torch_dtype, m.torch_dtype);
  }
}

// --- Llama-2-70B, bf16, tp=8 on 80 GiB --------------------------------------------------------

TEST(MemoryPlanTest, Llama2_70bTp8WeightsAndKvByHand) {
  const ModelConfig c = Load("llama-2-70b");
  auto plan = MakeMemoryPlan(c, Layout(8, 1), Options80GiB());
  ASSERT_TRUE(plan.ok()) << plan.status();
  ASSERT_EQ(plan->ranks.size(), 8u);

  // Per rank: 64/8 = 8 query heads, 8/8 = 1 KV head, 28672/8 = 3584 MLP units, 32000/8 = 4000
  // vocabulary rows; head_dim 128, hidden 8192.
  const int64_t h = 8192, q = 8 * 128, kv = 1 * 128, f = 3584, vocab_rows = 4000;
  const int64_t per_layer = 2 * h         // two RMSNorms
                            + q * h       // q_proj
                            + 2 * kv * h  // k_proj, v_proj
                            + h * q       // o_proj
                            + 3 * f * h;  // gate, up, down
  EXPECT_EQ(per_layer, 106971136);
  const int64_t params =
      80 * per_layer + vocab_rows * h /*embedding*/ + vocab_rows * h /*head*/ + h /*final norm*/;
  EXPECT_EQ(params * 2, int64_t{17246470144});
  for (const RankMemory& r : plan->ranks) {
    SCOPED_TRACE(r.tp_rank);
    EXPECT_EQ(r.weight_bytes, static_cast<uint64_t>(params * 2));
    EXPECT_NEAR(r.weight_bytes / 1e9, 17.2, 0.1);  // runtime_anchors.md §1.2: 17.2 GB per GPU
    EXPECT_EQ(r.embedding_bytes, static_cast<uint64_t>(vocab_rows * h * 2));
    EXPECT_EQ(r.lm_head_bytes, static_cast<uint64_t>(vocab_rows * h * 2));
    EXPECT_EQ(r.final_norm_bytes, static_cast<uint64_t>(h * 2));
    EXPECT_EQ(r.kv_heads, 1);
    // 80 layers x 1 KV head x 128 x (K and V) x 2 bytes = 40 KiB.
    EXPECT_EQ(r.kv_bytes_per_token, 80u * 1 * 128 * 2 * 2);
    EXPECT_EQ(r.kv_bytes_per_token, 40u * 1024);
    EXPECT_EQ(r.vocab_padding_rows, 0);
    EXPECT_EQ(r.verdict, PlanVerdict::kFits);
  }
  // usable = floor(80 GiB x 0.9) = 77309411328; KV space = usable - weights - 2 GiB.
  EXPECT_EQ(plan->usable_bytes, uint64_t{77309411328});
  const int64_t space = int64_t{77309411328} - int64_t{17246470144} - int64_t{2147483648};
  EXPECT_EQ(plan->ranks[0].kv_space_bytes, space);
  EXPECT_EQ(plan->kv_capacity_tokens, space / 40960);  // 1,413,951 tokens
  EXPECT_EQ(plan->kv_capacity_tokens, 1413951);
  EXPECT_EQ(plan->max_context, 4096);
  EXPECT_EQ(plan->max_context_sequences, 1413951 / 4096);  // 345
  EXPECT_EQ(plan->verdict, PlanVerdict::kFits);
  EXPECT_THAT(plan->Summary(), HasSubstr("max context of 4096 tokens fits 345 sequences"));
  // The whole model: 68.98 B parameters (runtime_anchors.md §0).
  EXPECT_EQ(plan->model_parameters, uint64_t{68976648192});
}

TEST(MemoryPlanTest, PipelineStagesSplitLayersEmbeddingAndHead) {
  const ModelConfig c = Load("llama-2-70b");
  auto plan = MakeMemoryPlan(c, Layout(8, 2), Options80GiB());
  ASSERT_TRUE(plan.ok()) << plan.status();
  ASSERT_EQ(plan->ranks.size(), 16u);
  const uint64_t h = 8192, per_layer = 106971136, shard = 4000 * h;
  const RankMemory& first = plan->ranks[0];  // pp0 tp0
  const RankMemory& last = plan->ranks[8];   // pp1 tp0
  EXPECT_EQ(first.pp_rank, 0);
  EXPECT_EQ(last.pp_rank, 1);
  EXPECT_EQ(first.layer_begin, 0);
  EXPECT_EQ(first.layer_end, 40);
  EXPECT_EQ(last.layer_begin, 40);
  EXPECT_EQ(last.layer_end, 80);
  EXPECT_EQ(first.weight_bytes, (40 * per_layer + shard) * 2);
  EXPECT_EQ(last.weight_bytes, (40 * per_layer + shard + h) * 2);
  EXPECT_EQ(first.lm_head_bytes, 0u);
  EXPECT_EQ(last.embedding_bytes, 0u);
  // 40 layers x 1 KV head x 128 x 2 x 2 bytes = 20 KiB.
  EXPECT_EQ(first.kv_bytes_per_token, 20u * 1024);
  EXPECT_EQ(last.kv_bytes_per_token, 20u * 1024);
  // The replica holds as many tokens as its tightest rank (the last stage, with the head + norm).
  EXPECT_EQ(plan->kv_capacity_tokens, last.kv_capacity_tokens);
  EXPECT_LT(last.kv_capacity_tokens, first.kv_capacity_tokens);
}

TEST(MemoryPlanTest, ReplicatedKvHeadsCountOnEveryRank) {
  // tp=16 > 8 KV heads: each KV head is held by 2 ranks, so KV per token does not shrink.
  const ModelConfig c = Load("llama-2-70b");
  auto plan = MakeMemoryPlan(c, Layout(16, 1), Options80GiB());
  ASSERT_TRUE(plan.ok()) << plan.status();
  const uint64_t h = 8192, q = 4 * 128, kv = 128, f = 28672 / 16, vocab_rows = 2000;
  const uint64_t per_layer = 2 * h + q * h + 2 * kv * h + h * q + 3 * f * h;
  for (const RankMemory& r : plan->ranks) {
    EXPECT_EQ(r.kv_heads, 1);
    EXPECT_EQ(r.kv_bytes_per_token, 40u * 1024);
    EXPECT_EQ(r.weight_bytes, (80 * per_layer + 2 * vocab_rows * h + h) * 2);
  }
}

TEST(MemoryPlanTest, KvDtypeAndWeightDtypeSizes) {
  const ModelConfig c = Load("llama-2-7b");
  MemoryPlanOptions o = Options80GiB();
  o.weight_dtype = DType::kF32;
  o.kv_dtype = DType::kF32;  // the CPU backend's KV cache
  auto plan = MakeMemoryPlan(c, Layout(1, 1), o);
  ASSERT_TRUE(plan.ok()) << plan.status();
  // 32 layers x 32 KV heads x 128 x 2 x 4 bytes = 1 MiB per token.
  EXPECT_EQ(plan->ranks[0].kv_bytes_per_token, 32u * 32 * 128 * 2 * 4);
  const uint64_t h = 4096, f = 11008;
  const uint64_t params = 32 * (2 * h + 4 * h * h + 3 * f * h) + 2 * 32000 * h + h;
  EXPECT_EQ(params, 6738415616u);  // Llama-2-7B: 6.74 B parameters
  EXPECT_EQ(plan->ranks[0].weight_bytes, params * 4);
  EXPECT_EQ(plan->model_parameters, params);
}

// --- vocabulary padding -------------------------------------------------------------------------

TEST(MemoryPlanTest, CodeLlamaVocabShards) {
  const ModelConfig c = Load("codellama-7b");
  ASSERT_EQ(c.vocab_size, 32016);
  // 32016 = 8 x 4002: at tp=8 every shard has exactly 4002 rows.
  auto tp8 = MakeMemoryPlan(c, Layout(8, 1), Options80GiB());
  ASSERT_TRUE(tp8.ok()) << tp8.status();
  for (const RankMemory& r : tp8->ranks) {
    EXPECT_EQ(r.vocab_shard, 4002);
    EXPECT_EQ(r.vocab_padding_rows, 0);
    EXPECT_EQ(r.embedding_bytes, 4002u * 4096 * 2);
  }
  // At tp=32 the shard is ceil(32016 / 32) = 1001 rows; 32 x 1001 = 32032, so the last rank
  // holds 985 real rows and 16 padding rows, and still allocates 1001.
  auto tp32 = MakeMemoryPlan(c, Layout(32, 1), Options80GiB());
  ASSERT_TRUE(tp32.ok()) << tp32.status();
  EXPECT_EQ(tp32->ranks[0].vocab_shard, 1001);
  EXPECT_EQ(tp32->ranks[0].vocab_padding_rows, 0);
  EXPECT_EQ(tp32->ranks[31].vocab_shard, 1001);
  EXPECT_EQ(tp32->ranks[31].vocab_padding_rows, 16);
  EXPECT_EQ(tp32->ranks[31].embedding_bytes, 1001u * 4096 * 2);
  EXPECT_EQ(tp32->ranks[31].weight_bytes, tp32->ranks[0].weight_bytes);
}

TEST(MemoryPlanTest, FineTunedVocabIsPaddedToAMultipleOfTp) {
  ModelConfig c = Load("llama-2-7b");
  c.vocab_size = 32001;  // a fine-tune that added a pad token
  auto plan = MakeMemoryPlan(c, Layout(8, 1), Options80GiB());
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->ranks[0].vocab_shard, 4001);      // ceil(32001 / 8)
  EXPECT_EQ(plan->ranks[7].vocab_padding_rows, 7);  // 8 x 4001 - 32001
}

TEST(MemoryPlanTest, TiedEmbeddingsCountedOnceOnOneStageTwiceAcrossStages) {
  ModelConfig c = Load("llama-2-7b");
  c.tie_word_embeddings = true;
  const uint64_t embed = 32000u * 4096 * 2;
  auto one = MakeMemoryPlan(c, Layout(1, 1), Options80GiB());
  ASSERT_TRUE(one.ok()) << one.status();
  EXPECT_EQ(one->ranks[0].embedding_bytes, embed);
  EXPECT_EQ(one->ranks[0].lm_head_bytes, 0u);
  auto two = MakeMemoryPlan(c, Layout(1, 2), Options80GiB());
  ASSERT_TRUE(two.ok()) << two.status();
  EXPECT_EQ(two->ranks[0].embedding_bytes, embed);
  EXPECT_EQ(two->ranks[1].lm_head_bytes, embed);  // the last stage needs its own copy
}

// --- verdicts and refusals ----------------------------------------------------------------------

TEST(MemoryPlanTest, ImpossibleLayoutIsRefusedWithValidSizes) {
  const ModelConfig c = Load("llama-2-70b");
  auto plan = MakeMemoryPlan(c, Layout(3, 1), Options80GiB());
  ASSERT_FALSE(plan.ok());
  EXPECT_EQ(plan.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(plan.status().message(), HasSubstr("tp=3"));
  EXPECT_THAT(plan.status().message(), HasSubstr("{1, 2, 4, 8}"));
}

TEST(MemoryPlanTest, SeventyBOnOneGpuDoesNotFit) {
  const ModelConfig c = Load("llama-2-70b");
  auto plan = MakeMemoryPlan(c, Layout(1, 1), Options80GiB());
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->verdict, PlanVerdict::kWeightsDoNotFit);
  EXPECT_EQ(plan->kv_capacity_tokens, 0);
  EXPECT_LT(plan->ranks[0].kv_space_bytes, 0);
  EXPECT_THAT(plan->Summary(), HasSubstr("does not fit"));
}

TEST(MemoryPlanTest, LongContextThatDoesNotFitIsReported) {
  // Llama-3.1-70B at tp=2: ~70.6 GB of weights per GPU leave KV for ~28K tokens, less than one
  // sequence of the 131072-token context.
  const ModelConfig c = Load("llama-3.1-70b");
  auto plan = MakeMemoryPlan(c, Layout(2, 1), Options80GiB());
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->verdict, PlanVerdict::kContextDoesNotFit);
  EXPECT_GT(plan->kv_capacity_tokens, 0);
  EXPECT_LT(plan->kv_capacity_tokens, 131072);
  EXPECT_THAT(plan->Summary(), HasSubstr("less than one sequence of max context 131072"));
  // A shorter --max-seq-len fits.
  MemoryPlanOptions o = Options80GiB();
  o.max_context = 8192;
  auto shorter = MakeMemoryPlan(c, Layout(2, 1), o);
  ASSERT_TRUE(shorter.ok());
  EXPECT_EQ(shorter->verdict, PlanVerdict::kFits);
  EXPECT_EQ(shorter->max_context_sequences, shorter->kv_capacity_tokens / 8192);
}

TEST(MemoryPlanTest, BadOptionsAreRefused) {
  const ModelConfig c = Load("llama-2-7b");
  MemoryPlanOptions o = Options80GiB();
  o.memory_utilization = 1.5;
  EXPECT_THAT(MakeMemoryPlan(c, Layout(1, 1), o).status().message(),
              HasSubstr("--memory-utilization"));
  o = Options80GiB();
  o.device_memory_bytes = 0;
  EXPECT_THAT(MakeMemoryPlan(c, Layout(1, 1), o).status().message(), HasSubstr("--device-memory"));
}

// --- parsing ------------------------------------------------------------------------------------

TEST(ParseByteSizeTest, UnitsBinaryAndDecimal) {
  EXPECT_EQ(*ParseByteSize("80GiB"), uint64_t{85899345920});
  EXPECT_EQ(*ParseByteSize("80GB"), uint64_t{80000000000});
  EXPECT_EQ(*ParseByteSize("81920MiB"), uint64_t{85899345920});
  EXPECT_EQ(*ParseByteSize("80 gib"), uint64_t{85899345920});
  EXPECT_EQ(*ParseByteSize("1.5TiB"), uint64_t{1649267441664});
  EXPECT_EQ(*ParseByteSize("141GB"), uint64_t{141000000000});
  EXPECT_EQ(*ParseByteSize("2GiB"), uint64_t{2147483648});
  EXPECT_EQ(*ParseByteSize("512KiB"), uint64_t{524288});
  EXPECT_EQ(*ParseByteSize("4096"), uint64_t{4096});
}

TEST(ParseByteSizeTest, BadSizesNameTheProblem) {
  EXPECT_THAT(ParseByteSize("80G").status().message(), HasSubstr("ambiguous"));
  EXPECT_THAT(ParseByteSize("80 parsecs").status().message(), HasSubstr("unknown unit"));
  EXPECT_THAT(ParseByteSize("GiB").status().message(), HasSubstr("no number"));
  EXPECT_THAT(ParseByteSize("").status().message(), HasSubstr("no number"));
  EXPECT_THAT(ParseByteSize("-5GiB").status().message(), HasSubstr("no number"));
  EXPECT_THAT(ParseByteSize("0GiB").status().message(), HasSubstr("positive"));
  EXPECT_THAT(ParseByteSize("1.2.3GB").status().message(), HasSubstr("no number"));
}

TEST(ParseFloatDTypeTest, SpellingsOfTheThreeTypes) {
  EXPECT_EQ(*ParseFloatDType("bf16"), DType::kBF16);
  EXPECT_EQ(*ParseFloatDType("bfloat16"), DType::kBF16);
  EXPECT_EQ(*ParseFloatDType("F16"), DType::kF16);
  EXPECT_EQ(*ParseFloatDType("float16"), DType::kF16);
  EXPECT_EQ(*ParseFloatDType("fp32"), DType::kF32);
  EXPECT_EQ(*ParseFloatDType("float32"), DType::kF32);
  EXPECT_FALSE(ParseFloatDType("int8").ok());
  EXPECT_THAT(ParseFloatDType("fp8").status().message(), HasSubstr("bf16, f16 or f32"));
}

}  // namespace
}  // namespace tessera
