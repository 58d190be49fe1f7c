// EvalTask: one evaluation task (perplexity, passkey, multiple choice, code generation, plain
// generation) over a dataset.
//
// Every rank loads the task identically (so input errors are the same everywhere); each
// data-parallel replica evaluates its share of the samples and returns one JSON record per
// sample; rank 0 gathers the records in input order and aggregates them. Metrics come only from
// the records, so they do not depend on the layout.
#ifndef TESSERA_LAUNCHER_EVAL_EVAL_TASK_H_
#define TESSERA_LAUNCHER_EVAL_EVAL_TASK_H_

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "configs/run_config.pb.h"
#include "nlohmann/json.hpp"
#include "runtime/llama_model.h"
#include "runtime/step_engine.h"
#include "runtime/tokenizer.h"

namespace tessera {

// What a task runs with on one rank.
struct EvalContext {
  LlamaModel* model = nullptr;
  const Tokenizer* tokenizer = nullptr;
  const config::RunConfig* config = nullptr;
  bool replica_leader = false;            // tp_rank 0 and pp_rank 0 of the replica
  std::function<void(int64_t)> progress;  // called with the samples just finished (may be empty)
  int64_t tokens_processed = 0;           // prompt + generated tokens, accumulated by the task
  StepRunner* runner = nullptr;  // a method running generation steps (FREE); null: plain
};

class EvalTask {
 public:
  virtual ~EvalTask() = default;

  // The task's kind ("perplexity", ...) and the number of samples (after task.limit).
  virtual std::string kind() const = 0;
  virtual size_t size() const = 0;
  // Evaluates the samples at `indices`; one record per index, in the same order.
  virtual absl::StatusOr<std::vector<nlohmann::json>> Evaluate(const std::vector<size_t>& indices,
                                                               EvalContext& ctx) = 0;
  // Metrics over the records of every sample, in input order: {"acc": 0.5, "acc_stderr": ...}.
  virtual nlohmann::json Aggregate(const std::vector<nlohmann::json>& records) const = 0;
  // The task's settings as used (defaults filled in), for the results file.
  virtual nlohmann::json Describe() const = 0;
};

// Reads and tokenizes the task's data. `runner` (may be null): the method that will run
// generation, whose PromptEntries decide which prompts fit the context.
absl::StatusOr<std::unique_ptr<EvalTask>> MakeEvalTask(const config::RunConfig& config,
                                                       const ModelConfig& model,
                                                       const Tokenizer& tokenizer,
                                                       const StepRunner* runner = nullptr);

// Mean and standard error of the mean (sample standard deviation / sqrt(n)), as
// lm-evaluation-harness reports them.
struct MeanStderr {
  double mean = 0, stderr_ = 0;
};
MeanStderr MeanWithStderr(const std::vector<double>& values);

}  // namespace tessera

#endif  // TESSERA_LAUNCHER_EVAL_EVAL_TASK_H_
