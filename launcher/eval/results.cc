#include "launcher/eval/results.h"

#include <algorithm>
#include <ctime>
#include <filesystem>
#include <fstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "launcher/eval/run_config.h"

#ifndef TESSERA_GIT_REVISION
#define TESSERA_GIT_REVISION "unknown"
#endif

namespace tessera {
namespace {

using nlohmann::json;

constexpr double kTaskVersion = 1.0;

bool HigherIsBetter(const std::string& metric) {
  return !(absl::StrContains(metric, "perplexity") || absl::StartsWith(metric, "nll") ||
           absl::StartsWith(metric, "bits"));
}

bool IsStderr(const std::string& metric) { return absl::EndsWith(metric, "_stderr"); }

// Counts reported beside the metrics (tokens scored, samples, generated tokens): neither higher
// nor lower is better, so lm-evaluation-harness's higher_is_better does not list them.
bool IsCount(const std::string& metric) {
  return metric == "tokens" || metric == "samples" || absl::EndsWith(metric, "_tokens");
}

std::string DateId(int64_t date) {
  std::time_t t = static_cast<std::time_t>(date);
  std::tm tm;
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H-%M-%S", &tm);
  return buf;
}

}  // namespace

std::string GitRevision() { return TESSERA_GIT_REVISION; }

json ResultsJson(const EvalReport& r, int64_t date) {
  json results = {{"name", r.task}, {"alias", r.task}, {"sample_len", r.samples_effective}};
  json higher = json::object();
  for (const auto& [metric, value] : r.metrics.items()) {
    results[metric + ",none"] = value;
    if (IsStderr(metric) || !value.is_number() || IsCount(metric)) continue;
    higher[metric] = HigherIsBetter(metric);
    // As lm-evaluation-harness writes a metric without a standard error (perplexities).
    if (!r.metrics.contains(metric + "_stderr")) results[metric + "_stderr,none"] = "N/A";
  }
  const config::RunConfig& c = r.run_config;
  json run = {
      {"model", "tessera"},
      {"model_args",
       {{"path", c.model().path()},
        {"backend", c.model().backend().empty() ? "cpu" : c.model().backend()}}},
      {"batch_size", c.max_batch() > 0 ? c.max_batch() : 16},
      {"limit", c.task().limit() > 0 ? json(c.task().limit()) : json(nullptr)},
      {"seeds", {{"run", c.seed()}}},
      {"layout", {{"tp", r.layout.tp}, {"pp", r.layout.pp}, {"dp", r.layout.dp}}},
      {"run_config", RunConfigText(c)},
  };
  json task_config = r.task_config;
  task_config["task"] = r.task;
  task_config["kind"] = r.kind;
  task_config["num_fewshot"] = 0;
  const double tokens_per_s = r.wall_time_s > 0 ? r.tokens_processed / r.wall_time_s : 0.0;
  json compute = {{"tokens_processed", r.tokens_processed},
                  {"wall_time_s", r.wall_time_s},
                  {"tokens_per_s", tokens_per_s},
                  {"peak_rss_bytes_per_rank", r.peak_rss_bytes_per_rank}};
  // A method's per-sample counters, summed (e.g. early exit: exits, layers run, check FLOPs;
  // "max_*" counters: the largest).
  json method = json::object();
  for (const json& sample : r.samples) {
    auto it = sample.find("method_counters");
    if (it == sample.end()) continue;
    for (const auto& [key, value] : it->items()) {
      if (key == "threshold" || key == "mean_layers_per_token") continue;
      if (key == "token_layers") {
        double layers = 0;
        for (const json& l : value) layers += l.get<double>();
        method["generated_tokens"] = method.value("generated_tokens", 0.0) + value.size();
        method["layers_run"] = method.value("layers_run", 0.0) + layers;
      } else if (value.is_number() && key.rfind("max_", 0) == 0) {  // a maximum, not a sum
        method[key] = std::max(method.value(key, 0.0), value.get<double>());
      } else if (value.is_number()) {
        method[key] = method.value(key, 0.0) + value.get<double>();
      }
    }
  }
  if (r.method_run.is_object()) {
    for (const auto& [field, counters] : r.method_run.items()) method[field] = counters;
  }
  if (!method.empty()) {
    if (method.value("generated_tokens", 0.0) > 0) {
      method["mean_layers_per_token"] =
          method["layers_run"].get<double>() / method["generated_tokens"].get<double>();
    }
    const double checked = method.value("checked_tokens", 0.0);
    if (checked > 0 && method.contains("hesitations")) {  // HARP
      method["hesitation_rate"] = method["hesitations"].get<double>() / checked;
      method["mean_entropy_bits"] = method.value("entropy_bits_sum", 0.0) / checked;
    }
    compute["method"] = method;
  }
  std::time_t t = static_cast<std::time_t>(date);
  char iso[32];
  std::tm tm;
  gmtime_r(&t, &tm);
  std::strftime(iso, sizeof(iso), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return {
      {"results", {{r.task, results}}},
      {"group_subtasks", json::object()},  // as lm-evaluation-harness writes an ungrouped task
      {"configs", {{r.task, task_config}}},
      {"versions", {{r.task, kTaskVersion}}},
      {"n-shot", {{r.task, 0}}},
      {"higher_is_better", {{r.task, higher}}},
      {"n-samples", {{r.task, {{"original", r.samples_original}, {"effective", r.samples_effective}}}}},
      {"config", run},
      {"git_hash", GitRevision()},
      {"date", date},
      {"date_iso", iso},
      {"compute", compute},
      {"total_evaluation_time_seconds", absl::StrFormat("%.3f", r.wall_time_s)},
  };
}

std::string ResultsTable(const EvalReport& r) {
  std::string table =
      "|Tasks|Version|n-shot|Metric| |Value| |Stderr|\n|-----|------:|-----:|------|-|----:|-|-----:|\n";
  bool first = true;
  for (const auto& [metric, value] : r.metrics.items()) {
    if (IsStderr(metric) || !value.is_number() || IsCount(metric)) continue;
    const std::string arrow = HigherIsBetter(metric) ? "↑" : "↓";
    std::string err = "N/A";
    auto it = r.metrics.find(metric + "_stderr");
    if (it != r.metrics.end()) err = absl::StrFormat("%.4f", it->get<double>());
    absl::StrAppendFormat(&table, "|%s|%s|%s|%s|%s|%.4f|±|%s|\n", first ? r.task : "",
                          first ? absl::StrFormat("%.1f", kTaskVersion) : "", first ? "0" : "",
                          metric, arrow, value.get<double>(), err);
    first = false;
  }
  return table;
}

absl::StatusOr<std::string> WriteResults(const EvalReport& r) {
  namespace fs = std::filesystem;
  const int64_t date = static_cast<int64_t>(std::time(nullptr));
  const fs::path dir = r.run_config.output().dir().empty() ? "results" : r.run_config.output().dir();
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) {
    return absl::PermissionDeniedError(
        absl::StrCat("output.dir: cannot create ", dir.string(), ": ", ec.message()));
  }
  const std::string id = DateId(date);
  const fs::path results_path = dir / absl::StrCat("results_", id, ".json");
  std::ofstream out(results_path);
  if (!out) return absl::PermissionDeniedError(absl::StrCat("cannot write ", results_path.string()));
  out << ResultsJson(r, date).dump(2, ' ', false, json::error_handler_t::replace) << "\n";
  if (!r.run_config.output().has_write_samples() || r.run_config.output().write_samples()) {
    const fs::path samples_path = dir / absl::StrCat("samples_", r.task, "_", id, ".jsonl");
    std::ofstream samples(samples_path);
    if (!samples) return absl::PermissionDeniedError(absl::StrCat("cannot write ", samples_path.string()));
    for (const json& s : r.samples) samples << s.dump(-1, ' ', false, json::error_handler_t::replace) << "\n";
  }
  return results_path.string();
}

}  // namespace tessera
