// ParseModelConfig / LoadModelConfig against real Hugging Face config.json files and against
// each kind of config Tessera must refuse.
//
// The embedded configs are the config.json files published on the Hugging Face Hub for
// meta-llama/Llama-2-7b-hf, meta-llama/Llama-2-70b-hf, codellama/CodeLlama-7b-hf and
// meta-llama/Llama-3.1-8B-Instruct (values copied from the model cards' files; the Llama-2-7B one
// is given without num_key_value_heads, as Llama-1-era configs were, to exercise the default).
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/model_config.h"
#include "tests/runtime/test_files.h"
#include "tests/test_util.h"

namespace tessera {
namespace {

using ::testing::HasSubstr;
using ::testing::AllOf;
using nlohmann::json;

constexpr char kLlama2_7B[] = R"({
  "_name_or_path": "meta-llama/Llama-2-7b-hf",
  "architectures": ["LlamaForCausalLM"],
  "bos_token_id": 1,
  "eos_token_id": 2,
  "hidden_act": "silu",
  "hidden_size": 4096,
  "initializer_range": 0.02,
  "intermediate_size": 11008,
  "max_position_embeddings": 4096,
  "model_type": "llama",
  "num_attention_heads": 32,
  "num_hidden_layers": 32,
  "pretraining_tp": 1,
  "rms_norm_eps": 1e-05,
  "rope_scaling": null,
  "tie_word_embeddings": false,
  "torch_dtype": "float16",
  "transformers_version": "4.31.0.dev0",
  "use_cache": true,
  "vocab_size": 32000
})";

constexpr char kLlama2_70B[] = R"({
  "_name_or_path": "meta-llama/Llama-2-70b-hf",
  "architectures": ["LlamaForCausalLM"],
  "bos_token_id": 1,
  "eos_token_id": 2,
  "hidden_act": "silu",
  "hidden_size": 8192,
  "initializer_range": 0.02,
  "intermediate_size": 28672,
  "max_position_embeddings": 4096,
  "model_type": "llama",
  "num_attention_heads": 64,
  "num_hidden_layers": 80,
  "num_key_value_heads": 8,
  "pretraining_tp": 1,
  "rms_norm_eps": 1e-05,
  "rope_scaling": null,
  "tie_word_embeddings": false,
  "torch_dtype": "float16",
  "transformers_version": "4.32.0.dev0",
  "use_cache": true,
  "vocab_size": 32000
})";

constexpr char kCodeLlama7B[] = R"({
  "architectures": ["LlamaForCausalLM"],
  "bos_token_id": 1,
  "eos_token_id": 2,
  "hidden_act": "silu",
  "hidden_size": 4096,
  "initializer_range": 0.02,
  "intermediate_size": 11008,
  "max_position_embeddings": 16384,
  "model_type": "llama",
  "num_attention_heads": 32,
  "num_hidden_layers": 32,
  "num_key_value_heads": 32,
  "pretraining_tp": 1,
  "rms_norm_eps": 1e-05,
  "rope_scaling": null,
  "rope_theta": 1000000,
  "tie_word_embeddings": false,
  "torch_dtype": "bfloat16",
  "transformers_version": "4.33.0.dev0",
  "use_cache": true,
  "vocab_size": 32016
})";

constexpr char kLlama31_8B_Instruct[] = R"({
  "architectures": ["LlamaForCausalLM"],
  "attention_bias": false,
  "attention_dropout": 0.0,
  "bos_token_id": 128000,
  "eos_token_id": [128001, 128008, 128009],
  "hidden_act": "silu",
  "hidden_size": 4096,
  "initializer_range": 0.02,
  "intermediate_size": 14336,
  "max_position_embeddings": 131072,
  "mlp_bias": false,
  "model_type": "llama",
  "num_attention_heads": 32,
  "num_hidden_layers": 32,
  "num_key_value_heads": 8,
  "pretraining_tp": 1,
  "rms_norm_eps": 1e-05,
  "rope_scaling": {
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192,
    "rope_type": "llama3"
  },
  "rope_theta": 500000.0,
  "tie_word_embeddings": false,
  "torch_dtype": "bfloat16",
  "transformers_version": "4.43.0.dev0",
  "use_cache": true,
  "vocab_size": 128256
})";

constexpr char kSource[] = "some/model/config.json";

// Llama-2-7B's config with `edit` applied, parsed under kSource.
absl::StatusOr<ModelConfig> ParseEdited(const std::function<void(json&)>& edit) {
  json j = json::parse(kLlama2_7B);
  edit(j);
  return ParseModelConfig(j.dump(), kSource);
}

TEST(ModelConfigTest, Llama2_7B) {
  ASSERT_OK_AND_ASSIGN(ModelConfig c, ParseModelConfig(kLlama2_7B, "llama2-7b/config.json"));
  EXPECT_EQ(c.hidden_size, 4096);
  EXPECT_EQ(c.intermediate_size, 11008);
  EXPECT_EQ(c.num_hidden_layers, 32);
  EXPECT_EQ(c.num_attention_heads, 32);
  EXPECT_EQ(c.num_key_value_heads, 32);  // absent: multi-head attention
  EXPECT_EQ(c.head_dim, 4096 / 32);
  EXPECT_EQ(c.vocab_size, 32000);
  EXPECT_EQ(c.max_position_embeddings, 4096);
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-5);
  EXPECT_DOUBLE_EQ(c.rope_theta, 10000.0);  // absent: transformers' default
  EXPECT_EQ(c.rope_scaling.type, RopeScaling::Type::kNone);
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_EQ(c.bos_token_id, 1);
  EXPECT_EQ(c.eos_token_ids, std::vector<int32_t>({2}));
  EXPECT_EQ(c.torch_dtype, "float16");
}

TEST(ModelConfigTest, Llama2_70B_GroupedQueryAttention) {
  ASSERT_OK_AND_ASSIGN(ModelConfig c, ParseModelConfig(kLlama2_70B, "llama2-70b/config.json"));
  EXPECT_EQ(c.hidden_size, 8192);
  EXPECT_EQ(c.intermediate_size, 28672);
  EXPECT_EQ(c.num_hidden_layers, 80);
  EXPECT_EQ(c.num_attention_heads, 64);
  EXPECT_EQ(c.num_key_value_heads, 8);
  EXPECT_EQ(c.head_dim, 8192 / 64);
  EXPECT_EQ(c.vocab_size, 32000);
  EXPECT_EQ(c.max_position_embeddings, 4096);
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-5);
  EXPECT_DOUBLE_EQ(c.rope_theta, 10000.0);
  EXPECT_EQ(c.rope_scaling.type, RopeScaling::Type::kNone);
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_EQ(c.bos_token_id, 1);
  EXPECT_EQ(c.eos_token_ids, std::vector<int32_t>({2}));
  EXPECT_EQ(c.torch_dtype, "float16");
}

TEST(ModelConfigTest, CodeLlama7B) {
  ASSERT_OK_AND_ASSIGN(ModelConfig c, ParseModelConfig(kCodeLlama7B, "codellama-7b/config.json"));
  EXPECT_EQ(c.hidden_size, 4096);
  EXPECT_EQ(c.intermediate_size, 11008);
  EXPECT_EQ(c.num_hidden_layers, 32);
  EXPECT_EQ(c.num_attention_heads, 32);
  EXPECT_EQ(c.num_key_value_heads, 32);
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.vocab_size, 32016);
  EXPECT_EQ(c.max_position_embeddings, 16384);
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-5);
  EXPECT_DOUBLE_EQ(c.rope_theta, 1e6);  // written as the integer 1000000
  EXPECT_EQ(c.rope_scaling.type, RopeScaling::Type::kNone);
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_EQ(c.bos_token_id, 1);
  EXPECT_EQ(c.eos_token_ids, std::vector<int32_t>({2}));
  EXPECT_EQ(c.torch_dtype, "bfloat16");
}

TEST(ModelConfigTest, Llama31_8B) {
  ASSERT_OK_AND_ASSIGN(ModelConfig c,
                       ParseModelConfig(kLlama31_8B_Instruct, "llama31-8b/config.json"));
  EXPECT_EQ(c.hidden_size, 4096);
  EXPECT_EQ(c.intermediate_size, 14336);
  EXPECT_EQ(c.num_hidden_layers, 32);
  EXPECT_EQ(c.num_attention_heads, 32);
  EXPECT_EQ(c.num_key_value_heads, 8);
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.vocab_size, 128256);
  EXPECT_EQ(c.max_position_embeddings, 131072);
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-5);
  EXPECT_DOUBLE_EQ(c.rope_theta, 500000.0);
  EXPECT_EQ(c.rope_scaling.type, RopeScaling::Type::kLlama3);
  EXPECT_DOUBLE_EQ(c.rope_scaling.factor, 8.0);
  EXPECT_DOUBLE_EQ(c.rope_scaling.low_freq_factor, 1.0);
  EXPECT_DOUBLE_EQ(c.rope_scaling.high_freq_factor, 4.0);
  EXPECT_EQ(c.rope_scaling.original_max_position_embeddings, 8192);
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_EQ(c.bos_token_id, 128000);
  EXPECT_EQ(c.eos_token_ids, std::vector<int32_t>({128001, 128008, 128009}));
  EXPECT_EQ(c.torch_dtype, "bfloat16");
}

TEST(ModelConfigTest, ExplicitHeadDimOverridesDerivation) {
  ASSERT_OK_AND_ASSIGN(ModelConfig c, ParseEdited([](json& j) { j["head_dim"] = 64; }));
  EXPECT_EQ(c.head_dim, 64);
}

TEST(ModelConfigTest, TiedEmbeddings) {
  ASSERT_OK_AND_ASSIGN(ModelConfig c, ParseEdited([](json& j) { j["tie_word_embeddings"] = true; }));
  EXPECT_TRUE(c.tie_word_embeddings);
}

TEST(ModelConfigTest, OldSchemaLinearRopeScaling) {
  ASSERT_OK_AND_ASSIGN(ModelConfig c, ParseEdited([](json& j) {
    j["rope_scaling"] = {{"type", "linear"}, {"factor", 4.0}};
  }));
  EXPECT_EQ(c.rope_scaling.type, RopeScaling::Type::kLinear);
  EXPECT_DOUBLE_EQ(c.rope_scaling.factor, 4.0);
}

TEST(ModelConfigTest, OldSchemaDynamicRopeScaling) {
  ASSERT_OK_AND_ASSIGN(ModelConfig c, ParseEdited([](json& j) {
    j["rope_scaling"] = {{"type", "dynamic"}, {"factor", 2.0}};
  }));
  EXPECT_EQ(c.rope_scaling.type, RopeScaling::Type::kDynamic);
  EXPECT_DOUBLE_EQ(c.rope_scaling.factor, 2.0);
}

// transformers >= 4.56 / 5 writes rope_parameters, which carries rope_theta as well.
TEST(ModelConfigTest, RopeParametersLlama3) {
  ASSERT_OK_AND_ASSIGN(ModelConfig c, ParseEdited([](json& j) {
    j.erase("rope_scaling");
    j["rope_parameters"] = {{"rope_type", "llama3"},
                            {"rope_theta", 500000.0},
                            {"factor", 32.0},
                            {"low_freq_factor", 1.0},
                            {"high_freq_factor", 4.0},
                            {"original_max_position_embeddings", 8192}};
  }));
  EXPECT_DOUBLE_EQ(c.rope_theta, 500000.0);
  EXPECT_EQ(c.rope_scaling.type, RopeScaling::Type::kLlama3);
  EXPECT_DOUBLE_EQ(c.rope_scaling.factor, 32.0);
  EXPECT_DOUBLE_EQ(c.rope_scaling.low_freq_factor, 1.0);
  EXPECT_DOUBLE_EQ(c.rope_scaling.high_freq_factor, 4.0);
  EXPECT_EQ(c.rope_scaling.original_max_position_embeddings, 8192);
}

TEST(ModelConfigTest, RopeParametersDefault) {
  ASSERT_OK_AND_ASSIGN(ModelConfig c, ParseEdited([](json& j) {
    j.erase("rope_scaling");
    j["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 1000000.0}};
  }));
  EXPECT_DOUBLE_EQ(c.rope_theta, 1e6);
  EXPECT_EQ(c.rope_scaling.type, RopeScaling::Type::kNone);
}

TEST(ModelConfigTest, RopeParametersLinear) {
  ASSERT_OK_AND_ASSIGN(ModelConfig c, ParseEdited([](json& j) {
    j.erase("rope_scaling");
    j["rope_parameters"] = {{"rope_type", "linear"}, {"rope_theta", 10000.0}, {"factor", 2.0}};
  }));
  EXPECT_DOUBLE_EQ(c.rope_theta, 10000.0);
  EXPECT_EQ(c.rope_scaling.type, RopeScaling::Type::kLinear);
  EXPECT_DOUBLE_EQ(c.rope_scaling.factor, 2.0);
}

// ---- Refusals. Each names the file and the field, and says what would be accepted. ----

void ExpectInvalid(const absl::StatusOr<ModelConfig>& c, const std::string& field,
                   const std::vector<std::string>& also) {
  ASSERT_FALSE(c.ok()) << "parsed a config that must be refused";
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument) << c.status();
  const std::string m(c.status().message());
  EXPECT_THAT(m, HasSubstr(kSource));
  EXPECT_THAT(m, HasSubstr(field));
  for (const std::string& s : also) EXPECT_THAT(m, HasSubstr(s));
}

TEST(ModelConfigErrorTest, UnknownRopeTypeLongrope) {
  ExpectInvalid(ParseEdited([](json& j) {
                  j["rope_scaling"] = {{"rope_type", "longrope"}, {"factor", 4.0}};
                }),
                "rope_scaling", {"longrope", "linear", "dynamic", "llama3", "yarn"});
}

// YaRN's optional parameters take transformers' defaults; original_max_position_embeddings
// defaults to max_position_embeddings, as transformers' standardize_rope_params sets it.
TEST(ModelConfigTest, YarnRopeScalingWithDefaults) {
  ASSERT_OK_AND_ASSIGN(ModelConfig c, ParseEdited([](json& j) {
                         j["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}};
                       }));
  EXPECT_EQ(c.rope_scaling.type, RopeScaling::Type::kYarn);
  EXPECT_DOUBLE_EQ(c.rope_scaling.factor, 4.0);
  EXPECT_EQ(c.rope_scaling.original_max_position_embeddings, 4096);
  EXPECT_DOUBLE_EQ(c.rope_scaling.attention_factor, 0.0);
  EXPECT_DOUBLE_EQ(c.rope_scaling.beta_fast, 32.0);
  EXPECT_DOUBLE_EQ(c.rope_scaling.beta_slow, 1.0);
  EXPECT_TRUE(c.rope_scaling.truncate);
}

TEST(ModelConfigTest, YarnRopeScalingWithEveryParameter) {
  ASSERT_OK_AND_ASSIGN(ModelConfig c, ParseEdited([](json& j) {
                         j["rope_scaling"] = {{"rope_type", "yarn"},
                                              {"factor", 40.0},
                                              {"original_max_position_embeddings", 4096},
                                              {"beta_fast", 16},
                                              {"beta_slow", 2},
                                              {"mscale", 1.0},
                                              {"mscale_all_dim", 0.707},
                                              {"attention_factor", 1.5},
                                              {"truncate", false}};
                       }));
  EXPECT_EQ(c.rope_scaling.original_max_position_embeddings, 4096);
  EXPECT_DOUBLE_EQ(c.rope_scaling.beta_fast, 16.0);
  EXPECT_DOUBLE_EQ(c.rope_scaling.beta_slow, 2.0);
  EXPECT_DOUBLE_EQ(c.rope_scaling.mscale, 1.0);
  EXPECT_DOUBLE_EQ(c.rope_scaling.mscale_all_dim, 0.707);
  EXPECT_DOUBLE_EQ(c.rope_scaling.attention_factor, 1.5);
  EXPECT_FALSE(c.rope_scaling.truncate);
}

TEST(ModelConfigErrorTest, YarnParametersAreTypeChecked) {
  ExpectInvalid(ParseEdited([](json& j) {
                  j["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}, {"beta_fast", "32"}};
                }),
                "rope_scaling.beta_fast", {"must be a number"});
  ExpectInvalid(ParseEdited([](json& j) {
                  j["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}, {"truncate", 1}};
                }),
                "rope_scaling.truncate", {"true or false"});
  ExpectInvalid(
      ParseEdited([](json& j) {
        j["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}, {"attention_factor", -1.0}};
      }),
      "rope_scaling.attention_factor", {"> 0"});
}

TEST(ModelConfigErrorTest, UnknownRopeTypeLongropeOldKey) {
  ExpectInvalid(ParseEdited([](json& j) {
                  j["rope_scaling"] = {{"type", "longrope"}, {"factor", 4.0}};
                }),
                "rope_scaling", {"longrope", "linear", "dynamic", "llama3", "yarn"});
}

TEST(ModelConfigErrorTest, UnknownRopeTypeInRopeParameters) {
  ExpectInvalid(ParseEdited([](json& j) {
                  j.erase("rope_scaling");
                  j["rope_parameters"] = {{"rope_type", "longrope"}, {"rope_theta", 1e4}};
                }),
                "rope_parameters", {"longrope", "linear", "dynamic", "llama3", "yarn"});
}

TEST(ModelConfigErrorTest, QuantizationConfig) {
  ExpectInvalid(ParseEdited([](json& j) {
                  j["quantization_config"] = {{"quant_method", "gptq"}, {"bits", 4}};
                }),
                "quantization_config", {"bf16"});
}

TEST(ModelConfigErrorTest, MistralArchitecture) {
  ExpectInvalid(ParseEdited([](json& j) {
                  j["architectures"] = {"MistralForCausalLM"};
                  j["model_type"] = "mistral";
                }),
                "architectures", {"MistralForCausalLM", "LlamaForCausalLM"});
}

TEST(ModelConfigErrorTest, Gpt2ModelType) {
  ExpectInvalid(ParseEdited([](json& j) {
                  j.erase("architectures");
                  j["model_type"] = "gpt2";
                }),
                "model_type", {"gpt2", "\"llama\""});
}

TEST(ModelConfigErrorTest, MissingHiddenSize) {
  ExpectInvalid(ParseEdited([](json& j) { j.erase("hidden_size"); }), "hidden_size", {"missing"});
}

TEST(ModelConfigErrorTest, NonIntegerHiddenSize) {
  ExpectInvalid(ParseEdited([](json& j) { j["hidden_size"] = "4096"; }), "hidden_size",
                {"positive integer"});
}

TEST(ModelConfigErrorTest, KeyValueHeadsDoNotDivideHeads) {
  ExpectInvalid(ParseEdited([](json& j) { j["num_key_value_heads"] = 5; }), "num_key_value_heads",
                {"5", "32", "divide"});
}

TEST(ModelConfigErrorTest, AttentionBias) {
  ExpectInvalid(ParseEdited([](json& j) { j["attention_bias"] = true; }), "attention_bias",
                {"without biases"});
}

TEST(ModelConfigErrorTest, MlpBias) {
  ExpectInvalid(ParseEdited([](json& j) { j["mlp_bias"] = true; }), "mlp_bias", {"without biases"});
}

TEST(ModelConfigErrorTest, GeluActivation) {
  ExpectInvalid(ParseEdited([](json& j) { j["hidden_act"] = "gelu"; }), "hidden_act",
                {"gelu", "silu"});
}

TEST(ModelConfigErrorTest, EosIdOutsideVocabulary) {
  ExpectInvalid(ParseEdited([](json& j) { j["eos_token_id"] = {2, 32000}; }), "eos_token_id",
                {"32000", "vocabulary"});
}

TEST(ModelConfigErrorTest, BosIdOutsideVocabulary) {
  ExpectInvalid(ParseEdited([](json& j) { j["bos_token_id"] = 40000; }), "bos_token_id",
                {"40000", "vocabulary"});
}

TEST(ModelConfigErrorTest, InvalidJson) {
  absl::StatusOr<ModelConfig> c = ParseModelConfig(R"({"hidden_size": 4096,, })", kSource);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(c.status().message()), AllOf(HasSubstr(kSource), HasSubstr("JSON")));
}

TEST(ModelConfigErrorTest, OddExplicitHeadDim) {
  ExpectInvalid(ParseEdited([](json& j) { j["head_dim"] = 127; }), "head_dim", {"even"});
}

TEST(ModelConfigErrorTest, OddDerivedHeadDim) {
  // 96 / 32 = 3.
  ExpectInvalid(ParseEdited([](json& j) { j["hidden_size"] = 96; }), "head_dim", {"even"});
}

TEST(ModelConfigErrorTest, HeadsDoNotDivideHiddenSize) {
  ExpectInvalid(ParseEdited([](json& j) { j["hidden_size"] = 4100; }), "num_attention_heads",
                {"hidden_size", "head_dim"});
}

TEST(ModelConfigErrorTest, Llama3RopeNeedsHighAboveLowFactor) {
  ExpectInvalid(ParseEdited([](json& j) {
                  j["rope_scaling"] = {{"rope_type", "llama3"},
                                       {"factor", 8.0},
                                       {"low_freq_factor", 4.0},
                                       {"high_freq_factor", 1.0},
                                       {"original_max_position_embeddings", 8192}};
                }),
                "rope_scaling", {"high_freq_factor > low_freq_factor"});
}

TEST(ModelConfigErrorTest, RopeFactorBelowOne) {
  ExpectInvalid(ParseEdited([](json& j) {
                  j["rope_scaling"] = {{"type", "linear"}, {"factor", 0.5}};
                }),
                "rope_scaling.factor", {">= 1"});
}

TEST(ModelConfigTest, SwishIsSilu) {
  // transformers' ACT2FN maps "swish" to the same SiLU as "silu".
  ASSERT_OK_AND_ASSIGN(ModelConfig c, ParseEdited([](json& j) { j["hidden_act"] = "swish"; }));
  EXPECT_EQ(c.hidden_size, 4096);
}

// Ids are int32: a value beyond that range must be refused, not wrapped into a valid id
// (4294967297 wraps to 1, 4294967298 to 2).
TEST(ModelConfigErrorTest, BosIdBeyondInt32) {
  ExpectInvalid(ParseEdited([](json& j) { j["bos_token_id"] = 4294967297ull; }), "bos_token_id",
                {"4294967297"});
}

TEST(ModelConfigErrorTest, EosIdListEntryBeyondInt32) {
  ExpectInvalid(ParseEdited([](json& j) { j["eos_token_id"] = {2, 4294967298ull}; }),
                "eos_token_id[1]", {"4294967298"});
}

TEST(ModelConfigErrorTest, PadIdBeyondInt32) {
  ExpectInvalid(ParseEdited([](json& j) { j["pad_token_id"] = 4294967296ull; }), "pad_token_id",
                {"4294967296"});
}

TEST(ModelConfigErrorTest, BosIdOfTheWrongTypeIsRefusedNotIgnored) {
  ExpectInvalid(ParseEdited([](json& j) { j["bos_token_id"] = "1"; }), "bos_token_id",
                {"integer", "\"1\""});
}

TEST(ModelConfigErrorTest, LayerCountBeyondInt32) {
  ExpectInvalid(ParseEdited([](json& j) { j["num_hidden_layers"] = 4294967328ull; }),
                "num_hidden_layers", {"4294967328"});
}

TEST(ModelConfigErrorTest, TorchDtypeOfTheWrongType) {
  ExpectInvalid(ParseEdited([](json& j) { j["torch_dtype"] = 16; }), "torch_dtype", {"string"});
}

TEST(ModelConfigErrorTest, HiddenActOfTheWrongType) {
  ExpectInvalid(ParseEdited([](json& j) { j["hidden_act"] = 1; }), "hidden_act", {"string"});
}

// A rope_scaling without its factor used to run unscaled.
TEST(ModelConfigErrorTest, RopeScalingWithoutFactor) {
  ExpectInvalid(ParseEdited([](json& j) { j["rope_scaling"] = {{"rope_type", "linear"}}; }),
                "rope_scaling.factor", {"missing", "linear"});
  ExpectInvalid(ParseEdited([](json& j) { j["rope_scaling"] = {{"type", "dynamic"}}; }),
                "rope_scaling.factor", {"missing"});
}

TEST(ModelConfigErrorTest, Llama3RopeWithoutItsParameters) {
  ExpectInvalid(ParseEdited([](json& j) {
                  j["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8.0}};
                }),
                "rope_scaling.low_freq_factor", {"missing"});
}

TEST(ModelConfigErrorTest, RopeScalingWithoutType) {
  ExpectInvalid(ParseEdited([](json& j) { j["rope_scaling"] = {{"factor", 4.0}}; }),
                "rope_scaling.rope_type", {"missing"});
}

TEST(ModelConfigErrorTest, RopeParametersNotAnObject) {
  ExpectInvalid(ParseEdited([](json& j) {
                  j.erase("rope_scaling");
                  j["rope_parameters"] = "llama3";
                }),
                "rope_parameters", {"object"});
}

// A negative or zero epsilon used to reach the RMSNorm kernel, whose message named neither the
// file nor the field.
TEST(ModelConfigErrorTest, NonPositiveRmsNormEps) {
  ExpectInvalid(ParseEdited([](json& j) { j["rms_norm_eps"] = -1e-5; }), "rms_norm_eps",
                {"positive"});
  ExpectInvalid(ParseEdited([](json& j) { j["rms_norm_eps"] = 0; }), "rms_norm_eps",
                {"positive"});
}

// ---- LoadModelConfig: config.json plus generation_config.json. ----

// A directory where config.json belongs is an error naming it, never an exception or a
// misleading "not valid JSON".
TEST(LoadModelConfigTest, ConfigJsonThatIsADirectory) {
  testing::ScopedTempDir dir;
  std::filesystem::create_directories(dir.Join("config.json"));
  absl::StatusOr<ModelConfig> c = LoadModelConfig(dir.path());
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(std::string(c.status().message()),
              AllOf(HasSubstr(dir.Join("config.json")), HasSubstr("is a directory")));
}

TEST(LoadModelConfigTest, GenerationConfigThatIsADirectory) {
  testing::ScopedTempDir dir;
  testing::CopyDir("tests/fixtures/models/llama31", dir.path());
  std::filesystem::remove(dir.Join("generation_config.json"));
  std::filesystem::create_directories(dir.Join("generation_config.json"));
  absl::StatusOr<ModelConfig> c = LoadModelConfig(dir.path());
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(std::string(c.status().message()),
              AllOf(HasSubstr(dir.Join("generation_config.json")), HasSubstr("is a directory")));
}

TEST(LoadModelConfigTest, GenerationConfigIdsAreTypeAndRangeChecked) {
  testing::ScopedTempDir dir;
  testing::CopyDir("tests/fixtures/models/llama31", dir.path());
  for (const char* text : {R"({"bos_token_id": "380"})", R"({"bos_token_id": 4294967297})",
                           R"({"eos_token_id": [381, 4294967298]})", R"({"pad_token_id": 1.5})"}) {
    SCOPED_TRACE(text);
    testing::WriteFile(dir.Join("generation_config.json"), text);
    absl::StatusOr<ModelConfig> c = LoadModelConfig(dir.path());
    ASSERT_FALSE(c.ok()) << "accepted " << text;
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(c.status().message()),
                AllOf(HasSubstr("generation_config.json"), HasSubstr("_token_id")));
  }
}

TEST(LoadModelConfigTest, Llama31Fixture) {
  ASSERT_OK_AND_ASSIGN(ModelConfig c, LoadModelConfig("tests/fixtures/models/llama31"));
  EXPECT_EQ(c.hidden_size, 64);
  EXPECT_EQ(c.num_attention_heads, 8);
  EXPECT_EQ(c.num_key_value_heads, 2);
  EXPECT_EQ(c.head_dim, 16);  // explicit, not 64 / 8
  EXPECT_EQ(c.vocab_size, 384);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_EQ(c.rope_scaling.type, RopeScaling::Type::kLlama3);
  EXPECT_EQ(c.bos_token_id, 380);
  EXPECT_EQ(c.eos_token_ids, std::vector<int32_t>({381, 382, 383}));
}

TEST(LoadModelConfigTest, GenerationConfigOverridesEosAndBos) {
  testing::ScopedTempDir dir;
  testing::CopyDir("tests/fixtures/models/llama31", dir.path());
  testing::WriteFile(dir.Join("generation_config.json"),
                     R"({"bos_token_id": 7, "eos_token_id": [11, 12], "do_sample": true})");
  ASSERT_OK_AND_ASSIGN(ModelConfig c, LoadModelConfig(dir.path()));
  EXPECT_EQ(c.bos_token_id, 7);
  EXPECT_EQ(c.eos_token_ids, std::vector<int32_t>({11, 12}));
}

TEST(LoadModelConfigTest, GenerationConfigSingleEosInteger) {
  testing::ScopedTempDir dir;
  testing::CopyDir("tests/fixtures/models/llama31", dir.path());
  testing::WriteFile(dir.Join("generation_config.json"), R"({"eos_token_id": 383})");
  ASSERT_OK_AND_ASSIGN(ModelConfig c, LoadModelConfig(dir.path()));
  EXPECT_EQ(c.bos_token_id, 380);  // from config.json
  EXPECT_EQ(c.eos_token_ids, std::vector<int32_t>({383}));
}

TEST(LoadModelConfigTest, WithoutGenerationConfigUsesConfigJson) {
  testing::ScopedTempDir dir;
  testing::CopyDir("tests/fixtures/models/llama31", dir.path());
  std::filesystem::remove(dir.Join("generation_config.json"));
  ASSERT_OK_AND_ASSIGN(ModelConfig c, LoadModelConfig(dir.path()));
  EXPECT_EQ(c.eos_token_ids, std::vector<int32_t>({381, 382, 383}));
}

TEST(LoadModelConfigTest, MissingConfigJsonIsNotFoundNamingThePath) {
  testing::ScopedTempDir dir;
  absl::StatusOr<ModelConfig> c = LoadModelConfig(dir.path());
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(c.status().message()), HasSubstr(dir.Join("config.json")));
}

TEST(LoadModelConfigTest, InvalidGenerationConfigNamesTheFile) {
  testing::ScopedTempDir dir;
  testing::CopyDir("tests/fixtures/models/llama31", dir.path());
  testing::WriteFile(dir.Join("generation_config.json"), "{not json");
  absl::StatusOr<ModelConfig> c = LoadModelConfig(dir.path());
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(c.status().message()), HasSubstr(dir.Join("generation_config.json")));
}

// An EOS id outside the vocabulary is refused in config.json (EosIdOutsideVocabulary); the same
// id coming from generation_config.json must be refused too, naming that file and the field.
// (The ids from generation_config.json are not range-checked: see the report.)
TEST(LoadModelConfigTest, GenerationConfigEosOutsideVocabularyIsRefused) {
  testing::ScopedTempDir dir;
  testing::CopyDir("tests/fixtures/models/llama31", dir.path());  // vocab_size 384
  testing::WriteFile(dir.Join("generation_config.json"), R"({"eos_token_id": [381, 5000]})");
  absl::StatusOr<ModelConfig> c = LoadModelConfig(dir.path());
  ASSERT_FALSE(c.ok()) << "eos id 5000 accepted for a 384-token vocabulary";
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(c.status().message()),
              AllOf(HasSubstr("generation_config.json"), HasSubstr("eos_token_id"),
                    HasSubstr("5000")));
}

TEST(LoadModelConfigTest, GenerationConfigBosOutsideVocabularyIsRefused) {
  testing::ScopedTempDir dir;
  testing::CopyDir("tests/fixtures/models/llama31", dir.path());  // vocab_size 384
  testing::WriteFile(dir.Join("generation_config.json"), R"({"bos_token_id": 1000})");
  absl::StatusOr<ModelConfig> c = LoadModelConfig(dir.path());
  ASSERT_FALSE(c.ok()) << "bos id 1000 accepted for a 384-token vocabulary";
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(c.status().message()),
              AllOf(HasSubstr("generation_config.json"), HasSubstr("bos_token_id"),
                    HasSubstr("1000")));
}

}  // namespace
}  // namespace tessera
