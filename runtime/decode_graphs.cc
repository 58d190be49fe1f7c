#include "runtime/decode_graphs.h"

#include <tuple>
#include <utility>

#include "kernels/status_macros.h"

namespace tessera {

bool DecodeGraphKey::operator<(const DecodeGraphKey& o) const {
  return std::tie(tokens, cache, n_slots, max_seq) < std::tie(o.tokens, o.cache, o.n_slots, o.max_seq);
}

bool DecodeGraphs::Supported(Backend& backend) { return backend.graph_capture() != nullptr; }

DecodeGraphs::DecodeGraphs(GraphCapture* capture) : capture_(capture) {
  if (capture_ != nullptr) generation_ = capture_->scratch_generation();
}

DecodeGraphs::~DecodeGraphs() = default;

void DecodeGraphs::DropIfScratchMoved() {
  if (capture_ == nullptr) return;
  const uint64_t now = capture_->scratch_generation();
  if (now == generation_) return;
  dropped_for_scratch_ += size();
  graphs_.clear();
  generation_ = now;
}

bool DecodeGraphs::Has(const DecodeGraphKey& key) {
  DropIfScratchMoved();
  return graphs_.count(key) > 0;
}

absl::Status DecodeGraphs::Capture(const DecodeGraphKey& key,
                                   const std::function<absl::Status()>& enqueue) {
  if (capture_ == nullptr) {
    return absl::UnimplementedError("graph capture needs a backend that captures (the CUDA backend)");
  }
  DropIfScratchMoved();
  RETURN_IF_ERROR(capture_->BeginCapture());
  const absl::Status enqueued = enqueue();
  absl::StatusOr<std::unique_ptr<CapturedWork>> graph = capture_->EndCapture();  // always end it
  RETURN_IF_ERROR(enqueued);
  RETURN_IF_ERROR(graph.status());
  graphs_.insert_or_assign(key, std::move(graph).value());
  return absl::OkStatus();
}

absl::Status DecodeGraphs::Replay(const DecodeGraphKey& key) {
  DropIfScratchMoved();
  auto it = graphs_.find(key);
  if (it == graphs_.end()) {
    return absl::NotFoundError(
        "no decode graph of this shape on the current scratch (check Has() first)");
  }
  return it->second->Replay();
}

void DecodeGraphs::Clear() { graphs_.clear(); }

}  // namespace tessera
