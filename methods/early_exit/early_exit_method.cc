#include "methods/early_exit/early_exit_method.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kernels/status_macros.h"

namespace tessera {

using config::EarlyExitSettings;

absl::StatusOr<std::unique_ptr<Method>> EarlyExitMethod::Create(
    const config::MethodSettings& settings) {
  const EarlyExitSettings& s = settings.early_exit();
  if (s.policy() == EarlyExitSettings::CALM) {
    return absl::UnimplementedError(
        "method.early_exit.policy: CALM is not built in this version of Tessera "
        "(Unimplemented); use policy FREE or STATIC");
  }
  return std::unique_ptr<Method>(new EarlyExitMethod(s));
}

absl::Status EarlyExitMethod::Configure(const ModelConfig& config) {
  const int64_t layers = config.num_hidden_layers;
  if (settings_.exit_layer() == 0) {
    const int64_t quarter = (layers + 3) / 4;
    for (int32_t l : config.exit_layers) {
      if (l >= quarter) {
        settings_.set_exit_layer(l);
        break;
      }
    }
    if (settings_.exit_layer() == 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "method.early_exit.exit_layer: is unset and config.json lists no tessera_exit_layers "
          "at or past a quarter of its ", layers, " layers",
          config.exit_layers.empty()
              ? ""
              : absl::StrCat(" (it lists ", absl::StrJoin(config.exit_layers, ", "), ")"),
          "; set the blocks to run before the exit, in [1, ", layers - 1, "], e.g. ", quarter));
    }
  }
  if (settings_.exit_layer() >= layers) {
    return absl::InvalidArgumentError(absl::StrCat(
        "method.early_exit.exit_layer: is ", settings_.exit_layer(), " but the model has ", layers,
        " layers; the exit must come before the last block: use a value in [1, ", layers - 1,
        "]"));
  }
  return absl::OkStatus();
}

ModelOptions EarlyExitMethod::Requirements() const {
  ModelOptions options;
  if (settings_.exit_layer() > 0) options.head_after_layers = {settings_.exit_layer() - 1};
  return options;
}

absl::Status EarlyExitMethod::Attach(LlamaModel& model) {
  RETURN_IF_ERROR(Configure(model.config()));
  FreeRunnerOptions options;
  options.settings = settings_;
  options.check_agreement = check_agreement_;
  ASSIGN_OR_RETURN(runner_, FreeRunner::Create(&model, std::move(options)));
  return absl::OkStatus();
}

}  // namespace tessera
