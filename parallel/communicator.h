// Communicator: collectives and point-to-point messages among the ranks of a process group.
//
// Contract (as in c10d's ProcessGroup): every rank of the group makes the same collective calls
// in the same order with buffers of the same shape and dtype. Calls are blocking: when one
// returns, its result is in the rank's buffer. Every call is bounded by the communicator's
// timeout; a peer that never arrives (a failed or diverged rank) turns into DeadlineExceeded
// naming this rank, the group and the operation, never a hang.
//
// Implementations: LocalCommunicator (ranks are threads of one process; unit tests),
// MpiCommunicator (processes, CPU buffers), NcclCommunicator (GPU buffers; CUDA builds).
// Communicators are passed down explicitly (see ProcessGroups); there is no global one.
#ifndef TESSERA_PARALLEL_COMMUNICATOR_H_
#define TESSERA_PARALLEL_COMMUNICATOR_H_

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/tensor_view.h"

namespace tessera {

enum class ReduceOp { kSum, kMax };

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  // The group's name in messages ("world", "tp", "pp", "dp").
  virtual const std::string& name() const = 0;

  // In place across the group; F32 or I32 buffers.
  virtual absl::Status AllReduce(TensorView buffer, ReduceOp op) = 0;
  // recv = the send blocks of ranks 0..size-1 laid end to end; recv.bytes() == size * send.bytes().
  virtual absl::Status AllGather(TensorView send, TensorView recv) = 0;
  // buffer on every rank = buffer on `root`.
  virtual absl::Status Broadcast(TensorView buffer, int root) = 0;
  // Point to point; a Send is matched by the Recv with the same (source, tag) on `peer`, in order.
  // A Send may wait until the receiver posts its Recv (MPI does for large messages), so ranks
  // must not all send before receiving.
  virtual absl::Status Send(TensorView buffer, int peer, int tag) = 0;
  virtual absl::Status Recv(TensorView buffer, int peer, int tag) = 0;
  virtual absl::Status Barrier() = 0;
  // Collective: ranks with the same `color` form a new group, ordered by (key, rank).
  virtual absl::StatusOr<std::unique_ptr<Communicator>> Split(int color, int key,
                                                               const std::string& name) = 0;
};

// Sends or receives a byte string (its length first), for variable-length messages.
absl::Status SendString(Communicator& comm, const std::string& data, int peer, int tag);
absl::StatusOr<std::string> RecvString(Communicator& comm, int peer, int tag);

}  // namespace tessera

#endif  // TESSERA_PARALLEL_COMMUNICATOR_H_
