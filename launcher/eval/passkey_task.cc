// Passkey retrieval (Mohtashami & Jaggi, 2023): a random key is stated at a chosen depth of
// repetitive filler text of a chosen length in tokens and asked for at the end. The answer is
// correct when the first number in the greedy continuation equals the key.
#include <map>
#include <regex>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "kernels/status_macros.h"
#include "launcher/methods/run_methods.h"
#include "launcher/eval/generation_runner.h"
#include "launcher/eval/jsonl.h"
#include "launcher/eval/tasks.h"
#include "runtime/context_limit.h"
#include "kernels/philox.h"

namespace tessera {
namespace {

constexpr char kIntro[] =
    "There is an important info hidden inside a lot of irrelevant text. Find it and memorize it. "
    "I will quiz you about the important information there.";
constexpr char kFiller[] =
    " The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.";
constexpr char kQuestion[] = " What is the pass key? The pass key is";

struct PasskeySample {
  std::string prompt;
  std::string answer;
  int32_t length = 0;  // requested context length in tokens
  float depth = 0;
};

class PasskeyTask final : public EvalTask {
 public:
  PasskeyTask(std::vector<PasskeySample> samples, std::vector<std::vector<int32_t>> prompts,
              GenerationRequest defaults, nlohmann::json settings)
      : samples_(std::move(samples)), prompts_(std::move(prompts)), defaults_(std::move(defaults)),
        settings_(std::move(settings)) {}

  std::string kind() const override { return "passkey"; }
  size_t size() const override { return samples_.size(); }

  absl::StatusOr<std::vector<nlohmann::json>> Evaluate(const std::vector<size_t>& indices,
                                                       EvalContext& ctx) override {
    std::vector<GenerationRequest> requests;
    for (size_t i : indices) {
      GenerationRequest r = defaults_;
      r.prompt_ids = prompts_[i];
      requests.push_back(std::move(r));
    }
    ASSIGN_OR_RETURN(std::vector<GenerationResult> results, GenerateForTask(requests, indices, ctx));
    std::vector<nlohmann::json> records;
    static const std::regex kNumber("[0-9]+");
    for (size_t k = 0; k < indices.size(); ++k) {
      const PasskeySample& s = samples_[indices[k]];
      std::smatch m;
      const std::string& text = results[k].text;
      const std::string found = std::regex_search(text, m, kNumber) ? m.str() : "";
      records.push_back({{"index", indices[k]},
                         {"length", s.length},
                         {"prompt_tokens", prompts_[indices[k]].size()},
                         {"depth", s.depth},
                         {"answer", s.answer},
                         {"output", text},
                         {"correct", found == s.answer ? 1.0 : 0.0}});
      if (HasCounters(results[k].counters)) {
        records.back()["method_counters"] = MethodCountersJson(results[k].counters);
      }
    }
    return records;
  }

  nlohmann::json Aggregate(const std::vector<nlohmann::json>& records) const override {
    std::vector<double> all;
    std::map<int, std::vector<double>> by_length;
    std::map<std::string, std::vector<double>> by_depth;
    for (const auto& r : records) {
      const double ok = r["correct"].get<double>();
      all.push_back(ok);
      by_length[r["length"].get<int>()].push_back(ok);
      by_depth[absl::StrFormat("%.2f", r["depth"].get<double>())].push_back(ok);
    }
    const MeanStderr a = MeanWithStderr(all);
    nlohmann::json out = {{"acc", a.mean}, {"acc_stderr", a.stderr_}};
    for (const auto& [len, v] : by_length) out[absl::StrCat("acc@", len)] = MeanWithStderr(v).mean;
    for (const auto& [d, v] : by_depth) out[absl::StrCat("acc@depth", d)] = MeanWithStderr(v).mean;
    return out;
  }

  nlohmann::json Describe() const override { return settings_; }

 private:
  std::vector<PasskeySample> samples_;
  std::vector<std::vector<int32_t>> prompts_;
  GenerationRequest defaults_;
  nlohmann::json settings_;
};

// The prompt for a context of about `length` tokens with the key at `depth`: as many filler
// sentences as fit, the key sentence after round(depth * n) of them.
absl::StatusOr<std::string> BuildPrompt(const Tokenizer& tok, int32_t length, float depth,
                                        const std::string& key) {
  const std::string needle = absl::StrCat(" The pass key is ", key, ". Remember it. ", key,
                                          " is the pass key.");
  ASSIGN_OR_RETURN(auto fixed, tok.Encode(absl::StrCat(kIntro, needle, kQuestion)));
  ASSIGN_OR_RETURN(auto filler, tok.Encode(kFiller));
  const int64_t room = length - 1 - static_cast<int64_t>(fixed.size());  // 1 for BOS
  if (room < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "task.passkey.context_lengths: ", length, " tokens cannot hold the question itself (",
        fixed.size() + 1, " tokens)"));
  }
  const int64_t n = room / static_cast<int64_t>(filler.size());
  const int64_t at = std::llround(depth * n);
  std::string prompt = kIntro;
  for (int64_t i = 0; i <= n; ++i) {
    if (i == at) prompt += needle;
    if (i < n) prompt += kFiller;
  }
  return prompt + kQuestion;
}

}  // namespace

absl::StatusOr<std::unique_ptr<EvalTask>> MakePasskeyTask(const config::RunConfig& c,
                                                          const ModelConfig& model,
                                                          const Tokenizer& tokenizer,
                                                          const StepRunner* runner) {
  // The cache entries a prompt leaves once prefilled.
  auto held = [runner](int64_t tokens) {
    return runner != nullptr ? runner->PromptEntries(tokens) : tokens;
  };
  const config::PasskeyTask& p = c.task().passkey();
  std::vector<int32_t> lengths(p.context_lengths().begin(), p.context_lengths().end());
  if (lengths.empty()) lengths = {256, 512, 1024};
  std::vector<float> depths(p.depths().begin(), p.depths().end());
  if (depths.empty()) depths = {0.0f, 0.25f, 0.5f, 0.75f, 1.0f};
  const int32_t per_cell = p.samples_per_cell() > 0 ? p.samples_per_cell() : 5;
  const int32_t digits = p.key_digits() > 0 ? p.key_digits() : 5;
  const int32_t max_seq_len = c.model().max_seq_len();
  absl::StatusOr<int64_t> limit = ContextLimit(model, max_seq_len);
  if (!limit.ok()) return limit.status();
  const std::string limit_name = max_seq_len > 0 ? "model.max_seq_len" : "max_position_embeddings";
  GenerationRequest defaults = RequestFromSampling(c, digits + 4);
  std::vector<PasskeySample> samples;
  if (!p.data().empty()) {
    ASSIGN_OR_RETURN(std::vector<JsonlRecord> records, ReadJsonl(p.data()));
    for (const JsonlRecord& r : records) {
      PasskeySample s;
      ASSIGN_OR_RETURN(s.prompt, StringField(p.data(), r, "prompt"));
      ASSIGN_OR_RETURN(s.answer, StringField(p.data(), r, "answer"));
      const JsonFields f = Fields(p.data(), r);
      ASSIGN_OR_RETURN(s.length, f.Int32("length", 1, JsonFields::kInt32Max));
      ASSIGN_OR_RETURN(double depth, f.Double("depth", 0.0));
      if (!(depth >= 0 && depth <= 1)) return f.Error("depth", "must be a number in [0, 1]");
      s.depth = static_cast<float>(depth);
      samples.push_back(std::move(s));
    }
  } else {
    uint32_t counter = 0;
    for (int32_t length : lengths) {
      if (held(length) > *limit) {
        return absl::InvalidArgumentError(
            absl::StrCat("task.passkey.context_lengths: ", length, " exceeds the context (",
                         limit_name, "=", *limit, " tokens)",
                         ContextLimitHint(model, max_seq_len, length + defaults.max_new_tokens)));
      }
      for (float depth : depths) {
        for (int32_t s = 0; s < per_cell; ++s) {
          const auto bits = Philox4x32({counter++, 0, 0, 0},
                                       {static_cast<uint32_t>(c.seed()), 0x9a55c3e7u});
          uint64_t rest = 1;  // 10^(digits - 1)
          for (int32_t d = 1; d < digits; ++d) rest *= 10;
          const uint64_t key = (1 + bits[0] % 9) * rest + bits[1] % rest;  // no leading zero
          PasskeySample sample{"", absl::StrCat(key), length, depth};
          ASSIGN_OR_RETURN(sample.prompt, BuildPrompt(tokenizer, length, depth, sample.answer));
          samples.push_back(std::move(sample));
        }
      }
    }
  }
  samples.resize(Limited(c, samples.size()));
  std::vector<std::vector<int32_t>> prompts;
  for (const PasskeySample& s : samples) {
    ASSIGN_OR_RETURN(auto ids, tokenizer.Encode(s.prompt));
    ids.insert(ids.begin(), model.bos_token_id);
    if (held(static_cast<int64_t>(ids.size())) + defaults.max_new_tokens > *limit) {
      return absl::InvalidArgumentError(absl::StrCat(
          "task.passkey: a prompt of ", ids.size(), " tokens plus ", defaults.max_new_tokens,
          " new tokens exceeds the context (", limit_name, "=", *limit, " tokens)",
          ContextLimitHint(model, max_seq_len, ids.size() + defaults.max_new_tokens)));
    }
    prompts.push_back(std::move(ids));
  }
  nlohmann::json settings = {{"context_lengths", lengths}, {"depths", depths},
                             {"samples_per_cell", per_cell}, {"key_digits", digits},
                             {"data", p.data()}, {"seed", c.seed()}};
  return std::unique_ptr<EvalTask>(
      new PasskeyTask(std::move(samples), std::move(prompts), std::move(defaults), settings));
}

}  // namespace tessera
