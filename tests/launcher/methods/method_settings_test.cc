// Method settings (configs/method_settings.proto): every preset parses and validates and then
// reaches only the not-built check; bad values name the full field path and what was given;
// --method files report file:line; --set reaches method fields, enums included.
#include "launcher/methods/method_settings.h"

#include <filesystem>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "launcher/eval/run_config.h"
#include "launcher/methods/method_availability.h"
#include "tests/test_util.h"

namespace tessera {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

std::string Write(const std::string& name, const std::string& text) {
  const std::string path = ::testing::TempDir() + name;
  std::ofstream(path) << text;
  return path;
}

// The message of ValidateMethodSettings after applying `sets` ("method.x.y=v") to an empty run
// config; "" when valid.
std::string ErrorAfter(const std::vector<std::string>& sets) {
  config::RunConfig c;
  for (const std::string& s : sets) {
    const absl::Status set = SetField(&c, s);
    if (!set.ok()) return "SetField failed: " + std::string(set.message());
  }
  return std::string(ValidateMethodSettings(c.method()).message());
}

TEST(MethodPresetsTest, EveryPresetValidatesAndItsMethodIsBuilt) {
  std::vector<std::string> names;
  for (const auto& entry : std::filesystem::directory_iterator("configs/methods")) {
    if (entry.path().extension() != ".textproto") continue;
    const std::string preset = entry.path().string();
    SCOPED_TRACE(preset);
    ASSERT_OK_AND_ASSIGN(config::MethodSettings m, LoadMethodSettings(preset));
    EXPECT_OK(ValidateMethodSettings(m));
    // A preset turns on exactly the method it is named after.
    const std::string name = entry.path().stem().string();
    EXPECT_OK(CheckMethodsAvailable(m));  // every method is built
    names.push_back(name);
  }
  EXPECT_THAT(names, ::testing::UnorderedElementsAre("early_exit", "sparse_attention", "homer",
                                                     "harp", "beacon"));
}

TEST(MethodAvailabilityTest, EveryMethodIsBuilt) {
  EXPECT_OK(CheckMethodsAvailable(config::MethodSettings()));
  config::MethodSettings m;
  m.mutable_beacon();  // present, even empty: the method is on
  m.mutable_homer();
  m.mutable_harp();
  m.mutable_early_exit();
  m.mutable_sparse_attention();
  EXPECT_OK(CheckMethodsAvailable(m));
}

TEST(MethodSetTest, SetReachesMethodFieldsAndTurnsTheMethodOn) {
  config::RunConfig c;
  EXPECT_FALSE(c.has_method());
  ASSERT_OK(SetField(&c, "method.homer.max_chunk_len=4096"));
  EXPECT_TRUE(c.method().has_homer());
  EXPECT_TRUE(c.method().homer().has_max_chunk_len());
  EXPECT_EQ(c.method().homer().max_chunk_len(), 4096);
  EXPECT_FALSE(c.method().homer().has_target_len());  // the others stay unset (defaults)
  ASSERT_OK(SetField(&c, "method.sparse_attention.kind=TOP_K"));
  EXPECT_EQ(c.method().sparse_attention().kind(), config::SparseAttentionSettings::TOP_K);
  ASSERT_OK(SetField(&c, "method.beacon.ratios=4,8,16"));
  EXPECT_EQ(c.method().beacon().ratios_size(), 3);
  ASSERT_OK(SetField(&c, "method.early_exit.threshold=0"));
  EXPECT_TRUE(c.method().early_exit().has_threshold());  // 0 is a value, not "unset"
}

TEST(MethodSetTest, SetErrorsNameTheMethodPath) {
  config::RunConfig c;
  EXPECT_THAT(std::string(SetField(&c, "method.homer.max_chunk=1").message()),
              HasSubstr("method.homer.max_chunk: no such field in tessera.config.HomerSettings"));
  EXPECT_THAT(std::string(SetField(&c, "method.harp.mode=FAST").message()),
              HasSubstr("method.harp.mode: \"FAST\" is not one of EXACT, KV_NOISE, SHADOW_LAZY"));
  EXPECT_THAT(std::string(SetField(&c, "method.homer.target_len=lots").message()),
              HasSubstr("method.homer.target_len: \"lots\" is not a valid int32"));
  EXPECT_THAT(std::string(SetField(&c, "method.sparse_attention.layer_k.k=3").message()),
              HasSubstr("method.sparse_attention.layer_k: is not a message"));
}

TEST(MethodFileTest, ParseErrorsNameFileAndLine) {
  const std::string unknown =
      Write("unknown_field.textproto", "homer {\n  max_chunk_len: 2048\n  bias_pth: \"b\"\n}\n");
  absl::StatusOr<config::MethodSettings> m = LoadMethodSettings(unknown);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(m.status().message()), HasSubstr(unknown + ":3:"));
  EXPECT_THAT(std::string(m.status().message()), HasSubstr("bias_pth"));

  const std::string bad_value = Write("bad_value.textproto", "harp {\n  delta: lots\n}\n");
  m = LoadMethodSettings(bad_value);
  ASSERT_FALSE(m.ok());
  EXPECT_THAT(std::string(m.status().message()), HasSubstr(bad_value + ":2:"));

  const std::string bad_enum = Write("bad_enum.textproto", "\n\nearly_exit { policy: SOON }\n");
  m = LoadMethodSettings(bad_enum);
  ASSERT_FALSE(m.ok());
  EXPECT_THAT(std::string(m.status().message()), HasSubstr(bad_enum + ":3:"));
  EXPECT_THAT(std::string(m.status().message()), HasSubstr("SOON"));

  m = LoadMethodSettings(::testing::TempDir() + "absent.textproto");
  EXPECT_EQ(m.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(m.status().message()), HasSubstr("--method: cannot open"));
}

// Text format accepts an enum number the schema does not define (proto3 enums are open);
// validation names it.
TEST(MethodFileTest, UndefinedEnumNumberIsRefusedByValidation) {
  ASSERT_OK_AND_ASSIGN(
      config::MethodSettings m,
      LoadMethodSettings(Write("enum_number.textproto", "early_exit { policy: 7 exit_layer: 2 }")));
  EXPECT_EQ(std::string(ValidateMethodSettings(m).message()),
            "method.early_exit.policy: is 7, which names no value; use one of FREE, CALM, STATIC");
}

TEST(MethodFileTest, RunConfigSectionAndMethodFileHoldTheSameText) {
  const std::string text = "homer { max_chunk_len: 1024 bias_path: \"b.safetensors\" }\n";
  ASSERT_OK_AND_ASSIGN(config::MethodSettings from_file,
                       LoadMethodSettings(Write("same.textproto", text)));
  ASSERT_OK_AND_ASSIGN(config::RunConfig run,
                       LoadRunConfig(Write("same_run.textproto", "method { " + text + "}\n")));
  EXPECT_EQ(from_file.SerializeAsString(), run.method().SerializeAsString());
  EXPECT_EQ(from_file.homer().max_chunk_len(), 1024);
}

// ---- Validation: a few bad values per method, each naming its full field path ----

TEST(EarlyExitValidationTest, BadValuesNameTheField) {
  EXPECT_EQ(ErrorAfter({"method.early_exit.exit_layer=8"}), "");
  EXPECT_EQ(ErrorAfter({"method.early_exit.policy=CALM", "method.early_exit.min_exit_layer=4",
                        "method.early_exit.threshold=0.9"}),
            "");
  // exit_layer unset: resolved against config.json (tessera_exit_layers) before the weights load.
  EXPECT_EQ(ErrorAfter({"method.early_exit.policy=FREE", "method.early_exit.threshold=0.9"}), "");
  EXPECT_THAT(ErrorAfter({"method.early_exit.policy=STATIC", "method.early_exit.threshold=0.9"}),
              StartsWith("method.early_exit.threshold: has no effect with policy STATIC"));
  EXPECT_THAT(ErrorAfter({"method.early_exit.flush_at_end=true",
                          "method.early_exit.policy=STATIC"}),
              StartsWith("method.early_exit.flush_at_end: applies to policy FREE only"));
  EXPECT_THAT(ErrorAfter({"method.early_exit.bmm_compat=false"}),
              StartsWith("method.early_exit.bmm_compat: applies with adaptive_threshold: true"));
  EXPECT_THAT(ErrorAfter({"method.early_exit.adaptive_threshold=true",
                          "method.early_exit.threshold=0.9",
                          "method.early_exit.adaptive_max_refits=-1"}),
              StartsWith("method.early_exit.adaptive_max_refits: must be >= 0, got -1"));
  EXPECT_THAT(ErrorAfter({"method.early_exit.exit_layer=-2"}),
              StartsWith("method.early_exit.exit_layer: must be > 0, got -2"));
  EXPECT_THAT(ErrorAfter({"method.early_exit.policy=CALM", "method.early_exit.min_exit_layer=0"}),
              StartsWith("method.early_exit.min_exit_layer: must be >= 1, got 0"));
  EXPECT_THAT(ErrorAfter({"method.early_exit.exit_layer=8", "method.early_exit.min_exit_layer=2"}),
              StartsWith("method.early_exit.min_exit_layer: applies to policy CALM only"));
  EXPECT_THAT(ErrorAfter({"method.early_exit.exit_layer=8", "method.early_exit.threshold=nan"}),
              StartsWith("method.early_exit.threshold: must be a finite number, got nan"));
  EXPECT_THAT(
      ErrorAfter({"method.early_exit.exit_layer=8", "method.early_exit.adaptive_threshold=true"}),
      StartsWith("method.early_exit.threshold: must be below 1 with adaptive_threshold, "
                 "got 1"));
  EXPECT_THAT(ErrorAfter({"method.early_exit.exit_layer=8", "method.early_exit.max_pending=-1"}),
              StartsWith("method.early_exit.max_pending: must be >= 0, got -1"));
}

TEST(SparseAttentionValidationTest, BadValuesNameTheField) {
  EXPECT_EQ(ErrorAfter({"method.sparse_attention.kind=TOP_K"}), "");
  EXPECT_THAT(ErrorAfter({"method.sparse_attention.k=64"}),
              StartsWith("method.sparse_attention.kind: is required: TOP_THETA"));
  EXPECT_THAT(ErrorAfter({"method.sparse_attention.kind=TOP_K", "method.sparse_attention.k=0"}),
              StartsWith("method.sparse_attention.k: must be >= 1, got 0"));
  EXPECT_THAT(ErrorAfter({"method.sparse_attention.kind=TOP_THETA"}),
              StartsWith("method.sparse_attention.calibration_dir: is required with kind "
                         "TOP_THETA"));
  EXPECT_THAT(ErrorAfter({"method.sparse_attention.kind=TOP_K",
                          "method.sparse_attention.placement=POST_SOFTMAX",
                          "method.sparse_attention.sdc=SDC_EXACT"}),
              StartsWith("method.sparse_attention.sdc: requires placement: PRE_SOFTMAX"));
  EXPECT_THAT(ErrorAfter({"method.sparse_attention.kind=TOP_K",
                          "method.sparse_attention.sdc=SDC_EXP_THRESHOLD"}),
              StartsWith("method.sparse_attention.sdc: SDC_EXP_THRESHOLD needs a threshold"));
  EXPECT_THAT(
      ErrorAfter({"method.sparse_attention.kind=TOP_K", "method.sparse_attention.vmc=true"}),
      StartsWith("method.sparse_attention.vmc: with placement PRE_SOFTMAX needs an sdc"));
  EXPECT_THAT(
      ErrorAfter({"method.sparse_attention.kind=TOP_K", "method.sparse_attention.sdc=SDC_EXACT",
                  "method.sparse_attention.sdc_scale=-0.5"}),
      StartsWith("method.sparse_attention.sdc_scale: must be a finite number >= 0, got "
                 "-0.5"));
  EXPECT_THAT(ErrorAfter({"method.sparse_attention.kind=TOP_K", "method.sparse_attention.cap_k=1"}),
              StartsWith("method.sparse_attention.cap_k: applies to kind TOP_THETA only"));
}

TEST(SparseAttentionValidationTest, LayerKEntriesAreCheckedByIndex) {
  config::MethodSettings m;
  auto* s = m.mutable_sparse_attention();
  s->set_kind(config::SparseAttentionSettings::TOP_K);
  auto* first = s->add_layer_k();
  first->set_layer(0);
  first->set_k(512);
  EXPECT_OK(ValidateMethodSettings(m));
  auto* second = s->add_layer_k();
  second->set_layer(0);
  second->set_k(256);
  EXPECT_THAT(std::string(ValidateMethodSettings(m).message()),
              StartsWith("method.sparse_attention.layer_k[1].layer: layer 0 is already given by "
                         "method.sparse_attention.layer_k[0]"));
  second->set_layer(1);
  second->set_k(-1);
  EXPECT_THAT(std::string(ValidateMethodSettings(m).message()),
              StartsWith("method.sparse_attention.layer_k[1].k: must be >= 0, got -1"));
}

TEST(HomerValidationTest, BadValuesNameTheField) {
  const std::string bias = "method.homer.bias_path=bias.safetensors";
  EXPECT_EQ(ErrorAfter({bias}), "");
  EXPECT_THAT(ErrorAfter({bias, "method.homer.max_chunk_len=-3"}),
              StartsWith("method.homer.max_chunk_len: must be > 0, got -3"));
  EXPECT_THAT(ErrorAfter({bias, "method.homer.max_chunk_len=0"}),  // set to 0 is not "unset"
              StartsWith("method.homer.max_chunk_len: must be > 0, got 0"));
  EXPECT_THAT(ErrorAfter({bias, "method.homer.target_len=0"}),
              StartsWith("method.homer.target_len: must be > 0, got 0"));
  EXPECT_THAT(ErrorAfter({bias, "method.homer.layers_warmup=-1"}),
              StartsWith("method.homer.layers_warmup: must be >= 0, got -1"));
  EXPECT_THAT(ErrorAfter({"method.homer.max_chunk_len=4096"}),
              StartsWith("method.homer.bias_path: is required"));
  EXPECT_THAT(ErrorAfter({bias, "method.homer.prefix_len=0"}),
              StartsWith("method.homer.prefix_len: must be > 0, got 0"));
  EXPECT_THAT(ErrorAfter({bias, "method.homer.max_chunk_len=201"}),
              StartsWith("method.homer.max_chunk_len: is 201 but prefix_len + suffix_len is 200"));
  EXPECT_EQ(ErrorAfter({bias, "method.homer.max_chunk_len=202"}), "");
}

TEST(HarpValidationTest, BadValuesNameTheField) {
  EXPECT_EQ(ErrorAfter({"method.harp.delta=0"}), "");
  EXPECT_THAT(ErrorAfter({"method.harp.delta=1"}),
              StartsWith("method.harp.delta: must be in [0, 1), got 1"));
  EXPECT_THAT(ErrorAfter({"method.harp.beta_vanilla=1.5"}),
              StartsWith("method.harp.beta_vanilla: must be in [0, 1], got 1.5"));
  EXPECT_THAT(ErrorAfter({"method.harp.theta_bits=-0.1"}),
              StartsWith("method.harp.theta_bits: must be a finite number >= 0, got -0.1"));
  EXPECT_THAT(ErrorAfter({"method.harp.kv_noise_layers=0,1"}),
              StartsWith("method.harp.kv_noise_layers: applies to mode KV_NOISE only"));
  EXPECT_THAT(ErrorAfter({"method.harp.mode=KV_NOISE", "method.harp.kv_noise_layers=3,3"}),
              StartsWith("method.harp.kv_noise_layers[1]: layer 3 is listed twice"));
  EXPECT_THAT(ErrorAfter({"method.harp.max_reframe_len=-5"}),
              StartsWith("method.harp.max_reframe_len: must be >= 0, got -5"));
}

TEST(BeaconValidationTest, BadValuesNameTheField) {
  EXPECT_EQ(ErrorAfter({"method.beacon.ratios=8"}), "");
  EXPECT_THAT(ErrorAfter({"method.beacon.window=0"}),
              StartsWith("method.beacon.window: must be > 0, got 0"));
  EXPECT_THAT(ErrorAfter({"method.beacon.window=512", "method.beacon.stride=1024"}),
              StartsWith("method.beacon.stride: must be <= window (512), got 1024"));
  // What the checkpoint's config.json may set (window, stride, attention) is only checked here
  // when the settings set it too.
  EXPECT_EQ(ErrorAfter({"method.beacon.ratios=8,3"}), "");
  EXPECT_THAT(ErrorAfter({"method.beacon.window=1024", "method.beacon.attention=STEP_EXPANSION",
                          "method.beacon.ratios=8,3"}),
              StartsWith("method.beacon.ratios[1]: 3 does not divide stride 1024"));
  EXPECT_EQ(ErrorAfter({"method.beacon.window=1024", "method.beacon.ratios=8,3",
                        "method.beacon.attention=FULL_COVERAGE"}),
            "");
  EXPECT_THAT(ErrorAfter({"method.beacon.window=1024", "method.beacon.ratios=2048"}),
              StartsWith("method.beacon.ratios[0]: must be <= stride (1024), got 2048"));
  EXPECT_EQ(ErrorAfter({"method.beacon.adapt_new_tokens=512"}), "");  // config.json's ratios
  EXPECT_THAT(ErrorAfter({"method.beacon.ratios=8", "method.beacon.adapt_new_tokens=512"}),
              StartsWith("method.beacon.adapt_new_tokens: applies only when several ratios"));
}

// The run config validates its method section too, so `tessera eval` refuses bad settings.
TEST(MethodValidationTest, RunConfigValidationIncludesTheMethodSection) {
  config::RunConfig c;
  ASSERT_OK(SetField(&c, "model.path=m"));
  ASSERT_OK(SetField(&c, "task.perplexity.data=x.jsonl"));
  EXPECT_OK(ValidateRunConfig(c));
  ASSERT_OK(SetField(&c, "method.harp.delta=2"));
  EXPECT_THAT(std::string(ValidateRunConfig(c).message()), StartsWith("method.harp.delta:"));
}

}  // namespace
}  // namespace tessera
