#include "launcher/methods/method_settings.h"

#include "absl/flags/flag.h"
#include "kernels/status_macros.h"
#include "launcher/flags.h"
#include "launcher/methods/method_validators.h"
#include "launcher/text_proto.h"

namespace tessera {

absl::StatusOr<config::MethodSettings> LoadMethodSettings(const std::string& path) {
  config::MethodSettings settings;
  RETURN_IF_ERROR(ParseTextProtoFile(path, "--method", {}, &settings));
  return settings;
}

absl::Status ApplyMethodFlag(config::RunConfig* config) {
  if (!FlagWasGiven("method")) return absl::OkStatus();
  ASSIGN_OR_RETURN(*config->mutable_method(), LoadMethodSettings(absl::GetFlag(FLAGS_method)));
  return absl::OkStatus();
}

absl::Status ValidateMethodSettings(const config::MethodSettings& m) {
  if (m.has_early_exit()) {
    RETURN_IF_ERROR(ValidateEarlyExitSettings(m.early_exit(), "method.early_exit"));
  }
  if (m.has_sparse_attention()) {
    RETURN_IF_ERROR(
        ValidateSparseAttentionSettings(m.sparse_attention(), "method.sparse_attention"));
  }
  if (m.has_homer()) RETURN_IF_ERROR(ValidateHomerSettings(m.homer(), "method.homer"));
  if (m.has_harp()) RETURN_IF_ERROR(ValidateHarpSettings(m.harp(), "method.harp"));
  if (m.has_beacon()) RETURN_IF_ERROR(ValidateBeaconSettings(m.beacon(), "method.beacon"));
  return absl::OkStatus();
}

}  // namespace tessera
