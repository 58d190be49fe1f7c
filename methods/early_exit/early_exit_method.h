// EarlyExitMethod: the early-exit method as the runtime sees it (methods/method.h), built from
// config::EarlyExitSettings. Policies FREE and STATIC run through FreeRunner (free_runner.h),
// CALM through CalmRunner (calm_runner.h).
//
//   registry.Register("early_exit", "Early exit", EarlyExitMethod::Create);
#ifndef TESSERA_METHODS_EARLY_EXIT_EARLY_EXIT_METHOD_H_
#define TESSERA_METHODS_EARLY_EXIT_EARLY_EXIT_METHOD_H_

#include <memory>

#include "absl/status/statusor.h"
#include "configs/method_settings.pb.h"
#include "methods/early_exit/calm_runner.h"
#include "methods/early_exit/free_runner.h"
#include "methods/method.h"

namespace tessera {

class EarlyExitMethod : public Method {
 public:
  static absl::StatusOr<std::unique_ptr<Method>> Create(const config::MethodSettings& settings);

  absl::string_view field() const override { return "early_exit"; }
  // Resolves exit_layer (unset: from config.json's tessera_exit_layers) or CALM's check_layers
  // and checks them and vocab_k against the model.
  absl::Status Configure(const ModelConfig& config) override;
  ModelOptions Requirements() const override;  // a head after each exit's last block
  absl::Status Attach(LlamaModel& model) override;
  StepRunner* Runner() override { return runner_.get(); }
  // The runner as FreeRunner (FREE and STATIC) or CalmRunner (CALM); null for the other policy.
  FreeRunner* free_runner() const;
  CalmRunner* calm_runner() const;
  void CheckRankAgreement(bool on) override { check_agreement_ = on; }

  const config::EarlyExitSettings& settings() const { return settings_; }

 private:
  explicit EarlyExitMethod(config::EarlyExitSettings settings) : settings_(std::move(settings)) {}

  config::EarlyExitSettings settings_;
  bool check_agreement_ = false;
  std::unique_ptr<StepRunner> runner_;
};

}  // namespace tessera

#endif  // TESSERA_METHODS_EARLY_EXIT_EARLY_EXIT_METHOD_H_
