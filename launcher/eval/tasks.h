// Constructors of the task kinds; MakeEvalTask dispatches on the config's oneof.
#ifndef TESSERA_LAUNCHER_EVAL_TASKS_H_
#define TESSERA_LAUNCHER_EVAL_TASKS_H_

#include "launcher/eval/eval_task.h"

namespace tessera {

// `runner` (may be null): a method that streams long inputs (StepRunner::StreamsLongInputs)
// scores each text as one stream, and then task.perplexity.window and stride must be unset.
absl::StatusOr<std::unique_ptr<EvalTask>> MakePerplexityTask(const config::RunConfig& c,
                                                             const ModelConfig& model,
                                                             const Tokenizer& tokenizer,
                                                             const StepRunner* runner = nullptr);
absl::StatusOr<std::unique_ptr<EvalTask>> MakeMultipleChoiceTask(const config::RunConfig& c,
                                                                 const ModelConfig& model,
                                                                 const Tokenizer& tokenizer);
// `runner` (may be null): the method running generation, whose PromptEntries decide whether a
// prompt fits the context (HOMER compresses prompts past it).
absl::StatusOr<std::unique_ptr<EvalTask>> MakePasskeyTask(const config::RunConfig& c,
                                                          const ModelConfig& model,
                                                          const Tokenizer& tokenizer,
                                                          const StepRunner* runner = nullptr);
absl::StatusOr<std::unique_ptr<EvalTask>> MakeCodeGenerationTask(const config::RunConfig& c,
                                                                 const ModelConfig& model,
                                                                 const Tokenizer& tokenizer);
absl::StatusOr<std::unique_ptr<EvalTask>> MakeGenerationTask(const config::RunConfig& c,
                                                             const ModelConfig& model,
                                                             const Tokenizer& tokenizer);

// Shared by the tasks: the sample count after task.limit, and max_batch with its default.
size_t Limited(const config::RunConfig& c, size_t n);
int32_t MaxBatch(const config::RunConfig& c);
// task.bos as the results file names it: "prepend" (BOS_DEFAULT, BOS_PREPEND) or "lm_eval".
std::string BosName(config::BosConvention bos);

}  // namespace tessera

#endif  // TESSERA_LAUNCHER_EVAL_TASKS_H_
