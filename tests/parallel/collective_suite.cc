#include "tests/parallel/collective_suite.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <type_traits>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "parallel/process_groups.h"
#include "parallel/stage_channel.h"
#include "parallel/world_layout.h"

namespace tessera::testing {
namespace {

class HostSuiteMemory final : public SuiteMemory {
 public:
  Device device() const override { return Device::kCpu; }
  absl::StatusOr<void*> Allocate(size_t bytes) override { return ::operator new(bytes); }
  void Free(void* pointer) override { ::operator delete(pointer); }
  absl::Status CopyToDevice(void* device, const void* host, size_t bytes) override {
    std::memcpy(device, host, bytes);
    return absl::OkStatus();
  }
  absl::Status CopyToHost(void* host, const void* device, size_t bytes) override {
    std::memcpy(host, device, bytes);
    return absl::OkStatus();
  }
};

template <typename T>
constexpr DType DTypeOf() {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, int32_t>);
  return std::is_same_v<T, float> ? DType::kF32 : DType::kI32;
}

// `numel` elements of T in suite memory, with a host mirror that checks read and fill.
template <typename T>
class Buffer {
 public:
  static absl::StatusOr<std::unique_ptr<Buffer>> Make(const SuiteOptions& options, int64_t numel) {
    auto buffer = std::unique_ptr<Buffer>(new Buffer(options.memory, numel));
    ASSIGN_OR_RETURN(buffer->device_,
                     options.memory->Allocate(std::max<size_t>(buffer->bytes(), 1)));
    return buffer;
  }
  ~Buffer() { memory_->Free(device_); }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  T* host() { return host_.data(); }
  size_t bytes() const { return host_.size() * sizeof(T); }
  // Fills the host mirror with f(i) and copies it to the buffer.
  template <typename F>
  absl::Status Fill(F f) {
    for (size_t i = 0; i < host_.size(); ++i) host_[i] = static_cast<T>(f(static_cast<int64_t>(i)));
    return memory_->CopyToDevice(device_, host_.data(), bytes());
  }
  // Copies the buffer back into the host mirror.
  absl::Status Read() { return memory_->CopyToHost(host_.data(), device_, bytes()); }
  TensorView view() const {
    return TensorView::Of(device_, DTypeOf<T>(), {static_cast<int64_t>(host_.size())},
                          memory_->device());
  }

 private:
  Buffer(SuiteMemory* memory, int64_t numel) : memory_(memory), host_(numel) {}
  SuiteMemory* memory_;
  std::vector<T> host_;
  void* device_ = nullptr;
};

// Wrong values found by one rank; reported after the case's communication is done.
class Mismatches {
 public:
  Mismatches(const Communicator& comm, std::string what)
      : prefix_(absl::StrCat(comm.name(), " rank ", comm.rank(), "/", comm.size(), ": ", what)) {}

  template <typename... Args>
  void Add(const Args&... args) {
    if (++count_ <= kShown) absl::StrAppend(&text_, "\n    ", args...);
  }
  void Expect(bool ok, const std::string& message) {
    if (!ok) Add(message);
  }
  // got[i] == expected(i) for i < n.
  template <typename T, typename F>
  void Values(const std::string& label, const T* got, int64_t n, F expected) {
    for (int64_t i = 0; i < n; ++i) {
      const T want = static_cast<T>(expected(i));
      if (got[i] != want) Add(label, "[", i, "] = ", got[i], ", expected ", want);
    }
  }
  absl::Status status() const {
    if (count_ == 0) return absl::OkStatus();
    return absl::InternalError(absl::StrCat(prefix_, ": ", count_, " wrong value(s)", text_,
                                            count_ > kShown ? "\n    ..." : ""));
  }

 private:
  static constexpr int kShown = 8;
  std::string prefix_, text_;
  int count_ = 0;
};

constexpr int64_t kLengths[] = {1, 7, 4099};

template <typename T>
absl::Status AllReduceSumOf(Communicator& comm, const SuiteOptions& options, Mismatches& bad) {
  const int n = comm.size(), rank = comm.rank();
  for (int64_t length : kLengths) {
    ASSIGN_OR_RETURN(auto buffer, Buffer<T>::Make(options, length));
    RETURN_IF_ERROR(buffer->Fill([&](int64_t i) { return (rank + 1) * (i % 3 + 1); }));
    RETURN_IF_ERROR(comm.AllReduce(buffer->view(), ReduceOp::kSum));
    RETURN_IF_ERROR(buffer->Read());
    // sum over ranks of (rank + 1) = n (n + 1) / 2.
    bad.Values(absl::StrCat(DTypeName(DTypeOf<T>()), " sum of ", length), buffer->host(), length,
               [&](int64_t i) { return n * (n + 1) / 2 * (i % 3 + 1); });
  }
  return absl::OkStatus();
}

template <typename T>
absl::Status AllReduceMaxOf(Communicator& comm, const SuiteOptions& options, Mismatches& bad) {
  const int n = comm.size(), rank = comm.rank();
  for (int64_t length : kLengths) {
    ASSIGN_OR_RETURN(auto buffer, Buffer<T>::Make(options, length));
    // Element i is large on exactly one rank (i % n) and negative elsewhere.
    RETURN_IF_ERROR(buffer->Fill(
        [&](int64_t i) { return i % n == rank ? 1000 + i % 97 : -(rank + 1) - i % 5; }));
    RETURN_IF_ERROR(comm.AllReduce(buffer->view(), ReduceOp::kMax));
    RETURN_IF_ERROR(buffer->Read());
    bad.Values(absl::StrCat(DTypeName(DTypeOf<T>()), " max of ", length), buffer->host(), length,
               [&](int64_t i) { return 1000 + i % 97; });
  }
  // All ranks negative: the max is the least negative (rank 0's -1).
  ASSIGN_OR_RETURN(auto negative, Buffer<T>::Make(options, 5));
  RETURN_IF_ERROR(negative->Fill([&](int64_t i) { return -(rank + 1) * (i + 1); }));
  RETURN_IF_ERROR(comm.AllReduce(negative->view(), ReduceOp::kMax));
  RETURN_IF_ERROR(negative->Read());
  bad.Values(absl::StrCat(DTypeName(DTypeOf<T>()), " max of negatives"), negative->host(), 5,
             [&](int64_t i) { return -(i + 1); });
  return absl::OkStatus();
}

template <typename T>
absl::Status AllGatherOf(Communicator& comm, const SuiteOptions& options, Mismatches& bad) {
  const int n = comm.size(), rank = comm.rank();
  for (int64_t block : {int64_t{1}, int64_t{5}, int64_t{1000}}) {
    ASSIGN_OR_RETURN(auto send, Buffer<T>::Make(options, block));
    ASSIGN_OR_RETURN(auto recv, Buffer<T>::Make(options, block * n));
    RETURN_IF_ERROR(send->Fill([&](int64_t i) { return rank * 10000 + i; }));
    RETURN_IF_ERROR(recv->Fill([&](int64_t) { return -3; }));
    RETURN_IF_ERROR(comm.AllGather(send->view(), recv->view()));
    RETURN_IF_ERROR(recv->Read());
    bad.Values(absl::StrCat(DTypeName(DTypeOf<T>()), " gather of blocks of ", block), recv->host(),
               block * n, [&](int64_t j) { return (j / block) * 10000 + j % block; });
  }
  return absl::OkStatus();
}

template <typename T>
absl::Status BroadcastOf(Communicator& comm, const SuiteOptions& options, int root, int64_t length,
                         Mismatches& bad) {
  ASSIGN_OR_RETURN(auto buffer, Buffer<T>::Make(options, length));
  RETURN_IF_ERROR(buffer->Fill(
      [&](int64_t i) { return comm.rank() == root ? root * 100000 + i : int64_t{-7}; }));
  RETURN_IF_ERROR(comm.Broadcast(buffer->view(), root));
  RETURN_IF_ERROR(buffer->Read());
  bad.Values(absl::StrCat(DTypeName(DTypeOf<T>()), " broadcast of ", length, " from root ", root),
             buffer->host(), length, [&](int64_t i) { return root * 100000 + i; });
  return absl::OkStatus();
}

// Runs `send` and `receive` around the ring without relying on buffered sends: rank 0 sends
// first, every other rank receives first (a chain that closes back at rank 0).
absl::Status RingOrder(Communicator& comm, const std::function<absl::Status()>& send,
                       const std::function<absl::Status()>& receive) {
  if (comm.rank() == 0) {
    RETURN_IF_ERROR(send());
    return receive();
  }
  RETURN_IF_ERROR(receive());
  return send();
}

// Members of `comm`'s groups, computed from the layout formulas alone:
// tp_rank = rank % tp, pp_rank = (rank / tp) % pp, dp_rank = rank / (tp * pp).
std::vector<int> GroupMembers(const Layout3& l, int world_rank, const char* group) {
  const int tp_rank = world_rank % l.tp, pp_rank = (world_rank / l.tp) % l.pp,
            dp_rank = world_rank / (l.tp * l.pp);
  // Every world rank that shares the other two coordinates, in order of its own coordinate.
  std::vector<std::pair<int, int>> found;  // (coordinate in the group, world rank)
  for (int r = 0; r < l.tp * l.pp * l.dp; ++r) {
    const int t = r % l.tp, p = (r / l.tp) % l.pp, d = r / (l.tp * l.pp);
    if (std::string(group) == "tp" && p == pp_rank && d == dp_rank) found.push_back({t, r});
    if (std::string(group) == "pp" && t == tp_rank && d == dp_rank) found.push_back({p, r});
    if (std::string(group) == "dp" && t == tp_rank && p == pp_rank) found.push_back({d, r});
  }
  std::sort(found.begin(), found.end());
  std::vector<int> members;
  for (const auto& [coordinate, r] : found) members.push_back(r);
  return members;
}

std::string LayoutName(const Layout3& l) {
  return absl::StrCat("tp", l.tp, " pp", l.pp, " dp", l.dp);
}

// Checks one group of a layout: size, rank, name, the sum of world ranks, and the members in
// order (an all-gather of world ranks).
absl::Status CheckGroup(Communicator& group, const char* name, const Layout3& l, int world_rank,
                        Mismatches& bad) {
  const std::vector<int> members = GroupMembers(l, world_rank, name);
  const int expected_rank =
      static_cast<int>(std::find(members.begin(), members.end(), world_rank) - members.begin());
  const std::string where = absl::StrCat(LayoutName(l), " ", name, " group");
  bad.Expect(group.name() == name, absl::StrCat(where, ": name ", group.name()));
  bad.Expect(group.size() == static_cast<int>(members.size()),
             absl::StrCat(where, ": size ", group.size(), ", expected ", members.size()));
  bad.Expect(group.rank() == expected_rank,
             absl::StrCat(where, ": rank ", group.rank(), ", expected ", expected_rank));

  int32_t sum = world_rank;
  RETURN_IF_ERROR(group.AllReduce(TensorView::Of(&sum, DType::kI32, {1}), ReduceOp::kSum));
  int32_t expected_sum = 0;
  for (int r : members) expected_sum += r;
  bad.Expect(sum == expected_sum,
             absl::StrCat(where, ": sum of world ranks ", sum, ", expected ", expected_sum));

  int32_t mine = world_rank;
  std::vector<int32_t> all(group.size());
  RETURN_IF_ERROR(group.AllGather(TensorView::Of(&mine, DType::kI32, {1}),
                                  TensorView::Of(all.data(), DType::kI32, {group.size()})));
  bad.Expect(std::vector<int>(all.begin(), all.end()) == members,
             absl::StrCat(where, ": members in rank order differ from the layout formulas"));
  return absl::OkStatus();
}

absl::StatusOr<ProcessGroups> GroupsFor(Communicator& comm, const Layout3& l) {
  // MakeProcessGroups takes ownership of its world: give it a copy of `comm`.
  ASSIGN_OR_RETURN(std::unique_ptr<Communicator> world, comm.Split(0, comm.rank(), "world"));
  WorldLayout layout;
  layout.tp = l.tp;
  layout.pp = l.pp;
  layout.dp = l.dp;
  layout.rank = comm.rank();
  return MakeProcessGroups(std::move(world), layout);
}

}  // namespace

SuiteMemory& HostMemory() {
  static HostSuiteMemory* memory = new HostSuiteMemory;
  return *memory;
}

std::vector<Layout3> LayoutsOf(int world_size) {
  std::vector<Layout3> layouts;
  for (int tp = 1; tp <= world_size; ++tp) {
    for (int pp = 1; tp * pp <= world_size; ++pp) {
      if (world_size % (tp * pp) == 0) layouts.push_back({tp, pp, world_size / (tp * pp)});
    }
  }
  return layouts;
}

absl::Status CheckAllReduceSum(Communicator& comm, const SuiteOptions& options) {
  Mismatches bad(comm, "AllReduce(sum)");
  RETURN_IF_ERROR(AllReduceSumOf<float>(comm, options, bad));
  RETURN_IF_ERROR(AllReduceSumOf<int32_t>(comm, options, bad));
  return bad.status();
}

absl::Status CheckAllReduceMax(Communicator& comm, const SuiteOptions& options) {
  Mismatches bad(comm, "AllReduce(max)");
  RETURN_IF_ERROR(AllReduceMaxOf<float>(comm, options, bad));
  RETURN_IF_ERROR(AllReduceMaxOf<int32_t>(comm, options, bad));
  return bad.status();
}

absl::Status CheckAllGather(Communicator& comm, const SuiteOptions& options) {
  Mismatches bad(comm, "AllGather");
  RETURN_IF_ERROR(AllGatherOf<float>(comm, options, bad));
  RETURN_IF_ERROR(AllGatherOf<int32_t>(comm, options, bad));
  return bad.status();
}

absl::Status CheckBroadcast(Communicator& comm, const SuiteOptions& options) {
  Mismatches bad(comm, "Broadcast");
  for (int root = 0; root < comm.size(); ++root) {
    RETURN_IF_ERROR(BroadcastOf<int32_t>(comm, options, root, 7, bad));
    RETURN_IF_ERROR(BroadcastOf<float>(comm, options, root, 4099, bad));
  }
  return bad.status();
}

absl::Status CheckSendRecvRing(Communicator& comm, const SuiteOptions& options) {
  Mismatches bad(comm, "Send/Recv ring");
  const int n = comm.size(), rank = comm.rank();
  const int next = (rank + 1) % n, prev = (rank + n - 1) % n;
  // Several messages on different tags, queued in order: (tag, length).
  const std::pair<int, int64_t> messages[] = {{0, 1}, {3, 7}, {77, 4099}, {3, 2}};
  auto value = [](int source, int tag, int index, int64_t i) {
    return source * 1000000 + tag * 10000 + index * 5000 + i;
  };
  auto send = [&]() -> absl::Status {
    int index = 0;
    for (const auto& message : messages) {
      const int tag = message.first;  // a copy: clang 14 cannot capture structured bindings
      const int64_t length = message.second;
      ASSIGN_OR_RETURN(auto buffer, Buffer<int32_t>::Make(options, length));
      RETURN_IF_ERROR(buffer->Fill([&](int64_t i) { return value(rank, tag, index, i); }));
      RETURN_IF_ERROR(comm.Send(buffer->view(), next, tag));
      ++index;
    }
    return absl::OkStatus();
  };
  auto receive = [&]() -> absl::Status {
    int index = 0;
    for (const auto& message : messages) {
      const int tag = message.first;  // a copy: clang 14 cannot capture structured bindings
      const int64_t length = message.second;
      ASSIGN_OR_RETURN(auto buffer, Buffer<int32_t>::Make(options, length));
      RETURN_IF_ERROR(buffer->Fill([](int64_t) { return -1; }));
      RETURN_IF_ERROR(comm.Recv(buffer->view(), prev, tag));
      RETURN_IF_ERROR(buffer->Read());
      bad.Values(absl::StrCat("message ", index, " (tag ", tag, ") from rank ", prev),
                 buffer->host(), length, [&](int64_t i) { return value(prev, tag, index, i); });
      ++index;
    }
    return absl::OkStatus();
  };
  RETURN_IF_ERROR(RingOrder(comm, send, receive));
  return bad.status();
}

absl::Status CheckQueuedTags(Communicator& comm, const SuiteOptions& options) {
  Mismatches bad(comm, "queued tagged messages");
  const int n = comm.size(), rank = comm.rank();
  const int next = (rank + 1) % n, prev = (rank + n - 1) % n;
  constexpr int64_t kLength = 16;  // small: completes eagerly under MPI
  auto value = [](int source, int tag, int seq, int64_t i) {
    return source * 100000 + tag * 1000 + seq * 100 + i;
  };
  // Every rank sends all five messages before receiving any: tags interleaved, two per tag in
  // order for tags 5 and 7.
  const std::pair<int, int> sent[] = {{5, 0}, {6, 0}, {5, 1}, {7, 0}, {7, 1}};
  for (const auto& message : sent) {
    const int tag = message.first, seq = message.second;  // copies that lambdas can capture
    ASSIGN_OR_RETURN(auto buffer, Buffer<int32_t>::Make(options, kLength));
    RETURN_IF_ERROR(buffer->Fill([&](int64_t i) { return value(rank, tag, seq, i); }));
    RETURN_IF_ERROR(comm.Send(buffer->view(), next, tag));
  }
  // Received in another tag order; within a tag, in send order.
  const std::pair<int, int> received[] = {{7, 0}, {7, 1}, {5, 0}, {6, 0}, {5, 1}};
  for (const auto& message : received) {
    const int tag = message.first, seq = message.second;
    ASSIGN_OR_RETURN(auto buffer, Buffer<int32_t>::Make(options, kLength));
    RETURN_IF_ERROR(buffer->Fill([](int64_t) { return -1; }));
    RETURN_IF_ERROR(comm.Recv(buffer->view(), prev, tag));
    RETURN_IF_ERROR(buffer->Read());
    bad.Values(absl::StrCat("tag ", tag, " message ", seq, " from rank ", prev), buffer->host(),
               kLength, [&](int64_t i) { return value(prev, tag, seq, i); });
  }
  // Nobody leaves while a peer may still be receiving.
  RETURN_IF_ERROR(comm.Barrier());
  return bad.status();
}

absl::Status CheckStrings(Communicator& comm, const SuiteOptions& options) {
  Mismatches bad(comm, "SendString/RecvString");
  const int n = comm.size(), rank = comm.rank();
  const int next = (rank + 1) % n, prev = (rank + n - 1) % n;
  auto strings_of = [](int source) {
    std::string long_string(100003, '\0');
    for (size_t i = 0; i < long_string.size(); ++i) {
      long_string[i] = static_cast<char>((i * 31 + source) % 256);  // every byte value, NULs too
    }
    return std::vector<std::string>{"", absl::StrCat("from rank ", source), long_string, ""};
  };
  constexpr int kTag = 9;
  auto send = [&]() -> absl::Status {
    for (const std::string& s : strings_of(rank)) RETURN_IF_ERROR(SendString(comm, s, next, kTag));
    return absl::OkStatus();
  };
  auto receive = [&]() -> absl::Status {
    const std::vector<std::string> expected = strings_of(prev);
    for (size_t k = 0; k < expected.size(); ++k) {
      ASSIGN_OR_RETURN(std::string got, RecvString(comm, prev, kTag));
      bad.Expect(got == expected[k],
                 absl::StrCat("string ", k, " from rank ", prev, ": got ", got.size(),
                              " bytes, expected ", expected[k].size(), " (or different bytes)"));
    }
    return absl::OkStatus();
  };
  RETURN_IF_ERROR(RingOrder(comm, send, receive));
  return bad.status();
}

absl::Status CheckBarrier(Communicator& comm, const SuiteOptions& options) {
  Mismatches bad(comm, "Barrier");
  for (int i = 0; i < 3; ++i) RETURN_IF_ERROR(comm.Barrier());
  // Still in step: a collective after the barriers sees every rank.
  ASSIGN_OR_RETURN(auto one, Buffer<int32_t>::Make(options, 1));
  RETURN_IF_ERROR(one->Fill([](int64_t) { return 1; }));
  RETURN_IF_ERROR(comm.AllReduce(one->view(), ReduceOp::kSum));
  RETURN_IF_ERROR(one->Read());
  bad.Values("ranks counted after barriers", one->host(), 1, [&](int64_t) { return comm.size(); });
  return bad.status();
}

absl::Status CheckSplitEvenOdd(Communicator& comm, const SuiteOptions& options) {
  Mismatches bad(comm, "Split(even/odd, reversed keys)");
  const int n = comm.size(), rank = comm.rank(), color = rank % 2;
  // Same parity, ordered by key = -rank: descending world rank.
  std::vector<int> members;
  for (int r = n - 1; r >= 0; --r) {
    if (r % 2 == color) members.push_back(r);
  }
  const int expected_rank =
      static_cast<int>(std::find(members.begin(), members.end(), rank) - members.begin());
  ASSIGN_OR_RETURN(std::unique_ptr<Communicator> sub, comm.Split(color, -rank, "parity"));
  bad.Expect(sub->name() == "parity", "name " + sub->name());
  bad.Expect(sub->size() == static_cast<int>(members.size()),
             absl::StrCat("size ", sub->size(), ", expected ", members.size()));
  bad.Expect(sub->rank() == expected_rank,
             absl::StrCat("rank ", sub->rank(), ", expected ", expected_rank));

  // Sum of (world rank + 1) over the subgroup: the even or odd terms of n (n + 1) / 2.
  ASSIGN_OR_RETURN(auto sum, Buffer<int32_t>::Make(options, 3));
  RETURN_IF_ERROR(sum->Fill([&](int64_t i) { return (rank + 1) * (i + 1); }));
  RETURN_IF_ERROR(sub->AllReduce(sum->view(), ReduceOp::kSum));
  RETURN_IF_ERROR(sum->Read());
  int32_t expected_sum = 0;
  for (int r : members) expected_sum += r + 1;
  bad.Values("subgroup sum", sum->host(), 3, [&](int64_t i) { return expected_sum * (i + 1); });

  ASSIGN_OR_RETURN(auto mine, Buffer<int32_t>::Make(options, 1));
  ASSIGN_OR_RETURN(auto all, Buffer<int32_t>::Make(options, sub->size()));
  RETURN_IF_ERROR(mine->Fill([&](int64_t) { return rank; }));
  RETURN_IF_ERROR(sub->AllGather(mine->view(), all->view()));
  RETURN_IF_ERROR(all->Read());
  bad.Values("subgroup members", all->host(), std::min<int64_t>(sub->size(), members.size()),
             [&](int64_t i) { return members[i]; });

  // A split of the split (one color, original order) still works.
  ASSIGN_OR_RETURN(std::unique_ptr<Communicator> copy, sub->Split(0, sub->rank(), "copy"));
  RETURN_IF_ERROR(copy->Barrier());
  bad.Expect(copy->size() == sub->size() && copy->rank() == sub->rank(),
             "nested split changed the ranks");
  return bad.status();
}

absl::Status CheckProcessGroups(Communicator& comm, const SuiteOptions& options) {
  Mismatches bad(comm, "MakeProcessGroups");
  for (const Layout3& l : LayoutsOf(comm.size())) {
    ASSIGN_OR_RETURN(ProcessGroups g, GroupsFor(comm, l));
    bad.Expect(g.layout.rank == comm.rank() && g.layout.tp == l.tp && g.layout.pp == l.pp &&
                   g.layout.dp == l.dp,
               absl::StrCat(LayoutName(l), ": layout ", g.layout.Prefix()));
    bad.Expect(g.world->size() == comm.size() && g.world->rank() == comm.rank(),
               absl::StrCat(LayoutName(l), ": world group is not a copy of the world"));
    RETURN_IF_ERROR(CheckGroup(*g.tp, "tp", l, comm.rank(), bad));
    RETURN_IF_ERROR(CheckGroup(*g.pp, "pp", l, comm.rank(), bad));
    RETURN_IF_ERROR(CheckGroup(*g.dp, "dp", l, comm.rank(), bad));
    RETURN_IF_ERROR(g.world->Barrier());
  }
  return bad.status();
}

absl::Status CheckStageChannel(Communicator& comm, const SuiteOptions& options) {
  Mismatches bad(comm, "StageChannel");
  constexpr int kDim = 8, kStep = 7, kMicroBatch = 2;
  for (const Layout3& l : LayoutsOf(comm.size())) {
    if (l.pp < 2) continue;
    ASSIGN_OR_RETURN(ProcessGroups g, GroupsFor(comm, l));
    const int stage = g.layout.pp_rank();
    const std::string where = absl::StrCat(LayoutName(l), " stage ", stage);
    // Stage s sends 3 + s rows (the count varies along the pipeline), a row subset of a batch,
    // flags and payload words that name it; each value is distinct per (replica, tp, stage).
    auto value = [&](int from_stage, int64_t i) {
      return (g.layout.dp_rank() * 100 + g.layout.tp_rank() * 10 + from_stage) * 1000 + i;
    };
    auto rows_of = [](int from_stage) {
      std::vector<int32_t> rows;
      for (int i = 0; i < 3 + from_stage; ++i) rows.push_back(2 * i + from_stage);
      return rows;
    };
    StageChannel channel(g.pp.get());
    const int max_tokens = 3 + l.pp;
    ASSIGN_OR_RETURN(auto hidden, Buffer<float>::Make(options, max_tokens * kDim));
    if (stage > 0) {
      const int tokens = 3 + stage - 1;
      ASSIGN_OR_RETURN(StageHeader h, channel.RecvHeader(kStep, kMicroBatch, kDim));
      std::vector<int32_t> rows;
      RETURN_IF_ERROR(channel.RecvRows(h, &rows));
      RETURN_IF_ERROR(hidden->Fill([](int64_t) { return -1; }));
      RETURN_IF_ERROR(channel.RecvPayload(h, hidden->view().Rows(0, h.n_tokens * kDim)
                                                 .Reshaped({h.n_tokens, kDim})));
      RETURN_IF_ERROR(hidden->Read());
      bad.Expect(h.n_tokens == tokens,
                 absl::StrCat(where, ": ", h.n_tokens, " rows, want ", tokens));
      bad.Expect(h.message.flags == (StageMessage::kRowSubset | (0x50u + stage - 1) << 8),
                 absl::StrCat(where, ": flags ", h.message.flags, " from stage ", stage - 1));
      bad.Expect(h.message.payload[StageMessage::kPayloadWords - 1] == 900 + stage - 1 &&
                     h.message.exit_layer == stage - 1,
                 absl::StrCat(where, ": payload or exit layer lost"));
      bad.Expect(rows == rows_of(stage - 1), where + ": the row subset differs");
      bad.Values(where + " payload", hidden->host(), tokens * kDim,
                 [&](int64_t i) { return value(stage - 1, i); });
    }
    if (stage + 1 < l.pp) {
      const int tokens = 3 + stage;
      StageHeader header;
      header.n_tokens = tokens;
      header.message.flags = StageMessage::kRowSubset | (0x50u + stage) << 8;
      header.message.exit_layer = stage;
      header.message.payload[StageMessage::kPayloadWords - 1] = 900 + stage;
      header.step = kStep;
      header.micro_batch = kMicroBatch;
      RETURN_IF_ERROR(hidden->Fill([&](int64_t i) { return value(stage, i); }));
      RETURN_IF_ERROR(channel.SendNext(
          header, hidden->view().Rows(0, tokens * kDim).Reshaped({tokens, kDim}), rows_of(stage)));
    }

    // A stage out of step: stage 0 sends step 8 (with two rows) while stage 1 expects step 7; the
    // receiver drains the message and names both stages and steps.
    StageHeader wrong;
    wrong.n_tokens = 2;
    wrong.step = kStep + 1;
    wrong.micro_batch = kMicroBatch;
    if (stage == 0) {
      RETURN_IF_ERROR(channel.SendNext(wrong, hidden->view().Rows(0, 2 * kDim).Reshaped({2, kDim})));
    }
    if (stage == 1) {
      const absl::StatusOr<StageHeader> result = channel.RecvHeader(kStep, kMicroBatch, kDim);
      const std::string message(result.status().message());
      bad.Expect(!result.ok(), where + ": a header with the wrong step was accepted");
      bad.Expect(absl::StrContains(message, "stage 1") && absl::StrContains(message, "stage 0") &&
                     absl::StrContains(message, "step 7") && absl::StrContains(message, "step 8"),
                 absl::StrCat(where,
                              ": the step mismatch error does not name both stages and "
                              "steps: ",
                              message));
    }
    RETURN_IF_ERROR(g.pp->Barrier());
  }
  return bad.status();
}

std::vector<SuiteCase> CollectiveSuite(const SuiteOptions& options) {
  std::vector<SuiteCase> cases = {
      {"AllReduceSum", CheckAllReduceSum}, {"AllReduceMax", CheckAllReduceMax},
      {"AllGather", CheckAllGather},       {"Broadcast", CheckBroadcast},
      {"SendRecvRing", CheckSendRecvRing}, {"QueuedTags", CheckQueuedTags},
      {"Strings", CheckStrings},           {"Barrier", CheckBarrier},
      {"SplitEvenOdd", CheckSplitEvenOdd}, {"ProcessGroups", CheckProcessGroups},
      {"StageChannel", CheckStageChannel},
  };
  if (!options.tag_matching) {
    cases.erase(std::remove_if(cases.begin(), cases.end(),
                               [](const SuiteCase& c) { return c.name == "QueuedTags"; }),
                cases.end());
  }
  return cases;
}

}  // namespace tessera::testing
