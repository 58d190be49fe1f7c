// The calibrated tables of Top-theta as the attention op reads them (shared/specs/top_theta.md
// §7.1, §7.2): for each layer and query head a dense row over the row lengths n in
// [n_lo, n_hi], filled from the sparse calibrated bins by nearest-bin lookup (the nearest
// calibrated n; on a tie the smaller), so that a lookup is
// table[clamp(n, n_lo, n_hi) - n_lo] and lengths outside the calibrated range take the nearest end.
// n_lo and n_hi are common to the whole file.
//
// Built on every rank from the whole file, checked against the model (heads, layers, each
// layer's k), and sliced to the rank's layers and heads: Slice() is the [heads, bins] block of
// one layer, in q_proj's head order.
#ifndef TESSERA_METHODS_TOP_THETA_THRESHOLD_TABLE_H_
#define TESSERA_METHODS_TOP_THETA_THRESHOLD_TABLE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "methods/top_theta/threshold_file.h"

namespace tessera::top_theta {

class ThresholdTable {
 public:
  // `layer_k` holds the runtime's k of every global layer (0: the layer stays dense and must not
  // be in the file). th.txt must cover every head of every layer with k > 0, with that k;
  // sdc.txt (kind kMissingMass) carries no k and is checked for layers and heads only. Errors
  // name `path` and what to change. The columns cover [n_lo, n_hi] when given (a range that
  // contains every bin, to share columns with another table), else the bins' range.
  static absl::StatusOr<ThresholdTable> Build(const std::vector<CalibratedBin>& bins,
                                              const std::string& path, BinFile kind, int64_t heads,
                                              const std::vector<int32_t>& layer_k, int32_t n_lo = 0,
                                              int32_t n_hi = 0);

  int32_t n_lo() const { return n_lo_; }
  int32_t n_hi() const { return n_hi_; }
  int64_t bins() const { return n_hi_ - n_lo_ + 1; }
  // The value for (layer, head) at row length n (nearest bin, clamped).
  float At(int64_t layer, int64_t head, int64_t n) const;
  // [head_end - head_begin, bins()] F32 of `layer`, row-major; empty for a dense layer.
  std::vector<float> Slice(int64_t layer, int64_t head_begin, int64_t head_end) const;

 private:
  int64_t heads_ = 0;
  int32_t n_lo_ = 1, n_hi_ = 1;
  std::vector<std::vector<float>> layers_;  // [layer][head * bins + n - n_lo]; empty: dense
};

}  // namespace tessera::top_theta

#endif  // TESSERA_METHODS_TOP_THETA_THRESHOLD_TABLE_H_
