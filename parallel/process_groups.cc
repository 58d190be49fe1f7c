#include "parallel/process_groups.h"

#include "kernels/status_macros.h"

namespace tessera {

absl::StatusOr<ProcessGroups> MakeProcessGroups(std::unique_ptr<Communicator> world,
                                                WorldLayout layout) {
  layout.rank = world->rank();
  RETURN_IF_ERROR(CheckWorldSize(layout, world->size()));
  ProcessGroups g;
  g.layout = layout;
  const int replica = layout.dp_rank(), stage = layout.pp_rank(), tp_rank = layout.tp_rank();
  ASSIGN_OR_RETURN(g.tp, world->Split(replica * layout.pp + stage, tp_rank, "tp"));
  ASSIGN_OR_RETURN(g.pp, world->Split(replica * layout.tp + tp_rank, stage, "pp"));
  ASSIGN_OR_RETURN(g.dp, world->Split(stage * layout.tp + tp_rank, replica, "dp"));
  g.world = std::move(world);
  return g;
}

}  // namespace tessera
