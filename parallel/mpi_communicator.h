// MpiCommunicator: a Communicator over an MPI communicator, for CPU buffers.
//
// Calls use nonblocking MPI operations polled against a deadline, so a peer that never arrives
// becomes DeadlineExceeded instead of a hang. After a DeadlineExceeded the communicator must not
// be used again (the operation is still pending in MPI); the launcher ends the job. MPI must be initialised (launcher's job) before
// World() is called, with MPI_THREAD_FUNNELED or better. mpi.h stays out of this header.
#ifndef TESSERA_PARALLEL_MPI_COMMUNICATOR_H_
#define TESSERA_PARALLEL_MPI_COMMUNICATOR_H_

#include <memory>
#include <string>

#include "absl/time/time.h"
#include "parallel/communicator.h"

namespace tessera {

class MpiCommunicator final : public Communicator {
 public:
  // Wraps MPI_COMM_WORLD (not owned).
  static std::unique_ptr<Communicator> World(absl::Duration timeout);
  ~MpiCommunicator() override;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
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
  struct Handle;  // holds the MPI_Comm
  MpiCommunicator(std::unique_ptr<Handle> handle, bool owned, std::string name,
                  absl::Duration timeout);
  // Polls the request until it completes or the deadline passes.
  absl::Status Wait(void* request, const char* op);

  std::unique_ptr<Handle> handle_;
  bool owned_;
  int rank_ = 0, size_ = 1;
  std::string name_;
  absl::Duration timeout_;
};

}  // namespace tessera

#endif  // TESSERA_PARALLEL_MPI_COMMUNICATOR_H_
