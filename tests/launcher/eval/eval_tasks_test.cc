// The evaluation tasks against figures computed independently: multiple-choice log-likelihoods
// and perplexity of the fixture model recorded by transformers (tools/make_eval_fixtures.py),
// metric helpers against values worked out by hand, and bad datasets against their messages.
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "launcher/eval/eval_task.h"
#include "launcher/eval/progress.h"
#include "launcher/eval/run_config.h"
#include "runtime/llama_model.h"
#include "runtime/tokenizer.h"
#include "tests/test_util.h"

namespace tessera {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using nlohmann::json;

constexpr char kModel[] = "tests/fixtures/models/llama2_mha";

json Reference() {
  std::ifstream in("tests/fixtures/eval/reference_llama2_mha.json");
  return json::parse(in);
}

class EvalTasksTest : public ::testing::Test {
 protected:
  void SetUp() override {
    backend_ = *MakeBackend(BackendKind::kCpu);
    ASSERT_OK_AND_ASSIGN(model_, LlamaModel::Load(kModel, backend_.get()));
    ASSERT_OK_AND_ASSIGN(tokenizer_, Tokenizer::Load(std::string(kModel) + "/tokenizer.model"));
  }

  absl::StatusOr<std::vector<json>> RunAll(const config::RunConfig& c, std::unique_ptr<EvalTask>* out) {
    auto task = MakeEvalTask(c, model_->config(), *tokenizer_);
    if (!task.ok()) return task.status();
    std::vector<size_t> all;
    for (size_t i = 0; i < (*task)->size(); ++i) all.push_back(i);
    EvalContext ctx;
    ctx.model = model_.get();
    ctx.tokenizer = tokenizer_.get();
    ctx.config = &c;
    ctx.replica_leader = true;
    auto records = (*task)->Evaluate(all, ctx);
    *out = std::move(task).value();
    return records;
  }

  config::RunConfig Config(const std::string& text) {
    config::RunConfig c;
    c.mutable_model()->set_path(kModel);
    for (absl::string_view s : absl::StrSplit(text, ';', absl::SkipEmpty())) {
      EXPECT_OK(SetField(&c, std::string(s)));
    }
    return c;
  }

  std::unique_ptr<Backend> backend_;
  std::unique_ptr<LlamaModel> model_;
  std::unique_ptr<Tokenizer> tokenizer_;
};

TEST_F(EvalTasksTest, MultipleChoiceMatchesTransformers) {
  const json ref = Reference()["multiple_choice"];
  config::RunConfig c = Config("task.multiple_choice.data=tests/fixtures/eval/multiple_choice.jsonl;max_batch=3");
  std::unique_ptr<EvalTask> task;
  ASSERT_OK_AND_ASSIGN(std::vector<json> records, RunAll(c, &task));
  ASSERT_EQ(records.size(), ref["samples"].size());
  for (size_t i = 0; i < records.size(); ++i) {
    const json& want = ref["samples"][i];
    const auto got_ll = records[i]["loglikelihoods"].get<std::vector<double>>();
    const auto want_ll = want["loglikelihoods"].get<std::vector<double>>();
    ASSERT_EQ(got_ll.size(), want_ll.size()) << "question " << i;
    for (size_t j = 0; j < got_ll.size(); ++j) {
      EXPECT_NEAR(got_ll[j], want_ll[j], 1e-4 * std::max(1.0, std::fabs(want_ll[j])))
          << "question " << i << " choice " << j;
    }
    EXPECT_EQ(records[i]["is_greedy"], want["is_greedy"]) << "question " << i;
    EXPECT_EQ(records[i]["pred"], want["pred"]) << "question " << i;
    EXPECT_EQ(records[i]["pred_norm"], want["pred_norm"]) << "question " << i;
  }
  const json metrics = task->Aggregate(records);
  EXPECT_DOUBLE_EQ(metrics["acc"].get<double>(), ref["acc"].get<double>());
  EXPECT_DOUBLE_EQ(metrics["acc_norm"].get<double>(), ref["acc_norm"].get<double>());
}

TEST_F(EvalTasksTest, PerplexityMatchesTransformers) {
  const json reference = Reference();
  ASSERT_EQ(reference["perplexity"].size(), 2u);
  for (const json& want : reference["perplexity"]) {
    const int window = want["window"].get<int>(), stride = want["stride"].get<int>();
    config::RunConfig c = Config(absl::StrCat(
        "task.perplexity.data=tests/fixtures/eval/perplexity.jsonl;task.perplexity.window=", window,
        ";task.perplexity.stride=", stride));
    std::unique_ptr<EvalTask> task;
    ASSERT_OK_AND_ASSIGN(std::vector<json> records, RunAll(c, &task));
    ASSERT_EQ(records.size(), want["texts"].size());
    for (size_t i = 0; i < records.size(); ++i) {
      EXPECT_EQ(records[i]["tokens"], want["texts"][i]["tokens"]) << window << "/" << stride;
      EXPECT_NEAR(records[i]["nll"].get<double>(), want["texts"][i]["nll"].get<double>(),
                  1e-5 * want["texts"][i]["nll"].get<double>())
          << window << "/" << stride << " text " << i;
    }
    const json metrics = task->Aggregate(records);
    EXPECT_NEAR(metrics["perplexity"].get<double>(), want["perplexity"].get<double>(),
                1e-4 * want["perplexity"].get<double>());
    EXPECT_EQ(metrics["tokens"], want["tokens"]);
  }
}

// Mean and standard error of the mean worked out by hand: values 1, 0, 1, 1 have mean 0.75,
// sample variance ((0.25^2)*3 + 0.75^2) / 3 = 0.25, stderr sqrt(0.25) / sqrt(4) = 0.25.
TEST(EvalMetricsTest, MeanAndStderrByHand) {
  const MeanStderr m = MeanWithStderr({1, 0, 1, 1});
  EXPECT_DOUBLE_EQ(m.mean, 0.75);
  EXPECT_DOUBLE_EQ(m.stderr_, 0.25);
  EXPECT_DOUBLE_EQ(MeanWithStderr({0.5}).stderr_, 0.0);
  EXPECT_DOUBLE_EQ(MeanWithStderr({}).mean, 0.0);
}

TEST(EvalMetricsTest, ProgressLineReadsWellInALog) {
  EXPECT_EQ(Progress::Line("passkey", 30, 120, 60.0),
            "[eval] passkey: 30/120 samples (25%) | 0.50 samples/s | elapsed 00:01:00 | ETA 00:03:00");
  EXPECT_EQ(Progress::FormatSeconds(3725), "01:02:05");
  EXPECT_THAT(Progress::Line("ppl", 0, 10, 0.0), HasSubstr("ETA --:--:--"));
}

// Each bad dataset names the file and the line.
// Rolling windows (the default): every text token scored once in ceil((n - 1) / window)
// windows; with one window covering the text they equal the sliding window of the same size.
TEST_F(EvalTasksTest, RollingWindowsScoreEveryTokenOnce) {
  const std::string data = "task.perplexity.data=tests/fixtures/eval/perplexity.jsonl;";
  std::unique_ptr<EvalTask> task;
  ASSERT_OK_AND_ASSIGN(std::vector<json> rolling,
                       RunAll(Config(data + "task.perplexity.window=16"), &task));
  EXPECT_EQ(task->Describe()["stride"], 0);
  ASSERT_OK_AND_ASSIGN(std::vector<json> whole,
                       RunAll(Config(data + "task.perplexity.window=4000"), &task));
  ASSERT_OK_AND_ASSIGN(std::vector<json> sliding,
                       RunAll(Config(data + "task.perplexity.window=4000;task.perplexity.stride=4000"),
                              &task));
  for (size_t i = 0; i < rolling.size(); ++i) {
    const int64_t scored = whole[i]["tokens"].get<int64_t>();  // every text token
    EXPECT_EQ(rolling[i]["tokens"].get<int64_t>(), scored);
    EXPECT_EQ(rolling[i]["windows"].get<int64_t>(), (scored + 15) / 16);
    EXPECT_EQ(whole[i]["windows"], 1);
    EXPECT_DOUBLE_EQ(whole[i]["nll"].get<double>(), sliding[i]["nll"].get<double>());
    // Less context per token than one window over the whole text: a different (here higher)
    // log-likelihood, so the windows are not silently one.
    EXPECT_NE(rolling[i]["nll"].get<double>(), whole[i]["nll"].get<double>());
    EXPECT_GT(rolling[i]["words"].get<int64_t>(), 1);
  }
  const json m = task->Aggregate(sliding);
  double nll = 0;
  int64_t bytes = 0, words = 0;
  for (const json& r : sliding) {
    nll += r["nll"].get<double>();
    bytes += r["bytes"].get<int64_t>();
    words += r["words"].get<int64_t>();
  }
  EXPECT_DOUBLE_EQ(m["byte_perplexity"].get<double>(), std::exp(nll / bytes));
  EXPECT_DOUBLE_EQ(m["bits_per_byte"].get<double>(), nll / bytes / std::log(2.0));
  EXPECT_DOUBLE_EQ(m["word_perplexity"].get<double>(), std::exp(nll / words));
}

// lm-evaluation-harness's encode_pair with Python's rstrip: a trailing U+00A0 or U+3000 of the
// context is scored as the start of the continuation, so moving it there by hand changes
// nothing; task.bos decides whether the context starts with BOS.
TEST_F(EvalTasksTest, MultipleChoiceUnicodeSpacesAndBos) {
  const std::string dir = ::testing::TempDir();
  std::ofstream(dir + "mc_trailing.jsonl")
      << R"({"context": "def f(x):\u00a0", "choices": ["return x", "pass"], "gold": 0})" "\n"
      << R"({"context": "a =\u3000", "choices": ["1", "22"], "gold": 1})" "\n";
  std::ofstream(dir + "mc_moved.jsonl")
      << R"({"context": "def f(x):", "choices": ["\u00a0return x", "\u00a0pass"], "gold": 0})" "\n"
      << R"({"context": "a =", "choices": ["\u30001", "\u300022"], "gold": 1})" "\n";
  std::unique_ptr<EvalTask> task;
  ASSERT_OK_AND_ASSIGN(std::vector<json> trailing,
                       RunAll(Config("task.multiple_choice.data=" + dir + "mc_trailing.jsonl"), &task));
  ASSERT_OK_AND_ASSIGN(std::vector<json> moved,
                       RunAll(Config("task.multiple_choice.data=" + dir + "mc_moved.jsonl"), &task));
  ASSERT_OK_AND_ASSIGN(std::vector<json> no_bos,
                       RunAll(Config("task.bos=BOS_LM_EVAL;task.multiple_choice.data=" + dir +
                                     "mc_trailing.jsonl"),
                              &task));
  EXPECT_EQ(task->Describe()["bos"], "lm_eval");
  for (size_t i = 0; i < trailing.size(); ++i) {
    EXPECT_EQ(trailing[i]["loglikelihoods"], moved[i]["loglikelihoods"]) << i;
    EXPECT_NE(trailing[i]["loglikelihoods"], no_bos[i]["loglikelihoods"]) << i;
  }
  const json m = task->Aggregate(no_bos);
  EXPECT_TRUE(m.contains("acc_bytes") && m.contains("acc_bytes_stderr")) << m;
}

class BadDatasetTest : public EvalTasksTest {
 protected:
  std::string Write(const std::string& name, const std::string& text) {
    const std::string path = ::testing::TempDir() + name;
    std::ofstream(path) << text;
    return path;
  }
  absl::Status Make(const std::string& setting) {
    return MakeEvalTask(Config(setting), model_->config(), *tokenizer_).status();
  }
};

TEST_F(BadDatasetTest, MalformedJsonLine) {
  const std::string p = Write("bad1.jsonl", "{\"context\": \"a\", \"choices\": [\"x\", \"y\"], \"gold\": 0}\n{oops\n");
  const absl::Status s = Make("task.multiple_choice.data=" + p);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr(p + ":2: not valid JSON"));
}

TEST_F(BadDatasetTest, MissingField) {
  const std::string p = Write("bad2.jsonl", "{\"context\": \"a\", \"gold\": 0}\n");
  EXPECT_THAT(std::string(Make("task.multiple_choice.data=" + p).message()),
              HasSubstr(p + ":1: field \"choices\" is missing"));
  const std::string q = Write("bad3.jsonl", "\n{\"txt\": \"a\"}\n");
  EXPECT_THAT(std::string(Make("task.perplexity.data=" + q).message()),
              HasSubstr(q + ":2: field \"text\" is missing"));
}

TEST_F(BadDatasetTest, EmptyDataset) {
  const std::string p = Write("empty.jsonl", "\n  \n");
  EXPECT_THAT(std::string(Make("task.generation.data=" + p).message()),
              HasSubstr(p + ": the dataset is empty"));
}

TEST_F(BadDatasetTest, OneChoiceAndGoldOutOfRange) {
  const std::string p = Write("one.jsonl", "{\"context\": \"a\", \"choices\": [\"x\"], \"gold\": 0}\n");
  EXPECT_THAT(std::string(Make("task.multiple_choice.data=" + p).message()),
              HasSubstr(p + ":1: field \"choices\" has 1 entry; a question needs at least 2"));
  const std::string q = Write("gold.jsonl", "{\"context\": \"a\", \"choices\": [\"x\", \"y\"], \"gold\": 2}\n");
  EXPECT_THAT(std::string(Make("task.multiple_choice.data=" + q).message()),
              HasSubstr(q + ":1: field \"gold\" is 2"));
}

TEST_F(BadDatasetTest, CodeTaskNeedsItsFields) {
  const std::string p = Write("he.jsonl", "{\"task_id\": \"t\", \"prompt\": \"def f():\", \"test\": \"\"}\n");
  EXPECT_THAT(std::string(Make("task.code_generation.data=" + p).message()),
              HasSubstr(p + ":1: field \"entry_point\" is missing"));
}

TEST_F(BadDatasetTest, DatasetThatIsADirectory) {
  const std::string dir = ::testing::TempDir() + "dataset_dir.jsonl";
  std::filesystem::create_directories(dir);
  const absl::Status s = Make("task.perplexity.data=" + dir);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), AllOf(HasSubstr(dir), HasSubstr("is a directory")));
}

// A passkey line's numbers are type- and range-checked: "depth": "deep" used to throw out of
// the task (an uncaught nlohmann::json::type_error), a length beyond int32 wrapped.
TEST_F(BadDatasetTest, PasskeyFieldsAreTypeAndRangeChecked) {
  const std::string ok = R"("prompt": "The key is 1.", "answer": "1")";
  const std::string p =
      Write("pk_depth.jsonl", "{" + ok + R"(, "length": 64, "depth": "deep"})" "\n");
  EXPECT_THAT(std::string(Make("task.passkey.data=" + p).message()),
              AllOf(HasSubstr(p + ":1: field \"depth\""), HasSubstr("number")));
  const std::string q = Write("pk_len.jsonl", "{" + ok + R"(, "length": 4294967360})" "\n");
  EXPECT_THAT(std::string(Make("task.passkey.data=" + q).message()),
              AllOf(HasSubstr(q + ":1: field \"length\""), HasSubstr("4294967360")));
  const std::string r = Write("pk_range.jsonl", "{" + ok + R"(, "length": 64, "depth": 1.5})" "\n");
  EXPECT_THAT(std::string(Make("task.passkey.data=" + r).message()),
              AllOf(HasSubstr(r + ":1: field \"depth\""), HasSubstr("[0, 1]")));
}

TEST_F(BadDatasetTest, GoldBeyondInt32) {
  const std::string p = Write(
      "gold_big.jsonl", R"({"context": "a", "choices": ["x", "y"], "gold": 4294967296})" "\n");
  EXPECT_THAT(std::string(Make("task.multiple_choice.data=" + p).message()),
              AllOf(HasSubstr(p + ":1: field \"gold\""), HasSubstr("4294967296")));
}

// With the window left to its default, a larger stride used to skip the tokens between
// windows and report the perplexity of a fraction of the text.
TEST_F(BadDatasetTest, PerplexityStrideLargerThanTheWindowIsRefused) {
  const absl::Status s =
      Make("task.perplexity.data=tests/fixtures/eval/perplexity.jsonl;task.perplexity.stride=5000");
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_THAT(std::string(s.message()),
              AllOf(HasSubstr("task.perplexity.stride"), HasSubstr("5000"), HasSubstr("window")));
}

// Windows and passkey lengths past max_position_embeddings follow ContextLimit: allowed with
// model.max_seq_len when rope_scaling extends the context, refused otherwise with what to change.
TEST_F(BadDatasetTest, LongContextWindowsNeedMaxSeqLenAndRopeScaling) {
  ModelConfig plain = model_->config();
  plain.max_position_embeddings = 16;
  plain.rope_scaling = RopeScaling{};
  ModelConfig dynamic = plain;
  dynamic.rope_scaling.type = RopeScaling::Type::kDynamic;
  dynamic.rope_scaling.factor = 2.0;
  const std::string ppl = "task.perplexity.data=tests/fixtures/eval/perplexity.jsonl;";
  auto make = [&](const std::string& setting, const ModelConfig& m) {
    return MakeEvalTask(Config(ppl + setting), m, *tokenizer_);
  };

  absl::Status s = make("task.perplexity.window=32", plain).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_THAT(std::string(s.message()),
              AllOf(HasSubstr("task.perplexity.window: 32"), HasSubstr("no rope_scaling")));
  s = make("model.max_seq_len=32", plain).status();
  EXPECT_THAT(std::string(s.message()),
              AllOf(HasSubstr("max_seq_len=32"), HasSubstr("config.json")));
  s = make("task.perplexity.window=32", dynamic).status();
  EXPECT_THAT(std::string(s.message()),
              AllOf(HasSubstr("rope_scaling \"dynamic\""), HasSubstr("at least 32")));

  // With the request, the window defaults to model.max_seq_len.
  ASSERT_OK_AND_ASSIGN(auto task, make("model.max_seq_len=32", dynamic));
  EXPECT_EQ(task->Describe()["window"], 32);
  EXPECT_OK(MakeEvalTask(Config("task.passkey.context_lengths=256;model.max_seq_len=512"), dynamic,
                         *tokenizer_)
                .status());
  s = MakeEvalTask(Config("task.passkey.context_lengths=256"), dynamic, *tokenizer_).status();
  EXPECT_THAT(std::string(s.message()),
              AllOf(HasSubstr("task.passkey.context_lengths: 256"), HasSubstr("--max-seq-len")));
}

// A missing interpreter used to score every sample as a failure and exit 0.
TEST_F(BadDatasetTest, CodeGenerationWithoutItsInterpreterIsRefused) {
  const absl::Status s = Make(
      "task.code_generation.data=tests/fixtures/eval/humaneval_sample.jsonl;"
      "task.code_generation.python=/nonexistent/bin/python3");
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_THAT(std::string(s.message()), AllOf(HasSubstr("task.code_generation.python"),
                                              HasSubstr("/nonexistent/bin/python3")));
  const absl::Status t = Make(
      "task.code_generation.data=tests/fixtures/eval/humaneval_sample.jsonl;"
      "task.code_generation.python=no-such-python-interpreter");
  EXPECT_THAT(std::string(t.message()), AllOf(HasSubstr("no-such-python-interpreter"),
                                              HasSubstr("not found on PATH")));
}

}  // namespace
}  // namespace tessera
