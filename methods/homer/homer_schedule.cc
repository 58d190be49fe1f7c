#include "methods/homer/homer_schedule.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace tessera::homer {

int64_t Schedule::ChunkBegin(int64_t i) const { return std::min(i * slice, shape.context); }
int64_t Schedule::ChunkEnd(int64_t i) const { return std::min((i + 1) * slice, shape.context); }

int64_t Schedule::RootTarget() const {
  return std::min(settings.target_len, shape.prefix + shape.context + shape.suffix);
}

std::pair<int64_t, int64_t> Schedule::ChildTargets(int64_t level, int64_t first_leaf) const {
  const int64_t right_first_leaf = first_leaf + (int64_t{1} << (level - 1));
  const int64_t right = LeafTokens(right_first_leaf);
  if (right < half_target) {
    return {settings.max_chunk_len - (right - shape.prefix - shape.suffix), right};
  }
  return {half_target, half_target};
}

int64_t Schedule::NextPosition() const {
  return shape.prefix + (chunks == 1 ? shape.context : slice) + shape.suffix;
}

absl::StatusOr<Schedule> MakeSchedule(const PromptShape& shape, const ScheduleSettings& settings) {
  Schedule s;
  s.shape = shape;
  s.settings = settings;
  const int64_t C = settings.max_chunk_len, P = shape.prefix, N = shape.context,
                S = shape.suffix, L = settings.layers, W = settings.layers_warmup;
  if (P < 0 || N < 0) return absl::InvalidArgumentError("HOMER: negative prefix or context");
  if (S < 1) {
    return absl::InvalidArgumentError(
        "HOMER needs a suffix of at least 1 token (method.homer.suffix_len): its last token is "
        "the query that ranks the context");
  }
  s.budget = C - P - S;
  if (s.budget < 2) {
    return absl::InvalidArgumentError(absl::StrCat(
        "HOMER: method.homer.max_chunk_len ", C, " leaves ", s.budget,
        " context tokens per chunk after the prefix (", P, ") and suffix (", S,
        "); it needs at least 2: raise max_chunk_len or shorten prefix_len / suffix_len"));
  }
  if (W < 0 || W > L || (W == L && !settings.allow_empty_levels)) {
    return absl::InvalidArgumentError(absl::StrCat("HOMER: method.homer.layers_warmup ", W,
                                                   " leaves no layer to merge in; the model has ",
                                                   L, " layers: use at most ", L - 1));
  }
  const int64_t n0 = std::max<int64_t>(1, (N + s.budget - 1) / s.budget);
  while ((int64_t{1} << s.height) < n0) ++s.height;
  s.chunks = int64_t{1} << s.height;
  s.slice = (N + s.chunks - 1) / s.chunks;
  if (s.chunks > 1 && (s.chunks - 1) * s.slice >= N) {
    return absl::InvalidArgumentError(absl::StrCat(
        "HOMER: ", N, " context tokens split into ", s.chunks, " chunks of ", s.slice,
        " leave the last chunk empty; change max_chunk_len (", C, ") or the prompt's length"));
  }
  const int64_t merge_layers = L - W;
  s.per_level = merge_layers / (s.height + 1);
  if (s.per_level < 1 && !settings.allow_empty_levels) {
    const std::string fix =
        L - s.height - 1 >= 0
            ? absl::StrCat("lower layers_warmup to at most ", L - s.height - 1,
                           " or raise max_chunk_len")
            : absl::StrCat("the model's ", L, " layers cannot hold that many levels: raise "
                           "max_chunk_len (fewer chunks) or shorten the prompt");
    return absl::InvalidArgumentError(absl::StrCat(
        "HOMER: a context of ", N, " tokens needs ", s.height, " merge levels (", s.chunks,
        " chunks of at most ", s.budget, " tokens), but the ", merge_layers,
        " layers after layers_warmup (", W, ") give each level none: ", fix));
  }
  s.leftover = merge_layers - s.per_level * (s.height + 1);
  s.half_target = P + s.budget / 2 + S;
  const int64_t a0 = W + s.leftover + s.per_level;
  for (int64_t k = 0; k <= s.height; ++k) s.level_end.push_back(a0 + k * s.per_level);
  return s;
}

}  // namespace tessera::homer
