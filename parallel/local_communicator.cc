#include "parallel/local_communicator.h"

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"

namespace tessera {
namespace internal {

struct LocalGroupState {
  explicit LocalGroupState(int n) : size(n), slots(n), ops(n) {}
  const int size;
  std::mutex mu;
  std::condition_variable cv;
  // Rendezvous round: ranks deposit a pointer; the last to arrive publishes the snapshot.
  uint64_t generation = 0;
  int arrived = 0;
  std::vector<const void*> slots, snapshot;
  std::vector<std::string> ops, snapshot_ops;
  // Groups created by Split, keyed by (split number, color).
  std::map<std::pair<int, int>, std::shared_ptr<LocalGroupState>> children;
  // Set when a rank timed out: the round's bookkeeping is no longer trustworthy, so every later
  // call on the group fails at once.
  bool broken = false;
  // Buffered point-to-point messages, keyed by (source, destination, tag).
  std::map<std::tuple<int, int, int>, std::deque<std::vector<char>>> mail;
};

}  // namespace internal

std::vector<std::unique_ptr<Communicator>> LocalCommunicator::Create(int size,
                                                                     absl::Duration timeout,
                                                                     const std::string& name) {
  auto state = std::make_shared<internal::LocalGroupState>(size);
  std::vector<std::unique_ptr<Communicator>> comms;
  for (int r = 0; r < size; ++r) {
    comms.push_back(std::unique_ptr<Communicator>(new LocalCommunicator(state, r, name, timeout)));
  }
  return comms;
}

LocalCommunicator::LocalCommunicator(std::shared_ptr<internal::LocalGroupState> state, int rank,
                                     std::string name, absl::Duration timeout)
    : state_(std::move(state)), rank_(rank), name_(std::move(name)), timeout_(timeout) {}

int LocalCommunicator::size() const { return state_->size; }

absl::StatusOr<std::vector<const void*>> LocalCommunicator::Rendezvous(const char* op,
                                                                       const void* pointer) {
  internal::LocalGroupState& s = *state_;
  std::unique_lock<std::mutex> lock(s.mu);
  if (s.broken) {
    return absl::AbortedError(absl::StrCat(name_, " rank ", rank_, ": ", op,
                                           ": the group failed earlier (a rank timed out)"));
  }
  const uint64_t generation = s.generation;
  s.slots[rank_] = pointer;
  s.ops[rank_] = op;
  if (++s.arrived == s.size) {
    s.snapshot = s.slots;
    s.snapshot_ops = s.ops;
    s.arrived = 0;
    ++s.generation;
    s.cv.notify_all();
  } else if (!s.cv.wait_for(lock, absl::ToChronoNanoseconds(timeout_),
                            [&] { return s.generation != generation || s.broken; })) {
    s.broken = true;
    s.cv.notify_all();
    return absl::DeadlineExceededError(absl::StrCat(
        name_, " rank ", rank_, "/", s.size, ": ", op, " timed out after ",
        absl::FormatDuration(timeout_),
        " waiting for the other ranks (a rank failed or took a different path)"));
  }
  if (s.generation == generation) {  // woken because another rank broke the group
    return absl::AbortedError(absl::StrCat(name_, " rank ", rank_, ": ", op,
                                           ": another rank of the group timed out"));
  }
  for (int r = 0; r < s.size; ++r) {
    if (s.snapshot_ops[r] != op) {
      return absl::InternalError(absl::StrCat(name_, " rank ", rank_, " called ", op,
                                              " while rank ", r, " called ", s.snapshot_ops[r],
                                              ": the ranks diverged"));
    }
  }
  return s.snapshot;
}

absl::Status LocalCommunicator::AllReduce(TensorView buffer, ReduceOp op) {
  if (buffer.dtype != DType::kF32 && buffer.dtype != DType::kI32) {
    return absl::InvalidArgumentError("AllReduce: buffers must be F32 or I32");
  }
  ASSIGN_OR_RETURN(std::vector<const void*> all, Rendezvous("AllReduce", buffer.data));
  const int64_t n = buffer.numel();
  std::vector<char> result(buffer.bytes());
  auto reduce = [&](auto* out, auto zero) {
    using T = std::remove_pointer_t<decltype(out)>;
    for (int64_t i = 0; i < n; ++i) {
      T acc = static_cast<const T*>(all[0])[i];
      for (size_t r = 1; r < all.size(); ++r) {
        const T v = static_cast<const T*>(all[r])[i];
        acc = op == ReduceOp::kSum ? acc + v : std::max(acc, v);
      }
      out[i] = acc;
    }
    (void)zero;
  };
  if (buffer.dtype == DType::kF32) {
    reduce(reinterpret_cast<float*>(result.data()), 0.0f);
  } else {
    reduce(reinterpret_cast<int32_t*>(result.data()), 0);
  }
  RETURN_IF_ERROR(Rendezvous("AllReduce/done", nullptr).status());
  std::memcpy(buffer.data, result.data(), result.size());
  return absl::OkStatus();
}

absl::Status LocalCommunicator::AllGather(TensorView send, TensorView recv) {
  if (recv.bytes() != send.bytes() * state_->size) {
    return absl::InvalidArgumentError(absl::StrCat("AllGather: recv holds ", recv.bytes(),
                                                   " bytes, expected ", state_->size, " x ",
                                                   send.bytes()));
  }
  ASSIGN_OR_RETURN(std::vector<const void*> all, Rendezvous("AllGather", send.data));
  for (size_t r = 0; r < all.size(); ++r) {
    std::memcpy(static_cast<char*>(recv.data) + r * send.bytes(), all[r], send.bytes());
  }
  return Rendezvous("AllGather/done", nullptr).status();
}

absl::Status LocalCommunicator::Broadcast(TensorView buffer, int root) {
  if (root < 0 || root >= state_->size) return absl::InvalidArgumentError("Broadcast: bad root");
  ASSIGN_OR_RETURN(std::vector<const void*> all, Rendezvous("Broadcast", buffer.data));
  if (rank_ != root) std::memcpy(buffer.data, all[root], buffer.bytes());
  return Rendezvous("Broadcast/done", nullptr).status();
}

absl::Status LocalCommunicator::Send(TensorView buffer, int peer, int tag) {
  if (peer < 0 || peer >= state_->size) return absl::InvalidArgumentError("Send: bad peer");
  internal::LocalGroupState& s = *state_;
  std::lock_guard<std::mutex> lock(s.mu);
  const char* p = static_cast<const char*>(buffer.data);
  s.mail[{rank_, peer, tag}].emplace_back(p, p + buffer.bytes());
  s.cv.notify_all();
  return absl::OkStatus();
}

absl::Status LocalCommunicator::Recv(TensorView buffer, int peer, int tag) {
  if (peer < 0 || peer >= state_->size) return absl::InvalidArgumentError("Recv: bad peer");
  internal::LocalGroupState& s = *state_;
  std::unique_lock<std::mutex> lock(s.mu);
  auto& queue = s.mail[{peer, rank_, tag}];
  if (!s.cv.wait_for(lock, absl::ToChronoNanoseconds(timeout_), [&] { return !queue.empty(); })) {
    return absl::DeadlineExceededError(absl::StrCat(
        name_, " rank ", rank_, "/", s.size, ": Recv from rank ", peer, " timed out after ",
        absl::FormatDuration(timeout_), " (the sender failed or took a different path)"));
  }
  std::vector<char> message = std::move(queue.front());
  queue.pop_front();
  if (message.size() != buffer.bytes()) {
    return absl::InternalError(absl::StrCat(name_, " rank ", rank_, ": Recv from rank ", peer,
                                            " got ", message.size(), " bytes, expected ",
                                            buffer.bytes()));
  }
  std::memcpy(buffer.data, message.data(), message.size());
  return absl::OkStatus();
}

absl::Status LocalCommunicator::Barrier() { return Rendezvous("Barrier", nullptr).status(); }

absl::StatusOr<std::unique_ptr<Communicator>> LocalCommunicator::Split(int color, int key,
                                                                       const std::string& name) {
  const int split = splits_++;
  const std::pair<int, int> mine = {color, key};
  ASSIGN_OR_RETURN(std::vector<const void*> all, Rendezvous("Split", &mine));
  std::vector<std::pair<int, int>> members;  // (key, rank) of my color
  for (size_t r = 0; r < all.size(); ++r) {
    const auto* p = static_cast<const std::pair<int, int>*>(all[r]);
    if (p->first == color) members.push_back({p->second, static_cast<int>(r)});
  }
  std::sort(members.begin(), members.end());
  int new_rank = 0;
  while (members[new_rank].second != rank_) ++new_rank;
  if (new_rank == 0) {
    std::lock_guard<std::mutex> lock(state_->mu);
    state_->children[{split, color}] =
        std::make_shared<internal::LocalGroupState>(static_cast<int>(members.size()));
  }
  // `mine` must stay alive until every rank has read it, and the child must exist.
  RETURN_IF_ERROR(Rendezvous("Split/done", nullptr).status());
  std::shared_ptr<internal::LocalGroupState> child;
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    child = state_->children.at({split, color});
  }
  return std::unique_ptr<Communicator>(new LocalCommunicator(child, new_rank, name, timeout_));
}

}  // namespace tessera
