// The layout-equivalence check under mpirun: every rank is a process with its MPI groups.
//   mpirun -np 4 mpi_layout_test --tp 2 --pp 2 [--dp 1] model_dir...
// With --hooks, the forward-hook checks (tests/layouts/hook_checks.h) instead, on fixture names:
//   mpirun -np 4 mpi_layout_test --tp 2 --pp 2 --hooks llama2_mha llama70b_gqa
// Prints "N passed, M failed" on rank 0 and exits non-zero on every rank if any check failed.
#include <mpi.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "kernels/cpu/cpu_backend.h"
#include "parallel/mpi_communicator.h"
#include "parallel/process_groups.h"
#include "tests/layouts/hook_checks.h"
#include "tests/layouts/layout_check.h"

int main(int argc, char** argv) {
  int provided = 0;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided);
  tessera::WorldLayout layout;
  std::vector<std::string> models;
  bool hooks = false;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--tp") == 0 && i + 1 < argc) {
      layout.tp = std::atoi(argv[++i]);
    } else if (std::strcmp(argv[i], "--pp") == 0 && i + 1 < argc) {
      layout.pp = std::atoi(argv[++i]);
    } else if (std::strcmp(argv[i], "--dp") == 0 && i + 1 < argc) {
      layout.dp = std::atoi(argv[++i]);
    } else if (std::strcmp(argv[i], "--hooks") == 0) {
      hooks = true;
    } else {
      models.push_back(argv[i]);
    }
  }
  tessera::CpuBackend::SetThreads(1);
  int failed = 0, passed = 0;
  auto groups = tessera::MakeProcessGroups(tessera::MpiCommunicator::World(absl::Seconds(120)), layout);
  if (!groups.ok()) {
    std::fprintf(stderr, "%s\n", std::string(groups.status().message()).c_str());
    failed = 1;
  } else {
    for (const std::string& model : models) {
      const absl::Status s = hooks ? tessera::testing::CheckForwardHooks(model, *groups)
                                   : tessera::testing::CheckLayout(model, *groups);
      if (s.ok()) {
        ++passed;
      } else {
        ++failed;
        std::fprintf(stderr, "FAILED %s: %s\n", model.c_str(), std::string(s.message()).c_str());
      }
    }
  }
  int total_failed = 0, rank = 0;
  MPI_Allreduce(&failed, &total_failed, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  if (rank == 0) {
    std::printf("%s tp=%d pp=%d dp=%d, %zu models\n%d passed, %d failed\n",
                hooks ? "forward hooks" : "layout", layout.tp, layout.pp,
                layout.dp, models.size(), total_failed == 0 ? static_cast<int>(models.size()) : passed,
                total_failed);
  }
  MPI_Finalize();
  return total_failed == 0 ? 0 : 1;
}
