// One validator per method's settings (configs/method_settings.proto), called by
// ValidateMethodSettings with `path` = "method.<name>". Each checks ranges and combinations that
// do not need the model, and returns InvalidArgument naming the full field path and what to
// change: "method.homer.max_chunk_len: must be > 0, got -3 (...)".
#ifndef TESSERA_LAUNCHER_METHODS_METHOD_VALIDATORS_H_
#define TESSERA_LAUNCHER_METHODS_METHOD_VALIDATORS_H_

#include <string>

#include "absl/status/status.h"
#include "configs/method_settings.pb.h"

namespace tessera {

// shared/specs/early_exit.md: policy, exit_layer, min_exit_layer, threshold, adaptive, cap.
absl::Status ValidateEarlyExitSettings(const config::EarlyExitSettings& s, const std::string& path);

// shared/specs/top_theta.md §5, including the reference CLI's constraints between options.
absl::Status ValidateSparseAttentionSettings(const config::SparseAttentionSettings& s,
                                             const std::string& path);

// shared/specs/homer.md §4.
absl::Status ValidateHomerSettings(const config::HomerSettings& s, const std::string& path);

// shared/specs/harp.md §2 and §7.
absl::Status ValidateHarpSettings(const config::HarpSettings& s, const std::string& path);

// shared/specs/beacon.md §3.
absl::Status ValidateBeaconSettings(const config::BeaconSettings& s, const std::string& path);

}  // namespace tessera

#endif  // TESSERA_LAUNCHER_METHODS_METHOD_VALIDATORS_H_
