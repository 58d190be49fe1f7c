// Code generation with pass@1 on HumanEval-format data: a greedy completion of each prompt
// (stopped at the next top-level statement, as the HumanEval harness does) runs with the task's
// tests in a separate, limited Python process; pass@1 is the fraction that pass. Only the
// replica leader executes completions; crashes, timeouts and runaway memory are failures.
#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "launcher/methods/run_methods.h"
#include "launcher/eval/code_sandbox.h"
#include "launcher/eval/generation_runner.h"
#include "launcher/eval/jsonl.h"
#include "launcher/eval/tasks.h"
#include "runtime/context_limit.h"

namespace tessera {
namespace {

// HumanEval's stop sequences: the completion ends where a new top-level block would begin.
const std::vector<std::string>& StopSequences() {
  static const auto* stops =
      new std::vector<std::string>{"\nclass", "\ndef", "\n#", "\nif", "\nprint"};
  return *stops;
}

struct Problem {
  std::string task_id, prompt, test, entry_point;
  std::vector<int32_t> prompt_ids;
};

class CodeGenerationTask final : public EvalTask {
 public:
  CodeGenerationTask(std::vector<Problem> problems, GenerationRequest defaults,
                     SandboxLimits limits, std::string data)
      : problems_(std::move(problems)), defaults_(std::move(defaults)), limits_(std::move(limits)),
        data_(std::move(data)) {}

  std::string kind() const override { return "code_generation"; }
  size_t size() const override { return problems_.size(); }

  absl::StatusOr<std::vector<nlohmann::json>> Evaluate(const std::vector<size_t>& indices,
                                                       EvalContext& ctx) override {
    std::vector<GenerationRequest> requests;
    for (size_t i : indices) {
      GenerationRequest r = defaults_;
      r.prompt_ids = problems_[i].prompt_ids;
      requests.push_back(std::move(r));
    }
    ASSIGN_OR_RETURN(std::vector<GenerationResult> results, GenerateForTask(requests, indices, ctx));
    std::vector<nlohmann::json> records;
    for (size_t k = 0; k < indices.size(); ++k) {
      const Problem& p = problems_[indices[k]];
      nlohmann::json record = {{"index", indices[k]}, {"task_id", p.task_id},
                               {"completion", results[k].text},
                               {"finish_reason", FinishReasonName(results[k].finish_reason)}};
      if (ctx.replica_leader) {
        const std::string program =
            BuildHumanEvalProgram(p.prompt, results[k].text, p.test, p.entry_point);
        ASSIGN_OR_RETURN(SandboxOutcome outcome, RunPythonProgram(program, limits_));
        record["passed"] = outcome.passed ? 1.0 : 0.0;
        record["result"] = outcome.reason;
        record["seconds"] = outcome.seconds;
        record["network_isolated"] = outcome.network_isolated;
      }
      if (HasCounters(results[k].counters)) {
        record["method_counters"] = MethodCountersJson(results[k].counters);
      }
      records.push_back(std::move(record));
    }
    return records;
  }

  nlohmann::json Aggregate(const std::vector<nlohmann::json>& records) const override {
    std::vector<double> passed;
    bool isolated = true;
    for (const auto& r : records) {
      passed.push_back(r["passed"].get<double>());
      isolated = isolated && r.value("network_isolated", false);
    }
    const MeanStderr m = MeanWithStderr(passed);
    return {{"pass@1", m.mean}, {"pass@1_stderr", m.stderr_}, {"network_isolated", isolated}};
  }

  nlohmann::json Describe() const override {
    return {{"data", data_},
            {"timeout_s", limits_.timeout_s},
            {"memory_limit_mb", limits_.memory_limit_mb},
            {"python", limits_.python},
            {"max_new_tokens", defaults_.max_new_tokens},
            {"stop", defaults_.stop}};
  }

 private:
  std::vector<Problem> problems_;
  GenerationRequest defaults_;
  SandboxLimits limits_;
  std::string data_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<EvalTask>> MakeCodeGenerationTask(const config::RunConfig& c,
                                                                 const ModelConfig& model,
                                                                 const Tokenizer& tokenizer) {
  const config::CodeGenerationTask& t = c.task().code_generation();
  ASSIGN_OR_RETURN(const int64_t limit, ContextLimit(model, c.model().max_seq_len()));
  ASSIGN_OR_RETURN(std::vector<JsonlRecord> records, ReadJsonl(t.data()));
  GenerationRequest defaults = RequestFromSampling(c, 256);
  if (defaults.stop.empty()) defaults.stop = StopSequences();
  std::vector<Problem> problems;
  for (size_t i = 0; i < Limited(c, records.size()); ++i) {
    Problem p;
    ASSIGN_OR_RETURN(p.task_id, StringField(t.data(), records[i], "task_id"));
    ASSIGN_OR_RETURN(p.prompt, StringField(t.data(), records[i], "prompt"));
    ASSIGN_OR_RETURN(p.test, StringField(t.data(), records[i], "test"));
    ASSIGN_OR_RETURN(p.entry_point, StringField(t.data(), records[i], "entry_point"));
    auto ids = tokenizer.Encode(p.prompt);
    if (!ids.ok()) return RecordError(t.data(), records[i], ids.status().message());
    ids->insert(ids->begin(), model.bos_token_id);
    if (static_cast<int64_t>(ids->size()) >= limit) {
      return RecordError(t.data(), records[i],
                         absl::StrCat("the prompt has ", ids->size(), " tokens; the context is ",
                                      limit, " and generation needs one more position",
                                      ContextLimitHint(model, c.model().max_seq_len(),
                                                       ids->size() + defaults.max_new_tokens)));
    }
    p.prompt_ids = std::move(ids).value();
    problems.push_back(std::move(p));
  }
  SandboxLimits limits;
  if (t.timeout_s() > 0) limits.timeout_s = t.timeout_s();
  if (t.memory_limit_mb() > 0) limits.memory_limit_mb = t.memory_limit_mb();
  if (!t.python().empty()) limits.python = t.python();
  // A missing interpreter would score every sample as a failure; refuse before generating.
  if (absl::StatusOr<std::string> python = ResolvePythonInterpreter(limits.python); !python.ok()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "task.code_generation.python: cannot run the interpreter \"", limits.python, "\" (",
        python.status().message(), "); install Python 3 or set task.code_generation.python to "
        "the path of a working interpreter"));
  }
  return std::unique_ptr<EvalTask>(
      new CodeGenerationTask(std::move(problems), std::move(defaults), limits, t.data()));
}

}  // namespace tessera
