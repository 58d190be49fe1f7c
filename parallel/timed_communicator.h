// TimedCommunicator: a Communicator decorator that counts calls and the wall time spent in them,
// for benchmarks ("time in collectives per token"). Owns the wrapped communicator.
#ifndef TESSERA_PARALLEL_TIMED_COMMUNICATOR_H_
#define TESSERA_PARALLEL_TIMED_COMMUNICATOR_H_

#include <chrono>
#include <memory>

#include "parallel/communicator.h"

namespace tessera {

class TimedCommunicator final : public Communicator {
 public:
  explicit TimedCommunicator(std::unique_ptr<Communicator> inner) : inner_(std::move(inner)) {}

  double seconds() const { return seconds_; }
  int64_t calls() const { return calls_; }
  void Reset() { seconds_ = 0, calls_ = 0; }

  int rank() const override { return inner_->rank(); }
  int size() const override { return inner_->size(); }
  const std::string& name() const override { return inner_->name(); }
  absl::Status AllReduce(TensorView b, ReduceOp op) override {
    return Time([&] { return inner_->AllReduce(b, op); });
  }
  absl::Status AllGather(TensorView s, TensorView r) override {
    return Time([&] { return inner_->AllGather(s, r); });
  }
  absl::Status Broadcast(TensorView b, int root) override {
    return Time([&] { return inner_->Broadcast(b, root); });
  }
  absl::Status Send(TensorView b, int peer, int tag) override {
    return Time([&] { return inner_->Send(b, peer, tag); });
  }
  absl::Status Recv(TensorView b, int peer, int tag) override {
    return Time([&] { return inner_->Recv(b, peer, tag); });
  }
  absl::Status Barrier() override {
    return Time([&] { return inner_->Barrier(); });
  }
  absl::StatusOr<std::unique_ptr<Communicator>> Split(int color, int key,
                                                       const std::string& name) override {
    return inner_->Split(color, key, name);
  }

 private:
  template <typename F>
  absl::Status Time(F f);

  std::unique_ptr<Communicator> inner_;
  double seconds_ = 0;
  int64_t calls_ = 0;
};

template <typename F>
absl::Status TimedCommunicator::Time(F f) {
  const auto start = std::chrono::steady_clock::now();
  absl::Status s = f();
  seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ++calls_;
  return s;
}

}  // namespace tessera

#endif  // TESSERA_PARALLEL_TIMED_COMMUNICATOR_H_
