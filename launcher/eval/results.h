// The results of an evaluation in the shape lm-evaluation-harness users know:
// results_<date>.json (results per task with metric and standard error, configs, versions,
// sample counts, the run config with the layout, seeds, git revision and date, compute
// accounting) and samples_<task>_<date>.jsonl with one record per sample.
#ifndef TESSERA_LAUNCHER_EVAL_RESULTS_H_
#define TESSERA_LAUNCHER_EVAL_RESULTS_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "configs/run_config.pb.h"
#include "nlohmann/json.hpp"
#include "parallel/world_layout.h"

namespace tessera {

struct EvalReport {
  std::string task;  // name in the results
  std::string kind;  // "perplexity", ...
  nlohmann::json metrics;      // EvalTask::Aggregate
  nlohmann::json task_config;  // EvalTask::Describe
  size_t samples_original = 0, samples_effective = 0;
  std::vector<nlohmann::json> samples;  // in input order
  config::RunConfig run_config;
  WorldLayout layout;
  int64_t tokens_processed = 0;
  double wall_time_s = 0;
  std::vector<int64_t> peak_rss_bytes_per_rank;
  nlohmann::json method_run;  // MethodRunCountersJson: added to compute.method
};

// The results object. `date` is seconds since the epoch.
nlohmann::json ResultsJson(const EvalReport& report, int64_t date);
// The lm-evaluation-harness style table: | Tasks | Version | n-shot | Metric | | Value | | Stderr |
std::string ResultsTable(const EvalReport& report);
// Writes both files into report.run_config.output().dir (default "results"); returns the
// results file's path.
absl::StatusOr<std::string> WriteResults(const EvalReport& report);

// The git revision this binary was built from ("unknown" outside a checkout).
std::string GitRevision();

}  // namespace tessera

#endif  // TESSERA_LAUNCHER_EVAL_RESULTS_H_
