#include "methods/harp/harp_method.h"

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"

namespace tessera {


absl::StatusOr<std::unique_ptr<Method>> HarpMethod::Create(const config::MethodSettings& settings) {
  return std::unique_ptr<Method>(new HarpMethod(settings.harp()));
}

absl::Status HarpMethod::Configure(const ModelConfig& config) {
  for (int i = 0; i < settings_.kv_noise_layers_size(); ++i) {
    if (settings_.kv_noise_layers(i) >= config.num_hidden_layers) {
      return absl::InvalidArgumentError(absl::StrCat(
          "method.harp.kv_noise_layers[", i, "]: layer ", settings_.kv_noise_layers(i),
          " does not exist; the model has ", config.num_hidden_layers, " layers"));
    }
  }
  return absl::OkStatus();
}

absl::Status HarpMethod::Attach(LlamaModel& model) {
  HarpRunnerOptions options;
  options.settings = settings_;
  options.check_agreement = check_agreement_;
  ASSIGN_OR_RETURN(runner_, HarpRunner::Create(&model, std::move(options)));
  return absl::OkStatus();
}

}  // namespace tessera
