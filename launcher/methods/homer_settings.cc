// Validation of HomerSettings (shared/specs/homer.md §1.2, §3, §4). The checks that need the
// prompt (at least 2 context tokens per chunk) or the model (merge levels fit in the layers
// after the warm-up, the bias table covers max_chunk_len) are made when HOMER runs.
#include <tuple>

#include "absl/strings/str_cat.h"
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
  for (const auto& [field, has, value] :
       {std::make_tuple("prefix_len", s.has_prefix_len(), s.prefix_len()),
        std::make_tuple("suffix_len", s.has_suffix_len(), s.suffix_len())}) {
    if (has) {
      RETURN_IF_ERROR(method_checks::Positive(Join(path, field), value,
                                              "tokens copied onto every chunk; unset: 100"));
    }
  }
  const int64_t chunk = s.has_max_chunk_len() ? s.max_chunk_len() : 2048;
  const int64_t affixes = (s.has_prefix_len() ? s.prefix_len() : 100) +
                          (s.has_suffix_len() ? s.suffix_len() : 100);
  if (affixes + 2 > chunk) {
    return method_checks::FieldError(
        Join(path, "max_chunk_len"),
        absl::StrCat("is ", chunk, " but prefix_len + suffix_len is ", affixes,
                     ": every chunk needs room for at least 2 context tokens besides them"));
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
