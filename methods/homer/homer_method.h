// HomerMethod: HOMER (shared/specs/homer.md) as the runtime sees it (methods/method.h), built
// from config::HomerSettings: its bias table is read and checked against the model's layers and
// max_chunk_len before any weight loads, and its generation runs through HomerRunner.
//
//   registry.Register("homer", "HOMER", HomerMethod::Create);
#ifndef TESSERA_METHODS_HOMER_HOMER_METHOD_H_
#define TESSERA_METHODS_HOMER_HOMER_METHOD_H_

#include <memory>

#include "absl/status/statusor.h"
#include "configs/method_settings.pb.h"
#include "methods/homer/homer_runner.h"
#include "methods/method.h"

namespace tessera {

class HomerMethod : public Method {
 public:
  static absl::StatusOr<std::unique_ptr<Method>> Create(const config::MethodSettings& settings);

  absl::string_view field() const override { return "homer"; }
  // Resolves the defaults; refuses layers_warmup >= num_hidden_layers and a bias table of other
  // layers or too few distances.
  absl::Status Configure(const ModelConfig& config) override;
  absl::Status Attach(LlamaModel& model) override;
  StepRunner* Runner() override { return runner_.get(); }

 private:
  explicit HomerMethod(config::HomerSettings settings) : settings_(std::move(settings)) {}

  config::HomerSettings settings_;
  homer::HomerConfig config_;
  std::unique_ptr<homer::BiasTable> bias_;
  std::unique_ptr<homer::HomerRunner> runner_;
};

}  // namespace tessera

#endif  // TESSERA_METHODS_HOMER_HOMER_METHOD_H_
