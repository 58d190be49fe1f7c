// The calibration files of Top-theta (shared/specs/top_theta.md §2, "Files"), in the reference's
// text format, one line per calibrated bin, layer and head GLOBAL indices:
//   th.txt:  L<layer>_H<head>:<n> <theta> <num_samples> <k>
//   sdc.txt: L<layer>_H<head>:<n> <missing_mass> <num_samples>
// Bins are sparse in n. A value read from a file keeps its text, so a file read and written
// back is the same file (lossless); a value made here is written in the shortest form that reads
// back to the same double.
#ifndef TESSERA_METHODS_TOP_THETA_THRESHOLD_FILE_H_
#define TESSERA_METHODS_TOP_THETA_THRESHOLD_FILE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace tessera::top_theta {

enum class BinFile { kThresholds, kMissingMass };  // th.txt, sdc.txt

struct CalibratedBin {
  int32_t layer = 0, head = 0, n = 0;  // global layer and query head; row length n >= 1
  double value = 0.0;                  // theta, or the offline missing mass
  int64_t samples = 0;                 // calibration rows averaged into it (>= 1)
  int32_t k = 0;                       // th.txt: the layer's k; sdc.txt: unused (0)
  std::string text;                    // the value as read (empty: made here)
};

// Parses `text` (the contents of `path`, named in errors with the line number). Refuses
// malformed lines, non-finite values, samples < 1, k < 1, a bin given twice and a layer with
// two different k.
absl::StatusOr<std::vector<CalibratedBin>> ParseBins(const std::string& text,
                                                     const std::string& path, BinFile kind);
absl::StatusOr<std::vector<CalibratedBin>> ReadBins(const std::string& path, BinFile kind);
// One line per bin, in the given order.
std::string FormatBins(const std::vector<CalibratedBin>& bins, BinFile kind);
absl::Status WriteBins(const std::string& path, const std::vector<CalibratedBin>& bins,
                       BinFile kind);
// Sorted by (layer, head, n), the order calibration writes.
void SortBins(std::vector<CalibratedBin>& bins);

}  // namespace tessera::top_theta

#endif  // TESSERA_METHODS_TOP_THETA_THRESHOLD_FILE_H_
