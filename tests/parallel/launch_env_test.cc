#include "parallel/launch_env.h"

#include <map>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "parallel/local_communicator.h"
#include "tests/test_util.h"

namespace tessera {
namespace {

using Env = std::map<std::string, std::string>;

LaunchEnv Read(const Env& env) {
  return ReadLaunchEnv([&env](const char* name) -> const char* {
    auto it = env.find(name);
    return it == env.end() ? nullptr : it->second.c_str();
  });
}

TEST(LaunchEnvTest, NoVariablesIsASingleProcess) {
  const LaunchEnv env = Read({{"HOME", "/root"}});
  EXPECT_TRUE(env.single_process());
  EXPECT_EQ(env.rank, -1);
  EXPECT_EQ(env.world_size, -1);
  EXPECT_OK(CheckLaunchEnv(env, 0, 1));
}

TEST(LaunchEnvTest, OpenMpi) {
  const LaunchEnv env = Read({{"OMPI_COMM_WORLD_RANK", "5"},
                              {"OMPI_COMM_WORLD_SIZE", "8"},
                              {"OMPI_COMM_WORLD_LOCAL_RANK", "1"},
                              {"OMPI_COMM_WORLD_LOCAL_SIZE", "4"},
                              {"PMIX_RANK", "5"}});
  EXPECT_EQ(env.source, "Open MPI");
  EXPECT_EQ(env.rank, 5);
  EXPECT_EQ(env.world_size, 8);
  EXPECT_EQ(env.local_rank, 1);
  EXPECT_EQ(env.local_size, 4);
  EXPECT_TRUE(absl::StrContains(env.variables, "OMPI_COMM_WORLD_RANK=5")) << env.variables;
  EXPECT_OK(CheckLaunchEnv(env, 5, 8));
}

TEST(LaunchEnvTest, MpirunInsideASlurmAllocationIsOpenMpi) {
  // The batch step's SLURM_* describe the allocation, not mpirun's ranks.
  const LaunchEnv env = Read({{"SLURM_PROCID", "0"},
                              {"SLURM_NTASKS", "16"},
                              {"SLURM_LOCALID", "0"},
                              {"OMPI_COMM_WORLD_RANK", "3"},
                              {"OMPI_COMM_WORLD_SIZE", "4"}});
  EXPECT_EQ(env.source, "Open MPI");
  EXPECT_EQ(env.rank, 3);
  EXPECT_EQ(env.world_size, 4);
  EXPECT_EQ(env.local_rank, -1);  // not given by mpirun here: use LocalRankFromHostnames
  EXPECT_OK(CheckLaunchEnv(env, 3, 4));
}

TEST(LaunchEnvTest, MpichHydra) {
  const LaunchEnv env = Read(
      {{"PMI_RANK", "2"}, {"PMI_SIZE", "4"}, {"MPI_LOCALRANKID", "0"}, {"MPI_LOCALNRANKS", "2"}});
  EXPECT_EQ(env.source, "MPICH/Hydra");
  EXPECT_EQ(env.rank, 2);
  EXPECT_EQ(env.world_size, 4);
  EXPECT_EQ(env.local_rank, 0);
  EXPECT_EQ(env.local_size, 2);
}

TEST(LaunchEnvTest, SrunWithPmix) {
  // As `srun --mpi=pmix -N2 -n8` sets them (Slurm 22.05).
  const LaunchEnv env = Read({{"PMIX_RANK", "6"},
                              {"SLURM_PROCID", "6"},
                              {"SLURM_NTASKS", "8"},
                              {"SLURM_STEP_ID", "0"},
                              {"SLURM_STEP_NUM_TASKS", "8"},
                              {"SLURM_LOCALID", "2"},
                              {"SLURM_NODEID", "1"},
                              {"SLURM_STEP_TASKS_PER_NODE", "4(x2)"}});
  EXPECT_EQ(env.source, "Slurm");
  EXPECT_FALSE(env.slurm_batch_step);
  EXPECT_EQ(env.rank, 6);
  EXPECT_EQ(env.world_size, 8);
  EXPECT_EQ(env.local_rank, 2);
  EXPECT_EQ(env.local_size, 4);
  EXPECT_OK(CheckLaunchEnv(env, 6, 8));
}

TEST(LaunchEnvTest, StepOfFewerTasksThanTheAllocation) {
  // `srun --mpi=pmix -n2` inside an allocation of 4: the step's count wins.
  const LaunchEnv env = Read({{"SLURM_PROCID", "1"},
                              {"SLURM_NTASKS", "4"},
                              {"SLURM_STEP_ID", "1"},
                              {"SLURM_STEP_NUM_TASKS", "2"},
                              {"SLURM_TASKS_PER_NODE", "4"},
                              {"SLURM_STEP_TASKS_PER_NODE", "2"}});
  EXPECT_EQ(env.world_size, 2);
  EXPECT_EQ(env.local_size, 2);
  EXPECT_OK(CheckLaunchEnv(env, 1, 2));
}

TEST(LaunchEnvTest, PmixWithoutSlurmHasNoSize) {
  const LaunchEnv env = Read({{"PMIX_RANK", "1"}});
  EXPECT_EQ(env.source, "PMIx");
  EXPECT_EQ(env.rank, 1);
  EXPECT_EQ(env.world_size, -1);
  EXPECT_OK(CheckLaunchEnv(env, 1, 3));
  EXPECT_FALSE(CheckLaunchEnv(env, 0, 3).ok());
}

TEST(LaunchEnvTest, SlurmUnevenNodes) {
  // 7 tasks on 3 nodes: 3 on node 0, 2 on nodes 1 and 2.
  const LaunchEnv env = Read({{"SLURM_PROCID", "6"},
                              {"SLURM_NTASKS", "7"},
                              {"SLURM_LOCALID", "1"},
                              {"SLURM_NODEID", "2"},
                              {"SLURM_TASKS_PER_NODE", "3,2(x2)"}});
  EXPECT_EQ(env.source, "Slurm");
  EXPECT_EQ(env.rank, 6);
  EXPECT_EQ(env.world_size, 7);
  EXPECT_EQ(env.local_rank, 1);
  EXPECT_EQ(env.local_size, 2);
}

TEST(LaunchEnvTest, SlurmTasksPerNodeSyntax) {
  EXPECT_EQ(SlurmTasksOnNode("4", 0), 4);
  EXPECT_EQ(SlurmTasksOnNode("4", 3), 4);  // --ntasks-per-node=4: every node
  EXPECT_EQ(SlurmTasksOnNode("4(x2)", 1), 4);
  EXPECT_EQ(SlurmTasksOnNode("4(x2)", 2), -1);
  EXPECT_EQ(SlurmTasksOnNode("4(x2)", -1), 4);
  EXPECT_EQ(SlurmTasksOnNode("2(x3),1", 2), 2);
  EXPECT_EQ(SlurmTasksOnNode("2(x3),1", 3), 1);
  EXPECT_EQ(SlurmTasksOnNode("2(x3),1", -1), -1);  // differs by node, node unknown
  EXPECT_EQ(SlurmTasksOnNode("", 0), -1);
  EXPECT_EQ(SlurmTasksOnNode("4(2)", 0), -1);
  EXPECT_EQ(SlurmTasksOnNode("4(x2", 0), -1);
  EXPECT_EQ(SlurmTasksOnNode("x", 0), -1);
  EXPECT_EQ(SlurmTasksOnNode("0", 0), -1);
}

TEST(LaunchEnvTest, MalformedNumbersAreAbsent) {
  const LaunchEnv env = Read({{"OMPI_COMM_WORLD_RANK", "three"},
                              {"OMPI_COMM_WORLD_SIZE", "-4"},
                              {"OMPI_COMM_WORLD_LOCAL_RANK", "7"},
                              {"OMPI_COMM_WORLD_LOCAL_SIZE", "2"}});
  EXPECT_EQ(env.source, "Open MPI");
  EXPECT_EQ(env.rank, -1);
  EXPECT_EQ(env.world_size, -1);
  EXPECT_EQ(env.local_rank, -1);  // 7 is not below the local size 2
  EXPECT_EQ(env.local_size, 2);
  EXPECT_OK(CheckLaunchEnv(env, 0, 4));  // nothing usable to disagree with
}

TEST(LaunchEnvTest, SrunWithoutPmixSaysToUseIt) {
  // Plain `srun -n 8` with an MPI that then starts as a singleton: every process is rank 0 of 1
  // in its own MPI world. (Debian's Open MPI 4.1 instead fails inside MPI_Init, with its own
  // message, when srun offers no PMI.)
  const LaunchEnv env = Read({{"SLURM_PROCID", "3"},
                              {"SLURM_NTASKS", "8"},
                              {"SLURM_STEP_ID", "0"},
                              {"SLURM_STEP_NUM_TASKS", "8"},
                              {"SLURM_LOCALID", "3"}});
  const absl::Status status = CheckLaunchEnv(env, 0, 1);
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition) << status;
  EXPECT_TRUE(absl::StrContains(status.message(), "srun --mpi=pmix")) << status;
  EXPECT_TRUE(absl::StrContains(status.message(), "Slurm")) << status;
  EXPECT_TRUE(absl::StrContains(status.message(), "SLURM_STEP_NUM_TASKS=8")) << status;
  EXPECT_TRUE(absl::StrContains(status.message(), "srun did not connect them")) << status;
  EXPECT_TRUE(absl::StrContains(status.message(), "rank 3 of 8")) << status;
  EXPECT_TRUE(absl::StrContains(status.message(), "MPI reports rank 0 of 1")) << status;
}

TEST(LaunchEnvTest, BatchScriptWithoutSrunSaysToUseIt) {
  // The binary run directly in an `sbatch -n8` script: the batch step's variables (no
  // SLURM_STEP_ID), plus the PMIX_RANK=0 that Open MPI's MPI_Init sets in a singleton.
  for (bool after_mpi_init : {false, true}) {
    Env vars = {{"SLURM_JOB_ID", "4"},  {"SLURM_PROCID", "0"},         {"SLURM_NTASKS", "8"},
                {"SLURM_LOCALID", "0"}, {"SLURM_TASKS_PER_NODE", "8"}, {"SLURM_NODEID", "0"}};
    if (after_mpi_init) vars["PMIX_RANK"] = "0";
    const LaunchEnv env = Read(vars);
    EXPECT_EQ(env.source, "Slurm");
    EXPECT_TRUE(env.slurm_batch_step);
    const absl::Status status = CheckLaunchEnv(env, 0, 1);
    EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition) << status;
    EXPECT_TRUE(absl::StrContains(status.message(), "run directly by the batch script")) << status;
    EXPECT_TRUE(absl::StrContains(status.message(), "srun --mpi=pmix")) << status;
  }
}

TEST(LaunchEnvTest, OpenMpiSingletonIsFine) {
  // A plain `./tessera` run: after MPI_Init, Open MPI has set PMIX_RANK=0 and nothing else.
  const LaunchEnv env = Read({{"PMIX_RANK", "0"}});
  EXPECT_EQ(env.source, "PMIx");
  EXPECT_EQ(env.world_size, -1);
  EXPECT_OK(CheckLaunchEnv(env, 0, 1));
}

TEST(LaunchEnvTest, SingleTaskSlurmJobIsFine) {
  const LaunchEnv env = Read({{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "1"}});
  EXPECT_OK(CheckLaunchEnv(env, 0, 1));
}

TEST(LaunchEnvTest, MismatchedMpiNamesBothSources) {
  const LaunchEnv env = Read({{"OMPI_COMM_WORLD_RANK", "1"}, {"OMPI_COMM_WORLD_SIZE", "4"}});
  const absl::Status status = CheckLaunchEnv(env, 2, 4);
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition) << status;
  EXPECT_TRUE(absl::StrContains(status.message(), "Open MPI")) << status;
  EXPECT_TRUE(absl::StrContains(status.message(), "MPI reports rank 2 of 4")) << status;
  const absl::Status singleton = CheckLaunchEnv(env, 0, 1);
  EXPECT_TRUE(absl::StrContains(singleton.message(), "own single-rank MPI world")) << singleton;
}

TEST(LaunchEnvTest, LocalRankFromHostnamesOnOneHost) {
  // Threads share this machine's hostname: local rank == rank.
  constexpr int kSize = 3;
  auto comms = LocalCommunicator::Create(kSize, absl::Seconds(30));
  std::vector<absl::StatusOr<int>> local(kSize, absl::UnknownError("not run"));
  std::vector<std::thread> threads;
  for (int r = 0; r < kSize; ++r) {
    threads.emplace_back([&, r] { local[r] = LocalRankFromHostnames(*comms[r]); });
  }
  for (std::thread& t : threads) t.join();
  for (int r = 0; r < kSize; ++r) {
    ASSERT_OK(local[r]);
    EXPECT_EQ(*local[r], r);
  }
}

}  // namespace
}  // namespace tessera
