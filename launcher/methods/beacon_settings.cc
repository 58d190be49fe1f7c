// Validation of BeaconSettings (shared/specs/beacon.md §3) on its own: a field left unset takes
// the checkpoint's config.json beacon_* key, so what depends on those (a ratio against the
// checkpoint's stride, the positions against the model's window) is checked when the model's
// config is read (methods/beacon/beacon_config.h).
#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "launcher/methods/field_checks.h"
#include "launcher/methods/method_validators.h"

namespace tessera {

using config::BeaconSettings;
using method_checks::FieldError;
using method_checks::Join;

absl::Status ValidateBeaconSettings(const BeaconSettings& s, const std::string& path) {
  RETURN_IF_ERROR(method_checks::KnownEnum(Join(path, "attention"),
                                           BeaconSettings::Attention_descriptor(), s.attention()));
  int64_t window = 0;  // 0: the checkpoint's
  if (s.has_window()) {
    RETURN_IF_ERROR(method_checks::Positive(Join(path, "window"), s.window(),
                                            "raw tokens per window; unset: 1024"));
    window = s.window();
  }
  int64_t stride = s.has_window() ? window : 0;
  if (s.has_stride()) {
    const std::string field = Join(path, "stride");
    RETURN_IF_ERROR(method_checks::Positive(field, s.stride(), "window advance; unset: window"));
    if (s.has_window() && s.stride() > window) {
      return FieldError(field, absl::StrCat("must be <= window (", window, "), got ", s.stride()));
    }
    stride = s.stride();
  }
  const bool full_coverage = s.attention() == BeaconSettings::FULL_COVERAGE;
  for (int i = 0; i < s.ratios_size(); ++i) {
    const std::string item = absl::StrCat(path, ".ratios[", i, "]");
    const int32_t r = s.ratios(i);
    RETURN_IF_ERROR(method_checks::Positive(item, r, "condensing ratio"));
    if (stride == 0) continue;  // checked against the checkpoint's stride at load
    if (r > stride) {
      return FieldError(item, absl::StrCat("must be <= stride (", stride, "), got ", r,
                                           " (a window would condense into no beacon)"));
    }
    if (!full_coverage && s.has_attention() && stride % r != 0) {
      return FieldError(item, absl::StrCat(r, " does not divide stride ", stride,
                                           "; use a divisor (such as 2, 4, 8, 16, 32, 64, 128 for "
                                           "1024) or attention: FULL_COVERAGE"));
    }
  }
  if (s.has_adapt_new_tokens()) {
    const std::string field = Join(path, "adapt_new_tokens");
    if (s.ratios_size() == 1) {
      return FieldError(field,
                        "applies only when several ratios are listed to choose from; "
                        "remove it or list the ratios");
    }
    RETURN_IF_ERROR(method_checks::AtLeast(field, s.adapt_new_tokens(), 0, "unset: 1024"));
  }
  return absl::OkStatus();
}

}  // namespace tessera
