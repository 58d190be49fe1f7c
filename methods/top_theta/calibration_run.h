// A whole Top-theta calibration on a loaded model replica (shared/specs/top_theta.md §2, §7.3):
// the requests' prefills run with a Calibrator in place of the model's attention policy, the
// replica running the requests r with r % replicas == replica, then every rank's statistics
// are merged over `world` and finalized. Every rank of the job calls it with the same requests;
// every rank returns the same result.
#ifndef TESSERA_METHODS_TOP_THETA_CALIBRATION_RUN_H_
#define TESSERA_METHODS_TOP_THETA_CALIBRATION_RUN_H_

#include <cstdint>
#include <functional>
#include <vector>

#include "absl/status/statusor.h"
#include "methods/top_theta/calibrator.h"
#include "runtime/llama_model.h"

namespace tessera::top_theta {

struct CalibrationRun {
  CalibrationOptions options;
  double sample_fraction = 0.1;  // in (0, 1]
  uint64_t seed = 42;
  int replica = 0, replicas = 1;
  int32_t max_batch = 8;  // sequences per pass
  int64_t max_tokens_per_pass = 4096;
  Communicator* world = nullptr;          // null: one rank
  std::function<void(int64_t)> progress;  // requests finished on this replica
};

struct CalibrationOutcome {
  CalibrationResult result;
  int64_t recorded_rows = 0;  // (layer, head, row) records over the job
};

// `requests`: token ids, BOS first, each shorter than the model's cache limit.
absl::StatusOr<CalibrationOutcome> RunCalibration(LlamaModel& model,
                                                  const std::vector<std::vector<int32_t>>& requests,
                                                  const CalibrationRun& run);

}  // namespace tessera::top_theta

#endif  // TESSERA_METHODS_TOP_THETA_CALIBRATION_RUN_H_
