#include "parallel/nccl_communicator.h"

#include <cuda_runtime.h>
#include <nccl.h>

#include <chrono>
#include <cstring>
#include <deque>
#include <map>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kernels/status_macros.h"

static_assert(sizeof(ncclUniqueId) == NCCL_UNIQUE_ID_BYTES);

namespace tessera {
namespace {

// ncclInProgress means "still working" (nonblocking communicators), not failure.
bool Failed(ncclResult_t r) { return r != ncclSuccess && r != ncclInProgress; }

absl::StatusCode CodeOf(ncclResult_t r) {
  switch (r) {
    case ncclInvalidArgument:
    case ncclInvalidUsage:
      return absl::StatusCode::kInvalidArgument;
    default:
      return absl::StatusCode::kUnavailable;
  }
}

// Polling backoff: spin briefly (a collective on NVLink takes microseconds), then sleep so that
// a rank waiting on a slow peer does not burn a core.
void Backoff(int spins) {
  if (spins < 2000) {
    std::this_thread::yield();
  } else {
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
}

absl::StatusOr<ncclDataType_t> ReduceType(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return ncclFloat32;
    case DType::kI32:
      return ncclInt32;
    case DType::kF16:
      return ncclFloat16;
    case DType::kBF16:
      return ncclBfloat16;
    case DType::kU8:
      break;
  }
  return absl::InvalidArgumentError("AllReduce: buffers must be F32, I32, F16 or BF16");
}

constexpr size_t kAlign = 256;
size_t AlignUp(size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

}  // namespace

struct NcclCommunicator::Impl {
  ncclComm_t comm = nullptr;
  cudaStream_t stream = nullptr;
  int device = 0, rank = 0, size = 1;
  std::string name;
  absl::Duration timeout;
  // Set once the NCCL communicator has been aborted; every later call fails with it.
  std::string aborted;
  // Device staging for host views, grown on demand; one int for Barrier.
  void* scratch = nullptr;
  size_t scratch_bytes = 0;
  int* barrier = nullptr;
  // Messages a rank sends to itself, by tag (NCCL cannot match a send and a receive issued by
  // one thread one after the other).
  std::map<int, std::deque<std::vector<char>>> self_mail;

  ~Impl() {
    cudaSetDevice(device);
    if (comm != nullptr) {
      // Finalize flushes outstanding work; bounded like every call, then destroy (or abort).
      ncclResult_t state = ncclCommFinalize(comm);
      const absl::Time deadline = absl::Now() + timeout;
      for (int spins = 0; state == ncclInProgress && absl::Now() < deadline; ++spins) {
        if (ncclCommGetAsyncError(comm, &state) != ncclSuccess) break;
        Backoff(spins);
      }
      if (state == ncclSuccess) {
        ncclCommDestroy(comm);
      } else {
        ncclCommAbort(comm);
      }
    }
    if (stream != nullptr) cudaStreamDestroy(stream);
    if (scratch != nullptr) cudaFree(scratch);
    if (barrier != nullptr) cudaFree(barrier);
  }

  std::string Where(const char* op) const {
    return absl::StrCat(name, " rank ", rank, "/", size, ": ", op);
  }

  // Aborts the NCCL communicator (outstanding work is cancelled) and remembers why.
  absl::Status Abort(absl::Status why) {
    if (comm != nullptr) {
      ncclCommAbort(comm);
      comm = nullptr;
    }
    aborted = std::string(why.message());
    return why;
  }

  std::string NcclText(ncclResult_t r) const {
    std::string text = ncclGetErrorString(r);
    const char* last = ncclGetLastError(comm);
    if (last != nullptr && *last != '\0') absl::StrAppend(&text, ": ", last);
    absl::StrAppend(&text, " (NCCL_DEBUG=WARN prints NCCL's own account)");
    return text;
  }

  // An NCCL failure during `op`: enqueued work can no longer be trusted, so abort.
  absl::Status NcclFailure(const char* op, const char* call, ncclResult_t r) {
    return Abort(
        absl::Status(CodeOf(r), absl::StrCat(Where(op), ": ", call, " failed: ", NcclText(r))));
  }

  absl::Status CudaFailure(const char* op, const char* call, cudaError_t e, bool abort) {
    cudaGetLastError();  // clear a non-sticky error so the next call starts clean
    absl::Status status = absl::UnavailableError(absl::StrCat(
        Where(op), ": ", call, " failed: ", cudaGetErrorName(e), ": ", cudaGetErrorString(e)));
    return abort ? Abort(status) : status;
  }

  absl::Status TimedOut(const char* op, const char* waiting_for) {
    return Abort(absl::DeadlineExceededError(
        absl::StrCat(Where(op), " timed out after ", absl::FormatDuration(timeout), " ",
                     waiting_for, "; the NCCL communicator was aborted")));
  }

  // Every call starts here: refuses an aborted communicator and selects the device (the calling
  // thread may have another current device).
  absl::Status Usable(const char* op) {
    if (!aborted.empty()) {
      return absl::FailedPreconditionError(
          absl::StrCat(Where(op), ": the NCCL communicator was aborted after an earlier error (",
                       aborted, "); end the job"));
    }
    const cudaError_t e = cudaSetDevice(device);
    if (e != cudaSuccess) return CudaFailure(op, "cudaSetDevice", e, /*abort=*/false);
    return absl::OkStatus();
  }

  // Polls `c` while its state is ncclInProgress (a nonblocking NCCL call in the background).
  // NCCL requires this before the next call on the communicator or its stream.
  absl::Status AwaitReady(ncclComm_t c, const char* op, absl::Time deadline) {
    for (int spins = 0;; ++spins) {
      ncclResult_t state = ncclSuccess;
      const ncclResult_t r = ncclCommGetAsyncError(c, &state);
      if (r != ncclSuccess) return NcclFailure(op, "ncclCommGetAsyncError", r);
      if (state == ncclSuccess) return absl::OkStatus();
      if (state != ncclInProgress) return NcclFailure(op, "NCCL (asynchronously)", state);
      if (absl::Now() > deadline) return TimedOut(op, "waiting for NCCL to become ready");
      Backoff(spins);
    }
  }

  // The result of enqueueing an NCCL operation.
  absl::Status Enqueued(const char* op, const char* call, ncclResult_t r, absl::Time deadline) {
    if (Failed(r)) return NcclFailure(op, call, r);
    if (r == ncclInProgress) return AwaitReady(comm, op, deadline);
    return absl::OkStatus();
  }

  // Waits for the stream to finish, watching NCCL for asynchronous errors.
  absl::Status WaitStream(const char* op, absl::Time deadline) {
    for (int spins = 0;; ++spins) {
      const cudaError_t e = cudaStreamQuery(stream);
      if (e == cudaSuccess) return absl::OkStatus();
      if (e != cudaErrorNotReady) return CudaFailure(op, "cudaStreamQuery", e, /*abort=*/true);
      if (comm != nullptr) {
        ncclResult_t state = ncclSuccess;
        const ncclResult_t r = ncclCommGetAsyncError(comm, &state);
        if (r != ncclSuccess) return NcclFailure(op, "ncclCommGetAsyncError", r);
        if (Failed(state)) return NcclFailure(op, "NCCL (asynchronously)", state);
      }
      if (absl::Now() > deadline) {
        return TimedOut(op, "waiting for the other ranks (a rank failed or took a different path)");
      }
      Backoff(spins);
    }
  }

  absl::StatusOr<void*> Scratch(const char* op, size_t bytes) {
    if (bytes > scratch_bytes) {
      if (scratch != nullptr) cudaFree(scratch);
      scratch = nullptr;
      scratch_bytes = 0;
      const cudaError_t e = cudaMalloc(&scratch, AlignUp(bytes));
      if (e != cudaSuccess) return CudaFailure(op, "cudaMalloc (staging)", e, /*abort=*/false);
      scratch_bytes = AlignUp(bytes);
    }
    return scratch;
  }

  // Copies between host and device on the stream and waits (the stream is idle between calls,
  // so a copy from pageable memory that blocks on the stream does not block on a peer).
  absl::Status Copy(const char* op, void* dst, const void* src, size_t bytes, cudaMemcpyKind kind,
                    absl::Time deadline) {
    if (bytes == 0) return absl::OkStatus();
    const cudaError_t e = cudaMemcpyAsync(dst, src, bytes, kind, stream);
    if (e != cudaSuccess) return CudaFailure(op, "cudaMemcpyAsync", e, /*abort=*/false);
    return WaitStream(op, deadline);
  }

  // Device addresses for the views of one call. Device views are used in place; host views get
  // slices of the communicator's scratch buffer, copied in before the operation and back after.
  class DeviceViews {
   public:
    DeviceViews(Impl& impl, const char* op, absl::Time deadline)
        : impl_(impl), op_(op), deadline_(deadline) {}

    // Returns the index of the view for ptr().
    int Add(TensorView view, bool copy_in, bool copy_out) {
      parts_.push_back({view, copy_in, copy_out, nullptr});
      return static_cast<int>(parts_.size()) - 1;
    }

    absl::Status Begin() {
      size_t staged = 0;
      for (const Part& p : parts_) {
        if (p.view.device == Device::kCpu) staged += AlignUp(p.view.bytes());
      }
      char* base = nullptr;
      if (staged > 0) {
        ASSIGN_OR_RETURN(void* scratch, impl_.Scratch(op_, staged));
        base = static_cast<char*>(scratch);
      }
      for (Part& p : parts_) {
        if (p.view.device != Device::kCpu) {
          p.device = p.view.data;
          continue;
        }
        p.device = base;
        base += AlignUp(p.view.bytes());
        if (p.copy_in) {
          RETURN_IF_ERROR(impl_.Copy(op_, p.device, p.view.data, p.view.bytes(),
                                     cudaMemcpyHostToDevice, deadline_));
        }
      }
      return absl::OkStatus();
    }

    void* ptr(int i) const { return parts_[i].device; }

    // Waits for the operation, then copies staged results back to the host.
    absl::Status Finish() {
      RETURN_IF_ERROR(impl_.WaitStream(op_, deadline_));
      for (const Part& p : parts_) {
        if (p.view.device == Device::kCpu && p.copy_out) {
          RETURN_IF_ERROR(impl_.Copy(op_, p.view.data, p.device, p.view.bytes(),
                                     cudaMemcpyDeviceToHost, deadline_));
        }
      }
      return absl::OkStatus();
    }

   private:
    struct Part {
      TensorView view;
      bool copy_in, copy_out;
      void* device;
    };
    Impl& impl_;
    const char* op_;
    absl::Time deadline_;
    std::vector<Part> parts_;
  };

  // Creates the stream and the barrier word of a new communicator on `impl.device`.
  static absl::Status CreateLocalResources(Impl& impl, const char* op) {
    cudaError_t e = cudaStreamCreate(&impl.stream);
    if (e != cudaSuccess) {
      impl.stream = nullptr;
      return impl.CudaFailure(op, "cudaStreamCreate", e, /*abort=*/false);
    }
    e = cudaMalloc(reinterpret_cast<void**>(&impl.barrier), sizeof(int));
    if (e != cudaSuccess) {
      impl.barrier = nullptr;
      return impl.CudaFailure(op, "cudaMalloc", e, /*abort=*/false);
    }
    return absl::OkStatus();
  }
};

NcclCommunicator::NcclCommunicator(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
NcclCommunicator::~NcclCommunicator() = default;

int NcclCommunicator::rank() const { return impl_->rank; }
int NcclCommunicator::size() const { return impl_->size; }
const std::string& NcclCommunicator::name() const { return impl_->name; }
int NcclCommunicator::device() const { return impl_->device; }
ncclComm* NcclCommunicator::nccl_comm() const { return impl_->comm; }

absl::StatusOr<std::unique_ptr<Communicator>> NcclCommunicator::CreateFromMpi(
    Communicator& bootstrap, int device, absl::Duration timeout) {
  constexpr const char* kOp = "NCCL initialisation";
  auto impl = std::make_unique<Impl>();
  impl->device = device;
  impl->rank = bootstrap.rank();
  impl->size = bootstrap.size();
  impl->name = bootstrap.name();
  impl->timeout = timeout;

  // 1. Every rank checks its device and creates its stream before anyone joins NCCL, and the
  //    ranks compare notes: one rank without a GPU fails the whole group at once, by name,
  //    instead of leaving the others to time out in ncclCommInitRankConfig.
  std::string local_error;
  int count = 0;
  cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) {
    cudaGetLastError();
    local_error = absl::StrCat("no usable CUDA device (cudaGetDeviceCount: ", cudaGetErrorName(e),
                               ": ", cudaGetErrorString(e), ")");
  } else if (device < 0 || device >= count) {
    local_error = absl::StrCat("CUDA device ", device, " does not exist (this host has ", count,
                               "); pass a device in [0, ", count, ") such as the local rank");
  } else {
    const absl::Status resources = [&]() -> absl::Status {
      e = cudaSetDevice(device);
      if (e != cudaSuccess) return impl->CudaFailure(kOp, "cudaSetDevice", e, false);
      return Impl::CreateLocalResources(*impl, kOp);
    }();
    if (!resources.ok()) local_error = std::string(resources.message());
  }
  int32_t mine = local_error.empty() ? 0 : 1;
  std::vector<int32_t> failed(impl->size);
  RETURN_IF_ERROR(bootstrap.AllGather(TensorView::Of(&mine, DType::kI32, {1}),
                                      TensorView::Of(failed.data(), DType::kI32, {impl->size})));
  std::vector<int> failed_ranks;
  for (int r = 0; r < impl->size; ++r) {
    if (failed[r] != 0) failed_ranks.push_back(r);
  }
  if (!failed_ranks.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        impl->Where(kOp), ": rank(s) ", absl::StrJoin(failed_ranks, ", "),
        " cannot use a CUDA device", local_error.empty() ? "" : " (this rank: ", local_error,
        local_error.empty() ? "" : ")"));
  }

  // 2. Rank 0 makes the unique id and broadcasts it, preceded by whether that worked.
  struct {
    int32_t ok;
    char id[NCCL_UNIQUE_ID_BYTES];
  } message = {};
  ncclUniqueId id;
  std::string id_error;
  if (impl->rank == 0) {
    const ncclResult_t r = ncclGetUniqueId(&id);
    if (r == ncclSuccess) {
      message.ok = 1;
      std::memcpy(message.id, &id, sizeof(id));
    } else {
      id_error = impl->NcclText(r);
    }
  }
  RETURN_IF_ERROR(bootstrap.Broadcast(
      TensorView::Of(&message, DType::kU8, {static_cast<int64_t>(sizeof(message))}), 0));
  if (message.ok != 1) {
    return absl::UnavailableError(
        absl::StrCat(impl->Where(kOp), ": rank 0 could not create the NCCL unique id",
                     id_error.empty() ? " (see rank 0's error)"
                                      : absl::StrCat(": ncclGetUniqueId: ", id_error)));
  }
  std::memcpy(&id, message.id, sizeof(id));

  // 3. Join a nonblocking communicator and poll until it is ready or the deadline passes.
  const absl::Time deadline = absl::Now() + timeout;
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  const ncclResult_t r = ncclCommInitRankConfig(&impl->comm, impl->size, id, impl->rank, &config);
  if (Failed(r)) return impl->NcclFailure(kOp, "ncclCommInitRankConfig", r);
  if (impl->comm == nullptr) {
    return absl::InternalError(
        absl::StrCat(impl->Where(kOp), ": ncclCommInitRankConfig returned no communicator"));
  }
  for (int spins = 0;; ++spins) {
    ncclResult_t state = ncclSuccess;
    const ncclResult_t q = ncclCommGetAsyncError(impl->comm, &state);
    if (q != ncclSuccess) return impl->NcclFailure(kOp, "ncclCommGetAsyncError", q);
    if (state == ncclSuccess) break;
    if (state != ncclInProgress) return impl->NcclFailure(kOp, "ncclCommInitRankConfig", state);
    if (absl::Now() > deadline) {
      return impl->TimedOut(kOp,
                            "waiting for all ranks to join (a rank failed before joining, "
                            "or cannot reach this one: check NCCL_SOCKET_IFNAME, and "
                            "NCCL_DEBUG=INFO)");
    }
    Backoff(spins);
  }
  return std::unique_ptr<Communicator>(new NcclCommunicator(std::move(impl)));
}

absl::Status NcclCommunicator::AllReduce(TensorView buffer, ReduceOp op) {
  constexpr const char* kOp = "AllReduce";
  Impl& m = *impl_;
  ASSIGN_OR_RETURN(ncclDataType_t type, ReduceType(buffer.dtype));
  RETURN_IF_ERROR(m.Usable(kOp));
  if (buffer.numel() == 0) return absl::OkStatus();
  const absl::Time deadline = absl::Now() + m.timeout;
  Impl::DeviceViews views(m, kOp, deadline);
  const int b = views.Add(buffer, true, true);
  RETURN_IF_ERROR(views.Begin());
  RETURN_IF_ERROR(
      m.Enqueued(kOp, "ncclAllReduce",
                 ncclAllReduce(views.ptr(b), views.ptr(b), static_cast<size_t>(buffer.numel()),
                               type, op == ReduceOp::kSum ? ncclSum : ncclMax, m.comm, m.stream),
                 deadline));
  return views.Finish();
}

absl::Status NcclCommunicator::AllGather(TensorView send, TensorView recv) {
  constexpr const char* kOp = "AllGather";
  Impl& m = *impl_;
  if (recv.bytes() != send.bytes() * m.size) {
    return absl::InvalidArgumentError(absl::StrCat(m.Where(kOp), ": recv holds ", recv.bytes(),
                                                   " bytes, expected ", m.size, " x ",
                                                   send.bytes()));
  }
  RETURN_IF_ERROR(m.Usable(kOp));
  if (send.bytes() == 0) return absl::OkStatus();
  const absl::Time deadline = absl::Now() + m.timeout;
  Impl::DeviceViews views(m, kOp, deadline);
  const int s = views.Add(send, true, false);
  const int r = views.Add(recv, false, true);
  RETURN_IF_ERROR(views.Begin());
  RETURN_IF_ERROR(m.Enqueued(
      kOp, "ncclAllGather",
      ncclAllGather(views.ptr(s), views.ptr(r), send.bytes(), ncclUint8, m.comm, m.stream),
      deadline));
  return views.Finish();
}

absl::Status NcclCommunicator::Broadcast(TensorView buffer, int root) {
  constexpr const char* kOp = "Broadcast";
  Impl& m = *impl_;
  if (root < 0 || root >= m.size) {
    return absl::InvalidArgumentError(absl::StrCat(m.Where(kOp), ": bad root ", root));
  }
  RETURN_IF_ERROR(m.Usable(kOp));
  if (buffer.bytes() == 0) return absl::OkStatus();
  const absl::Time deadline = absl::Now() + m.timeout;
  Impl::DeviceViews views(m, kOp, deadline);
  const int b = views.Add(buffer, m.rank == root, m.rank != root);
  RETURN_IF_ERROR(views.Begin());
  RETURN_IF_ERROR(m.Enqueued(
      kOp, "ncclBroadcast",
      ncclBroadcast(views.ptr(b), views.ptr(b), buffer.bytes(), ncclUint8, root, m.comm, m.stream),
      deadline));
  return views.Finish();
}

absl::Status NcclCommunicator::Send(TensorView buffer, int peer, int tag) {
  constexpr const char* kOp = "Send";
  Impl& m = *impl_;
  if (peer < 0 || peer >= m.size) {
    return absl::InvalidArgumentError(absl::StrCat(m.Where(kOp), ": bad peer ", peer));
  }
  RETURN_IF_ERROR(m.Usable(kOp));
  const absl::Time deadline = absl::Now() + m.timeout;
  if (peer == m.rank) {
    std::vector<char> copy(buffer.bytes());
    if (buffer.device == Device::kCpu) {
      if (!copy.empty()) std::memcpy(copy.data(), buffer.data, copy.size());
    } else {
      RETURN_IF_ERROR(
          m.Copy(kOp, copy.data(), buffer.data, copy.size(), cudaMemcpyDeviceToHost, deadline));
    }
    m.self_mail[tag].push_back(std::move(copy));
    return absl::OkStatus();
  }
  // Empty messages are not sent (the matching Recv is empty too and skips likewise).
  if (buffer.bytes() == 0) return absl::OkStatus();
  Impl::DeviceViews views(m, kOp, deadline);
  const int b = views.Add(buffer, true, false);
  RETURN_IF_ERROR(views.Begin());
  RETURN_IF_ERROR(m.Enqueued(
      kOp, "ncclSend", ncclSend(views.ptr(b), buffer.bytes(), ncclUint8, peer, m.comm, m.stream),
      deadline));
  return views.Finish();
}

absl::Status NcclCommunicator::Recv(TensorView buffer, int peer, int tag) {
  constexpr const char* kOp = "Recv";
  Impl& m = *impl_;
  if (peer < 0 || peer >= m.size) {
    return absl::InvalidArgumentError(absl::StrCat(m.Where(kOp), ": bad peer ", peer));
  }
  RETURN_IF_ERROR(m.Usable(kOp));
  const absl::Time deadline = absl::Now() + m.timeout;
  if (peer == m.rank) {
    auto it = m.self_mail.find(tag);
    if (it == m.self_mail.end() || it->second.empty()) {
      // Nobody else can send it: waiting would only run into the timeout.
      return absl::FailedPreconditionError(
          absl::StrCat(m.Where(kOp), " from itself with tag ", tag,
                       ": no message is pending; a rank must Send to itself before it receives"));
    }
    std::vector<char> message = std::move(it->second.front());
    it->second.pop_front();
    if (message.size() != buffer.bytes()) {
      return absl::InternalError(absl::StrCat(m.Where(kOp), " from itself got ", message.size(),
                                              " bytes, expected ", buffer.bytes()));
    }
    if (buffer.device == Device::kCpu) {
      if (!message.empty()) std::memcpy(buffer.data, message.data(), message.size());
      return absl::OkStatus();
    }
    return m.Copy(kOp, buffer.data, message.data(), message.size(), cudaMemcpyHostToDevice,
                  deadline);
  }
  if (buffer.bytes() == 0) return absl::OkStatus();
  Impl::DeviceViews views(m, kOp, deadline);
  const int b = views.Add(buffer, false, true);
  RETURN_IF_ERROR(views.Begin());
  RETURN_IF_ERROR(m.Enqueued(
      kOp, "ncclRecv", ncclRecv(views.ptr(b), buffer.bytes(), ncclUint8, peer, m.comm, m.stream),
      deadline));
  return views.Finish();
}

absl::Status NcclCommunicator::Barrier() {
  constexpr const char* kOp = "Barrier";
  Impl& m = *impl_;
  RETURN_IF_ERROR(m.Usable(kOp));
  const absl::Time deadline = absl::Now() + m.timeout;
  RETURN_IF_ERROR(m.Enqueued(
      kOp, "ncclAllReduce",
      ncclAllReduce(m.barrier, m.barrier, 1, ncclInt32, ncclSum, m.comm, m.stream), deadline));
  return m.WaitStream(kOp, deadline);
}

absl::StatusOr<std::unique_ptr<Communicator>> NcclCommunicator::Split(int color, int key,
                                                                      const std::string& name) {
  constexpr const char* kOp = "Split";
  Impl& m = *impl_;
  if (color < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(m.Where(kOp), ": color must be >= 0, got ", color));
  }
  RETURN_IF_ERROR(m.Usable(kOp));
  const absl::Time deadline = absl::Now() + m.timeout;
  auto child = std::make_unique<Impl>();
  child->device = m.device;
  child->name = name;
  child->timeout = m.timeout;
  child->rank = m.rank;  // for messages until the real rank is known
  child->size = m.size;

  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  const ncclResult_t r = ncclCommSplit(m.comm, color, key, &child->comm, &config);
  if (Failed(r)) {
    child->comm = nullptr;
    return m.NcclFailure(kOp, "ncclCommSplit", r);
  }
  // Both the parent and the new communicator may be in progress.
  RETURN_IF_ERROR(m.AwaitReady(m.comm, kOp, deadline));
  if (child->comm == nullptr) {
    return absl::InternalError(
        absl::StrCat(m.Where(kOp), ": ncclCommSplit returned no communicator"));
  }
  RETURN_IF_ERROR(child->AwaitReady(child->comm, kOp, deadline));
  ncclResult_t q = ncclCommUserRank(child->comm, &child->rank);
  if (q == ncclSuccess) q = ncclCommCount(child->comm, &child->size);
  if (q != ncclSuccess) return child->NcclFailure(kOp, "ncclCommUserRank/ncclCommCount", q);
  RETURN_IF_ERROR(Impl::CreateLocalResources(*child, kOp));
  return std::unique_ptr<Communicator>(new NcclCommunicator(std::move(child)));
}

}  // namespace tessera
