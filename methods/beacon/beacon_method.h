// BeaconMethod: Activation Beacon (shared/specs/beacon.md) as the runtime sees it
// (methods/method.h), built from config::BeaconSettings over the checkpoint's beacon_* keys: it
// asks the loader for the beacon tensors under their official names (sliced like their base
// twins) and the beacon token as an extension row, and runs generation through BeaconRunner.
//
//   registry.Register("beacon", "Activation Beacon", BeaconMethod::Create);
#ifndef TESSERA_METHODS_BEACON_BEACON_METHOD_H_
#define TESSERA_METHODS_BEACON_BEACON_METHOD_H_

#include <memory>

#include "absl/status/statusor.h"
#include "configs/method_settings.pb.h"
#include "methods/beacon/beacon_runner.h"
#include "methods/method.h"

namespace tessera {

class BeaconMethod : public Method {
 public:
  static absl::StatusOr<std::unique_ptr<Method>> Create(const config::MethodSettings& settings);

  absl::string_view field() const override { return "beacon"; }
  // Resolves the configuration (config.json's beacon_* keys under the settings); refuses a
  // rope_scaling whose frequencies depend on the length (keys are stored rotated).
  absl::Status Configure(const ModelConfig& config) override;
  ModelOptions Requirements() const override;
  // Says on the first rank which tensors took the reference's initialisation and where each
  // setting came from.
  absl::Status Attach(LlamaModel& model) override;
  StepRunner* Runner() override { return runner_.get(); }

  const beacon::BeaconConfig& config() const { return config_; }

 private:
  explicit BeaconMethod(config::BeaconSettings settings) : settings_(std::move(settings)) {}

  config::BeaconSettings settings_;
  beacon::BeaconConfig config_;
  ModelConfig model_config_;
  int64_t position_limit_ = 0;
  bool configured_ = false;
  std::unique_ptr<beacon::BeaconRunner> runner_;
};

}  // namespace tessera

#endif  // TESSERA_METHODS_BEACON_BEACON_METHOD_H_
