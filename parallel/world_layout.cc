#include "parallel/world_layout.h"

#include "absl/strings/str_cat.h"

namespace tessera {

std::string WorldLayout::Prefix() const {
  return absl::StrCat("[rank ", rank, " tp", tp_rank(), " pp", pp_rank(), " dp", dp_rank(), "] ");
}

absl::Status CheckWorldSize(const WorldLayout& l, int world_size) {
  if (l.tp < 1 || l.pp < 1 || l.dp < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("--tp, --pp and --dp must be >= 1, got tp=", l.tp, " pp=", l.pp, " dp=", l.dp));
  }
  if (l.world_size() != world_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the layout tp=", l.tp, " x pp=", l.pp, " x dp=", l.dp, " needs ", l.world_size(),
        " ranks but the job has ", world_size, "; launch it with mpirun -np ", l.world_size(),
        " (or srun --mpi=pmix -n ", l.world_size(), ") or choose tp x pp x dp = ", world_size));
  }
  return absl::OkStatus();
}

}  // namespace tessera
