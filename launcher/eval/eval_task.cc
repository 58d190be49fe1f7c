#include "launcher/eval/eval_task.h"

#include <cmath>

#include "launcher/eval/tasks.h"

namespace tessera {

size_t Limited(const config::RunConfig& c, size_t n) {
  return c.task().limit() > 0 ? std::min<size_t>(n, c.task().limit()) : n;
}

int32_t MaxBatch(const config::RunConfig& c) { return c.max_batch() > 0 ? c.max_batch() : 16; }

std::string BosName(config::BosConvention bos) {
  return bos == config::BOS_LM_EVAL ? "lm_eval" : "prepend";
}

absl::StatusOr<std::unique_ptr<EvalTask>> MakeEvalTask(const config::RunConfig& c,
                                                       const ModelConfig& model,
                                                       const Tokenizer& tokenizer,
                                                       const StepRunner* runner) {
  switch (c.task().kind_case()) {
    case config::Task::kPerplexity:
      return MakePerplexityTask(c, model, tokenizer, runner);
    case config::Task::kPasskey:
      return MakePasskeyTask(c, model, tokenizer, runner);
    case config::Task::kMultipleChoice:
      return MakeMultipleChoiceTask(c, model, tokenizer);
    case config::Task::kCodeGeneration:
      return MakeCodeGenerationTask(c, model, tokenizer);
    case config::Task::kGeneration:
      return MakeGenerationTask(c, model, tokenizer);
    case config::Task::KIND_NOT_SET:
      break;
  }
  return absl::InvalidArgumentError("task: no task kind is set");
}

MeanStderr MeanWithStderr(const std::vector<double>& values) {
  MeanStderr out;
  const double n = static_cast<double>(values.size());
  if (values.empty()) return out;
  for (double v : values) out.mean += v;
  out.mean /= n;
  if (values.size() < 2) return out;
  double ss = 0;
  for (double v : values) ss += (v - out.mean) * (v - out.mean);
  out.stderr_ = std::sqrt(ss / (n - 1)) / std::sqrt(n);
  return out;
}

}  // namespace tessera
