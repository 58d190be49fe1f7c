#include "launcher/methods/run_methods.h"

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "methods/registry.h"
#include "runtime/model_config.h"

namespace tessera {

absl::StatusOr<RunMethods> PrepareMethods(const config::MethodSettings& settings,
                                          const std::string& model_dir, bool check_agreement) {
  RunMethods run;
  ASSIGN_OR_RETURN(run.methods, BuiltInMethods().Create(settings));
  if (run.methods.empty()) return run;
  ASSIGN_OR_RETURN(const ModelConfig config, LoadModelConfig(model_dir));
  for (auto& m : run.methods) {
    RETURN_IF_ERROR(m->Configure(config));
    m->CheckRankAgreement(check_agreement);
  }
  run.options = MergedModelOptions(run.methods);
  return run;
}

absl::Status AttachMethods(RunMethods& run, LlamaModel& model) {
  for (auto& m : run.methods) {
    RETURN_IF_ERROR(m->Attach(model));
    if (m->Runner() == nullptr) continue;
    if (run.runner != nullptr) {
      return absl::UnimplementedError(absl::StrCat(
          "method.", m->field(), ": runs generation steps itself, and so does another method of "
          "this run; combining them is not supported: keep one"));
    }
    run.runner = m->Runner();
  }
  return absl::OkStatus();
}

bool HasCounters(const SequenceCounters& c) {
  return !c.token_layers.empty() || !c.values.empty() || !c.series.empty();
}

nlohmann::json MethodCountersJson(const SequenceCounters& c) {
  nlohmann::json j = c.values;
  for (const auto& [name, values] : c.series) j[name] = values;
  if (c.token_layers.empty()) return j;  // a method that does not change the depth
  j["token_layers"] = c.token_layers;
  double layers = 0;
  for (int32_t l : c.token_layers) layers += l;
  j["mean_layers_per_token"] = layers / c.token_layers.size();
  return j;
}

}  // namespace tessera
