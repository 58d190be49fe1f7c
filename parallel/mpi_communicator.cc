#include "parallel/mpi_communicator.h"

#include <mpi.h>

#include <thread>

#include "absl/strings/str_cat.h"

namespace tessera {
namespace {

MPI_Datatype MpiType(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return MPI_FLOAT;
    case DType::kI32:
      return MPI_INT32_T;
    case DType::kF16:
    case DType::kBF16:
      return MPI_UINT16_T;
    case DType::kU8:
      return MPI_UINT8_T;
  }
  return MPI_BYTE;
}

std::string MpiError(int code) {
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  MPI_Error_string(code, text, &length);
  return std::string(text, length);
}

}  // namespace

struct MpiCommunicator::Handle {
  MPI_Comm comm;
};

std::unique_ptr<Communicator> MpiCommunicator::World(absl::Duration timeout) {
  // Errors come back as codes (turned into Status) instead of aborting inside MPI.
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  return std::unique_ptr<Communicator>(new MpiCommunicator(
      std::make_unique<Handle>(Handle{MPI_COMM_WORLD}), /*owned=*/false, "world", timeout));
}

MpiCommunicator::MpiCommunicator(std::unique_ptr<Handle> handle, bool owned, std::string name,
                                 absl::Duration timeout)
    : handle_(std::move(handle)), owned_(owned), name_(std::move(name)), timeout_(timeout) {
  MPI_Comm_rank(handle_->comm, &rank_);
  MPI_Comm_size(handle_->comm, &size_);
}

MpiCommunicator::~MpiCommunicator() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (owned_ && !finalized) MPI_Comm_free(&handle_->comm);
}

absl::Status MpiCommunicator::Wait(void* request_ptr, const char* op) {
  MPI_Request* request = static_cast<MPI_Request*>(request_ptr);
  const absl::Time deadline = absl::Now() + timeout_;
  int done = 0;
  for (int spins = 0;; ++spins) {
    const int rc = MPI_Test(request, &done, MPI_STATUS_IGNORE);
    if (rc != MPI_SUCCESS) {
      return absl::UnavailableError(
          absl::StrCat(name_, " rank ", rank_, "/", size_, ": ", op, " failed: ", MpiError(rc)));
    }
    if (done) return absl::OkStatus();
    if ((spins & 1023) == 1023 && absl::Now() > deadline) {
      // The operation cannot be cancelled (MPI forbids it for collectives) and may still
      // complete into the caller's buffer: the only safe continuation is to end the job, which
      // the launcher does (MPI_Abort) on DeadlineExceeded.
      return absl::DeadlineExceededError(absl::StrCat(
          name_, " rank ", rank_, "/", size_, ": ", op, " timed out after ",
          absl::FormatDuration(timeout_),
          " waiting for the other ranks (a rank failed or took a different path)"));
    }
    std::this_thread::yield();
  }
}

absl::Status MpiCommunicator::AllReduce(TensorView buffer, ReduceOp op) {
  if (buffer.dtype != DType::kF32 && buffer.dtype != DType::kI32) {
    return absl::InvalidArgumentError("AllReduce: buffers must be F32 or I32");
  }
  MPI_Request request;
  const int rc = MPI_Iallreduce(MPI_IN_PLACE, buffer.data, static_cast<int>(buffer.numel()),
                                MpiType(buffer.dtype), op == ReduceOp::kSum ? MPI_SUM : MPI_MAX,
                                handle_->comm, &request);
  if (rc != MPI_SUCCESS) return absl::UnavailableError("MPI_Iallreduce: " + MpiError(rc));
  return Wait(&request, "AllReduce");
}

absl::Status MpiCommunicator::AllGather(TensorView send, TensorView recv) {
  if (recv.bytes() != send.bytes() * size_) {
    return absl::InvalidArgumentError(absl::StrCat("AllGather: recv holds ", recv.bytes(),
                                                   " bytes, expected ", size_, " x ", send.bytes()));
  }
  MPI_Request request;
  const int rc = MPI_Iallgather(send.data, static_cast<int>(send.bytes()), MPI_BYTE, recv.data,
                                static_cast<int>(send.bytes()), MPI_BYTE, handle_->comm, &request);
  if (rc != MPI_SUCCESS) return absl::UnavailableError("MPI_Iallgather: " + MpiError(rc));
  return Wait(&request, "AllGather");
}

absl::Status MpiCommunicator::Broadcast(TensorView buffer, int root) {
  MPI_Request request;
  const int rc = MPI_Ibcast(buffer.data, static_cast<int>(buffer.bytes()), MPI_BYTE, root,
                            handle_->comm, &request);
  if (rc != MPI_SUCCESS) return absl::UnavailableError("MPI_Ibcast: " + MpiError(rc));
  return Wait(&request, "Broadcast");
}

absl::Status MpiCommunicator::Send(TensorView buffer, int peer, int tag) {
  MPI_Request request;
  const int rc = MPI_Isend(buffer.data, static_cast<int>(buffer.bytes()), MPI_BYTE, peer, tag,
                           handle_->comm, &request);
  if (rc != MPI_SUCCESS) return absl::UnavailableError("MPI_Isend: " + MpiError(rc));
  return Wait(&request, "Send");
}

absl::Status MpiCommunicator::Recv(TensorView buffer, int peer, int tag) {
  MPI_Request request;
  const int rc = MPI_Irecv(buffer.data, static_cast<int>(buffer.bytes()), MPI_BYTE, peer, tag,
                           handle_->comm, &request);
  if (rc != MPI_SUCCESS) return absl::UnavailableError("MPI_Irecv: " + MpiError(rc));
  return Wait(&request, "Recv");
}

absl::Status MpiCommunicator::Barrier() {
  MPI_Request request;
  const int rc = MPI_Ibarrier(handle_->comm, &request);
  if (rc != MPI_SUCCESS) return absl::UnavailableError("MPI_Ibarrier: " + MpiError(rc));
  return Wait(&request, "Barrier");
}

absl::StatusOr<std::unique_ptr<Communicator>> MpiCommunicator::Split(int color, int key,
                                                                     const std::string& name) {
  auto handle = std::make_unique<Handle>();
  const int rc = MPI_Comm_split(handle_->comm, color, key, &handle->comm);
  if (rc != MPI_SUCCESS) return absl::UnavailableError("MPI_Comm_split: " + MpiError(rc));
  MPI_Comm_set_errhandler(handle->comm, MPI_ERRORS_RETURN);
  return std::unique_ptr<Communicator>(
      new MpiCommunicator(std::move(handle), /*owned=*/true, name, timeout_));
}

}  // namespace tessera
