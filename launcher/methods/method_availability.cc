#include "launcher/methods/method_availability.h"

#include "methods/registry.h"

namespace tessera {

absl::Status CheckMethodsAvailable(const config::MethodSettings& settings) {
  return BuiltInMethods().CheckAvailable(settings);
}

}  // namespace tessera
