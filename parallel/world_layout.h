// WorldLayout: how the world's ranks divide into data, pipeline and tensor parallel groups.
//
// world = dp x pp x tp with tp varying fastest: tp_rank = rank % tp, pp_rank = (rank / tp) % pp,
// dp_rank = rank / (tp * pp). Ranks of one tensor-parallel group are neighbours (one node);
// pipeline stages of a replica are tp ranks apart.
#ifndef TESSERA_PARALLEL_WORLD_LAYOUT_H_
#define TESSERA_PARALLEL_WORLD_LAYOUT_H_

#include <string>

#include "absl/status/statusor.h"

namespace tessera {

struct WorldLayout {
  int tp = 1, pp = 1, dp = 1;
  int rank = 0;

  int world_size() const { return tp * pp * dp; }
  int tp_rank() const { return rank % tp; }
  int pp_rank() const { return (rank / tp) % pp; }
  int dp_rank() const { return rank / (tp * pp); }
  bool first_stage() const { return pp_rank() == 0; }
  bool last_stage() const { return pp_rank() == pp - 1; }
  // World rank of the rank at the same dp/tp position in pipeline stage `stage`.
  int RankOfStage(int stage) const { return (dp_rank() * pp + stage) * tp + tp_rank(); }
  // "[rank 3 tp1 pp1 dp0] " for messages.
  std::string Prefix() const;
};

// Checks tp, pp, dp >= 1 and tp*pp*dp == world_size; the message says which layouts fit.
absl::Status CheckWorldSize(const WorldLayout& layout, int world_size);

}  // namespace tessera

#endif  // TESSERA_PARALLEL_WORLD_LAYOUT_H_
