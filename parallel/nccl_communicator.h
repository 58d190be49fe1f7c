// NcclCommunicator: a Communicator over NCCL, for GPU buffers. Built only in CUDA builds
// (TESSERA_WITH_NCCL is defined when it is); nccl.h and cuda_runtime.h stay out of this header.
//
// Buffers: views with device == Device::kCuda on this communicator's device. Host views
// (Device::kCpu) are accepted too and staged through a device scratch buffer; that is for small
// control messages the library sends from host memory (SendString's length, StageChannel's
// header), not for activations.
//
// Streams: each communicator owns one CUDA stream, created with default flags, so it is
// ordered after work on the legacy default stream. Work on other (non-blocking) streams that
// writes a buffer must be complete before the call. Every call enqueues on the owned stream and
// returns when the stream has finished the operation: like the other communicators, calls are
// blocking and the result is in the buffer on return.
//
// Failure: every call polls cudaStreamQuery and ncclCommGetAsyncError against the timeout. A
// peer that never arrives becomes DeadlineExceeded; an NCCL or CUDA error becomes a Status with
// the group, rank, operation and NCCL's own text. Either way the NCCL communicator is aborted
// (ncclCommAbort), and every later call on this object returns FailedPrecondition: after an
// abort nothing can be assumed about enqueued work, so the job should end.
//
// Point to point: NCCL has no tags. Messages between two ranks match in issue order, and a Send
// waits for the peer's Recv, so callers must receive in the order peers send (StageChannel does).
// The tag is ignored except for messages to this rank itself, which are buffered by tag.
//
// Threads: one thread at a time per communicator (as for the other implementations).
#ifndef TESSERA_PARALLEL_NCCL_COMMUNICATOR_H_
#define TESSERA_PARALLEL_NCCL_COMMUNICATOR_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "parallel/communicator.h"

struct ncclComm;  // nccl.h: typedef struct ncclComm* ncclComm_t

namespace tessera {

class NcclCommunicator final : public Communicator {
 public:
  // Collective over `bootstrap` (normally an MpiCommunicator group; any CPU communicator
  // works): rank 0 creates the NCCL unique id and broadcasts it, every rank selects `device`
  // (cudaSetDevice) and joins a nonblocking NCCL communicator with bootstrap's rank and size,
  // polling until it is ready or `timeout` passes. The new communicator takes bootstrap's name
  // and uses `timeout` for every later call. Fails on every rank, naming the ranks, when any
  // rank has no usable device.
  static absl::StatusOr<std::unique_ptr<Communicator>> CreateFromMpi(Communicator& bootstrap,
                                                                     int device,
                                                                     absl::Duration timeout);
  ~NcclCommunicator() override;

  int rank() const override;
  int size() const override;
  const std::string& name() const override;
  // F32 or I32 (as every Communicator), and also F16 / BF16 (NCCL reduces them natively).
  absl::Status AllReduce(TensorView buffer, ReduceOp op) override;
  absl::Status AllGather(TensorView send, TensorView recv) override;
  absl::Status Broadcast(TensorView buffer, int root) override;
  absl::Status Send(TensorView buffer, int peer, int tag) override;
  absl::Status Recv(TensorView buffer, int peer, int tag) override;
  // An all-reduce of one int on the device.
  absl::Status Barrier() override;
  // ncclCommSplit; the child has its own stream and the same device and timeout.
  absl::StatusOr<std::unique_ptr<Communicator>> Split(int color, int key,
                                                      const std::string& name) override;

  // The CUDA device and the raw NCCL communicator, for callers that enqueue NCCL work on their
  // own streams (the communicator keeps ownership).
  int device() const;
  ncclComm* nccl_comm() const;

 private:
  struct Impl;
  explicit NcclCommunicator(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace tessera

#endif  // TESSERA_PARALLEL_NCCL_COMMUNICATOR_H_
