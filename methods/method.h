// Method: one adaptive-computation method (early exit, sparse attention, HOMER, HARP, beacon)
// as the runtime sees it. A method is built from its typed settings (configs/
// method_settings.proto) by the registry (methods/registry.h) before the model loads, says what
// the model must load for it, and then hands the runtime its hooks; it never edits the model.
//
//   ASSIGN_OR_RETURN(auto methods, registry.Create(run_config.method()));
//   for (auto& m : methods) RETURN_IF_ERROR(m->Configure(config));  // config.json only
//   ModelOptions options = MergedModelOptions(methods);      // before LlamaModel::Load
//   for (auto& m : methods) RETURN_IF_ERROR(m->Attach(*model));
//   ForwardHooks hooks = methods[0]->Hooks();                 // per step
#ifndef TESSERA_METHODS_METHOD_H_
#define TESSERA_METHODS_METHOD_H_

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "runtime/forward_hooks.h"
#include "runtime/llama_model.h"
#include "runtime/step_engine.h"

namespace tessera {

class Method {
 public:
  virtual ~Method() = default;

  // The settings field that names it ("early_exit", "homer", ...).
  virtual absl::string_view field() const = 0;
  // Called once config.json is read and before any weight is: checks the settings against the
  // model's shape (layer indices, head counts) and resolves defaults that depend on it. Errors
  // name the field.
  virtual absl::Status Configure(const ModelConfig& config) { return absl::OkStatus(); }
  // What the model must load beyond the plain model (heads after some layers, ...).
  virtual ModelOptions Requirements() const { return {}; }
  // Called once the model is loaded on this rank: checks the settings against the model
  // (layer indices, head counts) and sizes the method's own state. Errors name the field.
  virtual absl::Status Attach(LlamaModel& model) { return absl::OkStatus(); }
  // The hooks of the next forward pass; owned by the method.
  virtual ForwardHooks Hooks() { return {}; }
  // A method that runs generation steps itself (FREE's shallow and deep passes), after Attach;
  // owned by the method. Null: the plain step engine.
  virtual StepRunner* Runner() { return nullptr; }
  // The run's counters on this rank, to be summed elementwise over every rank of the job: each
  // rank adds what it counted (its layers, heads and samples) into arrays of the whole model's
  // shape, zeros elsewhere. Name -> values.
  virtual absl::StatusOr<std::map<std::string, std::vector<int64_t>>> RunCounters() {
    return std::map<std::string, std::vector<int64_t>>();
  }
  // --check-rank-agreement: all-gather each step's decisions over the tensor-parallel group and
  // end the job naming the step and the ranks that differ. Before Attach.
  virtual void CheckRankAgreement(bool on) {}
};

// The union of the methods' requirements (heads after every layer any method asks for).
ModelOptions MergedModelOptions(const std::vector<std::unique_ptr<Method>>& methods);

}  // namespace tessera

#endif  // TESSERA_METHODS_METHOD_H_
