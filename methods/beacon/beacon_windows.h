// The window state machine of Activation Beacon (shared/specs/beacon.md §4), per request: which
// rows each forward pass runs, at which positions, what each beacon row sees, and what the cache
// keeps afterwards. Host logic only, identical on every rank (it depends on token counts alone).
//
// A request's cache slot holds [M beacon entries (memory) | R raw entries] (stride == window).
// Feeding tokens fills the raw window; the pass that brings the W-th raw token also runs
// k = S / r beacon rows after it (a condensation), and afterwards the slot keeps the memory and
// the k new beacons only: M += k, R = 0. Positions are compressed coordinates: memory entry j sits
// at j, raw and new tokens continue at M + (window row); beacon i of a window queries at
// M + (i + 1) r (step-expansion), M + r (segmentation) or M + W (full-coverage) and its key is
// stored at its memory position M + i.
//
//   StreamState s;                       // a fresh request (reset)
//   ASSIGN_OR_RETURN(auto steps, PlanSteps(config, s, prompt_tokens, prompt_tokens));
#ifndef TESSERA_METHODS_BEACON_BEACON_WINDOWS_H_
#define TESSERA_METHODS_BEACON_BEACON_WINDOWS_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "methods/beacon/beacon_config.h"

namespace tessera::beacon {

// One request's stream (the reference's Memory). All zero after a reset.
struct StreamState {
  int32_t memory = 0;   // M: beacon entries
  int32_t raw = 0;      // R: raw entries of the current window
  int64_t tokens = 0;   // ordinal tokens fed so far
  int32_t ratio = 0;    // chosen at the first full window; 0 before
  int64_t windows = 0;  // windows condensed
  int64_t beacon_rows = 0;  // beacon rows run
};

// One forward pass's rows of one request: `ordinal` input tokens, then `beacons` beacon rows.
struct WindowStep {
  int32_t memory_before = 0, raw_before = 0;  // the slot holds M + R entries before the pass
  int32_t ordinal = 0;
  int32_t beacons = 0;  // 0, or k for a condensation
  std::vector<int32_t> positions;      // [ordinal + beacons] query positions
  std::vector<int32_t> key_positions;  // [ordinal + beacons] where each key is stored
  // Beacon i sees the slot's entries [0, prefix_end[i]), then extra[i] (increasing), then itself.
  std::vector<int32_t> prefix_end;
  std::vector<std::vector<int32_t>> extra;
  // After a condensation the slot keeps these entries (memory, then the new beacons).
  std::vector<int32_t> keep;
};

// Plans feeding `count` more tokens to the stream and advances `state` past them. The ratio is
// chosen (ChooseRatio) at the stream's first full window from `declared_total`, the length the
// request declares (its prompt, for a prompt). InvalidArgument when a position would reach
// `position_limit` (> 0; max_position_embeddings under plain RoPE), naming the ratio.
absl::StatusOr<std::vector<WindowStep>> PlanSteps(const BeaconConfig& config, StreamState& state,
                                                  int64_t count, int64_t declared_total,
                                                  int64_t position_limit);

// The memory and raw entries after `tokens` tokens at ratio r (stride == window):
// M = floor(tokens / W) * (W / r), R = tokens mod W (spec §8.2).
std::pair<int64_t, int64_t> MemoryAfter(const BeaconConfig& config, int32_t ratio, int64_t tokens);

}  // namespace tessera::beacon

#endif  // TESSERA_METHODS_BEACON_BEACON_WINDOWS_H_
