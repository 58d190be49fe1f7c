// The methods of one run, from its MethodSettings to hooks on a loaded model:
//
//   ASSIGN_OR_RETURN(RunMethods m, PrepareMethods(settings, model_dir, check_agreement));
//   LoadModelForJob(..., m.options);       // heads and weights the methods need
//   RETURN_IF_ERROR(AttachMethods(m, *model));
//   GeneratorOptions o; o.runner = m.runner;
//
// PrepareMethods reads DIR/config.json only, so a setting that does not fit the model (an exit
// layer past the last block) fails before any weight is read.
#ifndef TESSERA_LAUNCHER_METHODS_RUN_METHODS_H_
#define TESSERA_LAUNCHER_METHODS_RUN_METHODS_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "configs/method_settings.pb.h"
#include "methods/method.h"
#include "nlohmann/json.hpp"

namespace tessera {

struct RunMethods {
  std::vector<std::unique_ptr<Method>> methods;
  ModelOptions options;         // what the model must load for them
  StepRunner* runner = nullptr;  // after AttachMethods: the method running the steps, if any
};

absl::StatusOr<RunMethods> PrepareMethods(const config::MethodSettings& settings,
                                          const std::string& model_dir, bool check_agreement);
absl::Status AttachMethods(RunMethods& methods, LlamaModel& model);

// A sequence's method counters as JSON: the runner's named values, its per-token series (arrays),
// and, when the runner reports them, "token_layers" (layers run per generated token) and
// "mean_layers_per_token".
bool HasCounters(const SequenceCounters& counters);
nlohmann::json MethodCountersJson(const SequenceCounters& counters);

// Collective over `world` (every rank of the job): each method's RunCounters() summed over all
// ranks, as {field: {name: summary}}. Pairs kept_X / visible_X become
// {"kept": total, "visible": total, "fraction": kept / visible, "per_layer": [fraction of each
// layer]} (arrays of num_layers * heads values are split per layer); other counters are totals.
// Empty when no method counts anything.
absl::StatusOr<nlohmann::json> MethodRunCountersJson(RunMethods& methods, Communicator& world,
                                                     int64_t num_layers);

}  // namespace tessera

#endif  // TESSERA_LAUNCHER_METHODS_RUN_METHODS_H_
