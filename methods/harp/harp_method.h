// HarpMethod: HARP (shared/specs/harp.md) as the runtime sees it (methods/method.h), built from
// config::HarpSettings; its steps run through HarpRunner (harp_runner.h), in any mode.
//
//   registry.Register("harp", "HARP", HarpMethod::Create);
#ifndef TESSERA_METHODS_HARP_HARP_METHOD_H_
#define TESSERA_METHODS_HARP_HARP_METHOD_H_

#include <memory>

#include "absl/status/statusor.h"
#include "configs/method_settings.pb.h"
#include "methods/harp/harp_runner.h"
#include "methods/method.h"

namespace tessera {

class HarpMethod : public Method {
 public:
  static absl::StatusOr<std::unique_ptr<Method>> Create(const config::MethodSettings& settings);

  absl::string_view field() const override { return "harp"; }
  // Refuses kv_noise_layers past the model's layers.
  absl::Status Configure(const ModelConfig& config) override;
  absl::Status Attach(LlamaModel& model) override;
  StepRunner* Runner() override { return runner_.get(); }
  HarpRunner* harp_runner() const { return runner_.get(); }
  void CheckRankAgreement(bool on) override { check_agreement_ = on; }

 private:
  explicit HarpMethod(config::HarpSettings settings) : settings_(std::move(settings)) {}

  config::HarpSettings settings_;
  bool check_agreement_ = false;
  std::unique_ptr<HarpRunner> runner_;
};

}  // namespace tessera

#endif  // TESSERA_METHODS_HARP_HARP_METHOD_H_
