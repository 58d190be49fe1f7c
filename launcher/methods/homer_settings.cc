// Validation of HomerSettings (shared/specs/homer.md §1.2, §3, §4). The checks that need the
// prompt (at least 2 context tokens per chunk) or the model (merge levels fit in the layers
// after the warm-up, the bias table covers max_chunk_len) are made when HOMER runs.
#include "kernels/status_macros.h"
#include "launcher/methods/field_checks.h"
#include "launcher/methods/method_validators.h"

namespace tessera {

using method_checks::Join;

absl::Status ValidateHomerSettings(const config::HomerSettings& s, const std::string& path) {
  if (s.has_max_chunk_len()) {
    RETURN_IF_ERROR(method_checks::Positive(Join(path, "max_chunk_len"), s.max_chunk_len(),
                                            "tokens per chunk; unset: 2048"));
  }
  if (s.has_target_len()) {
    RETURN_IF_ERROR(method_checks::Positive(Join(path, "target_len"), s.target_len(),
                                            "KV entries kept; unset: 2048"));
  }
  if (s.has_layers_warmup()) {
    RETURN_IF_ERROR(method_checks::AtLeast(Join(path, "layers_warmup"), s.layers_warmup(), 0,
                                           "layers before the first merge; unset: 12"));
  }
  if (s.bias_path().empty()) {
    return method_checks::FieldError(
        Join(path, "bias_path"),
        "is required: the bias table [layers, distances] written by `tessera calibrate` for "
        "this model (HOMER ranks tokens by attention logit minus this bias)");
  }
  return absl::OkStatus();
}

}  // namespace tessera
