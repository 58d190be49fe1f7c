#include "methods/homer/homer_method.h"

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"

namespace tessera {

absl::StatusOr<std::unique_ptr<Method>> HomerMethod::Create(
    const config::MethodSettings& settings) {
  return std::unique_ptr<Method>(new HomerMethod(settings.homer()));
}

absl::Status HomerMethod::Configure(const ModelConfig& config) {
  config_ = homer::ResolveSettings(settings_, config);
  if (config_.schedule.layers_warmup >= config.num_hidden_layers) {
    return absl::InvalidArgumentError(absl::StrCat(
        "method.homer.layers_warmup: ", config_.schedule.layers_warmup,
        " leaves no layer to merge in; the model has ", config.num_hidden_layers,
        " layers: use at most ", config.num_hidden_layers - 1));
  }
  ASSIGN_OR_RETURN(homer::BiasTable table, homer::ReadBiasTable(settings_.bias_path()));
  RETURN_IF_ERROR(homer::CheckBiasFits(table, settings_.bias_path(), config.num_hidden_layers,
                                       config_.schedule.max_chunk_len));
  bias_ = std::make_unique<homer::BiasTable>(std::move(table));
  return absl::OkStatus();
}

absl::Status HomerMethod::Attach(LlamaModel& model) {
  if (bias_ == nullptr) {
    return absl::FailedPreconditionError("HomerMethod::Attach before Configure");
  }
  runner_ = std::make_unique<homer::HomerRunner>(&model, config_, std::move(bias_));
  return absl::OkStatus();
}

}  // namespace tessera
