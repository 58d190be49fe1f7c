// LocalCommunicator: N ranks as threads of one process, sharing memory.
//
// For unit tests of distributed logic without MPI: Create(n) returns one communicator per rank;
// hand each to its own thread. Reductions combine the ranks' values in rank order, so every rank
// gets bit-identical results. Sends are buffered (they never wait for the receiver).
#ifndef TESSERA_PARALLEL_LOCAL_COMMUNICATOR_H_
#define TESSERA_PARALLEL_LOCAL_COMMUNICATOR_H_

#include <memory>
#include <vector>

#include "absl/time/time.h"
#include "parallel/communicator.h"

namespace tessera {

namespace internal {
struct LocalGroupState;
}

class LocalCommunicator final : public Communicator {
 public:
  // One communicator per rank of a new group of `size` ranks.
  static std::vector<std::unique_ptr<Communicator>> Create(int size,
                                                           absl::Duration timeout = absl::Seconds(60),
                                                           const std::string& name = "world");

  int rank() const override { return rank_; }
  int size() const override;
  const std::string& name() const override { return name_; }
  absl::Status AllReduce(TensorView buffer, ReduceOp op) override;
  absl::Status AllGather(TensorView send, TensorView recv) override;
  absl::Status Broadcast(TensorView buffer, int root) override;
  absl::Status Send(TensorView buffer, int peer, int tag) override;
  absl::Status Recv(TensorView buffer, int peer, int tag) override;
  absl::Status Barrier() override;
  absl::StatusOr<std::unique_ptr<Communicator>> Split(int color, int key,
                                                       const std::string& name) override;

 private:
  LocalCommunicator(std::shared_ptr<internal::LocalGroupState> state, int rank, std::string name,
                    absl::Duration timeout);
  // Waits until every rank has called the same operation; returns each rank's `pointer`.
  absl::StatusOr<std::vector<const void*>> Rendezvous(const char* op, const void* pointer);

  std::shared_ptr<internal::LocalGroupState> state_;
  int rank_;
  std::string name_;
  absl::Duration timeout_;
  int splits_ = 0;
};

}  // namespace tessera

#endif  // TESSERA_PARALLEL_LOCAL_COMMUNICATOR_H_
