// Which methods this build of Tessera can run. Every command that takes method settings calls
// CheckMethodsAvailable after validating them and before loading the model, so a method that is
// set but not built fails the run instead of being ignored. The registry of built methods
// (methods/registry.h, BuiltInMethods) answers.
#ifndef TESSERA_LAUNCHER_METHODS_METHOD_AVAILABILITY_H_
#define TESSERA_LAUNCHER_METHODS_METHOD_AVAILABILITY_H_

#include "absl/status/status.h"
#include "configs/method_settings.pb.h"

namespace tessera {

// OkStatus when every method present in `settings` is built; otherwise Unimplemented naming
// each one that is not, e.g. "method.homer: HOMER is not built in this version of Tessera
// (Unimplemented); remove it from the run config".
absl::Status CheckMethodsAvailable(const config::MethodSettings& settings);

}  // namespace tessera

#endif  // TESSERA_LAUNCHER_METHODS_METHOD_AVAILABILITY_H_
