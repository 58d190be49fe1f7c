#include "methods/early_exit/early_exit_method.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kernels/status_macros.h"

namespace tessera {

using config::EarlyExitSettings;

absl::StatusOr<std::unique_ptr<Method>> EarlyExitMethod::Create(
    const config::MethodSettings& settings) {
  return std::unique_ptr<Method>(new EarlyExitMethod(settings.early_exit()));
}

absl::Status EarlyExitMethod::Configure(const ModelConfig& config) {
  const int64_t layers = config.num_hidden_layers;
  if (settings_.vocab_k() > config.vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat("method.early_exit.vocab_k: is ",
                                                   settings_.vocab_k(), " but the vocabulary has ",
                                                   config.vocab_size, " tokens"));
  }
  if (settings_.policy() == EarlyExitSettings::CALM) {
    const int32_t min_layer = settings_.has_min_exit_layer() ? settings_.min_exit_layer() : 1;
    if (settings_.check_layers_size() == 0) {
      std::vector<int32_t> checks;
      for (int32_t l : config.exit_layers) {
        if (l >= min_layer) checks.push_back(l);
      }
      if (config.exit_layers.empty()) {
        for (int32_t l = min_layer; l < layers; ++l) checks.push_back(l);
      }
      *settings_.mutable_check_layers() = {checks.begin(), checks.end()};
    }
    if (settings_.check_layers_size() == 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "method.early_exit.min_exit_layer: is ", min_layer, ", which leaves no check before the "
          "last of the model's ", layers, " blocks (config.json's tessera_exit_layers: ",
          absl::StrJoin(config.exit_layers, ", "), "); lower it or set check_layers"));
    }
    const int32_t last = settings_.check_layers(settings_.check_layers_size() - 1);
    if (last >= layers) {
      return absl::InvalidArgumentError(absl::StrCat(
          "method.early_exit.check_layers: ", last, " is not before the last of the model's ",
          layers, " blocks; use block counts in [1, ", layers - 1, "]"));
    }
    return absl::OkStatus();
  }
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
  for (int32_t c : settings_.check_layers()) options.head_after_layers.push_back(c - 1);
  return options;
}

FreeRunner* EarlyExitMethod::free_runner() const {
  return settings_.policy() == EarlyExitSettings::CALM ? nullptr
                                                       : static_cast<FreeRunner*>(runner_.get());
}

CalmRunner* EarlyExitMethod::calm_runner() const {
  return settings_.policy() == EarlyExitSettings::CALM ? static_cast<CalmRunner*>(runner_.get())
                                                       : nullptr;
}

absl::Status EarlyExitMethod::Attach(LlamaModel& model) {
  RETURN_IF_ERROR(Configure(model.config()));
  if (settings_.policy() == EarlyExitSettings::CALM) {
    CalmRunnerOptions options;
    options.settings = settings_;
    options.check_agreement = check_agreement_;
    ASSIGN_OR_RETURN(runner_, CalmRunner::Create(&model, std::move(options)));
    return absl::OkStatus();
  }
  FreeRunnerOptions options;
  options.settings = settings_;
  options.check_agreement = check_agreement_;
  ASSIGN_OR_RETURN(runner_, FreeRunner::Create(&model, std::move(options)));
  return absl::OkStatus();
}

}  // namespace tessera
