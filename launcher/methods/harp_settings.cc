// Validation of HarpSettings (shared/specs/harp.md §2, §5, §7).
#include <set>

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "launcher/methods/field_checks.h"
#include "launcher/methods/method_validators.h"

namespace tessera {

using config::HarpSettings;
using method_checks::FieldError;
using method_checks::Join;

absl::Status ValidateHarpSettings(const HarpSettings& s, const std::string& path) {
  if (s.has_theta_bits()) {
    RETURN_IF_ERROR(method_checks::AtLeastReal(Join(path, "theta_bits"), s.theta_bits(), 0,
                                               "entropy in bits; unset: 1.0"));
  }
  if (s.has_delta()) {
    RETURN_IF_ERROR(method_checks::InRange(Join(path, "delta"), s.delta(), 0, 1, /*hi_open=*/true,
                                           "embedding dropout rate; unset: 0.2"));
  }
  if (s.has_beta_vanilla()) {
    RETURN_IF_ERROR(method_checks::InRange(Join(path, "beta_vanilla"), s.beta_vanilla(), 0, 1,
                                           /*hi_open=*/false,
                                           "weight of the plain logits; unset: 0.5"));
  }
  RETURN_IF_ERROR(
      method_checks::KnownEnum(Join(path, "mode"), HarpSettings::Mode_descriptor(), s.mode()));
  if (s.kv_noise_layers_size() > 0 && s.mode() != HarpSettings::KV_NOISE) {
    return FieldError(Join(path, "kv_noise_layers"),
                      absl::StrCat("applies to mode KV_NOISE only (mode is ",
                                   HarpSettings::Mode_Name(s.mode()), "); remove it"));
  }
  std::set<int32_t> seen;
  for (int i = 0; i < s.kv_noise_layers_size(); ++i) {
    const std::string item = absl::StrCat(path, ".kv_noise_layers[", i, "]");
    RETURN_IF_ERROR(method_checks::AtLeast(item, s.kv_noise_layers(i), 0, "a global layer index"));
    if (!seen.insert(s.kv_noise_layers(i)).second) {
      return FieldError(item, absl::StrCat("layer ", s.kv_noise_layers(i), " is listed twice"));
    }
  }
  return method_checks::AtLeast(Join(path, "max_reframe_len"), s.max_reframe_len(), 0,
                                "tokens; 0: no limit");
}

}  // namespace tessera
