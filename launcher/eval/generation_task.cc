// Plain generation to JSONL: each {"prompt": ...} line gets a completion with the run's sampling
// settings; the records are the results file's samples. Lines with a "target" string are also
// scored as lm-evaluation-harness's generate_until exact_match scores them (the completion,
// cut at the first stop string, equals the target exactly).
#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "launcher/methods/run_methods.h"
#include "launcher/eval/generation_runner.h"
#include "launcher/eval/jsonl.h"
#include "launcher/eval/tasks.h"

namespace tessera {
namespace {

class GenerationTask final : public EvalTask {
 public:
  // `sources` name each prompt's line ("data.jsonl:3") in the generator's messages.
  // `targets` is empty or one per prompt.
  GenerationTask(std::vector<std::string> prompts, std::vector<std::vector<int32_t>> ids,
                 std::vector<std::string> sources, std::vector<std::string> targets,
                 GenerationRequest defaults, std::string data, std::string bos)
      : prompts_(std::move(prompts)), ids_(std::move(ids)), sources_(std::move(sources)),
        targets_(std::move(targets)), defaults_(std::move(defaults)), data_(std::move(data)),
        bos_(std::move(bos)) {}

  std::string kind() const override { return "generation"; }
  size_t size() const override { return prompts_.size(); }

  absl::StatusOr<std::vector<nlohmann::json>> Evaluate(const std::vector<size_t>& indices,
                                                       EvalContext& ctx) override {
    std::vector<GenerationRequest> requests;
    for (size_t i : indices) {
      GenerationRequest r = defaults_;
      r.prompt_ids = ids_[i];
      r.source = sources_[i];
      requests.push_back(std::move(r));
    }
    ASSIGN_OR_RETURN(std::vector<GenerationResult> results, GenerateForTask(requests, indices, ctx));
    std::vector<nlohmann::json> records;
    for (size_t k = 0; k < indices.size(); ++k) {
      const GenerationResult& r = results[k];
      records.push_back({{"index", indices[k]},
                         {"prompt", prompts_[indices[k]]},
                         {"text", r.text},
                         {"token_ids", r.token_ids},
                         {"finish_reason", FinishReasonName(r.finish_reason)},
                         {"prompt_tokens", r.prompt_tokens}});
      if (!targets_.empty()) {
        records.back()["target"] = targets_[indices[k]];
        records.back()["exact_match"] = r.text == targets_[indices[k]] ? 1.0 : 0.0;
      }
      if (HasCounters(r.counters)) records.back()["method_counters"] = MethodCountersJson(r.counters);
    }
    return records;
  }

  nlohmann::json Aggregate(const std::vector<nlohmann::json>& records) const override {
    int64_t generated = 0;
    std::vector<double> exact;
    for (const auto& r : records) {
      generated += static_cast<int64_t>(r["token_ids"].size());
      if (r.contains("exact_match")) exact.push_back(r["exact_match"].get<double>());
    }
    nlohmann::json metrics = {{"samples", records.size()}, {"generated_tokens", generated}};
    if (!exact.empty()) {
      const MeanStderr m = MeanWithStderr(exact);
      metrics["exact_match"] = m.mean;
      metrics["exact_match_stderr"] = m.stderr_;
    }
    return metrics;
  }

  nlohmann::json Describe() const override {
    return {{"data", data_},
            {"max_new_tokens", defaults_.max_new_tokens},
            {"temperature", defaults_.sampling.temperature},
            {"top_k", defaults_.sampling.top_k},
            {"top_p", defaults_.sampling.top_p},
            {"stop", defaults_.stop},
            {"bos", bos_}};
  }

 private:
  std::vector<std::string> prompts_;
  std::vector<std::vector<int32_t>> ids_;
  std::vector<std::string> sources_, targets_;
  GenerationRequest defaults_;
  std::string data_, bos_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<EvalTask>> MakeGenerationTask(const config::RunConfig& c,
                                                             const ModelConfig& model,
                                                             const Tokenizer& tokenizer) {
  const std::string& path = c.task().generation().data();
  ASSIGN_OR_RETURN(std::vector<JsonlRecord> records, ReadJsonl(path));
  std::vector<std::string> prompts;
  std::vector<std::vector<int32_t>> ids;
  std::vector<std::string> sources, targets;
  const size_t n = Limited(c, records.size());
  for (size_t i = 0; i < n; ++i) {
    ASSIGN_OR_RETURN(std::string prompt, StringField(path, records[i], "prompt"));
    if (prompt.empty()) return RecordError(path, records[i], "the prompt is empty");
    auto encoded = tokenizer.Encode(prompt);
    if (!encoded.ok()) return RecordError(path, records[i], encoded.status().message());
    if (c.task().bos() != config::BOS_LM_EVAL) encoded->insert(encoded->begin(), model.bos_token_id);
    prompts.push_back(std::move(prompt));
    ids.push_back(std::move(encoded).value());
    sources.push_back(absl::StrCat(path, ":", records[i].line));
    if (records[i].value.contains("target")) {
      ASSIGN_OR_RETURN(std::string target, StringField(path, records[i], "target"));
      targets.push_back(std::move(target));
    }
  }
  if (!targets.empty() && targets.size() != n) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": ", targets.size(), " of ", n, " records have a \"target\"; give every record "
        "one (to score exact_match) or none"));
  }
  return std::unique_ptr<EvalTask>(
      new GenerationTask(std::move(prompts), std::move(ids), std::move(sources),
                         std::move(targets), RequestFromSampling(c, 256), path,
                         BosName(c.task().bos())));
}

}  // namespace tessera
