// ComputeRopeFrequencies against transformers' RoPE init functions: every case of
// tests/fixtures/rope/rope_cases.json (inv_freq and attention_scaling recorded by
// tools/make_fixtures.py with transformers) goes through ParseModelConfig, so the config fields
// are read exactly as a checkpoint's would be.
#include <cmath>
#include <fstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "runtime/model_config.h"
#include "runtime/rope_frequencies.h"
#include "tests/test_util.h"

namespace tessera {
namespace {

using nlohmann::json;

constexpr double kTolerance = 1e-6;  // relative, per element

json LoadCases() {
  std::ifstream in("tests/fixtures/rope/rope_cases.json");
  EXPECT_TRUE(in) << "cannot open tests/fixtures/rope/rope_cases.json (run from the repo root)";
  return json::parse(in, nullptr, /*allow_exceptions=*/false);
}

TEST(RopeFrequenciesTest, MatchesTransformers) {
  const json cases = LoadCases();
  ASSERT_FALSE(cases.is_discarded());
  ASSERT_TRUE(cases.contains("cases"));
  ASSERT_GE(cases["cases"].size(), 6u);
  double max_error_all = 0.0;
  for (const json& c : cases["cases"]) {
    const std::string name = c["name"].get<std::string>();
    SCOPED_TRACE(name);
    // The case's rope fields plus dummy values for the rest of a valid config.
    json config = c["config"];
    config["architectures"] = {"LlamaForCausalLM"};
    config["model_type"] = "llama";
    config["intermediate_size"] = 64;
    config["num_hidden_layers"] = 1;
    config["vocab_size"] = 100;
    config["bos_token_id"] = 1;
    config["eos_token_id"] = 2;
    ASSERT_OK_AND_ASSIGN(ModelConfig mc, ParseModelConfig(config.dump(), name + "/config.json"));

    const std::vector<float> expected = c["inv_freq"].get<std::vector<float>>();
    const RopeFrequencies rope = ComputeRopeFrequencies(mc, c["seq_len"].get<int64_t>());
    ASSERT_EQ(rope.inv_freq.size(), expected.size());
    double max_error = 0.0;
    for (size_t i = 0; i < expected.size(); ++i) {
      const double err = std::abs(static_cast<double>(rope.inv_freq[i]) - expected[i]) /
                         std::abs(static_cast<double>(expected[i]));
      max_error = std::max(max_error, err);
      EXPECT_LE(err, kTolerance) << "inv_freq[" << i << "] = " << rope.inv_freq[i]
                                 << ", transformers " << expected[i];
    }
    EXPECT_NEAR(rope.attention_scaling, c["attention_scaling"].get<double>(), 1e-6);
    EXPECT_EQ(RopeDependsOnLength(mc), c["rope_type"] == "dynamic");
    RecordProperty("max_rel_err_" + name, std::to_string(max_error));
    std::printf("[ rope ] %-32s max relative error %.3g\n", name.c_str(), max_error);
    max_error_all = std::max(max_error_all, max_error);
  }
  RecordProperty("max_rel_err", std::to_string(max_error_all));
}

// YaRN against transformers' _compute_yarn_parameters, for each of its optional parameters
// (tests/fixtures/long_context/rope_yarn.json, recorded by tools/make_long_context_fixtures.py).
TEST(RopeFrequenciesTest, YarnMatchesTransformers) {
  std::ifstream in("tests/fixtures/long_context/rope_yarn.json");
  ASSERT_TRUE(in) << "cannot open tests/fixtures/long_context/rope_yarn.json";
  const json cases = json::parse(in, nullptr, /*allow_exceptions=*/false);
  ASSERT_FALSE(cases.is_discarded());
  ASSERT_GE(cases["cases"].size(), 5u);
  for (const json& c : cases["cases"]) {
    const std::string name = c["name"].get<std::string>();
    SCOPED_TRACE(name);
    const json config = {{"architectures", {"LlamaForCausalLM"}},
                         {"hidden_size", c["head_dim"].get<int64_t>() * 4},
                         {"num_attention_heads", 4},
                         {"head_dim", c["head_dim"]},
                         {"intermediate_size", 64},
                         {"num_hidden_layers", 1},
                         {"vocab_size", 100},
                         {"rope_theta", c["rope_theta"]},
                         {"max_position_embeddings", c["max_position_embeddings"]},
                         {"rope_scaling", c["rope_scaling"]}};
    ASSERT_OK_AND_ASSIGN(ModelConfig mc, ParseModelConfig(config.dump(), name + "/config.json"));
    const std::vector<float> expected = c["inv_freq"].get<std::vector<float>>();
    const RopeFrequencies rope = ComputeRopeFrequencies(mc, 0);
    ASSERT_EQ(rope.inv_freq.size(), expected.size());
    double max_error = 0.0;
    for (size_t i = 0; i < expected.size(); ++i) {
      max_error =
          std::max(max_error, std::abs(static_cast<double>(rope.inv_freq[i]) - expected[i]) /
                                  std::abs(static_cast<double>(expected[i])));
    }
    EXPECT_LE(max_error, kTolerance);
    EXPECT_NEAR(rope.attention_scaling, c["attention_scaling"].get<double>(), 1e-6);
    EXPECT_FALSE(RopeDependsOnLength(mc));
    RecordProperty("max_rel_err_yarn_" + name, std::to_string(max_error));
  }
}

// The dynamic cases must differ between the short and the long sequence (the NTK base only grows
// beyond max_position_embeddings), and the short one equals the unscaled frequencies.
TEST(RopeFrequenciesTest, DynamicDependsOnLengthOnlyBeyondContext) {
  const json cases = LoadCases();
  const json* short_case = nullptr;
  const json* long_case = nullptr;
  const json* default_case = nullptr;
  for (const json& c : cases["cases"]) {
    if (c["name"] == "dynamic_factor2_short") short_case = &c;
    if (c["name"] == "dynamic_factor2_long") long_case = &c;
    if (c["name"] == "linear_factor4") default_case = &c;  // same head_dim and theta
  }
  ASSERT_NE(short_case, nullptr);
  ASSERT_NE(long_case, nullptr);
  ASSERT_NE(default_case, nullptr);
  // Unscaled frequencies for head_dim 128, theta 1e4: the linear/4 case times 4.
  const std::vector<float> linear = (*default_case)["inv_freq"].get<std::vector<float>>();
  const std::vector<float> short_f = (*short_case)["inv_freq"].get<std::vector<float>>();
  const std::vector<float> long_f = (*long_case)["inv_freq"].get<std::vector<float>>();
  for (size_t i = 0; i < linear.size(); ++i) {
    EXPECT_NEAR(short_f[i], linear[i] * 4.0, 1e-6 * short_f[i]) << i;
  }
  EXPECT_LT(long_f.back(), short_f.back());  // larger base, lower frequencies

  ModelConfig mc;
  mc.head_dim = 128;
  mc.rope_theta = 10000.0;
  mc.max_position_embeddings = 4096;
  mc.rope_scaling.type = RopeScaling::Type::kDynamic;
  mc.rope_scaling.factor = 2.0;
  const RopeFrequencies at_limit = ComputeRopeFrequencies(mc, 4096);
  const RopeFrequencies beyond = ComputeRopeFrequencies(mc, 4097);
  for (size_t i = 0; i < at_limit.inv_freq.size(); ++i) {
    EXPECT_NEAR(at_limit.inv_freq[i], short_f[i], 1e-6 * short_f[i]) << i;
  }
  EXPECT_LT(beyond.inv_freq.back(), at_limit.inv_freq.back());
}

// Closed form for the default case: theta^(-2i/d), computed here in double.
TEST(RopeFrequenciesTest, DefaultClosedForm) {
  ModelConfig mc;
  mc.head_dim = 16;
  mc.rope_theta = 1e6;
  const RopeFrequencies rope = ComputeRopeFrequencies(mc, 1);
  ASSERT_EQ(rope.inv_freq.size(), 8u);
  for (int i = 0; i < 8; ++i) {
    const double expected = std::pow(1e6, -2.0 * i / 16.0);
    EXPECT_NEAR(rope.inv_freq[i], expected, 1e-6 * expected) << i;
  }
  EXPECT_EQ(rope.attention_scaling, 1.0f);
}

}  // namespace
}  // namespace tessera
