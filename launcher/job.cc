#include "launcher/job.h"

#include <cstdio>
#include <cstdlib>
#include <functional>

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "parallel/launch_env.h"
#include "parallel/local_communicator.h"
#if defined(TESSERA_WITH_MPI)
#include <mpi.h>

#include "parallel/mpi_communicator.h"
#endif

namespace tessera {
namespace {

constexpr char kReportedElsewhere[] = "tessera/reported-elsewhere";

}  // namespace

void AbortJob(Job& job, const absl::Status& cause) {
  std::fprintf(stderr, "%stessera: error: %s\n", job.layout().Prefix().c_str(),
               std::string(cause.message()).c_str());
  std::fflush(stderr);
#if defined(TESSERA_WITH_MPI)
  if (job.mpi) MPI_Abort(MPI_COMM_WORLD, 1);
#endif
  std::_Exit(1);
}

bool WantMpi(const WorldLayout& requested) {
#if defined(TESSERA_WITH_MPI)
  const LaunchEnv env = ReadLaunchEnv();
  return requested.world_size() > 1 || (!env.single_process() && env.world_size != 1);
#else
  (void)requested;
  return false;
#endif
}

absl::StatusOr<Job> StartJob(const WorldLayout& requested, bool mpi, absl::Duration timeout) {
  Job job;
  job.mpi = mpi;
  std::unique_ptr<Communicator> world;
#if defined(TESSERA_WITH_MPI)
  if (mpi) {
    world = MpiCommunicator::World(timeout);
    RETURN_IF_ERROR(CheckLaunchEnv(ReadLaunchEnv(), world->rank(), world->size()));
  }
#endif
  if (world == nullptr) {
    if (requested.world_size() > 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          "the layout tp=", requested.tp, " x pp=", requested.pp, " x dp=", requested.dp, " needs ",
          requested.world_size(), " ranks; launch with mpirun -np ", requested.world_size(),
          " (or srun --mpi=pmix -n ", requested.world_size(), ")"));
    }
    world = std::move(LocalCommunicator::Create(1, timeout)[0]);
  }
  ASSIGN_OR_RETURN(job.groups, MakeProcessGroups(std::move(world), requested));
  const LaunchEnv env = ReadLaunchEnv();
  if (env.local_rank >= 0) {
    job.local_rank = env.local_rank;
  } else if (job.groups.world->size() > 1) {
    ASSIGN_OR_RETURN(job.local_rank, LocalRankFromHostnames(*job.groups.world));
  }
  return job;
}

Outcome AgreeOnOutcome(Job& job, const absl::Status& local) {
  return AgreeOnOutcomeIn(job, *job.groups.world, local);
}

Outcome AgreeOnOutcomeIn(Job& job, Communicator& group, const absl::Status& local) {
  if (group.size() == 1) return {local, !local.ok()};
  // A communicator that timed out or failed cannot carry the agreement: end the job now, with the
  // cause printed by this rank.
  if (absl::IsDeadlineExceeded(local) || absl::IsUnavailable(local) || absl::IsAborted(local)) {
    AbortJob(job, local);
  }
  // Each rank contributes (failed, hash of its message); the ranks then agree without another
  // round on who prints what.
  const int32_t hash = local.ok() ? 0 : static_cast<int32_t>(std::hash<std::string>()(std::string(local.message())) & 0x7fffffff);
  int32_t mine[2] = {local.ok() ? 0 : 1, hash};
  std::vector<int32_t> all(2 * group.size());
  const absl::Status gathered = group.AllGather(TensorView::Of(mine, DType::kI32, {2}),
                                                TensorView::Of(all.data(), DType::kI32,
                                                               {static_cast<int64_t>(all.size())}));
  if (!gathered.ok()) return {local.ok() ? gathered : local, true};
  int first_failed = -1;
  bool duplicate = false;
  for (int r = 0; r < group.size(); ++r) {
    if (all[2 * r] == 0) continue;
    if (first_failed < 0) first_failed = r;
    if (r < group.rank() && all[2 * r + 1] == hash) duplicate = true;
  }
  if (first_failed < 0) return {absl::OkStatus(), false};
  if (!local.ok()) return {local, !duplicate};
  return {absl::AbortedError(absl::StrCat(&group == job.groups.world.get() ? "rank " : "group rank ",
                                          first_failed, " failed")),
          false};
}

absl::Status CheckPhase(Job& job, const absl::Status& local) {
  Outcome outcome = AgreeOnOutcome(job, local);
  if (!outcome.status.ok() && !outcome.print) {
    outcome.status.SetPayload(kReportedElsewhere, absl::Cord("1"));
  }
  return outcome.status;
}

bool IsReportedElsewhere(const absl::Status& status) {
  return status.GetPayload(kReportedElsewhere).has_value();
}

}  // namespace tessera
