#include "methods/beacon/beacon_windows.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace tessera::beacon {
namespace {

// Window rows [begin, end) that beacon i of a window of `rows` rows condenses, at ratio r.
std::pair<int32_t, int32_t> CoveredRows(BeaconMask mask, int32_t i, int32_t r, int32_t rows) {
  switch (mask) {
    case BeaconMask::kStepExpansion:
      return {0, (i + 1) * r};
    case BeaconMask::kSegmentation:
      return {i * r, (i + 1) * r};
    case BeaconMask::kFullCoverage:
      return {0, rows};
  }
  return {0, 0};
}

int32_t BeaconPosition(BeaconMask mask, int32_t i, int32_t r, int32_t memory, int32_t rows) {
  switch (mask) {
    case BeaconMask::kStepExpansion:
      return memory + (i + 1) * r;
    case BeaconMask::kSegmentation:
      return memory + r;
    case BeaconMask::kFullCoverage:
      return memory + rows;
  }
  return memory;
}

}  // namespace

absl::StatusOr<std::vector<WindowStep>> PlanSteps(const BeaconConfig& c, StreamState& state,
                                                  int64_t count, int64_t declared_total,
                                                  int64_t position_limit) {
  std::vector<WindowStep> steps;
  const int32_t w = c.window;
  while (count > 0) {
    WindowStep step;
    const int32_t m = state.memory, r0 = state.raw;
    step.memory_before = m;
    step.raw_before = r0;
    step.ordinal = static_cast<int32_t>(std::min<int64_t>(count, w - r0));
    const bool full = r0 + step.ordinal == w;
    for (int32_t j = 0; j < step.ordinal; ++j) step.positions.push_back(m + r0 + j);
    if (full) {
      if (state.ratio == 0) state.ratio = ChooseRatio(c, declared_total);
      const int32_t r = state.ratio;
      step.beacons = BeaconsPerWindow(c, r);
      for (int32_t i = 0; i < step.beacons; ++i) {
        step.positions.push_back(BeaconPosition(c.mask, i, r, m, w));
        const auto [a, b] = CoveredRows(c.mask, i, r, w);
        // The visible entries: the memory (attend_previous) and window rows [m + a, m + b).
        std::vector<int32_t> seen;
        if (c.attend_previous) {
          for (int32_t e = 0; e < m; ++e) seen.push_back(e);
        }
        for (int32_t e = m + a; e < m + b; ++e) seen.push_back(e);
        int32_t prefix = 0;
        while (prefix < static_cast<int32_t>(seen.size()) && seen[prefix] == prefix) ++prefix;
        step.prefix_end.push_back(prefix);
        step.extra.emplace_back(seen.begin() + prefix, seen.end());
      }
      for (int32_t e = 0; e < m; ++e) step.keep.push_back(e);
      for (int32_t i = 0; i < step.beacons; ++i) step.keep.push_back(m + w + i);
    }
    step.key_positions = step.positions;
    for (int32_t i = 0; i < step.beacons; ++i) step.key_positions[step.ordinal + i] = m + i;
    const int32_t top = *std::max_element(step.positions.begin(), step.positions.end());
    if (position_limit > 0 && top >= position_limit) {
      return absl::InvalidArgumentError(absl::StrCat(
          "Activation Beacon: after ", state.tokens + step.ordinal, " tokens a position reaches ",
          top, ", past the model's ", position_limit, " positions (max_position_embeddings) at "
          "ratio ", std::max(state.ratio, c.ratios.back()), " (memory ", m, " entries, window ",
          w, "); a larger ratio in method.beacon.ratios holds ",
          "(max_position_embeddings - window) * ratio + window tokens"));
    }
    state.tokens += step.ordinal;
    count -= step.ordinal;
    if (full) {
      state.memory += step.beacons;
      state.raw = 0;
      ++state.windows;
      state.beacon_rows += step.beacons;
    } else {
      state.raw += step.ordinal;
    }
    steps.push_back(std::move(step));
  }
  return steps;
}

std::pair<int64_t, int64_t> MemoryAfter(const BeaconConfig& c, int32_t ratio, int64_t tokens) {
  return {tokens / c.window * BeaconsPerWindow(c, ratio), tokens % c.window};
}

}  // namespace tessera::beacon
