// Runs one function per rank of a tp x pp world, each rank a thread with its LocalCommunicator
// process groups, and returns every rank's status (index = world rank). OpenMP is limited to
// one thread per rank so that ranks do not oversubscribe the cores.
//
//   auto statuses = RunThreadedWorld({2, 1, 1, 0}, [&](ProcessGroups& g) { return Check(g); });
#ifndef TESSERA_TESTS_LAYOUTS_THREADED_WORLD_H_
#define TESSERA_TESTS_LAYOUTS_THREADED_WORLD_H_

#include <omp.h>

#include <functional>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "kernels/status_macros.h"
#include "parallel/local_communicator.h"
#include "parallel/process_groups.h"

namespace tessera::testing {

inline std::vector<absl::Status> RunThreadedWorld(
    const WorldLayout& layout, const std::function<absl::Status(ProcessGroups&)>& fn,
    absl::Duration timeout = absl::Seconds(60)) {
  auto comms = LocalCommunicator::Create(layout.world_size(), timeout);
  std::vector<absl::Status> statuses(layout.world_size());
  std::vector<std::thread> threads;
  for (int r = 0; r < layout.world_size(); ++r) {
    threads.emplace_back([&, r, world = std::move(comms[r])]() mutable {
      omp_set_num_threads(1);
      statuses[r] = [&]() -> absl::Status {
        ASSIGN_OR_RETURN(ProcessGroups groups, MakeProcessGroups(std::move(world), layout));
        return fn(groups);
      }();
    });
  }
  for (std::thread& t : threads) t.join();
  return statuses;
}

}  // namespace tessera::testing

#endif  // TESSERA_TESTS_LAYOUTS_THREADED_WORLD_H_
