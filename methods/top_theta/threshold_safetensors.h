// The versioned binary form of Top-theta calibration (shared/specs/top_theta.md §7.1):
// calibration_dir/thresholds.safetensors with
//   "theta"   F32 [layers, heads, n_hi - n_lo + 1]: the calibrated values, 0 where no bin;
//   "samples" I32 [layers, heads, n_hi - n_lo + 1]: rows averaged into each bin, 0 where none;
//   "missing_mass" F32 [same], when sdc.txt's terms were calibrated too (with their
//   "mass_samples");
// and string metadata: format "tessera.top_theta", version "1", layers, heads, n_lo, n_hi,
// placement, layer_k (a JSON list). Values are F32 (th.txt keeps the full double); the sparse
// bins are recovered from "samples".
#ifndef TESSERA_METHODS_TOP_THETA_THRESHOLD_SAFETENSORS_H_
#define TESSERA_METHODS_TOP_THETA_THRESHOLD_SAFETENSORS_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "methods/top_theta/threshold_file.h"

namespace tessera::top_theta {

struct ThresholdArchive {
  int64_t layers = 0, heads = 0;
  std::string placement;                                // "PRE_SOFTMAX" / "POST_SOFTMAX"
  std::vector<int32_t> layer_k;                         // per global layer
  std::vector<CalibratedBin> thresholds, missing_mass;  // sorted by (layer, head, n)
};

absl::Status WriteThresholdSafetensors(const std::string& path, const ThresholdArchive& archive);
// Errors name the file and what is wrong (format, version, shapes, a bin past the model).
absl::StatusOr<ThresholdArchive> ReadThresholdSafetensors(const std::string& path);

}  // namespace tessera::top_theta

#endif  // TESSERA_METHODS_TOP_THETA_THRESHOLD_SAFETENSORS_H_
