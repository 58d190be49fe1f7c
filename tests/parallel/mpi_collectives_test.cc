// The collective suite under mpirun, on MpiCommunicator::World. Its own main(): MPI must be
// initialised before any test and finalised once, which gtest's main cannot do.
//
//   mpirun --oversubscribe --allow-run-as-root -np 4 mpi_collectives_test
//     Runs every case on every rank. Rank 0 prints one line per case and then
//     "N passed, M failed"; all ranks exit non-zero when any rank failed any case.
//   mpirun ... -np 2 mpi_collectives_test --hang-test
//     Rank 1 skips an AllReduce; rank 0 must fail with DeadlineExceeded after the 2 s timeout,
//     print the error once and MPI_Abort the job (check_hang_test.sh checks the exit code, the
//     message and the time).
//   mpirun ... mpi_collectives_test --inject-failure
//     The last rank reports a failure in one case, to check that every rank exits non-zero.
#include <mpi.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "kernels/status_macros.h"
#include "parallel/launch_env.h"
#include "parallel/mpi_communicator.h"
#include "tests/parallel/collective_suite.h"

namespace tessera {
namespace {

// The launcher's environment (mpirun's or srun's) agrees with MPI, and the hostname-based local
// rank agrees with the launcher's (all ranks share this host).
absl::Status CheckLaunchEnvUnderMpirun(Communicator& world, const testing::SuiteOptions&) {
  const LaunchEnv env = ReadLaunchEnv();
  RETURN_IF_ERROR(CheckLaunchEnv(env, world.rank(), world.size()));
  ASSIGN_OR_RETURN(int local_rank, LocalRankFromHostnames(world));
  std::string problems;
  if (env.source != "Open MPI" && env.source != "Slurm") {
    absl::StrAppend(&problems, " source '", env.source, "';");
  }
  if (env.rank != world.rank() || env.world_size != world.size()) {
    absl::StrAppend(&problems, " rank ", env.rank, " of ", env.world_size, ";");
  }
  if (local_rank != world.rank()) {
    absl::StrAppend(&problems, " hostname local rank ", local_rank, ";");
  }
  if (env.local_rank >= 0 && env.local_rank != local_rank) {
    absl::StrAppend(&problems, " launcher's local rank ", env.local_rank, " vs hostnames ",
                    local_rank, ";");
  }
  if (!problems.empty()) {
    return absl::InternalError(
        absl::StrCat("world rank ", world.rank(), ": launch env (", env.variables, "):", problems));
  }
  return absl::OkStatus();
}

int RunSuite(int rank, bool inject_failure) {
  std::unique_ptr<Communicator> world = MpiCommunicator::World(absl::Seconds(60));
  std::vector<testing::SuiteCase> cases = testing::CollectiveSuite();
  cases.push_back({"LaunchEnv", CheckLaunchEnvUnderMpirun});
  int passed = 0, failed = 0;
  for (const testing::SuiteCase& c : cases) {
    if (rank == 0) std::printf("[ RUN      ] %s (np%d)\n", c.name.c_str(), world->size());
    std::fflush(stdout);
    const auto start = std::chrono::steady_clock::now();
    absl::Status status = c.run(*world, {});
    if (inject_failure && rank == world->size() - 1 && c.name == "Barrier" && status.ok()) {
      status = absl::InternalError("injected failure (--inject-failure)");
    }
    if (!status.ok()) {
      std::fprintf(stderr, "rank %d: %s: %s\n", rank, c.name.c_str(), status.ToString().c_str());
    }
    // Every rank reports the same verdict for the case.
    int32_t any_failed = status.ok() ? 0 : 1;
    const absl::Status agreed =
        world->AllReduce(TensorView::Of(&any_failed, DType::kI32, {1}), ReduceOp::kMax);
    if (!agreed.ok()) {
      // The ranks are out of step; nothing after this can be trusted.
      std::fprintf(stderr, "rank %d: cannot agree on the result of %s: %s\n", rank, c.name.c_str(),
                   agreed.ToString().c_str());
      MPI_Abort(MPI_COMM_WORLD, 2);
    }
    const long ms = static_cast<long>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                          std::chrono::steady_clock::now() - start)
                                          .count());
    any_failed ? ++failed : ++passed;
    if (rank == 0) {
      std::printf("[ %s ] %s (np%d, %ld ms)\n", any_failed ? " FAILED " : "      OK",
                  c.name.c_str(), world->size(), ms);
      std::fflush(stdout);
    }
  }
  if (rank == 0) {
    std::printf("%d passed, %d failed\n", passed, failed);
    std::fflush(stdout);
  }
  // `failed` is already agreed case by case; one more reduction makes the exit code collective
  // even if a rank miscounted.
  int total_failed = 0;
  MPI_Allreduce(&failed, &total_failed, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  return total_failed == 0 ? 0 : 1;
}

// Rank 1 skips a collective; rank 0 must time out, print once and abort the whole job.
int RunHangTest(int rank, int size) {
  if (size < 2) {
    std::fprintf(stderr, "--hang-test needs at least 2 ranks\n");
    return 2;
  }
  std::unique_ptr<Communicator> world = MpiCommunicator::World(absl::Seconds(2));
  if (rank == 1) {
    // A rank stuck elsewhere (a diverged branch, a slow file system): it never joins the
    // AllReduce. If rank 0's abort did not reach it, it would leave after 300 s, failing the
    // test's time bound.
    std::this_thread::sleep_for(std::chrono::seconds(300));
    return 3;
  }
  float x = 1.0f;
  const auto start = std::chrono::steady_clock::now();
  const absl::Status status =
      world->AllReduce(TensorView::Of(&x, DType::kF32, {1}), ReduceOp::kSum);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (status.ok()) {
    std::printf("hang test: AllReduce succeeded without rank 1\n");
    return 4;
  }
  if (rank == 0) {
    std::printf("hang test: rank 0 failed after %.2f s: %s\n", seconds, status.ToString().c_str());
    std::fflush(stdout);
  }
  // Library code returns the Status; deciding to end the job is the launcher's part, here the
  // test's: a rank that timed out cannot finalize MPI with a peer outside the collective.
  MPI_Abort(MPI_COMM_WORLD, 5);
  return 5;
}

}  // namespace
}  // namespace tessera

int main(int argc, char** argv) {
  int provided = 0;
  if (MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) {
    std::fprintf(stderr, "MPI_Init_thread failed\n");
    return 1;
  }
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  bool hang_test = false, inject_failure = false;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--hang-test") == 0) hang_test = true;
    if (std::strcmp(argv[i], "--inject-failure") == 0) inject_failure = true;
  }
  const int rc =
      hang_test ? tessera::RunHangTest(rank, size) : tessera::RunSuite(rank, inject_failure);
  MPI_Finalize();
  return rc;
}
