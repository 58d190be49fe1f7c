// A Communicator conformance suite with closed-form expected results, written once and run on
// every implementation: LocalCommunicator (threads), MpiCommunicator (mpirun -np 2/4) and
// NcclCommunicator (GPU buffers).
//
// Every case is a function of one rank's communicator; every rank of the group runs the same
// case. A case returns an error for a communicator failure (immediately) or for wrong values
// (after finishing all of its communication, so that the ranks stay in step and the next case
// starts aligned even when one rank saw a mismatch).
#ifndef TESSERA_TESTS_PARALLEL_COLLECTIVE_SUITE_H_
#define TESSERA_TESTS_PARALLEL_COLLECTIVE_SUITE_H_

#include <cstddef>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "parallel/communicator.h"

namespace tessera::testing {

// Where the suite's data buffers live. Host memory for the CPU communicators; the NCCL test
// supplies device memory. Control messages the library itself sends from host memory
// (SendString's length, StageChannel's header) stay on the host whatever this says.
class SuiteMemory {
 public:
  virtual ~SuiteMemory() = default;
  virtual Device device() const = 0;
  virtual absl::StatusOr<void*> Allocate(size_t bytes) = 0;
  virtual void Free(void* pointer) = 0;
  virtual absl::Status CopyToDevice(void* device, const void* host, size_t bytes) = 0;
  virtual absl::Status CopyToHost(void* host, const void* device, size_t bytes) = 0;
};

// Plain host memory (device() == kCpu).
SuiteMemory& HostMemory();

struct SuiteOptions {
  SuiteMemory* memory = &HostMemory();
  // Point-to-point messages match by tag, and small sends complete before the receiver posts
  // its receive, so a rank may send several tagged messages and then receive them in another
  // tag order. True for LocalCommunicator and MPI (eager sends); false for NCCL, which has no
  // tags (messages between two ranks match in issue order) and whose sends wait for the
  // receiver.
  bool tag_matching = true;
};

struct SuiteCase {
  std::string name;
  std::function<absl::Status(Communicator&, const SuiteOptions&)> run;
};

// The cases that apply under `options`, in a fixed order (every rank must use the same list).
std::vector<SuiteCase> CollectiveSuite(const SuiteOptions& options = {});

// The individual cases (each a collective over `comm`).
absl::Status CheckAllReduceSum(Communicator& comm, const SuiteOptions& options);
absl::Status CheckAllReduceMax(Communicator& comm, const SuiteOptions& options);
absl::Status CheckAllGather(Communicator& comm, const SuiteOptions& options);
absl::Status CheckBroadcast(Communicator& comm, const SuiteOptions& options);
absl::Status CheckSendRecvRing(Communicator& comm, const SuiteOptions& options);
absl::Status CheckQueuedTags(Communicator& comm, const SuiteOptions& options);
absl::Status CheckStrings(Communicator& comm, const SuiteOptions& options);
absl::Status CheckBarrier(Communicator& comm, const SuiteOptions& options);
absl::Status CheckSplitEvenOdd(Communicator& comm, const SuiteOptions& options);
absl::Status CheckProcessGroups(Communicator& comm, const SuiteOptions& options);
absl::Status CheckStageChannel(Communicator& comm, const SuiteOptions& options);

// Every (tp, pp, dp) with tp * pp * dp == world_size, tp fastest.
struct Layout3 {
  int tp, pp, dp;
};
std::vector<Layout3> LayoutsOf(int world_size);

}  // namespace tessera::testing

#endif  // TESSERA_TESTS_PARALLEL_COLLECTIVE_SUITE_H_
