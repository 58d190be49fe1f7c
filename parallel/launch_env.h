// LaunchEnv: what the launcher (mpirun, srun, mpiexec.hydra) says about this process, read from
// its environment variables, so that it can be cross-checked with MPI before any work starts.
//
// The commonest multi-node mistake is a job whose processes each start their own MPI world: a
// Slurm job started with plain `srun` (no `--mpi=pmix`), or a binary run directly inside an
// sbatch script. MPI then reports rank 0 of 1 in every process while the launcher said 8 tasks;
// CheckLaunchEnv turns that into an error that names both views and says what to change.
//
//   LaunchEnv env = ReadLaunchEnv();
//   RETURN_IF_ERROR(CheckLaunchEnv(env, world->rank(), world->size()));
//   int local_rank = env.local_rank;
//   if (local_rank < 0) ASSIGN_OR_RETURN(local_rank, LocalRankFromHostnames(*world));
#ifndef TESSERA_PARALLEL_LAUNCH_ENV_H_
#define TESSERA_PARALLEL_LAUNCH_ENV_H_

#include <cstdlib>
#include <functional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "parallel/communicator.h"

namespace tessera {

struct LaunchEnv {
  // -1 where the environment does not say.
  int rank = -1, world_size = -1, local_rank = -1, local_size = -1;
  // The launcher the values came from: "Open MPI", "MPICH/Hydra", "Slurm", "PMIx"; empty when
  // no launcher variable is set (a single-process run).
  std::string source;
  // Slurm's values describe the batch script itself (no job step: SLURM_PROCID without
  // SLURM_STEP_ID), i.e. the binary was run directly by the script, not by srun.
  bool slurm_batch_step = false;
  // The variables read, for messages: "SLURM_PROCID=3 SLURM_NTASKS=8 SLURM_LOCALID=3".
  std::string variables;

  bool single_process() const { return source.empty(); }
};

// Reads the launcher's variables through `getenv` (injectable for tests). When several
// launchers' variables are present the most specific wins: Open MPI's mpirun
// (OMPI_COMM_WORLD_*), then MPICH/Hydra (PMI_RANK, PMI_SIZE, MPI_LOCALRANKID, MPI_LOCALNRANKS),
// then Slurm (SLURM_PROCID, SLURM_STEP_NUM_TASKS / SLURM_NTASKS, SLURM_LOCALID, and the local
// size from SLURM_STEP_TASKS_PER_NODE / SLURM_TASKS_PER_NODE / SLURM_NTASKS_PER_NODE, which may
// read "4(x2),3" and are indexed by SLURM_NODEID), then bare PMIx (PMIX_RANK, no size).
// mpirun inside a Slurm allocation therefore reports Open MPI, not the batch step's SLURM_*.
// Slurm ranks PMIx: Open MPI's MPI_Init sets PMIX_RANK=0 in a singleton process, so after
// MPI_Init a binary run directly in a batch script would otherwise read as PMIx rank 0 (seen
// with Debian 12's Open MPI 4.1 and Slurm 22.05). Malformed numbers are treated as absent.
LaunchEnv ReadLaunchEnv(const std::function<const char*(const char*)>& getenv = ::getenv);

// Checks the launcher's view against MPI's. FailedPrecondition naming both (and the fix) when
// they disagree; OK when the environment says nothing (single process, or an unknown launcher).
absl::Status CheckLaunchEnv(const LaunchEnv& env, int mpi_rank, int mpi_size);

// Collective over `world`: this rank's index among the ranks on the same host (by a hash of
// gethostname()), counting lower world ranks only. For launchers that do not export a local
// rank; every rank must call it.
absl::StatusOr<int> LocalRankFromHostnames(Communicator& world);

// Parses Slurm's tasks-per-node syntax ("4", "4(x2)", "2(x3),1") and returns the count for
// node `node_id`, or -1 when malformed or out of range. Exposed for tests.
int SlurmTasksOnNode(const std::string& tasks_per_node, int node_id);

}  // namespace tessera

#endif  // TESSERA_PARALLEL_LAUNCH_ENV_H_
