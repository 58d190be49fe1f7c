// The collective suite on LocalCommunicator groups of 1 to 4 ranks (one thread per rank), and
// the failure paths: a rank that never arrives, ranks that diverge, a receive with no sender.
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "kernels/status_macros.h"
#include "parallel/local_communicator.h"
#include "parallel/timed_communicator.h"
#include "tests/parallel/collective_suite.h"
#include "tests/test_util.h"

namespace tessera {
namespace {

using testing::CollectiveSuite;
using testing::SuiteCase;

// Runs fn(rank's communicator) on one thread per rank and returns each rank's status.
std::vector<absl::Status> RunRanks(std::vector<std::unique_ptr<Communicator>>& comms,
                                   const std::function<absl::Status(Communicator&)>& fn) {
  std::vector<absl::Status> statuses(comms.size());
  std::vector<std::thread> threads;
  for (size_t r = 0; r < comms.size(); ++r) {
    threads.emplace_back([&, r] { statuses[r] = fn(*comms[r]); });
  }
  for (std::thread& t : threads) t.join();
  return statuses;
}

// (group size, case name)
class LocalSuiteTest : public ::testing::TestWithParam<std::tuple<int, std::string>> {};

TEST_P(LocalSuiteTest, Passes) {
  const auto& [size, name] = GetParam();
  SuiteCase test_case;
  for (const SuiteCase& c : CollectiveSuite()) {
    if (c.name == name) test_case = c;
  }
  ASSERT_TRUE(test_case.run) << name;
  auto comms = LocalCommunicator::Create(size, absl::Seconds(30));
  const std::vector<absl::Status> statuses =
      RunRanks(comms, [&](Communicator& comm) { return test_case.run(comm, {}); });
  for (int r = 0; r < size; ++r)
    EXPECT_TRUE(statuses[r].ok()) << "rank " << r << ": " << statuses[r];
}

std::vector<std::string> CaseNames() {
  std::vector<std::string> names;
  for (const SuiteCase& c : CollectiveSuite()) names.push_back(c.name);
  return names;
}

INSTANTIATE_TEST_SUITE_P(Sizes, LocalSuiteTest,
                         ::testing::Combine(::testing::Values(1, 2, 3, 4),
                                            ::testing::ValuesIn(CaseNames())),
                         [](const auto& info) {
                           return absl::StrCat(std::get<1>(info.param), "_np",
                                               std::get<0>(info.param));
                         });

// A communicator with one deliberate defect, to check that the suite notices.
class BrokenCommunicator final : public Communicator {
 public:
  enum class Defect { kAllReduceOffByOne, kAllGatherReversed, kSplitIgnoresKey, kRecvOfNextTag };
  BrokenCommunicator(std::unique_ptr<Communicator> inner, Defect defect)
      : inner_(std::move(inner)), defect_(defect) {}
  int rank() const override { return inner_->rank(); }
  int size() const override { return inner_->size(); }
  const std::string& name() const override { return inner_->name(); }
  absl::Status AllReduce(TensorView buffer, ReduceOp op) override {
    absl::Status status = inner_->AllReduce(buffer, op);
    if (defect_ == Defect::kAllReduceOffByOne && buffer.numel() > 1) {
      if (buffer.dtype == DType::kF32) buffer.as<float>()[buffer.numel() - 1] += 1.0f;
      if (buffer.dtype == DType::kI32) buffer.as<int32_t>()[buffer.numel() - 1] += 1;
    }
    return status;
  }
  absl::Status AllGather(TensorView send, TensorView recv) override {
    absl::Status status = inner_->AllGather(send, recv);
    if (defect_ == Defect::kAllGatherReversed && size() > 1) {
      std::vector<char> copy(static_cast<char*>(recv.data),
                             static_cast<char*>(recv.data) + recv.bytes());
      for (int r = 0; r < size(); ++r) {
        std::memcpy(static_cast<char*>(recv.data) + r * send.bytes(),
                    copy.data() + (size() - 1 - r) * send.bytes(), send.bytes());
      }
    }
    return status;
  }
  absl::Status Broadcast(TensorView buffer, int root) override {
    return inner_->Broadcast(buffer, root);
  }
  absl::Status Send(TensorView buffer, int peer, int tag) override {
    return inner_->Send(buffer, peer, tag);
  }
  absl::Status Recv(TensorView buffer, int peer, int tag) override {
    return inner_->Recv(buffer, peer, defect_ == Defect::kRecvOfNextTag && tag == 5 ? 6 : tag);
  }
  absl::Status Barrier() override { return inner_->Barrier(); }
  absl::StatusOr<std::unique_ptr<Communicator>> Split(int color, int key,
                                                      const std::string& name) override {
    // Children inherit the defect.
    ASSIGN_OR_RETURN(
        std::unique_ptr<Communicator> child,
        inner_->Split(color, defect_ == Defect::kSplitIgnoresKey ? rank() : key, name));
    return std::unique_ptr<Communicator>(new BrokenCommunicator(std::move(child), defect_));
  }

 private:
  std::unique_ptr<Communicator> inner_;
  Defect defect_;
};

// Runs one suite case on 3 ranks with `defect`; every rank must report a failure (not hang).
void ExpectSuiteCatches(BrokenCommunicator::Defect defect, const std::string& case_name) {
  auto comms = LocalCommunicator::Create(3, absl::Seconds(2));
  for (auto& comm : comms) comm = std::make_unique<BrokenCommunicator>(std::move(comm), defect);
  SuiteCase test_case;
  for (const SuiteCase& c : CollectiveSuite()) {
    if (c.name == case_name) test_case = c;
  }
  ASSERT_TRUE(test_case.run) << case_name;
  const std::vector<absl::Status> statuses =
      RunRanks(comms, [&](Communicator& comm) { return test_case.run(comm, {}); });
  int failed = 0;
  for (const absl::Status& status : statuses) failed += !status.ok();
  EXPECT_GT(failed, 0) << case_name << " did not notice the defect";
  for (const absl::Status& status : statuses) {
    if (!status.ok()) std::printf("  (expected) %s\n", status.ToString().substr(0, 200).c_str());
  }
}

TEST(LocalCollectivesTest, SuiteCatchesDefects) {
  using Defect = BrokenCommunicator::Defect;
  ExpectSuiteCatches(Defect::kAllReduceOffByOne, "AllReduceSum");
  ExpectSuiteCatches(Defect::kAllReduceOffByOne, "AllReduceMax");
  ExpectSuiteCatches(Defect::kAllGatherReversed, "AllGather");
  ExpectSuiteCatches(Defect::kAllGatherReversed, "ProcessGroups");
  ExpectSuiteCatches(Defect::kSplitIgnoresKey, "SplitEvenOdd");
  ExpectSuiteCatches(Defect::kRecvOfNextTag, "QueuedTags");
}

TEST(LocalCollectivesTest, SuitePassesThroughTimedCommunicator) {
  // The benchmarks' decorator must not change results.
  auto comms = LocalCommunicator::Create(3, absl::Seconds(30));
  std::vector<TimedCommunicator*> timed;
  for (auto& comm : comms) {
    auto wrapper = std::make_unique<TimedCommunicator>(std::move(comm));
    timed.push_back(wrapper.get());
    comm = std::move(wrapper);
  }
  const std::vector<absl::Status> statuses = RunRanks(comms, [](Communicator& comm) {
    for (const SuiteCase& c : CollectiveSuite()) RETURN_IF_ERROR(c.run(comm, {}));
    return absl::OkStatus();
  });
  for (int r = 0; r < 3; ++r) {
    EXPECT_TRUE(statuses[r].ok()) << statuses[r];
    EXPECT_GT(timed[r]->calls(), 0);
  }
}

TEST(LocalCollectivesTest, LayoutsOfFour) {
  // tp x pp x dp = 4: (1,1,4) (1,2,2) (1,4,1) (2,1,2) (2,2,1) (4,1,1).
  EXPECT_EQ(testing::LayoutsOf(4).size(), 6u);
  EXPECT_EQ(testing::LayoutsOf(3).size(), 3u);
  EXPECT_EQ(testing::LayoutsOf(1).size(), 1u);
}

// Rank 1 never calls AllReduce: rank 0 gets DeadlineExceeded after `timeout` (not before, and
// not much after), naming the group, its rank and the operation.
void ExpectMissingRankTimesOut(absl::Duration timeout) {
  auto comms = LocalCommunicator::Create(2, timeout, "tp");
  const auto start = std::chrono::steady_clock::now();
  const std::vector<absl::Status> statuses = RunRanks(comms, [](Communicator& comm) {
    if (comm.rank() == 1) return absl::OkStatus();
    float x = 1.0f;
    return comm.AllReduce(TensorView::Of(&x, DType::kF32, {1}), ReduceOp::kSum);
  });
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(statuses[0].code(), absl::StatusCode::kDeadlineExceeded) << statuses[0];
  EXPECT_TRUE(absl::StrContains(statuses[0].message(), "tp rank 0/2")) << statuses[0];
  EXPECT_TRUE(absl::StrContains(statuses[0].message(), "AllReduce")) << statuses[0];
  EXPECT_GE(seconds, 0.9 * absl::ToDoubleSeconds(timeout)) << "timed out before the timeout";
  EXPECT_LT(seconds, absl::ToDoubleSeconds(timeout) + 10.0) << "the timeout did not bound the wait";
}

TEST(LocalCollectivesTest, MissingRankTimesOut) { ExpectMissingRankTimesOut(absl::Seconds(1)); }

TEST(LocalCollectivesTest, SubSecondTimeoutIsHonoured) {
  // A 300 ms timeout must wait 300 ms, not round down to 0 s and fail at once.
  ExpectMissingRankTimesOut(absl::Milliseconds(300));
}

TEST(LocalCollectivesTest, DivergedRanksFailWithoutHanging) {
  // Rank 0 reduces while rank 1 waits at a barrier: both learn that the ranks diverged, long
  // before the (generous) timeout.
  auto comms = LocalCommunicator::Create(2, absl::Seconds(20), "world");
  const auto start = std::chrono::steady_clock::now();
  const std::vector<absl::Status> statuses = RunRanks(comms, [](Communicator& comm) {
    if (comm.rank() == 1) return comm.Barrier();
    int32_t x = 1;
    return comm.AllReduce(TensorView::Of(&x, DType::kI32, {1}), ReduceOp::kSum);
  });
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  for (int r = 0; r < 2; ++r) {
    EXPECT_FALSE(statuses[r].ok()) << "rank " << r;
    EXPECT_TRUE(absl::StrContains(statuses[r].message(), "diverged")) << statuses[r];
    EXPECT_TRUE(absl::StrContains(statuses[r].message(), "AllReduce")) << statuses[r];
    EXPECT_TRUE(absl::StrContains(statuses[r].message(), "Barrier")) << statuses[r];
  }
  EXPECT_LT(seconds, 10.0);
}

TEST(LocalCollectivesTest, RecvWithoutSenderTimesOut) {
  // Rank 0 sends on tag 4; rank 1 waits on tag 3, which never comes.
  auto comms = LocalCommunicator::Create(2, absl::Seconds(1), "pp");
  const auto start = std::chrono::steady_clock::now();
  const std::vector<absl::Status> statuses = RunRanks(comms, [](Communicator& comm) {
    int32_t x = 5;
    if (comm.rank() == 0) return comm.Send(TensorView::Of(&x, DType::kI32, {1}), 1, 4);
    return comm.Recv(TensorView::Of(&x, DType::kI32, {1}), 0, 3);
  });
  EXPECT_OK(statuses[0]);
  EXPECT_EQ(statuses[1].code(), absl::StatusCode::kDeadlineExceeded) << statuses[1];
  EXPECT_TRUE(absl::StrContains(statuses[1].message(), "pp rank 1/2")) << statuses[1];
  EXPECT_TRUE(absl::StrContains(statuses[1].message(), "Recv from rank 0")) << statuses[1];
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_GE(seconds, 0.9);
  EXPECT_LT(seconds, 11.0);
}

TEST(LocalCollectivesTest, RecvOfWrongSizeFails) {
  auto comms = LocalCommunicator::Create(2, absl::Seconds(20));
  const std::vector<absl::Status> statuses = RunRanks(comms, [](Communicator& comm) {
    int32_t x[2] = {1, 2};
    if (comm.rank() == 0) return comm.Send(TensorView::Of(x, DType::kI32, {2}), 1, 0);
    return comm.Recv(TensorView::Of(x, DType::kI32, {1}), 0, 0);
  });
  EXPECT_OK(statuses[0]);
  EXPECT_FALSE(statuses[1].ok());
  EXPECT_TRUE(absl::StrContains(statuses[1].message(), "8 bytes, expected 4")) << statuses[1];
}

}  // namespace
}  // namespace tessera
