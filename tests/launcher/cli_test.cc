// The `tessera` binary end to end: runs it from the repository root with std::system, capturing
// stdout, stderr and the exit status. Every error case must exit normally with status 1 or 2 (no
// signal) and say on stderr what is wrong and where.
#include <sys/wait.h>

#include <filesystem>
#include <map>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "launcher/command_help.h"
#include "nlohmann/json.hpp"
#include "tests/runtime/test_files.h"

#ifndef TESSERA_BINARY
#error "TESSERA_BINARY must name the built tessera binary"
#endif

namespace tessera {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using nlohmann::json;
using testing::ScopedTempDir;

constexpr char kMha[] = "tests/fixtures/models/llama2_mha";
constexpr char kGqa[] = "tests/fixtures/models/llama70b_gqa";

// Single-quotes `s` for /bin/sh.
std::string Quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out += c;
    }
  }
  return out + "'";
}

struct CliRun {
  bool exited = false;  // normal exit (not killed by a signal)
  int code = -1;        // exit status when exited
  int signal = 0;
  std::string out, err;
};

std::ostream& operator<<(std::ostream& os, const CliRun& r) {
  return os << "exit " << r.code << (r.exited ? "" : " (signal " + std::to_string(r.signal) + ")")
            << "\n--- stdout ---\n" << r.out << "\n--- stderr ---\n" << r.err;
}

// Runs `tessera ARGS...` (each argument quoted); generate and bench run with one thread.
CliRun Tessera(const std::vector<std::string>& args) {
  ScopedTempDir io;
  std::string command = Quote(TESSERA_BINARY);
  for (const std::string& a : args) command.append(" ").append(Quote(a));
  if (!args.empty() && (args[0] == "generate" || args[0] == "bench")) command.append(" --threads=1");
  command.append(" >").append(Quote(io.Join("stdout")));
  command.append(" 2>").append(Quote(io.Join("stderr"))).append(" </dev/null");
  const int status = std::system(command.c_str());
  CliRun r;
  r.exited = status != -1 && WIFEXITED(status);
  r.code = r.exited ? WEXITSTATUS(status) : -1;
  r.signal = (status != -1 && WIFSIGNALED(status)) ? WTERMSIG(status) : 0;
  r.out = testing::ReadFile(io.Join("stdout"));
  r.err = testing::ReadFile(io.Join("stderr"));
  return r;
}

// A clean failure: normal exit with status 1 or 2, and every `parts` in stderr.
void ExpectFailure(const CliRun& r, const std::vector<std::string>& parts) {
  ASSERT_TRUE(r.exited) << r;
  EXPECT_TRUE(r.code == 1 || r.code == 2) << r;
  for (const std::string& p : parts) EXPECT_THAT(r.err, HasSubstr(p)) << r;
}

// ---- Happy paths ----

TEST(CliTest, GeneratePrompt) {
  const CliRun r = Tessera({"generate", "--model", kMha, "--prompt", "def f(x):", "--max-new-tokens", "8"});
  ASSERT_TRUE(r.exited) << r;
  ASSERT_EQ(r.code, 0) << r;
  // The completion (possibly empty: most of this model's 32000 ids are beyond the tokenizer's
  // 1000 pieces) then a newline; the summary on stderr.
  ASSERT_FALSE(r.out.empty()) << r;
  EXPECT_EQ(r.out.back(), '\n') << r;
  EXPECT_THAT(r.err, HasSubstr("[tessera] ")) << r;
  EXPECT_TRUE(r.err.find("[tessera] 8 tokens, finish_reason=length") != std::string::npos ||
              r.err.find("finish_reason=eos") != std::string::npos)
      << r;
}

TEST(CliTest, GeneratePromptsFileInInputOrder) {
  ScopedTempDir dir;
  const std::string prompts = dir.Join("prompts.jsonl");
  testing::WriteFile(prompts,
                     "{\"id\": \"first\", \"prompt\": \"def f(x):\", \"max_new_tokens\": 3}\n"
                     "\n"
                     "{\"id\": 2, \"prompt\": \"import os\", \"temperature\": 0.7, \"seed\": 4, "
                     "\"max_new_tokens\": 5}\n"
                     "{\"prompt\": \"class A:\", \"stop\": [\"\\u0001\"], \"max_new_tokens\": 4}\n");
  const CliRun r = Tessera({"generate", "--model", kMha, "--prompts", prompts, "--ignore-eos",
                         "--max-batch", "2"});
  ASSERT_TRUE(r.exited) << r;
  ASSERT_EQ(r.code, 0) << r;
  std::vector<std::string> lines = absl::StrSplit(r.out, '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 3u) << r;
  const std::vector<json> ids = {"first", 2, nullptr};
  const std::vector<std::string> texts = {"def f(x):", "import os", "class A:"};
  const std::vector<size_t> lengths = {3, 5, 4};
  for (size_t i = 0; i < 3; ++i) {
    SCOPED_TRACE(lines[i]);
    const json j = json::parse(lines[i], nullptr, false);
    ASSERT_TRUE(j.is_object());
    EXPECT_EQ(j["index"], i);
    EXPECT_EQ(j["prompt"], texts[i]);
    if (ids[i].is_null()) {
      EXPECT_FALSE(j.contains("id"));
    } else {
      EXPECT_EQ(j["id"], ids[i]);
    }
    ASSERT_TRUE(j["text"].is_string());
    ASSERT_TRUE(j["token_ids"].is_array());
    EXPECT_EQ(j["token_ids"].size(), lengths[i]);
    EXPECT_EQ(j["finish_reason"], "length");
    ASSERT_TRUE(j["timings"].is_object());
    EXPECT_TRUE(j["timings"]["time_to_first_token_ms"].is_number());
    EXPECT_TRUE(j["timings"]["total_ms"].is_number());
    EXPECT_GE(j["timings"]["total_ms"].get<double>(),
              j["timings"]["time_to_first_token_ms"].get<double>());
  }
}

TEST(CliTest, GeneratePromptsFileToOutputFile) {
  ScopedTempDir dir;
  const std::string prompts = dir.Join("prompts.jsonl");
  const std::string output = dir.Join("out.jsonl");
  testing::WriteFile(prompts, "{\"prompt\": \"a\"}\n{\"prompt\": \"b\"}\n");
  const CliRun r = Tessera({"generate", "--model", kMha, "--prompts", prompts, "--output", output,
                         "--max-new-tokens", "2", "--ignore-eos"});
  ASSERT_EQ(r.code, 0) << r;
  EXPECT_EQ(r.out, "");
  std::vector<std::string> lines =
      absl::StrSplit(testing::ReadFile(output), '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(json::parse(lines[1])["index"], 1);
}

// generate takes the model, layout and sampling of a run config; command-line flags win.
TEST(CliTest, GenerateTakesARunConfig) {
  ScopedTempDir dir;
  const std::string config = dir.Join("run.textproto");
  testing::WriteFile(config, absl::StrCat("model { path: \"", kMha, "\" }\n",
                                          "sampling { max_new_tokens: 5 }\n"));
  const std::string prompts = dir.Join("prompts.jsonl");
  testing::WriteFile(prompts, "{\"prompt\": \"def f(x):\"}\n");
  CliRun r = Tessera({"generate", "--config", config, "--prompts", prompts, "--ignore-eos"});
  ASSERT_EQ(r.code, 0) << r;
  EXPECT_EQ(json::parse(r.out)["token_ids"].size(), 5u) << r;
  r = Tessera({"generate", "--config", config, "--prompts", prompts, "--ignore-eos",
               "--max-new-tokens", "3"});
  ASSERT_EQ(r.code, 0) << r;
  EXPECT_EQ(json::parse(r.out)["token_ids"].size(), 3u) << r;
  // The layout comes from the config too: two ranks are needed, and the message says how.
  r = Tessera({"generate", "--config", config, "--prompts", prompts, "--set", "layout.tp=2"});
  EXPECT_NE(r.code, 0) << r;
  EXPECT_THAT(r.err, HasSubstr("mpirun -np 2")) << r;
}

TEST(CliTest, Bench) {
  const CliRun r = Tessera({"bench", "--model", kGqa, "--prompt-tokens", "8", "--decode-tokens", "4"});
  ASSERT_TRUE(r.exited) << r;
  ASSERT_EQ(r.code, 0) << r;
  const json j = json::parse(r.out, nullptr, false);
  ASSERT_TRUE(j.is_object()) << r;
  for (const char* key : {"decode_ms_per_token", "prefill_tokens_per_s",
                          "memory_read_bandwidth_bytes_per_s", "peak_rss_bytes_rank0"}) {
    ASSERT_TRUE(j.contains(key)) << key << "\n" << r;
    ASSERT_TRUE(j[key].is_number()) << key;
    EXPECT_GT(j[key].get<double>(), 0.0) << key;
  }
  EXPECT_EQ(j["prompt_tokens"], 8);
  EXPECT_EQ(j["decode_tokens"], 4);
  // 4 layers of (2 norms + q, k, v, o + 3 MLP) plus embeddings, head and final norm, in F32.
  const int64_t per_layer = 2 * 128 + 128 * 128 + 2 * 16 * 128 + 128 * 128 + 3 * 256 * 128;
  EXPECT_EQ(j["weight_bytes_rank0"], 4 * (4 * per_layer + 2 * 512 * 128 + 128));
  EXPECT_EQ(j["threads_per_rank"], 1);
}

// --kv-dtype (or model.kv_dtype) picks the KV cache's element type of generate, eval and bench;
// plan sizes the same cache, F32 unless told otherwise, as the runtime.
TEST(CliTest, KvDType) {
  CliRun r = Tessera({"bench", "--model", kGqa, "--prompt-tokens", "8", "--decode-tokens", "4",
                      "--kv-dtype", "bf16"});
  ASSERT_EQ(r.code, 0) << r;
  EXPECT_EQ(json::parse(r.out)["kv_dtype"], "bf16") << r;
  r = Tessera({"generate", "--model", kMha, "--prompt", "def f(x):", "--max-new-tokens", "4",
               "--kv-dtype", "f16"});
  EXPECT_EQ(r.code, 0) << r;
  ExpectFailure(Tessera({"generate", "--model", kMha, "--prompt", "hi", "--kv-dtype", "int8"}),
                {"--kv-dtype", "\"int8\"", "bf16, f16 or f32"});
  ScopedTempDir dir;
  const std::string config = dir.Join("run.textproto");
  testing::WriteFile(config, absl::StrCat("model { path: \"", kMha, "\" kv_dtype: \"fp8\" }\n"));
  ExpectFailure(Tessera({"generate", "--config", config, "--prompt", "hi"}),
                {"model.kv_dtype", "\"fp8\"", "f32, bf16 or f16"});
  // llama70b_gqa: 4 layers x 2 KV heads x head_dim 8 x (K and V) per token.
  r = Tessera({"plan", "--model", kGqa, "--device-memory", "1GiB", "--json"});
  ASSERT_EQ(r.code, 0) << r;
  json j = json::parse(r.out);
  EXPECT_EQ(j["kv_dtype"], "f32") << r;
  EXPECT_EQ(j["ranks"][0]["kv_bytes_per_token"], 4 * 2 * 8 * 2 * 4) << r;
  r = Tessera({"plan", "--model", kGqa, "--device-memory", "1GiB", "--json", "--kv-dtype",
               "bf16"});
  ASSERT_EQ(r.code, 0) << r;
  j = json::parse(r.out);
  EXPECT_EQ(j["kv_dtype"], "bf16") << r;
  EXPECT_EQ(j["ranks"][0]["kv_bytes_per_token"], 4 * 2 * 8 * 2 * 2) << r;
}

TEST(CliTest, NoArgumentsPrintsUsage) {
  const CliRun r = Tessera({});
  ExpectFailure(r, {"usage: tessera"});
  EXPECT_EQ(r.code, 2);
}

// ---- Help ----

TEST(CliHelpTest, GeneralHelpExitsZero) {
  const CliRun r = Tessera({"--help"});
  ASSERT_TRUE(r.exited) << r;
  EXPECT_EQ(r.code, 0) << r;
  EXPECT_THAT(r.out, HasSubstr("usage: tessera <command>")) << r;
  for (const char* command : {"generate", "eval", "bench", "plan"}) {
    EXPECT_THAT(r.out, HasSubstr(std::string("  ") + command)) << r;
  }
}

// `tessera <command> --help` prints that command's flags (name, type, default, help) on stdout
// and exits 0, for every command.
TEST(CliHelpTest, EachCommandListsItsFlagsAndExitsZero) {
  // Flags each command must list (beyond what the launcher's own table says), and flags of other
  // commands it must not.
  const std::map<std::string, std::vector<std::string>> must = {
      {"generate", {"--model=<string>", "--prompt=<string>", "--prompts=<string>",
                    "--max-new-tokens=<int32>  (default: 64)", "--temperature=<float>",
                    "--config=<string>", "--method=<string>", "--set=<path=value>", "--tp=<int32>"}},
      {"eval", {"--config=<string>", "--method=<string>", "--set=<path=value>",
                "--limit=<int32>  (default: 0)", "--output-dir=<string>", "--model=<string>"}},
      {"serve", {"--model=<string>", "--host=<string>  (default: \"127.0.0.1\")",
                 "--port=<int32>  (default: 8000)", "--max-waiting-requests=<int32>",
                 "--chat-template=<string>", "--method=<string>", "--tp=<int32>"}},
      {"bench", {"--model=<string>", "--prompt-tokens=<int32>  (default: 128)",
                 "--decode-tokens=<int32>", "--batch=<int32>", "--method=<string>",
                 "--set=<path=value>"}},
      {"calibrate", {"--model=<string>", "--method=<string>", "--data=<string>",
                     "--calib-tac[=<bool>]", "--calib-add-sigma=<float>  (default: 0)",
                     "--calib-sample-frac=<float>  (default: 0.1)", "--output-dir=<string>"}},
      {"plan", {"--model=<string>", "--device-memory=<string>", "--kv-dtype=<string>",
                "--memory-utilization=<float>  (default: 0.9)", "--json[=<bool>]"}}};
  const std::map<std::string, std::vector<std::string>> must_not = {
      {"generate", {"--device-memory", "--prompt-tokens", "--limit"}},
      {"eval", {"--prompt=", "--device-memory"}},
      {"serve", {"--prompt=", "--prompts=", "--limit", "--device-memory"}},
      {"bench", {"--prompts=", "--limit"}},
      {"calibrate", {"--prompt=", "--prompts=", "--device-memory", "--port"}},
      {"plan", {"--prompt=", "--method", "--set", "--config"}}};
  ASSERT_EQ(CommandNames().size(), must.size());
  for (const std::string& command : CommandNames()) {
    SCOPED_TRACE(command);
    const CliRun r = Tessera({command, "--help"});
    ASSERT_TRUE(r.exited) << r;
    EXPECT_EQ(r.code, 0) << r;
    EXPECT_THAT(r.out, ::testing::StartsWith("usage: tessera " + command + " ")) << r;
    for (const std::string& flag : CommandFlags(command)) {
      EXPECT_THAT(r.out, HasSubstr("\n  --" + absl::StrReplaceAll(flag, {{"_", "-"}})))
          << flag << "\n" << r;
    }
    for (const std::string& entry : must.at(command)) EXPECT_THAT(r.out, HasSubstr(entry)) << r;
    for (const std::string& entry : must_not.at(command)) {
      EXPECT_THAT(r.out, ::testing::Not(HasSubstr(entry))) << r;
    }
  }
}

// Help wins over the other flags (nothing runs), also as -h.
TEST(CliHelpTest, HelpAmongOtherFlags) {
  CliRun r = Tessera({"generate", "--model", kMha, "--prompt", "hi", "--help"});
  EXPECT_EQ(r.code, 0) << r;
  EXPECT_THAT(r.out, ::testing::StartsWith("usage: tessera generate")) << r;
  r = Tessera({"bench", "-h"});
  EXPECT_EQ(r.code, 0) << r;
  EXPECT_THAT(r.out, ::testing::StartsWith("usage: tessera bench")) << r;
}

// ---- Methods: settings are checked before the model is loaded ----

// The model path does not exist: the settings check must come first.
TEST(CliMethodTest, BadMethodSettingsFailEveryCommandBeforeTheModelLoads) {
  const std::vector<std::vector<std::string>> runs = {
      {"generate", "--model", "/nonexistent/model", "--prompt", "hi"},
      {"bench", "--model", "/nonexistent/model", "--prompt-tokens", "2", "--decode-tokens", "1"},
      {"eval", "--config", "configs/tasks/passkey.textproto", "--model", "/nonexistent/model"}};
  for (std::vector<std::string> run : runs) {
    for (const char* arg : {"--method", "configs/methods/beacon.textproto", "--set",
                            "method.beacon.ratios=3"}) {
      run.push_back(arg);
    }
    SCOPED_TRACE(run[0]);
    const CliRun r = Tessera(run);
    ExpectFailure(r, {"method.beacon.ratios[", "3 does not divide stride 1024"});
    EXPECT_THAT(r.err, ::testing::Not(HasSubstr("/nonexistent/model"))) << r;
  }
}

// Early exit is built: generate and eval report its counters; a scoring task refuses it; an
// exit layer that does not fit the model fails before the weights load.
constexpr char kTiny[] = "models/tessera-code-tiny";

TEST(CliEarlyExitTest, GenerateLinesCarryTheCounters) {
  ScopedTempDir dir;
  const std::string prompts = dir.Join("p.jsonl"), output = dir.Join("out.jsonl");
  testing::WriteFile(prompts, "{\"prompt\": \"def fibonacci(n):\\n\"}\n");
  const CliRun r = Tessera({"generate", "--model", kTiny, "--prompts", prompts, "--output", output,
                            "--max-new-tokens", "12", "--ignore-eos", "--set",
                            "method.early_exit.exit_layer=2", "--set",
                            "method.early_exit.threshold=-1"});
  ASSERT_EQ(r.code, 0) << r;
  const nlohmann::json line = nlohmann::json::parse(testing::ReadFile(output));
  const nlohmann::json& c = line["method_counters"];
  EXPECT_EQ(c["exits"], 11);
  EXPECT_EQ(c["exit_checks"], 11);
  EXPECT_EQ(c["token_layers"].size(), 12u);
  EXPECT_EQ(c["token_layers"][0], 8);  // the prompt's token runs every block
  EXPECT_EQ(c["token_layers"][1], 2);
}

TEST(CliEarlyExitTest, EvalSumsTheCountersAndScoringTasksRefuseTheMethod) {
  ScopedTempDir dir;
  const CliRun r = Tessera({"eval", "--config", "configs/tasks/code_passkey.textproto", "--limit",
                            "2", "--output-dir", dir.path(), "--set",
                            "method.early_exit.exit_layer=4", "--set",
                            "method.early_exit.threshold=-1"});
  ASSERT_EQ(r.code, 0) << r;
  std::string results;
  for (const auto& e : std::filesystem::directory_iterator(dir.path())) {
    if (e.path().filename().string().rfind("results_", 0) == 0) results = e.path().string();
  }
  ASSERT_FALSE(results.empty());
  const nlohmann::json json = nlohmann::json::parse(testing::ReadFile(results));
  const nlohmann::json& method = json["compute"]["method"];
  EXPECT_GT(method["exits"].get<double>(), 0);
  EXPECT_EQ(method["exits"], method["exit_checks"]);
  EXPECT_LT(method["mean_layers_per_token"].get<double>(), 8.0);
  ExpectFailure(Tessera({"eval", "--config", "configs/tasks/perplexity.textproto", "--model", kTiny,
                         "--set", "method.early_exit.exit_layer=2"}),
                {"method.early_exit: acts on generated tokens, and the perplexity task"});
  const CliRun bad = Tessera({"generate", "--model", kTiny, "--prompt", "x", "--set",
                              "method.early_exit.exit_layer=8"});
  ExpectFailure(bad, {"method.early_exit.exit_layer: is 8 but the model has 8 layers"});
}

// HARP is built: generate lines, eval results and bench report its counters; a scoring task
// refuses it.
TEST(CliHarpTest, GenerateEvalAndBenchReportTheCounters) {
  ScopedTempDir dir;
  const std::string prompts = dir.Join("p.jsonl"), output = dir.Join("out.jsonl");
  testing::WriteFile(prompts, "{\"prompt\": \"import os\\n\\nclass \"}\n");
  const CliRun r = Tessera({"generate", "--model", kTiny, "--prompts", prompts, "--output", output,
                            "--max-new-tokens", "10", "--ignore-eos", "--method",
                            "configs/methods/harp.textproto", "--set",
                            "method.harp.record_entropy=true", "--top-p-before-temperature"});
  ASSERT_EQ(r.code, 0) << r;
  const nlohmann::json line = nlohmann::json::parse(testing::ReadFile(output));
  const nlohmann::json& c = line["method_counters"];
  EXPECT_EQ(c["checked_tokens"], 10);
  EXPECT_GT(c["hesitations"].get<double>(), 0);
  EXPECT_EQ(c["reframed_passes"], c["hesitations"]);
  EXPECT_EQ(c["entropy_bits"].size(), 10u);
  EXPECT_FALSE(c.contains("token_layers"));

  const CliRun e = Tessera({"eval", "--config", "configs/tasks/code_passkey.textproto", "--limit",
                            "2", "--output-dir", dir.path(), "--set", "method.harp.theta_bits=0"});
  ASSERT_EQ(e.code, 0) << e;
  std::string results;
  for (const auto& f : std::filesystem::directory_iterator(dir.path())) {
    if (f.path().filename().string().rfind("results_", 0) == 0) results = f.path().string();
  }
  ASSERT_FALSE(results.empty());
  const nlohmann::json method =
      nlohmann::json::parse(testing::ReadFile(results))["compute"]["method"];
  EXPECT_GT(method["hesitation_rate"].get<double>(), 0);
  EXPECT_GT(method["tokens_recomputed"].get<double>(), 0);

  const CliRun b = Tessera({"bench", "--model", kTiny, "--method",
                            "configs/methods/harp.textproto", "--set",
                            "method.harp.theta_bits=0"});
  ASSERT_EQ(b.code, 0) << b;
  EXPECT_THAT(b.out, HasSubstr("\"method_counters\""));
  EXPECT_THAT(b.out, HasSubstr("\"reframed_passes\""));
  ExpectFailure(Tessera({"eval", "--config", "configs/tasks/perplexity.textproto", "--model", kTiny,
                         "--set", "method.harp.theta_bits=1"}),
                {"method.harp: acts on generated tokens, and the perplexity task"});
}

TEST(CliMethodTest, SetAloneTurnsAMethodOn) {
  // Activation Beacon on a checkpoint without beacon tensors: the reference's initialisation,
  // said on stderr, and the generation runs.
  const CliRun r = Tessera({"generate", "--model", kMha, "--prompt", "hi", "--max-new-tokens",
                            "2", "--set", "method.beacon.window=256", "--set",
                            "method.beacon.ratios=8"});
  ASSERT_EQ(r.code, 0) << r;
  EXPECT_THAT(r.err, HasSubstr("Activation Beacon: not in the checkpoint, initialised as the "
                               "reference does")) << r;
}

TEST(CliMethodTest, RunConfigMethodSectionReachesEval) {
  ScopedTempDir dir;
  const std::string config = dir.Join("run.textproto");
  testing::WriteFile(config, absl::StrCat("model { path: \"", kMha, "\" }\n",
                                          "task { perplexity { data: \"absent.jsonl\" } }\n",
                                          "method { beacon { window: 512 ratios: 3 attention: STEP_EXPANSION } }\n"));
  ExpectFailure(Tessera({"eval", "--config", config}),
                {"method.beacon.ratios[0]: 3 does not divide stride 512"});
  ExpectFailure(Tessera({"generate", "--config", config, "--prompt", "hi"}),
                {"method.beacon.ratios[0]"});
}

TEST(CliMethodTest, SetOverridesTheMethodFileAndIsValidated) {
  const CliRun r = Tessera({"bench", "--model", kGqa, "--method", "configs/methods/homer.textproto",
                            "--set", "method.homer.max_chunk_len=-3"});
  ExpectFailure(r, {"method.homer.max_chunk_len: must be > 0, got -3"});
}

TEST(CliMethodTest, MethodFileErrorsNameFileAndLine) {
  ScopedTempDir dir;
  const std::string file = dir.Join("methods.textproto");
  testing::WriteFile(file, "# HARP\nharp {\n  theta: 1.0\n}\n");
  ExpectFailure(Tessera({"generate", "--model", kMha, "--prompt", "hi", "--method", file}),
                {file + ":3:", "\"theta\""});
  ExpectFailure(Tessera({"eval", "--config", "configs/tasks/passkey.textproto", "--method",
                         dir.Join("absent.textproto")}),
                {"--method: cannot open", dir.Join("absent.textproto")});
}

TEST(CliMethodTest, SetOfANonMethodFieldStillNeedsAConfig) {
  ExpectFailure(Tessera({"generate", "--model", kMha, "--prompt", "hi", "--set", "layout.tp=2"}),
                {"--set layout.tp=2", "needs --config"});
}

TEST(CliMethodTest, OldMethodsMapInARunConfigIsRefused) {
  ScopedTempDir dir;
  const std::string config = dir.Join("run.textproto");
  testing::WriteFile(config, absl::StrCat("model { path: \"", kMha, "\" }\n",
                                          "methods { key: \"homer\" value: \"\" }\n"));
  ExpectFailure(Tessera({"generate", "--config", config, "--prompt", "hi"}),
                {config + ":2:1: \"methods\" is no longer a field", "method { ... }"});
}

// ---- Errors ----

TEST(CliErrorTest, UnknownSubcommand) {
  ExpectFailure(Tessera({"frobnicate", "--model", kMha}), {"unknown command \"frobnicate\"", "usage"});
}

TEST(CliErrorTest, MissingModel) {
  ExpectFailure(Tessera({"generate", "--prompt", "hi"}), {"--model", "required"});
}

TEST(CliErrorTest, ModelDirDoesNotExist) {
  ExpectFailure(Tessera({"generate", "--model", "/nonexistent/tessera/model", "--prompt", "hi"}),
                {"/nonexistent/tessera/model", "not a directory"});
}

TEST(CliErrorTest, NeitherPromptNorPromptsFile) {
  ExpectFailure(Tessera({"generate", "--model", kMha}), {"--prompt", "--prompts"});
}

TEST(CliErrorTest, MalformedSafetensorsHeader) {
  ScopedTempDir dir;
  testing::CopyDir(kGqa, dir.path());
  const std::string file = dir.Join("model.safetensors");
  {
    std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(8);
    const std::string garbage(32, '#');
    f.write(garbage.data(), garbage.size());
  }
  ExpectFailure(Tessera({"generate", "--model", dir.path(), "--prompt", "hi"}), {file, "JSON"});
}

TEST(CliErrorTest, TruncatedSafetensors) {
  ScopedTempDir dir;
  testing::CopyDir(kGqa, dir.path());
  const std::string file = dir.Join("model.safetensors");
  std::filesystem::resize_file(file, std::filesystem::file_size(file) / 2);
  ExpectFailure(Tessera({"generate", "--model", dir.path(), "--prompt", "hi"}),
                {file, "truncated"});
}

TEST(CliErrorTest, MissingTensor) {
  ScopedTempDir dir;
  testing::TinyLlamaDims d;
  auto tensors = testing::TinyLlamaTensors(d, 3);
  tensors.erase("model.layers.1.mlp.up_proj.weight");
  testing::WriteTinyLlama(dir.path(), testing::TinyLlamaConfig(d), tensors);
  ExpectFailure(Tessera({"bench", "--model", dir.path(), "--prompt-tokens", "2",
                         "--decode-tokens", "1"}),
                {"\"model.layers.1.mlp.up_proj.weight\"", "missing", dir.path()});
}

TEST(CliErrorTest, ConfigNamesMoreLayersThanTheWeights) {
  ScopedTempDir dir;
  testing::CopyDir(kGqa, dir.path());
  testing::EditJsonFile(dir.Join("config.json"), [](json& j) { j["num_hidden_layers"] = 5; });
  ExpectFailure(Tessera({"generate", "--model", dir.path(), "--prompt", "hi"}),
                {"\"model.layers.4.", "missing"});
}

TEST(CliErrorTest, ConfigDisagreesWithWeights) {
  ScopedTempDir dir;
  testing::CopyDir(kGqa, dir.path());
  testing::EditJsonFile(dir.Join("config.json"), [](json& j) { j["hidden_size"] = 64; });
  ExpectFailure(Tessera({"generate", "--model", dir.path(), "--prompt", "hi"}),
                {"model.embed_tokens.weight", "[512, 128]", "[512, 64]", "hidden_size",
                 "disagree"});
}

TEST(CliErrorTest, UnsupportedDType) {
  ScopedTempDir dir;
  testing::TinyLlamaDims d;
  auto tensors = testing::TinyLlamaTensors(d, 3);
  tensors["model.norm.weight"] = {"F64", {d.hidden}, testing::RawBytes(std::vector<double>(d.hidden, 1.0))};
  testing::WriteTinyLlama(dir.path(), testing::TinyLlamaConfig(d), tensors);
  ExpectFailure(Tessera({"bench", "--model", dir.path(), "--prompt-tokens", "2",
                         "--decode-tokens", "1"}),
                {"\"F64\"", "\"model.norm.weight\"", dir.Join("model.safetensors")});
}

TEST(CliErrorTest, PromptLongerThanTheContext) {
  ScopedTempDir dir;
  testing::CopyDir(kMha, dir.path());
  testing::EditJsonFile(dir.Join("config.json"), [](json& j) { j["max_position_embeddings"] = 16; });
  std::string prompt;
  for (int i = 0; i < 40; ++i) prompt += "word ";
  ExpectFailure(Tessera({"generate", "--model", dir.path(), "--prompt", prompt}),
                {"max_position_embeddings", "16", "no rope_scaling"});
}

// ---- Contexts past max_position_embeddings (runtime/context_limit.h) ----

// A copy of llama2_mha (with its tokenizer) whose context is 16 tokens, with `rope_scaling`.
void ShortContextModel(const ScopedTempDir& dir, const json& rope_scaling) {
  testing::CopyDir(kMha, dir.path());
  testing::EditJsonFile(dir.Join("config.json"), [&](json& j) {
    j["max_position_embeddings"] = 16;
    j["rope_scaling"] = rope_scaling;
  });
}

std::string FortyWords() {
  std::string prompt;
  for (int i = 0; i < 40; ++i) prompt += "word ";
  return prompt;
}

TEST(CliLongContextTest, DynamicScalingNeedsMaxSeqLenAndThenRuns) {
  ScopedTempDir dir;
  ShortContextModel(dir, {{"rope_type", "dynamic"}, {"factor", 2.0}});
  ExpectFailure(Tessera({"generate", "--model", dir.path(), "--prompt", FortyWords()}),
                {"--prompt", "max_position_embeddings) is 16", "rope_scaling \"dynamic\"",
                 "set --max-seq-len to at least"});
  const CliRun r = Tessera({"generate", "--model", dir.path(), "--prompt", FortyWords(),
                            "--max-seq-len", "128", "--max-new-tokens", "4"});
  ASSERT_TRUE(r.exited) << r;
  EXPECT_EQ(r.code, 0) << r;
  EXPECT_FALSE(r.out.empty()) << r;  // the completion and a newline
}

TEST(CliLongContextTest, PlainRopeRefusesALongerMaxSeqLenNamingRopeScaling) {
  ScopedTempDir dir;
  ShortContextModel(dir, nullptr);
  ExpectFailure(Tessera({"generate", "--model", dir.path(), "--prompt", FortyWords(),
                         "--max-seq-len", "128"}),
                {"max_seq_len=128", "max_position_embeddings=16", "config.json", "no rope_scaling",
                 "not trained past 16"});
  // The memory planner applies the same rule.
  ExpectFailure(
      Tessera({"plan", "--model", dir.path(), "--device-memory", "80GiB", "--max-seq-len", "128"}),
      {"max_seq_len=128", "no rope_scaling"});
  ScopedTempDir linear;
  ShortContextModel(linear, {{"rope_type", "linear"}, {"factor", 4.0}});
  const CliRun r = Tessera({"plan", "--model", linear.path(), "--device-memory", "80GiB",
                            "--max-seq-len", "128", "--json"});
  ASSERT_EQ(r.code, 0) << r;
  EXPECT_EQ(json::parse(r.out)["max_context"], 128) << r;
}

TEST(CliErrorTest, EmptyPrompt) {
  ExpectFailure(Tessera({"generate", "--model", kMha, "--prompt", ""}), {"--prompt", "empty"});
}

TEST(CliErrorTest, InvalidUtf8Prompt) {
  ExpectFailure(Tessera({"generate", "--model", kMha, "--prompt", "ok \xff"}),
                {"--prompt", "UTF-8", "offset 3"});
}

TEST(CliErrorTest, MaxNewTokensNotANumber) {
  ExpectFailure(Tessera({"generate", "--model", kMha, "--prompt", "hi", "--max-new-tokens", "abc"}),
                {"abc", "max_new_tokens"});
}

TEST(CliErrorTest, NegativeTemperature) {
  ExpectFailure(Tessera({"generate", "--model", kMha, "--prompt", "hi", "--temperature", "-1"}),
                {"temperature", ">= 0", "-1"});
}

TEST(CliErrorTest, TopPAboveOne) {
  ExpectFailure(Tessera({"generate", "--model", kMha, "--prompt", "hi", "--top-p", "2"}),
                {"top_p", "(0, 1]", "2"});
}

TEST(CliErrorTest, UnknownFlag) {
  ExpectFailure(Tessera({"generate", "--model", kMha, "--prompt", "hi", "--bogus"}), {"bogus"});
}

TEST(CliErrorTest, BenchBadSizes) {
  ExpectFailure(Tessera({"bench", "--model", kGqa, "--batch", "0"}), {"--batch", ">= 1"});
}

TEST(CliErrorTest, PromptsFileMalformedJsonLine) {
  ScopedTempDir dir;
  const std::string prompts = dir.Join("p.jsonl");
  testing::WriteFile(prompts, "{\"prompt\": \"fine\"}\n{\"prompt\": \"broken\",\n");
  ExpectFailure(Tessera({"generate", "--model", kMha, "--prompts", prompts}),
                {prompts + ":2", "JSON"});
}

TEST(CliErrorTest, PromptsFileLineWithoutPrompt) {
  ScopedTempDir dir;
  const std::string prompts = dir.Join("p.jsonl");
  testing::WriteFile(prompts, "{\"prompt\": \"fine\"}\n\n{\"text\": \"no prompt field\"}\n");
  ExpectFailure(Tessera({"generate", "--model", kMha, "--prompts", prompts}),
                {prompts + ":3", "\"prompt\"", "missing"});
}

TEST(CliErrorTest, PromptsFileEmptyPromptNamesTheLine) {
  ScopedTempDir dir;
  const std::string prompts = dir.Join("p.jsonl");
  testing::WriteFile(prompts, "{\"prompt\": \"fine\"}\n{\"prompt\": \"\"}\n");
  ExpectFailure(Tessera({"generate", "--model", kMha, "--prompts", prompts}),
                {prompts + ":2", "empty"});
}

TEST(CliErrorTest, PromptsFileWrongFieldType) {
  ScopedTempDir dir;
  const std::string prompts = dir.Join("p.jsonl");
  testing::WriteFile(prompts, "{\"prompt\": \"x\", \"temperature\": \"hot\"}\n");
  ExpectFailure(Tessera({"generate", "--model", kMha, "--prompts", prompts}),
                {prompts + ":1", "\"temperature\"", "number"});
}

TEST(CliErrorTest, PromptsFileMissing) {
  ScopedTempDir dir;
  ExpectFailure(Tessera({"generate", "--model", kMha, "--prompts", dir.Join("absent.jsonl")}),
                {dir.Join("absent.jsonl")});
}

// ---- Malformed input: a clean error naming the file and field, never a crash or a silent run ----

// A directory where a file belongs used to abort the process (an uncaught exception).
TEST(CliMalformedInputTest, PromptsFileIsADirectory) {
  ScopedTempDir dir;
  ExpectFailure(Tessera({"generate", "--model", kMha, "--prompts", dir.path()}),
                {"--prompts", dir.path(), "is a directory"});
}

TEST(CliMalformedInputTest, TokenizerModelIsADirectory) {
  ScopedTempDir dir;
  testing::CopyDir(kMha, dir.path());
  std::filesystem::remove(dir.Join("tokenizer.model"));
  std::filesystem::create_directories(dir.Join("tokenizer.model"));
  ExpectFailure(Tessera({"generate", "--model", dir.path(), "--prompt", "hi"}),
                {dir.Join("tokenizer.model"), "is a directory"});
}

TEST(CliMalformedInputTest, ConfigJsonIsADirectory) {
  ScopedTempDir dir;
  testing::CopyDir(kMha, dir.path());
  std::filesystem::remove(dir.Join("config.json"));
  std::filesystem::create_directories(dir.Join("config.json"));
  ExpectFailure(Tessera({"generate", "--model", dir.path(), "--prompt", "hi"}),
                {dir.Join("config.json"), "is a directory"});
}

TEST(CliMalformedInputTest, SafetensorsIsADirectory) {
  ScopedTempDir dir;
  testing::CopyDir(kMha, dir.path());
  std::filesystem::remove(dir.Join("model.safetensors"));
  std::filesystem::create_directories(dir.Join("model.safetensors"));
  ExpectFailure(Tessera({"generate", "--model", dir.path(), "--prompt", "hi"}),
                {dir.Join("model.safetensors"), "is a directory"});
}

// --config DIR used to read as an empty run config ("model.path is required").
TEST(CliMalformedInputTest, RunConfigIsADirectory) {
  ScopedTempDir dir;
  const CliRun r = Tessera({"eval", "--config", dir.path()});
  ExpectFailure(r, {"--config", dir.path(), "is a directory"});
  EXPECT_THAT(r.err, ::testing::Not(HasSubstr("model.path"))) << r;
}

// generate takes model, layout and sampling from a run config; a value there that makes no sense
// used to be skipped silently (only values > 0 were applied).
TEST(CliMalformedInputTest, RunConfigSettingsAreValidatedForGenerate) {
  ScopedTempDir dir;
  const std::string config = dir.Join("run.textproto");
  testing::WriteFile(config, absl::StrCat("model { path: \"", kMha, "\" max_seq_len: -1 }\n"));
  ExpectFailure(Tessera({"generate", "--config", config, "--prompt", "hi"}),
                {config, "model.max_seq_len", ">= 0"});
}

// Values beyond int32 used to wrap (4294967297 -> 1, 4294967296 -> 0) and run.
TEST(CliMalformedInputTest, PromptsFileIntegersBeyondTheirRange) {
  ScopedTempDir dir;
  const std::string prompts = dir.Join("p.jsonl");
  for (const std::string field : {"max_new_tokens", "top_k"}) {
    SCOPED_TRACE(field);
    testing::WriteFile(prompts, "{\"prompt\": \"a\"}\n{\"prompt\": \"b\", \"" + field +
                                    "\": 4294967297}\n");
    ExpectFailure(Tessera({"generate", "--model", kMha, "--prompts", prompts}),
                  {prompts + ":2", "\"" + field + "\"", "4294967297"});
  }
}

TEST(CliMalformedInputTest, PromptsFileFieldsOfTheWrongType) {
  ScopedTempDir dir;
  const std::string prompts = dir.Join("p.jsonl");
  for (const std::string field : {"max_new_tokens", "seed", "stop"}) {
    SCOPED_TRACE(field);
    testing::WriteFile(prompts, "{\"prompt\": \"b\", \"" + field + "\": {\"x\": 1}}\n");
    ExpectFailure(Tessera({"generate", "--model", kMha, "--prompts", prompts}),
                  {prompts + ":1", "\"" + field + "\""});
  }
}

// A negative --max-seq-len used to surface as an allocation of 18446744073709550336 bytes.
TEST(CliMalformedInputTest, NegativeFlagValuesNameTheFlag) {
  ExpectFailure(Tessera({"generate", "--model", kMha, "--prompt", "hi", "--max-seq-len", "-1"}),
                {"--max-seq-len", ">= 0", "-1"});
  ExpectFailure(Tessera({"generate", "--model", kMha, "--prompt", "hi", "--max-new-tokens", "0"}),
                {"--max-new-tokens", ">= 1"});
  ExpectFailure(Tessera({"generate", "--model", kMha, "--prompt", "hi", "--max-batch", "-2"}),
                {"--max-batch", ">= 1"});
}

// Prompt-length errors name the prompts file and line, not "request 1".
TEST(CliMalformedInputTest, PromptTooLongNamesTheFileAndLine) {
  ScopedTempDir dir;
  const std::string prompts = dir.Join("p.jsonl");
  std::string long_prompt;
  for (int i = 0; i < 40; ++i) long_prompt += "word ";
  testing::WriteFile(prompts, "{\"prompt\": \"a\"}\n\n{\"prompt\": \"" + long_prompt + "\"}\n");
  const CliRun r = Tessera({"generate", "--model", kMha, "--prompts", prompts, "--max-seq-len",
                            "8", "--max-new-tokens", "2"});
  ExpectFailure(r, {prompts + ":3", "max_seq_len is 8"});
  EXPECT_THAT(r.err, ::testing::Not(HasSubstr("request "))) << r;
}

// A negative epsilon is refused where it is written, not by the RMSNorm kernel.
TEST(CliMalformedInputTest, NegativeRmsNormEpsNamesTheFileAndField) {
  ScopedTempDir dir;
  testing::CopyDir(kMha, dir.path());
  testing::EditJsonFile(dir.Join("config.json"), [](json& j) { j["rms_norm_eps"] = -1e-5; });
  ExpectFailure(Tessera({"generate", "--model", dir.path(), "--prompt", "hi"}),
                {dir.Join("config.json"), "\"rms_norm_eps\"", "positive"});
}

}  // namespace
}  // namespace tessera
