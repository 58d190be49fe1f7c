#include "methods/beacon/beacon_method.h"

#include <iostream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "kernels/status_macros.h"
#include "runtime/context_limit.h"
#include "runtime/rope_frequencies.h"

namespace tessera {

absl::StatusOr<std::unique_ptr<Method>> BeaconMethod::Create(
    const config::MethodSettings& settings) {
  return std::unique_ptr<Method>(new BeaconMethod(settings.beacon()));
}

absl::Status BeaconMethod::Configure(const ModelConfig& config) {
  if (RopeDependsOnLength(config)) {
    return absl::UnimplementedError(absl::StrCat(
        config.source, ": rope_scaling dynamic with Activation Beacon is not supported (its "
        "frequencies change with the length, and beacon keys are cached rotated)"));
  }
  ASSIGN_OR_RETURN(config_, beacon::ResolveBeaconConfig(settings_, config));
  ASSIGN_OR_RETURN(position_limit_, ContextLimit(config, 0));
  model_config_ = config;
  configured_ = true;
  return absl::OkStatus();
}

ModelOptions BeaconMethod::Requirements() const {
  if (!configured_) return {};
  return beacon::BeaconModelOptions(config_, model_config_);
}

absl::Status BeaconMethod::Attach(LlamaModel& model) {
  if (!configured_) return absl::FailedPreconditionError("BeaconMethod::Attach before Configure");
  const ShardPlan& plan = model.plan();
  if (plan.tp_rank == 0 && plan.pp_rank == 0) {
    std::vector<std::string> defaults;
    const ModelOptions options = Requirements();
    for (const ExtraWeight& w : options.extra_weights) {
      const std::string name = absl::StrReplaceAll(
          w.name, {{"{layer}", absl::StrCat(plan.layer_begin)}});
      if (model.weights().extra.count(name) == 0) defaults.push_back(name);
    }
    std::cerr << "Activation Beacon: " << absl::StrJoin(config_.provenance, ", ") << "\n";
    if (!defaults.empty()) {
      std::cerr << "Activation Beacon: not in the checkpoint, initialised as the reference does "
                   "(the beacon embedding from the EOS token's, each projection from its base "
                   "twin): "
                << absl::StrJoin(defaults, ", ") << "\n";
    }
  }
  runner_ = std::make_unique<beacon::BeaconRunner>(&model, config_, position_limit_);
  return absl::OkStatus();
}

}  // namespace tessera
