#include "methods/registry.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kernels/status_macros.h"
#include "methods/beacon/beacon_method.h"
#include "methods/early_exit/early_exit_method.h"
#include "methods/harp/harp_method.h"
#include "methods/homer/homer_method.h"
#include "methods/top_theta/top_theta_method.h"

namespace tessera {
namespace {

// The method sections of MethodSettings that are set, with the names users know.
struct SetMethod {
  std::string field, display;
};

std::vector<SetMethod> SetMethods(const config::MethodSettings& m) {
  const SetMethod all[] = {{"early_exit", "Early exit"},
                           {"sparse_attention", "Sparse attention (Top-theta / Top-k)"},
                           {"homer", "HOMER"},
                           {"harp", "HARP"},
                           {"beacon", "Activation Beacon"}};
  const bool present[] = {m.has_early_exit(), m.has_sparse_attention(), m.has_homer(),
                          m.has_harp(), m.has_beacon()};
  std::vector<SetMethod> out;
  for (size_t i = 0; i < std::size(all); ++i) {
    if (present[i]) out.push_back(all[i]);
  }
  return out;
}

}  // namespace

ModelOptions MergedModelOptions(const std::vector<std::unique_ptr<Method>>& methods) {
  ModelOptions merged;
  for (const auto& m : methods) {
    const ModelOptions options = m->Requirements();
    merged.extra_weights.insert(merged.extra_weights.end(), options.extra_weights.begin(),
                                options.extra_weights.end());
    if (options.extension.count > 0) merged.extension = options.extension;
    for (int64_t l : options.head_after_layers) {
      if (std::find(merged.head_after_layers.begin(), merged.head_after_layers.end(), l) ==
          merged.head_after_layers.end()) {
        merged.head_after_layers.push_back(l);
      }
    }
  }
  return merged;
}

absl::Status MethodRegistry::Register(const std::string& field, const std::string& display,
                                      Factory factory) {
  if (Has(field)) {
    return absl::AlreadyExistsError(absl::StrCat("method.", field, " is registered twice"));
  }
  factories_[field] = Entry{display, std::move(factory)};
  return absl::OkStatus();
}

absl::Status MethodRegistry::CheckAvailable(const config::MethodSettings& settings) const {
  std::vector<std::string> missing;
  for (const SetMethod& m : SetMethods(settings)) {
    if (Has(m.field)) continue;
    missing.push_back(absl::StrCat(
        "method.", m.field, ": ", m.display,
        " is not built in this version of Tessera (Unimplemented); remove it from the run "
        "config (the method section of --config, the --method file, or --set method.",
        m.field, ".*)"));
  }
  if (missing.empty()) return absl::OkStatus();
  return absl::UnimplementedError(absl::StrJoin(missing, "\n"));
}

absl::StatusOr<std::vector<std::unique_ptr<Method>>> MethodRegistry::Create(
    const config::MethodSettings& settings) const {
  RETURN_IF_ERROR(CheckAvailable(settings));
  std::vector<std::unique_ptr<Method>> methods;
  for (const SetMethod& m : SetMethods(settings)) {
    ASSIGN_OR_RETURN(std::unique_ptr<Method> method, factories_.at(m.field).factory(settings));
    methods.push_back(std::move(method));
  }
  return methods;
}

MethodRegistry BuiltInMethods() {
  MethodRegistry registry;
  (void)registry.Register("early_exit", "Early exit", EarlyExitMethod::Create);
  (void)registry.Register("harp", "HARP", HarpMethod::Create);
  (void)registry.Register("homer", "HOMER", HomerMethod::Create);
  (void)registry.Register("beacon", "Activation Beacon", BeaconMethod::Create);
  (void)registry.Register("sparse_attention", "Sparse attention (Top-theta / Top-k)",
                          top_theta::TopThetaMethod::Create);
  return registry;
}

}  // namespace tessera
