// HOMER's token reduction (shared/specs/homer.md §1.5): which rows of a node survive its last
// layer. sig_j = raw_j - bias[layer][pos_last - pos_j] for context rows, +inf for the prefix and
// suffix; the rows - target rows of smallest sig go (ties: the lower index first), in F32. The
// same inputs give the same keep-list on every rank (raw is MAX-reduced, hence bit-identical).
#ifndef TESSERA_METHODS_HOMER_TOKEN_SELECTION_H_
#define TESSERA_METHODS_HOMER_TOKEN_SELECTION_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "methods/homer/bias_table.h"

namespace tessera::homer {

// raw, positions and prunable have one element per row; the last row is the query. `bias` may
// be null (no calibration: sig = raw). Returns the kept row indices, strictly increasing, of
// size min(rows, max(target, non-prunable rows)). OutOfRange when a distance is past the table.
absl::StatusOr<std::vector<int32_t>> SelectKeep(absl::Span<const float> raw,
                                                absl::Span<const int32_t> positions,
                                                absl::Span<const uint8_t> prunable,
                                                const BiasTable* bias, int64_t layer,
                                                int64_t target);

}  // namespace tessera::homer

#endif  // TESSERA_METHODS_HOMER_TOKEN_SELECTION_H_
