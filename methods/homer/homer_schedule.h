// HomerSchedule: how HOMER (shared/specs/homer.md §1.2-1.4) cuts a prompt into chunks and which
// layers each level of the merge tree runs, from the prompt's shape and the settings alone.
//
// The prompt is prefix (P tokens) ‖ context (N) ‖ suffix (S). With C = max_chunk_len and the
// context budget per chunk E = C - P - S (>= 2): n0 = ceil(N / E) chunks are rounded up to
// n = 2^h, and chunk i holds context tokens [i e, min((i + 1) e, N)) with e = ceil(N / n). A leaf
// runs layers [0, a_0); a level-k node (k = 1..h) runs [a_{k-1}, a_k) after merging its two
// children at the input of layer a_{k-1}; a_h = L. With M = L - W merge layers, each level gets
// lpc = floor(M / (h + 1)) layers and the leaves the leftover lo = M - lpc (h + 1) on top of
// W + lpc.
#ifndef TESSERA_METHODS_HOMER_HOMER_SCHEDULE_H_
#define TESSERA_METHODS_HOMER_HOMER_SCHEDULE_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"

namespace tessera::homer {

struct PromptShape {
  int64_t prefix = 0;   // P
  int64_t context = 0;  // N
  int64_t suffix = 0;   // S (>= 1)
};

struct ScheduleSettings {
  int64_t max_chunk_len = 2048;  // C
  int64_t target_len = 2048;     // T
  int64_t layers_warmup = 12;    // W
  int64_t layers = 32;           // L, the model's
  // Tests only (spec §8.3): levels may get no layers (lpc = 0, W = L allowed): the chunks run
  // independently and are only concatenated.
  bool allow_empty_levels = false;
};

struct Schedule {
  PromptShape shape;
  ScheduleSettings settings;
  int64_t budget = 0;       // E = C - P - S
  int64_t chunks = 1;       // n = 2^h
  int64_t height = 0;       // h
  int64_t slice = 0;        // e, context tokens per chunk (the last may hold fewer)
  int64_t per_level = 0;    // lpc
  int64_t leftover = 0;     // lo
  int64_t half_target = 0;  // Dh = P + floor(E / 2) + S, a non-root child's target
  // level_end[k] = a_k for k = 0..h: leaves run [0, a_0), level k runs [a_{k-1}, a_k).
  std::vector<int64_t> level_end;

  // Context tokens [begin, end) of chunk i.
  int64_t ChunkBegin(int64_t i) const;
  int64_t ChunkEnd(int64_t i) const;
  // Tokens of leaf i: P + its context + S.
  int64_t LeafTokens(int64_t i) const { return shape.prefix + ChunkEnd(i) - ChunkBegin(i) + shape.suffix; }
  // The first layer a level-k node runs (0 for leaves) and the layer after its last.
  int64_t FirstLayer(int64_t level) const { return level == 0 ? 0 : level_end[level - 1]; }
  int64_t EndLayer(int64_t level) const { return level_end[level]; }
  // The root's target: min(T, P + N + S).
  int64_t RootTarget() const;
  // The targets (left, right) of the children of the level-`level` node whose leaves start at
  // `first_leaf` (§1.4): Dh each, unless the right subtree's first leaf holds fewer than Dh
  // tokens; then the right child keeps its own length and the left C - (that length - P - S).
  std::pair<int64_t, int64_t> ChildTargets(int64_t level, int64_t first_leaf) const;
  // The position after the last suffix token: P + e + S (n >= 2) or P + N + S (n = 1).
  int64_t NextPosition() const;
};

// The schedule of a prompt, or InvalidArgument naming the setting to change: a suffix of 0
// tokens, a chunk with fewer than 2 context tokens (C - P - S < 2), more merge levels than the
// layers after the warm-up allow (lpc = 0), a split with an empty last chunk, or a warm-up that
// leaves no layer to merge.
absl::StatusOr<Schedule> MakeSchedule(const PromptShape& shape, const ScheduleSettings& settings);

}  // namespace tessera::homer

#endif  // TESSERA_METHODS_HOMER_HOMER_SCHEDULE_H_
