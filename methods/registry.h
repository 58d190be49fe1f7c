// MethodRegistry: the methods this build of Tessera can run, by settings field. The launcher
// builds one registry (BuiltInMethods) and asks it, before any model is loaded, to create the
// methods a run config sets; a method that is set but not registered is refused with
// Unimplemented, never ignored. Tests register their own methods on a registry of their own.
#ifndef TESSERA_METHODS_REGISTRY_H_
#define TESSERA_METHODS_REGISTRY_H_

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "configs/method_settings.pb.h"
#include "methods/method.h"

namespace tessera {

class MethodRegistry {
 public:
  // Builds a method from the run's settings (its own section is present).
  using Factory =
      std::function<absl::StatusOr<std::unique_ptr<Method>>(const config::MethodSettings&)>;

  // `field` is the MethodSettings field ("homer"), `display` the name users know ("HOMER").
  // AlreadyExists when the field is registered twice.
  absl::Status Register(const std::string& field, const std::string& display, Factory factory);
  bool Has(const std::string& field) const { return factories_.count(field) > 0; }

  // OkStatus when every method set in `settings` is registered; otherwise Unimplemented naming
  // each one that is not and how to remove it.
  absl::Status CheckAvailable(const config::MethodSettings& settings) const;
  // The methods set in `settings`, in the order of MethodSettings' fields.
  absl::StatusOr<std::vector<std::unique_ptr<Method>>> Create(
      const config::MethodSettings& settings) const;

 private:
  struct Entry {
    std::string display;
    Factory factory;
  };
  std::map<std::string, Entry> factories_;
};

// The methods built into this version of Tessera: early_exit (FREE, STATIC, CALM), harp
// (modes EXACT, SHADOW_LAZY, KV_NOISE), homer and sparse_attention (Top-theta, Top-k).
MethodRegistry BuiltInMethods();

}  // namespace tessera

#endif  // TESSERA_METHODS_REGISTRY_H_
