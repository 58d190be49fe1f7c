// ProcessGroups: the world communicator and the tp, pp and dp groups of this rank.
//
// Built once at start-up from the world communicator and passed down explicitly.
//   tp: the ranks of this rank's stage and replica (size tp), ordered by tp_rank;
//   pp: the stages of this rank's replica at its tp position (size pp), ordered by pp_rank;
//   dp: the replicas at this rank's stage and tp position (size dp), ordered by dp_rank.
#ifndef TESSERA_PARALLEL_PROCESS_GROUPS_H_
#define TESSERA_PARALLEL_PROCESS_GROUPS_H_

#include <memory>

#include "absl/status/statusor.h"
#include "parallel/communicator.h"
#include "parallel/world_layout.h"

namespace tessera {

struct ProcessGroups {
  WorldLayout layout;
  std::unique_ptr<Communicator> world, tp, pp, dp;
};

// Collective over `world`: splits it into the groups of `layout` (whose rank must be the world
// rank and whose size must match; see CheckWorldSize).
absl::StatusOr<ProcessGroups> MakeProcessGroups(std::unique_ptr<Communicator> world,
                                                WorldLayout layout);

}  // namespace tessera

#endif  // TESSERA_PARALLEL_PROCESS_GROUPS_H_
