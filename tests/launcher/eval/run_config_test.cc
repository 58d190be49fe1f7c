// Run configs: text-format errors carry file:line:column, --set reaches any field, and
// validation names the field path.
#include <filesystem>
#include <fstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "launcher/eval/run_config.h"
#include "launcher/text_proto.h"
#include "tests/test_util.h"

namespace tessera {
namespace {

using ::testing::HasSubstr;

std::string Write(const std::string& name, const std::string& text) {
  const std::string path = ::testing::TempDir() + name;
  std::ofstream(path) << text;
  return path;
}

TEST(RunConfigTest, EveryPresetParsesAndValidates) {
  int presets = 0;
  for (const auto& entry : std::filesystem::directory_iterator("configs/tasks")) {
    if (entry.path().extension() != ".textproto") continue;
    const std::string preset = entry.path().string();
    ASSERT_OK_AND_ASSIGN(config::RunConfig c, LoadRunConfig(preset));
    const absl::Status valid = ValidateRunConfig(c);
    EXPECT_TRUE(valid.ok()) << preset << ": " << valid;
    ++presets;
  }
  EXPECT_GE(presets, 6);
}

TEST(RunConfigTest, UnknownFieldIsAnErrorWithItsLine) {
  const std::string p = Write("unknown.textproto", "model { path: \"m\" }\ntask {\n  perplexty { data: \"x\" }\n}\n");
  auto c = LoadRunConfig(p);
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(std::string(c.status().message()), HasSubstr(p + ":3:"));
  EXPECT_THAT(std::string(c.status().message()), HasSubstr("perplexty"));
}

// protobuf's text parser skips a field whose name is reserved without a word; the old
// `methods` map (which nothing read) must be refused, not ignored, and the error must say what
// replaced it.
TEST(RunConfigTest, OldMethodsMapIsRefusedWithWhatReplacedIt) {
  const std::string p = Write("old_methods.textproto",
                              "model { path: \"m\" }\n"
                              "task { perplexity { data: \"x\" } }\n"
                              "methods { key: \"homer\" value: \"max_chunk_len: 2048\" }\n");
  auto c = LoadRunConfig(p);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  const std::string message(c.status().message());
  EXPECT_THAT(message, HasSubstr(p + ":3:1: \"methods\" is no longer a field of "
                                 "tessera.config.RunConfig"));
  EXPECT_THAT(message, HasSubstr("method { ... }"));
  EXPECT_THAT(message, HasSubstr("--method"));
  // Also in the `methods: {...}` and `methods <...>` spellings.
  for (const char* text : {"methods: { key: \"a\" value: \"b\" }\n", "methods < key: \"a\" >\n"}) {
    auto d = LoadRunConfig(Write("old_methods_2.textproto", text));
    EXPECT_THAT(std::string(d.status().message()), HasSubstr("\"methods\" is no longer a field"))
        << text;
  }
}

// The reserved-name check looks at field names only: the word in a string, a comment or a
// nested message's field of another name is fine.
TEST(RunConfigTest, TheWordMethodsElsewhereIsNotAField) {
  const std::string p = Write("methods_word.textproto",
                              "# methods { } was the old spelling\n"
                              "task { name: \"methods\" perplexity { data: \"methods\" } }\n"
                              "method { harp { delta: 0.1 } }\n");
  ASSERT_OK_AND_ASSIGN(config::RunConfig c, LoadRunConfig(p));
  EXPECT_EQ(c.task().name(), "methods");
  EXPECT_FLOAT_EQ(c.method().harp().delta(), 0.1f);
}

TEST(RunConfigTest, SetReachesNestedAndRepeatedFields) {
  config::RunConfig c;
  ASSERT_OK(SetField(&c, "model.path=models/x"));
  ASSERT_OK(SetField(&c, "layout.tp=2"));
  ASSERT_OK(SetField(&c, "task.passkey.context_lengths=256,512"));
  ASSERT_OK(SetField(&c, "task.passkey.depths=0.5"));
  EXPECT_EQ(c.model().path(), "models/x");
  EXPECT_EQ(c.layout().tp(), 2);
  ASSERT_EQ(c.task().passkey().context_lengths_size(), 2);
  EXPECT_EQ(c.task().passkey().context_lengths(1), 512);
  EXPECT_FLOAT_EQ(c.task().passkey().depths(0), 0.5f);
  EXPECT_OK(ValidateRunConfig(c));
}

TEST(RunConfigTest, SetErrorsNameThePath) {
  config::RunConfig c;
  EXPECT_THAT(std::string(SetField(&c, "layout.tq=2").message()), HasSubstr("layout.tq: no such field"));
  EXPECT_THAT(std::string(SetField(&c, "layout.tp=two").message()), HasSubstr("layout.tp: \"two\" is not a valid"));
  EXPECT_THAT(std::string(SetField(&c, "seed").message()), HasSubstr("expected path=value"));
  EXPECT_THAT(std::string(SetField(&c, "seed.x=1").message()), HasSubstr("seed: is not a message"));
}

TEST(RunConfigTest, ValidationNamesTheFieldPath) {
  config::RunConfig c;
  EXPECT_THAT(std::string(ValidateRunConfig(c).message()), HasSubstr("model.path: is required"));
  c.mutable_model()->set_path("m");
  EXPECT_THAT(std::string(ValidateRunConfig(c).message()), HasSubstr("task: names no task"));
  ASSERT_OK(SetField(&c, "task.perplexity.data=x.jsonl"));
  ASSERT_OK(SetField(&c, "task.perplexity.window=64"));
  ASSERT_OK(SetField(&c, "task.perplexity.stride=128"));
  EXPECT_THAT(std::string(ValidateRunConfig(c).message()),
              HasSubstr("task.perplexity.stride: must not exceed task.perplexity.window"));
  ASSERT_OK(SetField(&c, "task.perplexity.stride=32"));
  ASSERT_OK(SetField(&c, "task.bos=BOS_LM_EVAL"));
  EXPECT_OK(ValidateRunConfig(c));
  config::RunConfig passkey = c;
  ASSERT_OK(SetField(&passkey, "task.passkey.samples_per_cell=1"));
  EXPECT_THAT(std::string(ValidateRunConfig(passkey).message()),
              HasSubstr("task.bos: is read by the multiple_choice, generation and perplexity"));
  ASSERT_OK(SetField(&c, "sampling.top_p=1.5"));
  EXPECT_THAT(std::string(ValidateRunConfig(c).message()), HasSubstr("sampling.top_p"));
  ASSERT_OK(SetField(&c, "sampling.top_p=0.9"));
  ASSERT_OK(SetField(&c, "model.backend=tpu"));
  EXPECT_THAT(std::string(ValidateRunConfig(c).message()), HasSubstr("model.backend"));
}

// Found while writing run_config_fuzzer's invariants: the text format and --set accept "nan" and
// "inf" for float fields, and the range checks, written as `x < lo || x > hi`, let NaN through:
// a NaN passkey depth placed the key nowhere, a NaN temperature reached the sampler, and an
// infinite or huge sandbox timeout overflowed its conversion to integer seconds.
TEST(RunConfigTest, NonFiniteNumbersAreRefused) {
  auto error = [](const std::string& assignment) {
    config::RunConfig c;
    c.mutable_model()->set_path("m");
    EXPECT_OK(SetField(&c, "task.passkey.samples_per_cell=1"));
    EXPECT_OK(SetField(&c, assignment));
    return std::string(ValidateRunConfig(c).message());
  };
  for (const char* bad : {"sampling.temperature=nan", "sampling.temperature=inf"}) {
    EXPECT_THAT(error(bad), HasSubstr("sampling.temperature: must be a finite")) << bad;
  }
  EXPECT_THAT(error("sampling.top_p=nan"), HasSubstr("sampling.top_p: must be in [0, 1]"));
  EXPECT_THAT(error("task.passkey.depths=0.5,nan"), HasSubstr("task.passkey.depths: every depth"));
  auto timeout_error = [](const std::string& value) {
    config::RunConfig c;
    c.mutable_model()->set_path("m");
    EXPECT_OK(SetField(&c, "task.code_generation.data=x.jsonl"));
    EXPECT_OK(SetField(&c, "task.code_generation.timeout_s=" + value));
    return std::string(ValidateRunConfig(c).message());
  };
  for (const char* bad : {"nan", "inf", "1e30", "-1"}) {
    EXPECT_THAT(timeout_error(bad),
                HasSubstr("task.code_generation.timeout_s: must be in (0, 86400]"))
        << bad;
  }
  EXPECT_EQ(timeout_error("30"), "");
  EXPECT_EQ(timeout_error("0"), "");  // the default
}

// The same values from a config file.
TEST(RunConfigTest, NonFiniteNumbersInTheFileAreRefused) {
  config::RunConfig c;
  ASSERT_OK(
      ParseTextProto("model { path: \"m\" } task { passkey { depths: nan } }", "run", {}, &c));
  EXPECT_THAT(std::string(ValidateRunConfig(c).message()), HasSubstr("task.passkey.depths"));
  ASSERT_OK(ParseTextProto("model { path: \"m\" } sampling { temperature: inf }", "run", {}, &c));
  EXPECT_THAT(std::string(ValidateRunSettings(c).message()), HasSubstr("sampling.temperature"));
}

}  // namespace
}  // namespace tessera
