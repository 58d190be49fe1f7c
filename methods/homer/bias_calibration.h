// HOMER's bias calibration (shared/specs/homer.md §3): the plain model over neutral sequences of
// exactly C tokens (BOS first); in every layer, the significance m_j of each key j (the largest
// pre-softmax logit any head gives it from the last token, Backend::KeyScores, MAX-reduced over
// the tensor-parallel group), and bias[layer][C - 1 - j] = mean over sequences of m_j.
//
// Sharded: each data-parallel replica runs its own sequences; each pipeline stage fills its own
// layers; the table is summed over every rank of the job (one all-reduce) and divided by the
// tensor-parallel size and the sequence count, so every rank returns the same table.
#ifndef TESSERA_METHODS_HOMER_BIAS_CALIBRATION_H_
#define TESSERA_METHODS_HOMER_BIAS_CALIBRATION_H_

#include <functional>
#include <vector>

#include "absl/status/statusor.h"
#include "methods/homer/bias_table.h"
#include "parallel/communicator.h"
#include "runtime/llama_model.h"

namespace tessera::homer {

// Token windows of exactly `length` tokens, each BOS then length - 1 tokens of the texts' ids
// laid end to end (`texts` already encoded, without BOS); at most `limit` (0: all) windows. The
// tail that does not fill a window is dropped.
std::vector<std::vector<int32_t>> CalibrationWindows(const std::vector<std::vector<int32_t>>& texts,
                                                     int32_t bos, int64_t length, int64_t limit);

struct BiasCalibration {
  // This replica's sequences (all of one length C); `total` counts every replica's.
  std::vector<std::vector<int32_t>> sequences;
  int64_t total = 0;
  Communicator* world = nullptr;  // every rank of the job; null: one rank
  std::function<void(int64_t)> progress;  // called with 1 per sequence; may be empty
};

absl::StatusOr<BiasTable> CalibrateBias(LlamaModel& model, const BiasCalibration& run);

}  // namespace tessera::homer

#endif  // TESSERA_METHODS_HOMER_BIAS_CALIBRATION_H_
